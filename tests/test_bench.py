"""The benchmark composes the training peft_food/conf/ groups, measures both recipes side by side and
writes bench.json in the shape other runs are compared with (figures are not asserted: they
belong to the benchmark, not to a timed test)."""

import json
import subprocess
import sys

import pytest

from tests.helpers import MINI, needs_mini


def bench_on_mini(run_dir, *overrides: str) -> subprocess.CompletedProcess:
    """peft-food-bench on the food101-mini photos with vit_tiny, writing into `run_dir` (tests calling it are
    marked needs_mini)."""
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            "from peft_food.cli.bench import main; main()",
            "data=food101_local",
            f"data.root={MINI}",
            "model=vit_tiny",
            *overrides,
            f"hydra.run.dir={run_dir}",
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done


@pytest.mark.slow
@needs_mini
def test_bench_writes_comparable_json_and_its_startup_section_times_real_jobs_and_reads_flat(tmp_path):
    """The data and train sections (bench.json's comparable shape), and the startup section in the
    same bench process (its jobs are processes of their own, the thing it times; the bench's own
    imports and photo screening are paid once for both)."""
    done = bench_on_mini(
        tmp_path,
        "bench.sections=[data,train,startup]",
        "bench.startup_images=400",
        "bench.images=64",
        "bench.workers=[0,1]",
        "bench.methods=[lora,full]",
        "bench.inputs=[synthetic]",
        "bench.warmup_steps=1",
        "bench.train_steps=2",
        "bench.batch_size=16",
        "bench.repeats=2",
    )
    result = json.loads((tmp_path / "bench.json").read_text())
    assert result["device"]["device"] == "cpu" and result["attention"] == "sdpa" and result["batch_size"] == 16
    data = result["data"]
    assert set(data["ours"]["by_workers"]) == {"0", "1"} and data["seed_recipe"]["workers"] == 0
    assert data["speedup_train"] == data["ours"]["train_img_per_s"] / data["seed_recipe"]["train_img_per_s"]
    assert data["repeats"] == 2 and data["images_timed"] == 64
    assert data["ours_cached"]["decode_once_s"] > 0 and data["ours_pil_decode"]["workers"] == 0
    store = data["ours_store"]  # vit_tiny's 32 px input: train side 64, eval crops 32x32 (3 KB each)
    assert store["train_side"] == 64 and store["eval_mb_per_1000_images"] == 32 * 32 * 3 * 1000 / 2**20
    assert data["speedup_train_store_single_core"] == store["train_img_per_s"] / data["seed_recipe"]["train_img_per_s"]
    assert (
        data["store_over_fast_decode_single_core"]
        == store["train_img_per_s"] / data["ours"]["by_workers"]["0"]["train_img_per_s"]
    )
    assert not (tmp_path / "stores").exists()  # the bench's stores are a cache, removed at the end
    decoders = data["decoders"]  # every mini photo through TorchCodec, torchvision's decode_jpeg and PIL
    assert decoders["images"] == 700 and decoders["max_abs_diff_from_torchcodec"] == {"pil": 0, "torchvision": 0}
    rates = decoders["img_per_s_one_core"]
    assert decoders["torchcodec_over_torchvision"] == rates["torchcodec"] / rates["torchvision"]
    assert "JPEG decode alone, 700 photos" in done.stdout
    for method in ("lora", "full"):
        pair = result["train"][method]["synthetic"]
        assert pair["ours"]["attention"] == "sdpa" and pair["seed_recipe"]["attention"] == "eager"
        assert pair["ours"]["optim"] == "adamw_torch_fused" and pair["seed_recipe"]["optim"] == "adamw_torch"
        assert pair["speedup"] == pair["ours"]["img_per_s"] / pair["seed_recipe"]["img_per_s"]
        assert all(pair[r]["img_per_s"] > 0 and pair[r]["peak_mem_mb"] > 0 for r in ("ours", "seed_recipe"))
    assert set(result["peak_mem_over_full"]) == {"lora"} and result["peak_mem_over_full"]["lora"] > 0
    assert "peak memory lora / full fine-tuning" in done.stdout
    assert set(result["dropout"]) == {"lora"}  # full fine-tuning has no dropout to price
    dropout = result["dropout"]["lora"]  # peft_food/conf/peft/lora.yaml keeps the seed's 0.1
    assert dropout["dropout"] == 0.1 and dropout["repeats"] == 2 and dropout["input"] == "synthetic"
    assert dropout["time_cost"] == dropout["img_per_s_without"] / dropout["img_per_s"] - 1
    assert "lora dropout 0.1 vs 0" in done.stdout
    assert "speed-up vs seed" in done.stdout and "bench.json" in done.stdout
    startup = result["startup"]
    assert set(startup["startup_s"]) == {
        "jpeg",
        "store_first",
        "store_second",
        "no_data",
        "multirun_first",
        "multirun_second",
    }
    # In one multirun process the second job pays no imports: it starts far sooner than the first.
    assert startup["startup_s"]["multirun_second"] < startup["startup_s"]["multirun_first"] / 2
    assert startup["second_over_first"] == startup["startup_s"]["store_second"] / startup["startup_s"]["store_first"]
    logs = {
        name: (tmp_path / "startup" / name / "train.log").read_text()
        for name in startup["startup_s"]
        if not name.startswith("multirun")
    }
    assert logs["store_first"].count("built the data store") == 3  # train.txt in both forms (val), test.txt
    assert "built the data store" not in logs["store_second"] + logs["jpeg"]
    for name in (
        "jpeg",
        "store_first",
        "store_second",
    ):  # 400 images: 300 in train.txt (10 x 1 of them val), 10 x 1 test
        counts = json.loads((tmp_path / "startup" / name / "metrics.json").read_text())["counts"]
        assert (counts["num_train_samples"], counts["num_eval_samples"], counts["num_test_samples"]) == (290, 10, 10)
    rss = startup["rss"]
    assert rss["large_store"]["images"] == 300 and rss["small_store"]["images"] == 500
    assert not (tmp_path / "startup_data").exists() and not (tmp_path / "stores").exists()


@pytest.mark.slow
@needs_mini
def test_bench_methods_section_trains_each_method_in_its_own_process_and_trains_at_the_models_input_size(tmp_path):
    """bench.sections=[methods]: each method's step time and training memory, each in a fresh process,
    with the configured method's own settings (VPT-deep here), and each against full fine-tuning.
    In the same bench process, bench.sections=[train] on deit_tiny, whose processor resizes to 36 and
    crops 32: the bench's synthetic batches are the 32 px the model takes (the training geometry),
    not the 36 px resize."""
    done = bench_on_mini(
        tmp_path,
        "model=deit_tiny",
        "peft=vpt",
        "peft.deep=true",
        "peft.prompts=4",
        "bench.sections=[train,methods]",
        "bench.inputs=[synthetic]",
        "bench.methods=[full,vpt]",
        "bench.warmup_steps=1",
        "bench.train_steps=1",
        "bench.batch_size=8",
        "bench.repeats=1",
    )
    result = json.loads((tmp_path / "bench.json").read_text())
    for method in ("full", "vpt"):
        pair = result["train"][method]["synthetic"]
        assert pair["ours"]["input_size"] == pair["seed_recipe"]["input_size"] == [32, 32]
        assert all(pair[r]["eval_loss"] is not None for r in ("ours", "seed_recipe"))
    methods = result["methods"]
    assert methods["against"] == "full" and methods["input"] == "synthetic" and methods["repeats"] == 1
    full, vpt = methods["by_method"]["full"], methods["by_method"]["vpt"]
    # deit_tiny (vit_tiny's 4 layers, width 64, and a distillation token) with the synthetic pixels'
    # 101 labels: full trains vit_tiny's 147,941 and that token and its position (2 x 64); VPT-deep
    # 4 prompts per layer (4 x 4 x 64) and the 101-way head (64 x 101 + 101).
    assert full["trainable_params"] == 147_941 + 2 * 64 and vpt["trainable_params"] == 4 * 4 * 64 + 64 * 101 + 101
    assert vpt["label"] == "vpt_deep" and full["step_over_full"] == 1.0
    assert vpt["train_mem_over_full"] == vpt["train_mem_mb"] / full["train_mem_mb"]
    assert all(row["train_mem_mb"] > 0 and row["peak_mem_mb"] > row["train_mem_mb"] for row in (full, vpt))
    assert "methods (synthetic pixels, a process each, best of 1)" in done.stdout and "vpt_deep" in done.stdout
