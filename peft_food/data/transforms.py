"""Preprocessing: the seed's augmentations sized by the checkpoint's image processor, attached
lazily to the datasets, and the collate that batches them.

    train: RandomResizedCrop + RandomHorizontalFlip     eval: Resize(shorter side) + CenterCrop

The train path (`data.fast_decode=true`, with uint8) decodes JPEGs with TorchCodec's
libjpeg-turbo straight into a uint8 tensor and crops, resizes (bilinear, antialiased) and flips
the tensor (`TensorAugment`): the same augmentations with the same random draws as PIL's decode +
crop + resize, faster per core (figures: docs/performance.md). The decoded pixels are PIL's, bit
for bit; only the resampling arithmetic differs from PIL's, by a grey level or two. Eval always
goes through PIL as the seed does, and as peft-food-predict does, so eval accuracy and
predictions agree.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from datasets import Dataset
from datasets import Image as ImageFeature
from torchvision import transforms as T
from torchvision.transforms import functional as F
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as F2

from peft_food.data.geometry import eval_geometry, input_sizes
from peft_food.data.images import as_rgb, in_threads
from peft_food.data.splits import Splits
from peft_food.data.store import Store
from peft_food.errors import UserError, first_line
from peft_food.progress import bar

log = logging.getLogger(__name__)


def jpeg_decoder() -> Callable[..., torch.Tensor]:
    """TorchCodec's JPEG decoder, the one data.fast_decode decodes with (torchvision's own is
    deprecated since 0.29 in favour of it), or a one-line error: the fast path never turns
    silently into the PIL one."""
    try:
        from torchcodec.decoders import decode_jpeg
    except (ImportError, OSError, RuntimeError) as err:  # not installed, or its library fails to load
        raise UserError(
            f"data.fast_decode=true decodes JPEGs with TorchCodec, which cannot be imported ({first_line(err)}): "
            "pip install torchcodec, or set data.fast_decode=false"
        ) from None
    return decode_jpeg


def without_orientation(data: bytes) -> bytearray:
    """A JPEG's bytes with each APP1 segment (where EXIF lives) before the image data relabelled
    APP15, which decoders skip. TorchCodec turns an image by its EXIF orientation; PIL, which decodes
    eval images and peft-food-predict's, does not (nor did torchvision's decode_jpeg), so train and
    eval see a photo the same way up."""
    out = bytearray(data)  # writable: torch.frombuffer then shares it without a warning
    pos = 2  # after the start-of-image marker
    while pos + 4 <= len(out) and out[pos] == 0xFF:
        marker = out[pos + 1]
        if marker == 0xFF:  # fill byte before a marker
            pos += 1
            continue
        if marker in (0xDA, 0xD9):  # start of scan / end of image: no more header segments
            break
        if marker == 0xE1:
            out[pos + 1] = 0xEF
        pos += 2 + int.from_bytes(out[pos + 2 : pos + 4], "big")
    return out


class DecodeToTensor:
    """An image as opened (file bytes/path not yet decoded, a PIL image, or decoded HWC pixels
    from the cache) -> uint8 RGB (3, H, W). JPEGs decode with TorchCodec's libjpeg-turbo (greyscale
    and CMYK to RGB, as PIL converts them; EXIF orientation not applied, as PIL does not); anything
    else, or a JPEG TorchCodec cannot read (it raises where PIL may still decode), goes through PIL."""

    def __init__(self) -> None:
        self.decode_jpeg = jpeg_decoder()

    def __call__(self, value: Any) -> torch.Tensor:
        if isinstance(value, np.ndarray):
            return torch.from_numpy(value).permute(2, 0, 1)  # a view: the crop reads it in place
        if isinstance(value, dict):
            data = value.get("bytes") or Path(value["path"]).read_bytes()
            if data[:2] == b"\xff\xd8":  # JPEG start-of-image marker
                try:
                    # A (3, H, W) view of HWC pixels: channels-last, the layout the resize wants.
                    return self.decode_jpeg(torch.frombuffer(without_orientation(data), dtype=torch.uint8), mode="RGB")
                except RuntimeError:
                    pass
            value = {"bytes": data, "path": value.get("path")}  # read once: PIL decodes these bytes
        return F.pil_to_tensor(as_rgb(value))


def resize_and_flip(region: torch.Tensor, size: list[int]) -> torch.Tensor:
    """The tail every tensor train path shares after its crop (3, h, w) uint8: the antialiased
    bilinear resize to `size`, then RandomHorizontalFlip's one torch.rand draw (it flips when
    rand < 0.5), in the order the PIL transforms draw, so a seed makes the same flip on every path."""
    # Copied channels-last first: torch's uint8 antialiased resize has a fast kernel for that
    # layout, ~1.5x faster than on the strided crop, and bit-identical to it.
    region = region.unsqueeze(0).contiguous(memory_format=torch.channels_last)
    out = F2.resize_image(region, size, antialias=True)[0]
    if torch.rand(1) < 0.5:
        out = out.flip(-1)
    return out


class TensorAugment:
    """Decode, then RandomResizedCrop (bilinear, antialiased) + RandomHorizontalFlip(0.5) on the
    uint8 tensor. The random draws are torchvision's own (RandomResizedCrop.make_params, then one
    torch.rand for the flip), in the same order as the PIL transforms make them, so a seed picks
    the same region and flip on either path."""

    def __init__(self, size: tuple[int, int]):
        self.size = list(size)
        self.decode = DecodeToTensor()
        self.crop = v2.RandomResizedCrop(size, antialias=True)  # its scale/ratio draw

    def __call__(self, value: Any) -> torch.Tensor:
        image = self.decode(value)
        box = self.crop.make_params([image])
        region = image[:, box["top"] : box["top"] + box["height"], box["left"] : box["left"] + box["width"]]
        return resize_and_flip(region, self.size)


def build_transforms(processor: Any, *, uint8: bool = True, fast_decode: bool = False) -> tuple[Any, Any]:
    """The seed's augmentations, sized by the checkpoint's own image processor. Both take an
    image as datasets gives it (a PIL image, or an undecoded file) and make it RGB.

    uint8=True stops at a uint8 tensor: 4x less data crosses from the dataloader workers, and
    `normalize` then scales a whole batch at once (on the GPU when there is one) instead of image
    by image; uint8=False is the seed recipe (ToTensor + Normalize per image).
    fast_decode=True (with uint8) decodes and augments train images as tensors (see above)."""
    size, resize = input_sizes(processor)
    tail = (
        [T.PILToTensor()] if uint8 else [T.ToTensor(), T.Normalize(mean=processor.image_mean, std=processor.image_std)]
    )
    if uint8 and fast_decode:
        train = TensorAugment(size)
    else:
        train = T.Compose([T.Lambda(as_rgb), T.RandomResizedCrop(size), T.RandomHorizontalFlip(), *tail])
    eval_ = T.Compose([T.Lambda(as_rgb), eval_geometry(resize, size), *tail])
    return train, eval_


def normalize(pixels: torch.Tensor, *, mean: list[float], std: list[float]) -> torch.Tensor:
    """uint8 batch (N, 3, H, W) -> float, scaled as ToTensor + Normalize would, bit for bit."""
    if pixels.dtype != torch.uint8:
        return pixels
    mean_t = torch.tensor(mean, dtype=torch.float32, device=pixels.device).view(1, -1, 1, 1)
    std_t = torch.tensor(std, dtype=torch.float32, device=pixels.device).view(1, -1, 1, 1)
    # In place on the fresh float copy: the same arithmetic (bit for bit), a third of the memory traffic.
    return pixels.float().div_(255).sub_(mean_t).div_(std_t)


def _apply(transform: Any, by_index: Callable[[int], Any] | None = None):
    def batch_transform(batch: dict[str, list]) -> dict[str, list]:
        if by_index is not None:
            images = [by_index(i) for i in batch["index"]]  # the cache's arrays, or the store's positions
        else:
            # Decoded PIL images, or undecoded files (fast_decode); the transforms make them RGB
            # (Food-101 has greyscale and CMYK JPEGs).
            images = batch["image"]
        return {"pixel_values": [transform(img) for img in images], "labels": batch["label"]}

    return batch_transform


class StoreAugment:
    """TensorAugment's crop, resize and flip on a data store's images (store.py), given their
    position. The crop is drawn on the image's original size with the same draws as the JPEG path
    (same seed: same region relative to the image, same flip), then scaled to the stored size, which
    is the original unless the store downscaled it; only the rows the crop covers are read."""

    def __init__(self, store: Store, size: tuple[int, int]):
        self.store, self.size = store, list(size)
        self.crop = v2.RandomResizedCrop(size, antialias=True)

    def __call__(self, i: int) -> torch.Tensor:
        orig_h, orig_w = self.store.original_size(i)
        height, width = self.store.size(i)
        # make_params only asks the input's size: a stride-0 view of that size allocates nothing.
        box = self.crop.make_params([torch.empty(1, 1, 1).expand(3, orig_h, orig_w)])
        top, bottom = _scaled(box["top"], box["height"], scale=height / orig_h, limit=height)
        left, right = _scaled(box["left"], box["width"], scale=width / orig_w, limit=width)
        rows = torch.from_numpy(self.store.rows(i, top, bottom - top))  # HWC
        return resize_and_flip(rows[:, left:right].permute(2, 0, 1), self.size)


def _scaled(start: int, length: int, *, scale: float, limit: int) -> tuple[int, int]:
    """A crop's [start, end) on the original size -> on the stored size (unchanged at scale 1)."""
    if scale == 1:
        return start, start + length
    first = min(round(start * scale), limit - 1)
    return first, min(max(round((start + length) * scale), first + 1), limit)


class StoreEval:
    """A data store's eval image: already the final crop, as the JPEG path's eval transform makes it."""

    def __init__(self, store: Store):
        self.store = store

    def __call__(self, i: int) -> torch.Tensor:
        return torch.from_numpy(self.store.rows(i)).permute(2, 0, 1)


def decode_all(ds: Dataset, *, workers: int = 8) -> list[np.ndarray]:
    """Every image decoded once to RGB uint8 (threads: PIL decodes without the GIL)."""
    plain = ds.with_format(None)

    def decode(i: int) -> np.ndarray:
        # np.array, not asarray: torch.from_numpy wants a writable array (asarray of a PIL image is not).
        return np.array(as_rgb(plain[i]["image"]))

    return list(
        bar(in_threads(decode, range(len(plain)), workers=workers), total=len(plain), desc="decoding once (data.cache)")
    )


def attach_transforms(
    splits: Splits, processor: Any, *, uint8: bool = True, cache: bool = False, fast_decode: bool = False
) -> Splits:
    """`splits` with decode + augment attached, run lazily per batch in the dataloader workers
    (with_transform: new datasets, `splits` itself is left as it was, so one loaded dataset can
    be attached several ways).

    Splits read through data stores (data.store=true) take their pixels from the stores, already
    decoded (uint8 always; the trainer normalises the batch). Otherwise:
    cache=True decodes every image once up front and keeps the RGB pixels in RAM (about 0.6 MB per
    512x384 Food-101 photo), so later epochs only crop, resize and flip (as tensors with
    fast_decode); the augmentations are unchanged, and the cached pixels are PIL's exact decode.
    fast_decode=True hands the train transform the undecoded file, for TorchCodec to decode."""
    if splits.stores:
        size, _ = input_sizes(processor)
        chosen = {
            "train": (StoreAugment(splits.stores["train"], size), _position),
            **{name: (StoreEval(splits.stores[name]), _position) for name in _evaluated(splits)},
        }
        return _attached(splits, chosen)
    train_tf, eval_tf = build_transforms(processor, uint8=uint8, fast_decode=fast_decode)
    chosen = {}
    for name in ("train", *_evaluated(splits)):
        transform = train_tf if name == "train" else eval_tf
        ds = getattr(splits, name)
        if (
            name == "train"
            and fast_decode
            and uint8
            and not cache
            and isinstance(ds.features.get("image"), ImageFeature)
        ):
            # datasets would decode the whole image before our transform sees it.
            ds = ds.cast_column("image", ImageFeature(decode=False))
            splits = replace(splits, train=ds)
        by_index = None
        if cache:
            pixels = decode_all(ds)
            splits = replace(splits, **{name: ds.add_column("index", list(range(len(ds))))})
            log.info("cached %d decoded %s images (%.0f MB)", len(pixels), name, sum(p.nbytes for p in pixels) / 2**20)
            by_index = pixels.__getitem__
        chosen[name] = (transform, by_index)
    return _attached(splits, chosen)


def _evaluated(splits: Splits) -> tuple[str, ...]:
    # Under the seed protocol val and test are one dataset: attached once, still one after;
    # protocol retrain has no val.
    if splits.selects_on_test:
        return ("val",)
    return ("test",) if splits.val is None else ("val", "test")


def _position(i: int) -> int:
    return i  # store transforms take the image's position in the store


def _attached(splits: Splits, chosen: dict[str, tuple[Any, Callable[[int], Any] | None]]) -> Splits:
    attached = {}
    for name, (transform, by_index) in chosen.items():
        ds = getattr(splits, name)
        # By index (cache, store), only the index and label columns are read: no image is decoded.
        attached[name] = ds.with_transform(
            _apply(transform, by_index), columns=["index", "label"] if by_index is not None else None
        )
    if "test" not in attached:
        attached["test"] = attached["val"]
    return replace(splits, **attached)


def collate(examples: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
    return {
        "pixel_values": torch.stack([e["pixel_values"] for e in examples]),
        "labels": torch.tensor([e["labels"] for e in examples], dtype=torch.long),
    }
