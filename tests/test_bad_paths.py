"""A path that is wrong says what is wrong with it: a checkpoint dir that does not exist, one that is
not a checkpoint, one without its image processor, a Trainer checkpoint given to predict."""

import json
import logging

import pytest
from transformers import AutoModelForImageClassification

from peft_food.cli.predict import main as predict
from peft_food.config import parse_config
from peft_food.errors import ConfigError, UserError
from peft_food.model.backbone import base_config, load_base, load_processor
from peft_food.model.spec import ModelSpec
from tests.helpers import compose_config


def test_a_checkpoint_dir_that_does_not_exist_is_named_as_a_missing_path(tmp_path):
    (tmp_path / "ckpts").mkdir()
    missing = tmp_path / "ckpts" / "vit"
    with pytest.raises(ConfigError) as err:
        parse_config(compose_config("model=vit_base", f"model.name_or_path={missing}", output_dir=tmp_path / "run"))
    assert str(err.value).startswith(f"model.name_or_path={missing} does not exist: pass the directory of a saved")
    assert "Repo id" not in str(err.value)
    ModelSpec(name_or_path="google/vit-base-patch16-224-in21k")  # a Hub id is not a path


def test_a_directory_that_is_not_a_checkpoint_says_so(tmp_path):
    (tmp_path / "photos").mkdir()
    (tmp_path / "photos" / "config.json").write_text("{}")  # no model_type: transformers cannot build it
    spec = ModelSpec(name_or_path=str(tmp_path / "photos"))
    with pytest.raises(
        UserError, match=r"photos is not a transformers checkpoint .*: point it at the folder holding config.json"
    ):
        load_base(model=spec, labels=["a", "b"])


def test_a_checkpoint_without_its_processor_names_model_processor_which_then_supplies_it(tmp_path, caplog):
    tiny = parse_config(compose_config("model=vit_tiny", output_dir=tmp_path / "run")).model
    AutoModelForImageClassification.from_config(base_config(tiny, labels=["a", "b"])).save_pretrained(tmp_path / "ckpt")
    assert not (tmp_path / "ckpt" / "preprocessor_config.json").exists()
    with pytest.raises(UserError) as err:
        load_processor(ModelSpec(name_or_path=str(tmp_path / "ckpt")))
    assert "has no image processor config (preprocessor_config.json)" in str(err.value)
    assert "give its settings as model.processor" in str(err.value)

    with caplog.at_level(logging.WARNING):
        model, processor = load_base(
            model=ModelSpec(name_or_path=str(tmp_path / "ckpt"), processor=tiny.processor), labels=["a", "b"]
        )
    assert processor.size == {"height": 32, "width": 32} and model.config.num_labels == 2
    assert "using model.processor (ViTImageProcessor)" in caplog.text


def test_predict_given_a_training_checkpoint_says_to_pass_the_run_dir(tmp_path, capsys):
    run_dir = tmp_path / "outputs" / "2026-12-02" / "01-00-00"
    checkpoint = run_dir / "checkpoints" / "checkpoint-16"
    checkpoint.mkdir(parents=True)
    (checkpoint / "trainer_state.json").write_text(json.dumps({"global_step": 16}))
    (checkpoint / "adapter_config.json").write_text("{}")
    (tmp_path / "photo.jpg").write_bytes(b"")
    for given in (checkpoint, run_dir / "checkpoints"):
        assert predict([str(given), str(tmp_path / "photo.jpg")]) == 2
        [line] = capsys.readouterr().err.strip().splitlines()
        assert line == (
            f"peft-food-predict: error: {given} is a training checkpoint, not a saved model: pass the run "
            f"dir ({run_dir}), whose model/ holds the best checkpoint's weights with its labels and base"
        )
