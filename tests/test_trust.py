"""A saved run is data, never code, and files a team can use: crafted run dirs (remote code a file
asks for, a base named elsewhere, a pickle, a damaged peft_food.json) each stop in one line and run
nothing; every file a run and its export write has the mode the umask gives."""

import json
import os
import pickle
import shutil
import stat
import subprocess
import sys

import pytest
from PIL import Image

from peft_food.cli.export import main as export
from peft_food.cli.predict import main as predict
from tests.helpers import REPO, umask

# A module a crafted config's auto_map names: importing it is running the stranger's code.
EVIL = """from pathlib import Path
Path({marker!r}).write_text("ran")
from transformers import ViTForImageClassification, ViTImageProcessor


class EvilViT(ViTForImageClassification):
    pass


class EvilProcessor(ViTImageProcessor):
    pass
"""


class Pickled:
    """Unpickling this writes the marker: a pytorch_model.bin that runs code when torch.load reads it."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (shutil.copyfile, (__file__, self.marker))


@pytest.fixture
def image(tmp_path):
    Image.new("RGB", (32, 32), (200, 60, 20)).save(tmp_path / "photo.png")
    return tmp_path / "photo.png"


def copy_model(run_dir, target):
    """A run dir as someone else hands it over: its model/ alone."""
    shutil.copytree(run_dir / "model", target / "model")
    return target


def edit_json(path, change):
    body = json.loads(path.read_text())
    change(body)
    path.write_text(json.dumps(body))


def plant(folder, marker, *, config="config.json", auto="AutoModelForImageClassification", cls="EvilViT"):
    """`folder`'s config names a module of its own (beside it) that writes `marker` when imported."""
    (folder / "evil.py").write_text(EVIL.format(marker=str(marker)))
    edit_json(folder / config, lambda body: body.update(auto_map={auto: f"evil.{cls}"}))


def says_remote_code(model_dir):
    edit_json(model_dir / "peft_food.json", lambda spec: spec["base"].update(trust_remote_code=True))


def refused(capsys, code, *, marker=None, names=None):
    err = capsys.readouterr().err
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    if names:
        assert names in lines[0], lines[0]
    assert marker is None or not marker.exists()
    return lines[0]


# Each crafted dir: (what to pass, where its code would come from). All run nothing without the flag.
def spec_and_base_code(lora_run, full_run, tmp_path, marker):
    run = copy_model(lora_run[0], tmp_path / "downloaded")
    says_remote_code(run / "model")
    plant(run / "model" / "base", marker)
    return run


def base_code_the_spec_hides(lora_run, full_run, tmp_path, marker):
    run = copy_model(lora_run[0], tmp_path / "downloaded")  # peft_food.json keeps trust_remote_code: false
    plant(run / "model" / "base", marker)
    return run


def spec_only(lora_run, full_run, tmp_path, marker):
    run = copy_model(lora_run[0], tmp_path / "downloaded")  # as if its base were a Hub model with code
    says_remote_code(run / "model")
    return run


def processor_code(lora_run, full_run, tmp_path, marker):
    run = copy_model(lora_run[0], tmp_path / "downloaded")
    plant(run / "model", marker, config="preprocessor_config.json", auto="AutoImageProcessor", cls="EvilProcessor")
    return run


def plain_model_code(lora_run, full_run, tmp_path, marker):
    run = copy_model(full_run, tmp_path / "downloaded")
    (run / "model" / "peft_food.json").unlink()  # a plain transformers model dir (an export)
    plant(run / "model", marker)
    return run / "model"


def named_base_code(lora_run, full_run, tmp_path, marker):
    run = copy_model(lora_run[0], tmp_path / "downloaded")
    base = tmp_path / "elsewhere" / "base"
    shutil.move(run / "model" / "base", base)
    plant(base, marker)
    edit_json(
        run / "model" / "peft_food.json", lambda spec: spec["base"].update(name_or_path=str(base), pretrained=True)
    )
    return run


CRAFTED = [spec_and_base_code, base_code_the_spec_hides, spec_only, processor_code, plain_model_code, named_base_code]


@pytest.mark.parametrize("craft", CRAFTED, ids=lambda f: f.__name__)
def test_a_run_dir_never_runs_code_it_names_unless_asked(craft, lora_run, full_run, tmp_path, image, capsys):
    marker = tmp_path / "marker"
    run = craft(lora_run, full_run, tmp_path, marker)
    line = refused(capsys, predict([str(run), str(image)]), marker=marker, names="--trust-remote-code")
    assert line.startswith("peft-food-predict: error: ")
    refused(capsys, export([str(run), str(tmp_path / "exported")]), marker=marker, names="--trust-remote-code")
    assert not (tmp_path / "exported").exists() or not any((tmp_path / "exported").iterdir())


def test_with_the_flag_the_code_the_dir_names_runs(lora_run, full_run, tmp_path, image):
    # A fresh interpreter with its own module cache: transformers copies evil.py there to import it.
    marker = tmp_path / "marker"
    run = spec_and_base_code(lora_run, full_run, tmp_path, marker)
    env = {**os.environ, "HF_MODULES_CACHE": str(tmp_path / "modules"), "PYTHONPATH": str(REPO)}
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            "from peft_food.cli.predict import cli; cli()",
            str(run),
            str(image),
            "--trust-remote-code",
            "--json",
        ],
        capture_output=True,
        text=True,
        env=env,
        cwd=str(REPO),
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert marker.read_text() == "ran"
    assert json.loads(done.stdout)["predictions"][0]["label"].startswith("class_")


def test_a_base_the_dir_names_elsewhere_is_loaded_from_safetensors_and_named(
    lora_run, full_run, tmp_path, image, capsys
):
    run_dir, _ = lora_run
    assert predict([str(run_dir), str(image), "--json"]) == 0
    own = capsys.readouterr()
    assert own.err == ""  # the run's own base copy: nothing to say

    run = copy_model(run_dir, tmp_path / "downloaded")
    base = tmp_path / "elsewhere" / "base"
    shutil.move(run / "model" / "base", base)
    edit_json(
        run / "model" / "peft_food.json", lambda spec: spec["base"].update(name_or_path=str(base), pretrained=True)
    )
    assert predict([str(run), str(image), "--json"]) == 0
    named = capsys.readouterr()
    assert named.out == own.out  # the same base weights: the same predictions
    assert named.err.strip().splitlines() == [
        f"peft-food-predict: base model {base} (named by {run / 'model' / 'peft_food.json'}; not a copy saved with "
        f"the model)"
    ]
    assert predict([str(run), str(image), "--json", "--base", str(run_dir)]) == 0
    assert capsys.readouterr().err.strip() == (
        f"peft-food-predict: base model {run_dir / 'model' / 'base'} (--base; not a copy saved with the model)"
    )

    # A base holding only a pickle: never unpickled (it would run code), one line instead.
    marker = tmp_path / "marker"
    (base / "model.safetensors").unlink()
    with (base / "pytorch_model.bin").open("wb") as f:
        pickle.dump(Pickled(str(marker)), f)
    line = refused(capsys, predict([str(run), str(image)]), marker=marker, names=str(base))
    assert "could not load the base model" in line


def edited(text, change):
    body = json.loads(text)
    change(body)
    return json.dumps(body)


SPEC_DAMAGE = {
    "truncated": (lambda text: text[: len(text) // 2], "JSONDecodeError"),
    "unknown_method": (
        lambda text: edited(text, lambda spec: spec["peft"].update(method="nonesuch")),
        "names method 'nonesuch', which this version of peft_food does not have",
    ),
    "unknown_key": (
        lambda text: edited(text, lambda spec: spec["peft"].update(bogus=1)),
        "holds peft settings its method does not accept",
    ),
    "no_labels": (lambda text: edited(text, lambda spec: spec.pop("labels")), "labels must be a non-empty list"),
    "not_an_object": (lambda text: "[]", "not a JSON object"),
    "modules_a_list": (
        lambda text: edited(text, lambda spec: spec["base"].update(modules=["q_proj"])),
        "base must be an object naming the base model, its head and module roles",
    ),
}


@pytest.mark.parametrize("damage", list(SPEC_DAMAGE))
def test_a_damaged_peft_food_json_is_one_line_naming_it(damage, lora_run, tmp_path, image, capsys):
    run = copy_model(lora_run[0], tmp_path / "run")
    spec = run / "model" / "peft_food.json"
    change, says = SPEC_DAMAGE[damage]
    damaged = change(spec.read_text())
    assert damaged != spec.read_text()
    spec.write_text(damaged)
    for command, args in ((predict, [str(run), str(image)]), (export, [str(run), str(tmp_path / "exported")])):
        line = refused(capsys, command(args), names=str(spec))
        assert says in line, line


def modes(root):
    """Every file and folder under `root` whose mode is not what umask 022 gives."""
    return {
        str(p.relative_to(root)): oct(stat.S_IMODE(p.lstat().st_mode))
        for p in root.rglob("*")
        if stat.S_IMODE(p.lstat().st_mode) != (0o755 if p.is_dir() else 0o644)
    }


def test_every_file_a_run_and_its_export_write_has_the_mode_the_umask_gives(lora_run, full_run, tmp_path):
    # safetensors writes 0600: the model, its random-init base and every checkpoint were unreadable
    # to a teammate while the record beside them was 0644 (trained under umask 022: conftest.py).
    run_dir, _ = lora_run
    assert list(run_dir.rglob("checkpoint-*/adapter_model.safetensors")) and (run_dir / "model" / "base").is_dir()
    assert modes(run_dir) == {}
    assert modes(full_run) == {}
    with umask(0o022):
        assert export([str(full_run), str(tmp_path / "exported")]) == 0
    assert (tmp_path / "exported" / "model.safetensors").is_file() and modes(tmp_path / "exported") == {}
