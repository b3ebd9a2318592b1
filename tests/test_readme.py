"""The README's commands work as written."""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

from peft_food.record import RunRecord
from tests.conftest import REPO
from tests.wandb_file import read_run, run_files


def readme_commands(prefix: str) -> list[str]:
    blocks = re.findall(r"```(?:bash|sh)?\n(.*?)```", (REPO / "README.md").read_text(), flags=re.S)
    lines = [line.split("  #")[0].strip() for block in blocks for line in block.splitlines()]
    return [line for line in lines if line.startswith(prefix)]


def test_readme_quickstart_runs_offline_and_beats_chance(tmp_path, offline_wandb):
    [command] = [c for c in readme_commands("peft-food-train") if "quickstart" in c and "-m" not in c]
    exe = shutil.which("peft-food-train", path=str(Path(sys.executable).parent) + os.pathsep + os.environ["PATH"])
    done = subprocess.run([exe, *command.split()[1:]], cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]

    [metrics_file] = list(tmp_path.glob("outputs/*/*/metrics.json"))
    record = RunRecord.load(metrics_file)
    assert record.counts.num_labels == 10
    assert record.best >= 0.4  # chance is 0.1
    [run_file] = run_files(metrics_file.parent)
    assert read_run(run_file).summary["best_eval_accuracy"] == record.best
    assert (metrics_file.parent / ".hydra" / "config.yaml").is_file()
