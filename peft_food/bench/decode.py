"""The JPEG decoders side by side on the same files: TorchCodec (what data.fast_decode decodes
with), torchvision's decode_jpeg (what it decoded with before; deprecated since torchvision 0.29)
and PIL (eval, the decode-once cache, data stores). For each: the largest pixel difference from
TorchCodec's decode, and images/s on one core, best of `repeats` rounds that take every decoder
in turn (a slow spell of a shared machine then lowers one sample of each, not one decoder)."""

from __future__ import annotations

import time
import warnings
from functools import partial
from pathlib import Path
from typing import Any, Callable

import torch
from datasets import Image as ImageFeature
from torchvision.transforms import functional as F

from peft_food.data.images import as_rgb, content_digest
from peft_food.data.splits import Splits
from peft_food.data.transforms import DecodeToTensor

Decoder = Callable[[bytes], torch.Tensor]


def bench_decoders(splits: Splits, *, repeats: int) -> dict[str, Any]:
    files = jpeg_files(splits)
    decoders = jpeg_decoders()
    reference: list[torch.Tensor] = []
    differences: dict[str, list[int]] = {name: [] for name in decoders if name != "torchcodec"}

    def compare(name: str, index: int, pixels: torch.Tensor) -> None:
        if name == "torchcodec":
            reference.append(pixels)
        else:
            differences[name].append((pixels.int() - reference[index].int()).abs().max().item())

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # one core each, as in a dataloader worker
    try:
        # Round one's decodes are also the ones compared (TorchCodec's first: the reference), the
        # comparison left out of the time: every photo is decoded `repeats` times per decoder, not
        # once more for the comparison.
        rates = {name: _rate(decode, files, each=partial(compare, name)) for name, decode in decoders.items()}
        for _ in range(repeats - 1):
            for name, decode in decoders.items():
                rates[name] = max(rates[name], _rate(decode, files))
    finally:
        torch.set_num_threads(threads)
    return {
        "images": len(files),
        "img_per_s_one_core": rates,
        "max_abs_diff_from_torchcodec": {name: max(d) for name, d in differences.items()},
        "images_differing_from_torchcodec": {name: sum(x > 0 for x in d) for name, d in differences.items()},
        **{f"torchcodec_over_{name}": rates["torchcodec"] / rates[name] for name in decoders if name != "torchcodec"},
    }


def jpeg_files(splits: Splits) -> list[bytes]:
    """Every distinct JPEG of the splits (by content: val may be test, or part of train), read once."""
    seen: dict[bytes, bytes] = {}
    for ds in (splits.train, splits.val, splits.test):
        if ds is None or not isinstance(ds.features.get("image"), ImageFeature):
            continue
        for value in ds.cast_column("image", ImageFeature(decode=False)).with_format(None)["image"]:
            data = value["bytes"] or Path(value["path"]).read_bytes()
            if data[:2] == b"\xff\xd8":  # JPEG start-of-image marker
                seen.setdefault(content_digest(data), data)
    return list(seen.values())


def jpeg_decoders() -> dict[str, Decoder]:
    """name -> bytes to uint8 RGB (3, H, W), each the way its path calls it."""
    fast = DecodeToTensor()
    decoders: dict[str, Decoder] = {
        "torchcodec": lambda data: fast({"bytes": data, "path": None}),
        "pil": lambda data: F.pil_to_tensor(as_rgb({"bytes": data, "path": None})),
    }
    try:
        from torchvision.io import ImageReadMode
        from torchvision.io import decode_jpeg as torchvision_decode
    except ImportError:  # removed from torchvision: nothing left to compare against
        return decoders

    def legacy(data: bytes) -> torch.Tensor:
        with warnings.catch_warnings():  # its deprecation is why it is only compared here
            warnings.filterwarnings("ignore", message="The image decoding and encoding capabilities of TorchVision")
            return torchvision_decode(torch.frombuffer(bytearray(data), dtype=torch.uint8), mode=ImageReadMode.RGB)

    decoders["torchvision"] = legacy
    return decoders


def _rate(decode: Decoder, files: list[bytes], *, each: Callable[[int, torch.Tensor], None] | None = None) -> float:
    """Images/s decoding `files`; `each(index, pixels)` is called on every decode, outside the time."""
    spent = 0.0
    for index, data in enumerate(files):
        started = time.perf_counter()
        pixels = decode(data)
        spent += time.perf_counter() - started
        if each is not None:
            each(index, pixels)
    return len(files) / spent
