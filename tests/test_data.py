"""Data stage: sources, seeded splits and subsets, and preprocessing from the image processor."""

import io
import sys
import warnings

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.transforms import v2
from transformers import ViTImageProcessor

from peft_food.data.sources import synthetic_dataset
from peft_food.data.splits import balanced_subset, load_splits
from peft_food.data.transforms import (
    DecodeToTensor,
    attach_transforms,
    build_transforms,
    collate,
    normalize,
)
from peft_food.errors import DataError, UserError
from tests.helpers import MINI, needs_mini, spec_of


def data_spec(*overrides):
    return spec_of(*overrides).data


def write_images(folder, count, size=(40, 30), mode="RGB"):
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        Image.new(mode, size, color=(i * 20) % 255 if mode == "L" else (i * 20 % 255, 80, 160)).save(
            folder / f"{i}.png"
        )


def test_balanced_subset_takes_n_per_class_and_depends_only_on_the_seed():
    ds = synthetic_dataset(num_classes=5, per_class=12, image_size=8, seed=0)
    a = balanced_subset(ds, per_class=3, seed=7)
    assert np.bincount(a["label"]).tolist() == [3] * 5
    assert a["label"] == balanced_subset(ds, per_class=3, seed=7)["label"]
    assert a._indices != balanced_subset(ds, per_class=3, seed=8)._indices


def test_synthetic_images_are_deterministic_and_classes_differ():
    a = synthetic_dataset(num_classes=3, per_class=2, image_size=16, seed=1)
    b = synthetic_dataset(num_classes=3, per_class=2, image_size=16, seed=1)
    assert [np.asarray(x).tolist() for x in a["image"]] == [np.asarray(x).tolist() for x in b["image"]]
    means = [np.asarray(img, dtype=float).mean(axis=(0, 1)) for img in a["image"][::2]]
    assert np.abs(means[0] - means[1]).max() > 20  # distinct hues per class


def test_imagefolder_without_splits_holds_out_seeded_fractions(tmp_path):
    for name in ("tacos", "ramen", "sushi"):
        write_images(tmp_path / name, 10)
    spec = data_spec("data=imagefolder", f"data.root={tmp_path}", "data.test_size=0.2", "data.val_size=0.25")
    splits = load_splits(spec, seed=3)
    assert splits.labels == ["ramen", "sushi", "tacos"]
    # Per class: 2 of 10 test, then 2 of the remaining 8 val.
    assert splits.sizes() == {"train": 18, "val": 6, "test": 6}
    again = load_splits(spec, seed=3)
    assert splits.test["image"][0].filename == again.test["image"][0].filename
    assert splits.val["image"][0].filename == again.val["image"][0].filename


def test_imagefolder_with_train_and_test_uses_them_as_given(tmp_path):
    for split, count in (("train", 4), ("test", 2)):
        for name in ("a", "b"):  # test's images in another size: no file is in both splits
            write_images(tmp_path / split / name, count, size=(40, 30) if split == "train" else (30, 40))
    splits = load_splits(data_spec("data=imagefolder", f"data.root={tmp_path}", "data.val_per_class=1"), seed=0)
    assert splits.sizes() == {"train": 6, "val": 2, "test": 4}


def test_imagefolder_errors_name_the_folder(tmp_path):
    write_images(tmp_path / "full", 3)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="empty holds no images"):
        load_splits(data_spec("data=imagefolder", f"data.root={tmp_path}"), seed=0)
    split_root = tmp_path / "split"
    write_images(split_root / "train" / "a", 2)
    write_images(split_root / "test" / "a", 1)
    write_images(split_root / "test" / "zzz", 1)
    with pytest.raises(DataError, match="no training images: zzz"):
        load_splits(data_spec("data=imagefolder", f"data.root={split_root}"), seed=0)


def test_food101_layout_errors(tmp_path):
    with pytest.raises(DataError, match="classes.txt is missing"):
        load_splits(data_spec("data=food101_local", f"data.root={tmp_path}"), seed=0)
    (tmp_path / "meta").mkdir()
    (tmp_path / "meta" / "classes.txt").write_text("pho\n")
    (tmp_path / "meta" / "train.txt").write_text("pho/1\n")
    (tmp_path / "meta" / "test.txt").write_text("pho/2\n")
    write_images(tmp_path / "images" / "pho", 2)  # 0.png, 1.png: no .jpg at all
    with pytest.raises(DataError, match=r"train.txt lists 1 missing image"):
        load_splits(data_spec("data=food101_local", f"data.root={tmp_path}"), seed=0)


@needs_mini
def test_food101_mini_per_class_subset():
    splits = load_splits(data_spec("data=food101_local", f"data.root={MINI}", "data.per_class=5"), seed=0)
    assert np.bincount(splits.train["label"]).tolist() == [5] * 10
    assert np.bincount(splits.val["label"]).tolist() == [5] * 10  # 10% of each class's 50, carved first
    assert len(splits.test) == 200


def test_transforms_follow_the_image_processor_and_make_rgb():
    processor = ViTImageProcessor(
        size={"height": 48, "width": 48}, image_mean=[0.2, 0.4, 0.6], image_std=[0.1, 0.2, 0.3]
    )
    _, eval_tf = build_transforms(processor, uint8=False)
    grey = Image.new("L", (100, 70), color=255)
    pixels = eval_tf(grey.convert("RGB"))
    assert pixels.shape == (3, 48, 48)
    # A white image normalises to (1 - mean) / std per channel.
    assert torch.allclose(pixels[:, 0, 0], torch.tensor([8.0, 3.0, 4 / 3]), atol=1e-5)


def test_uint8_path_with_batch_normalize_equals_the_seed_float_path_bit_for_bit():
    processor = ViTImageProcessor(
        size={"height": 32, "width": 32}, image_mean=[0.485, 0.456, 0.406], image_std=[0.229, 0.224, 0.225]
    )
    images = [Image.fromarray(np.random.default_rng(i).integers(0, 255, (50, 70, 3), dtype=np.uint8)) for i in range(4)]
    _, seed_eval = build_transforms(processor, uint8=False)
    _, fast_eval = build_transforms(processor, uint8=True)
    fast = torch.stack([fast_eval(img) for img in images])
    assert fast.dtype == torch.uint8
    seed = torch.stack([seed_eval(img) for img in images])
    assert torch.equal(normalize(fast, mean=processor.image_mean, std=processor.image_std), seed)


def test_cache_serves_the_same_pixels_without_decoding_again(tmp_path):
    for name in ("a", "b"):
        write_images(tmp_path / name, 4, size=(50, 40))
    spec = data_spec("data=imagefolder", f"data.root={tmp_path}", "data.test_size=0.5")
    processor = ViTImageProcessor(size={"height": 32, "width": 32})
    plain, cached = load_splits(spec, seed=0), load_splits(spec, seed=0)
    plain = attach_transforms(plain, processor)
    cached = attach_transforms(cached, processor, cache=True)
    for name in ("val", "test"):
        for i in range(len(getattr(plain, name))):
            assert torch.equal(getattr(plain, name)[i]["pixel_values"], getattr(cached, name)[i]["pixel_values"])
    for path in tmp_path.glob("*/*.png"):
        path.unlink()  # the cache no longer needs the files
    assert cached.train[0]["pixel_values"].shape == (3, 32, 32)


def test_collate_stacks_a_batch_from_the_attached_transform(tmp_path):
    write_images(tmp_path / "a", 4, mode="L")
    write_images(tmp_path / "b", 4, mode="RGBA")
    splits = load_splits(data_spec("data=imagefolder", f"data.root={tmp_path}", "data.test_size=0.25"), seed=0)
    splits = attach_transforms(splits, ViTImageProcessor(size={"height": 32, "width": 32}))
    batch = collate([splits.train[i] for i in range(len(splits.train))])
    assert batch["pixel_values"].shape == (4, 3, 32, 32) and batch["pixel_values"].dtype == torch.uint8
    assert batch["labels"].dtype == torch.long and batch["labels"].shape == (4,)  # 8 less 1 test, 1 val per class


def test_unusable_training_images_are_reported_before_training_or_skipped(tmp_path, caplog):
    for name in ("a", "b"):
        write_images(tmp_path / name, 5)
    good = (tmp_path / "a" / "0.png").read_bytes()
    (tmp_path / "a" / "broken.png").write_bytes(good[: len(good) // 2])
    (tmp_path / "b" / "readme.jpg").write_text("notes, not a photo")
    with pytest.raises(DataError) as err:
        load_splits(data_spec("data=imagefolder", f"data.root={tmp_path}"), seed=0)
    message = str(err.value)
    assert message.startswith("2 unusable image(s)") and "data.bad_images=skip" in message
    assert f"{tmp_path / 'a' / 'broken.png'}: corrupt or unreadable image" in message
    assert f"{tmp_path / 'b' / 'readme.jpg'}: not an image file" in message

    splits = load_splits(data_spec("data=imagefolder", f"data.root={tmp_path}", "data.bad_images=skip"), seed=0)
    assert sum(splits.sizes().values()) == 10
    assert "skipping 2 unusable image(s)" in caplog.text


def test_a_class_with_no_test_images_is_an_error(tmp_path):
    write_images(tmp_path / "train" / "a", 2)
    write_images(tmp_path / "train" / "b", 2)
    write_images(tmp_path / "test" / "a", 1)
    with pytest.raises(DataError, match="class\\(es\\) b have training images but none here to evaluate on"):
        load_splits(data_spec("data=imagefolder", f"data.root={tmp_path}"), seed=0)


@needs_mini
def test_fast_decode_draws_the_same_crops_and_flips_as_the_pil_path():
    processor = ViTImageProcessor(size={"height": 64, "width": 64})
    pil_train, _ = build_transforms(processor, fast_decode=False)
    fast_train, _ = build_transforms(processor, fast_decode=True)
    same, other = [], []
    for i, photo in enumerate(sorted(MINI.glob("images/*/*.jpg"))[:20]):
        torch.manual_seed(i)
        pil = pil_train(Image.open(photo)).float()
        after_pil = torch.rand(1)
        torch.manual_seed(i)
        fast = fast_train({"bytes": photo.read_bytes(), "path": str(photo)})
        after_fast = torch.rand(1)
        assert fast.dtype == torch.uint8 and fast.shape == (3, 64, 64)
        assert torch.equal(after_pil, after_fast)  # the same random draws, no more, no fewer
        same.append((pil - fast.float()).abs().mean().item())
        torch.manual_seed(i + 100)
        other.append((pil - fast_train({"bytes": photo.read_bytes(), "path": None}).float()).abs().mean().item())
    # Same region, scale, aspect and flip: only PIL's and torch's resampling arithmetic differ,
    # by well under a grey level on average (measured: < 0.01).
    assert max(same) < 0.5
    # Another draw of the crop gives a different picture entirely, so the bound above is not slack.
    assert min(other) > 5.0


def test_fast_decode_makes_rgb_from_greyscale_cmyk_and_png_files(tmp_path):
    fast_train, _ = build_transforms(ViTImageProcessor(size={"height": 16, "width": 16}), fast_decode=True)
    cases = {
        "grey.jpg": Image.new("L", (40, 30), 200),
        "cmyk.jpg": Image.new("CMYK", (40, 30), (0, 0, 0, 0)),
        "rgba.png": Image.new("RGBA", (40, 30), (10, 20, 30, 40)),
    }
    for name, image in cases.items():
        image.save(tmp_path / name)
        expected = np.asarray(Image.open(tmp_path / name).convert("RGB"))[0, 0]
        got = fast_train({"bytes": None, "path": str(tmp_path / name)})
        assert got.shape == (3, 16, 16), name
        # Flat colours survive any crop and resize; the decoders agree to a grey level.
        assert np.abs(got[:, 8, 8].numpy().astype(int) - expected.astype(int)).max() <= 1, name


@needs_mini
def test_tensor_augment_is_torchvisions_crop_resize_flip_bit_for_bit():
    # TensorAugment resizes a channels-last copy of the crop (torch's fast uint8 kernel) and draws
    # the flip itself; neither may change a pixel or a random draw against torchvision's own.
    processor = ViTImageProcessor(size={"height": 224, "width": 224})
    fast_train, _ = build_transforms(processor, fast_decode=True)
    reference = v2.Compose(
        [DecodeToTensor(), v2.RandomResizedCrop((224, 224), antialias=True), v2.RandomHorizontalFlip()]
    )
    flips = 0
    for i, photo in enumerate(sorted(MINI.glob("images/*/*.jpg"))[:24]):
        value = {"bytes": photo.read_bytes(), "path": str(photo)}
        torch.manual_seed(i)
        ours, after_ours = fast_train(value), torch.rand(1)
        torch.manual_seed(i)
        theirs, after_theirs = reference(value), torch.rand(1)
        assert torch.equal(ours, theirs) and torch.equal(after_ours, after_theirs), photo.name
        torch.manual_seed(i)
        flips += not torch.equal(ours, v2.Compose(reference.transforms[:2])(value))
    assert 0 < flips < 24  # both branches of the flip were compared


@needs_mini
def test_cached_tensor_path_serves_the_pixels_of_the_uncached_one():
    # The cache holds PIL's decode; torchvision's libjpeg-turbo decodes these photos to the same
    # bytes, so a seed gives the same training batch with or without data.cache.
    spec = data_spec("data=food101_local", f"data.root={MINI}", "data.per_class=2", "data.test_per_class=1")
    processor = ViTImageProcessor(size={"height": 64, "width": 64})
    plain, cached = load_splits(spec, seed=0), load_splits(spec, seed=0)
    plain = attach_transforms(plain, processor, fast_decode=True)
    cached = attach_transforms(cached, processor, fast_decode=True, cache=True)
    torch.manual_seed(0)
    first = collate([plain.train[i] for i in range(len(plain.train))])
    torch.manual_seed(0)
    second = collate([cached.train[i] for i in range(len(cached.train))])
    assert torch.equal(first["pixel_values"], second["pixel_values"]) and torch.equal(first["labels"], second["labels"])
    torch.manual_seed(1)
    assert not torch.equal(
        first["pixel_values"], collate([cached.train[i] for i in range(len(cached.train))])["pixel_values"]
    )


@needs_mini
def test_fast_decode_decodes_with_torchcodec_to_pils_pixels_on_real_photos():
    decode = DecodeToTensor()
    assert decode.decode_jpeg.__module__.startswith("torchcodec.")  # not torchvision's deprecated one
    photos = sorted(MINI.glob("images/*/*.jpg"))[::10]
    with_exif = 0
    for photo in photos:
        data = photo.read_bytes()
        with_exif += b"Exif\x00\x00" in data[:1024]
        pil = torch.from_numpy(np.array(Image.open(photo).convert("RGB"))).permute(2, 0, 1)
        assert torch.equal(decode({"bytes": data, "path": None}), pil), photo.name
    assert with_exif > 10  # photos carrying EXIF (which TorchCodec reads) were among those compared


def test_fast_decode_leaves_exif_orientation_unapplied_as_pil_does():
    # TorchCodec turns a JPEG by its EXIF orientation; PIL (eval, peft-food-predict) does not.
    image = Image.new("RGB", (40, 24), (0, 0, 0))
    image.paste((255, 0, 0), (0, 0, 12, 8))  # a red corner: any turn or mirror moves it
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=95, exif=exif.tobytes())
    data = buffer.getvalue()
    pil = torch.from_numpy(np.array(Image.open(io.BytesIO(data)).convert("RGB"))).permute(2, 0, 1)
    assert torch.equal(DecodeToTensor()({"bytes": data, "path": None}), pil)


def test_fast_decode_without_torchcodec_is_a_one_line_error_not_the_slow_path(monkeypatch):
    processor = ViTImageProcessor(size={"height": 16, "width": 16})
    monkeypatch.setitem(sys.modules, "torchcodec.decoders", None)  # what import sees when it is not installed
    with pytest.raises(UserError, match="pip install torchcodec, or set data.fast_decode=false") as err:
        build_transforms(processor, fast_decode=True)
    assert "\n" not in str(err.value)
    build_transforms(processor, fast_decode=False)  # the PIL path does not need it


@needs_mini
def test_a_fast_decode_data_loading_step_raises_no_deprecation_warning():
    spec = data_spec("data=food101_local", f"data.root={MINI}", "data.per_class=2", "data.test_per_class=1")
    splits = attach_transforms(
        load_splits(spec, seed=0), ViTImageProcessor(size={"height": 32, "width": 32}), fast_decode=True
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")  # every warning recorded, whatever pytest's filters say
        batch = collate([splits.train[i] for i in range(len(splits.train))])
    assert batch["pixel_values"].shape == (len(splits.train), 3, 32, 32)
    deprecations = [f"{w.filename}: {w.message}" for w in caught if issubclass(w.category, DeprecationWarning)]
    assert not deprecations  # torchvision's decode_jpeg warned here on every image
