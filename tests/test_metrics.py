"""Metrics as an axis: each metric's arithmetic, the monitor picking the saved checkpoint, and the
per-class results of the saved model."""

import csv

import numpy as np
import pytest

from peft_food.evaluation.metrics import Evaluator, confusion_matrix, per_class
from peft_food.training.pipeline import train
from tests.helpers import TINY_QUIET, compose_config, eval_logits


def one_hot_logits(ranked: list[list[int]], num_labels: int) -> np.ndarray:
    """Logits whose descending order per row is `ranked` (then the remaining classes)."""
    logits = np.zeros((len(ranked), num_labels), dtype=np.float32)
    for row, order in zip(logits, ranked):
        for score, label in zip(range(num_labels, 0, -1), order):
            row[label] = score
    return logits


def test_accuracy_top5_and_macro_f1_by_hand():
    labels = np.array([0, 0, 1, 1, 2, 2])
    # Top-1 predictions 0, 1, 1, 1, 2, 0; the last row's true class is its 6th choice (outside top 5).
    logits = one_hot_logits([[0], [1, 0], [1], [1], [2], [0, 1, 3, 4, 5, 2]], num_labels=7)
    got = Evaluator(["accuracy", "top5_accuracy", "macro_f1"])((logits, labels))
    assert got["accuracy"] == pytest.approx(4 / 6)
    assert got["top5_accuracy"] == pytest.approx(5 / 6)
    # F1 per class: 0: 2*1/(2*1+1+1) = 1/2; 1: 2*2/(2*2+1+0) = 4/5; 2: 2*1/(2*1+0+1) = 2/3. Classes
    # 3-6 occur in neither the labels nor the predictions and do not count (as in scikit-learn).
    assert got["macro_f1"] == pytest.approx((1 / 2 + 4 / 5 + 2 / 3) / 3)
    assert set(got) == {"accuracy", "top5_accuracy", "macro_f1"}


def test_per_class_rows_name_the_class_each_is_taken_for():
    confusion = confusion_matrix(np.array([0, 1, 1, 1, 2, 0]), np.array([0, 0, 1, 1, 2, 2]), num_labels=3)
    assert confusion.tolist() == [[1, 1, 0], [0, 2, 0], [1, 0, 1]]
    rows = per_class(confusion, ["pho", "ramen", "udon"])
    assert rows == [
        {"class": "pho", "eval_images": 2, "accuracy": 0.5, "most_confused_with": "ramen", "times": 1},
        {"class": "ramen", "eval_images": 2, "accuracy": 1.0, "most_confused_with": None, "times": 0},
        {"class": "udon", "eval_images": 2, "accuracy": 0.5, "most_confused_with": "pho", "times": 1},
    ]


def test_the_monitor_picks_the_saved_checkpoint_and_the_per_class_results_are_of_it(tmp_path):
    record = train(
        compose_config(
            *TINY_QUIET,
            "train.epochs=4",
            "train.metrics=[accuracy]",
            "train.monitor=loss",
            output_dir=tmp_path,
        )
    )
    assert record.monitor == "eval_loss"
    assert [set(e) for e in record.epochs] == [{"epoch", "eval_loss", "eval_accuracy"}] * 4
    best = min(record.epochs, key=lambda e: e["eval_loss"])
    assert record.best_epoch == best and record.best == best["eval_loss"]

    # The saved model is the lowest-loss epoch's: its accuracy, not the best accuracy's epoch.
    logits, labels = eval_logits(tmp_path)
    assert float((logits.argmax(-1) == labels).mean()) == best["eval_accuracy"]

    rows = list(csv.DictReader((tmp_path / "per_class.csv").open()))
    assert [r["class"] for r in rows] == record.labels
    # Per-class results are on test, for that same checkpoint.
    correct = sum(float(r["accuracy"]) * int(r["eval_images"]) for r in rows)
    test_logits, test_labels = eval_logits(tmp_path, "test")
    assert float((test_logits.argmax(-1) == test_labels).mean()) == record.test["best"]["test_accuracy"]
    assert round(correct) == round(record.test["best"]["test_accuracy"] * record.counts.num_test_samples)
    confusion = list(csv.reader((tmp_path / "confusion.csv").open()))
    assert confusion[0][1:] == record.labels
    assert sum(int(c) for row in confusion[1:] for c in row[1:]) == record.counts.num_test_samples


def test_the_examples_shown_spread_their_correct_half_over_the_classes():
    from peft_food.evaluation.results import EvalResults

    labels = np.repeat(np.arange(4), 10)  # a test list sorted by class, as Food-101's test.txt is
    logits = np.eye(4)[labels] * 5.0
    logits[[0, 11], :] = np.eye(4)[[3, 0]] * 9.0  # two confident mistakes
    results = EvalResults(logits=logits, labels=labels, names=["a", "b", "c", "d"])
    shown = results.examples(8)
    assert shown[:2] == [0, 11]  # mistakes first, most confident first
    correct = shown[2:]
    assert sorted({int(labels[i]) for i in correct}) == [0, 1, 2, 3]  # every class, not six of class a
    assert all(results.predictions[i] == labels[i] for i in correct)


@pytest.mark.parametrize("classes, counted", [(10, True), (30, True), (101, False)])
def test_the_confusion_picture_names_its_split_and_writes_counts_while_cells_can_hold_them(classes, counted):
    from peft_food.evaluation.results import confusion_figure

    rng = np.random.default_rng(0)
    confusion = np.diag(rng.integers(5, 20, classes))
    confusion[0, 1], confusion[2, 0] = 3, 1
    figure = confusion_figure(confusion, [f"class {i}" for i in range(classes)], split="test")
    [ax] = [a for a in figure.axes if a.get_xlabel() == "predicted"]
    assert ax.get_title().startswith(f"Confusion of the saved model on test ({confusion.sum()} images; ")
    written = sorted((int(t.get_position()[1]), int(t.get_position()[0]), int(t.get_text())) for t in ax.texts)
    if counted:  # every nonzero cell and no other
        assert written == sorted((int(t), int(p), int(confusion[t, p])) for t, p in zip(*np.nonzero(confusion)))
    else:
        assert written == [] and "counts in confusion.csv (101 classes: too many to write" in ax.get_title()
    figure.savefig(f"/tmp/hp_confusion_{classes}.png", dpi=100)
