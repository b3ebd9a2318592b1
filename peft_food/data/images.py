"""Reading image files safely: decode fully, convert any mode to RGB, and turn every way a
file can be unusable into one line (`BadImage`) instead of a crash mid-epoch.

Used by training (screening a dataset before the first step) and by peft-food-predict.
"""

from __future__ import annotations

import hashlib
import io
import warnings
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Callable, Iterable, Iterator

import numpy as np
from PIL import Image as PILImage

from peft_food.progress import bar

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"}

MIN_SIDE = 8  # below this an image carries no usable content for a 16x16-patch ViT


class BadImage(Exception):
    """An image file that cannot be used; the message says why, without the path."""


def to_rgb(img: PILImage.Image) -> PILImage.Image:
    """3-channel 8-bit RGB from any mode: greyscale, palette, RGBA, CMYK, 16-bit and float."""
    if img.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        # convert("RGB") would clip 16-bit values at 255 (an all-white image); scale instead.
        depth = 65535.0 if img.mode.startswith("I;16") else max(float(np.asarray(img).max()), 1.0)
        pixels = np.clip(np.asarray(img, dtype=np.float64) / depth * 255.0, 0, 255).astype(np.uint8)
        img = PILImage.fromarray(pixels, mode="L")
    return img.convert("RGB")


def open_rgb(file: Path | IO[bytes]) -> PILImage.Image:
    """Decode `file` (a path, or its bytes in a BytesIO) fully into RGB, or raise BadImage with a
    one-line reason."""
    try:
        with warnings.catch_warnings():
            # Above MAX_IMAGE_PIXELS PIL only warns (it raises at twice that): treat both as fatal.
            warnings.simplefilter("error", PILImage.DecompressionBombWarning)
            with PILImage.open(file) as img:
                img.load()  # decode now: truncated or corrupt data fails here, not mid-training
                if min(img.size) < MIN_SIDE:
                    raise BadImage(
                        f"image is {img.size[0]}x{img.size[1]} pixels, too small to classify "
                        f"(needs at least {MIN_SIDE}x{MIN_SIDE})"
                    )
                return to_rgb(img)
    except BadImage:
        raise
    except (PILImage.DecompressionBombError, PILImage.DecompressionBombWarning):
        raise BadImage(
            f"image is larger than the decompression-bomb limit ({PILImage.MAX_IMAGE_PIXELS:,} pixels)"
        ) from None
    except PILImage.UnidentifiedImageError:
        raise BadImage("not an image file (unrecognised format)") from None
    except (OSError, SyntaxError, ValueError) as err:
        raise BadImage(f"corrupt or unreadable image ({err})") from None


def content_digest(data: bytes) -> bytes:
    """16 bytes naming a file's content: byte-identical files, whatever their names, share it
    (data/disjoint.py finds an image in two splits by it). SHA-256, as the CPU's SHA instructions
    (x86 SHA-NI, ARMv8) run it: ~1 GB/s a core, three times blake2b's or md5's there, a few
    percent of decoding the same bytes."""
    return hashlib.sha256(data).digest()[:16]


def read_rgb(path: Path) -> tuple[PILImage.Image, bytes]:
    """`path` decoded fully into RGB and its content digest, from one read of the file (the
    screening hashes the bytes it decodes: no second pass over the dataset), or BadImage."""
    try:
        data = path.read_bytes()
    except OSError as err:
        raise BadImage(f"corrupt or unreadable image ({err})") from None
    return open_rgb(io.BytesIO(data)), content_digest(data)


def in_threads(fn: Callable[[int], Any], items: Iterable[int], *, workers: int) -> Iterator[Any]:
    """fn over items in threads (PIL decodes without the GIL), results in order, at most 4 per
    worker in flight: memory stays bounded when the consumer is slower than decoding
    (Executor.map would queue every result). The one decode loop: screening, the decode-once
    cache and the data store's build all run through it."""
    with ThreadPoolExecutor(max_workers=workers) as pool:
        pending: deque = deque()
        for item in items:
            pending.append(pool.submit(fn, item))
            if len(pending) >= 4 * workers:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()


def as_rgb(value: Any) -> PILImage.Image:
    """An image as a dataset or the decode-once cache holds it (a PIL image, decoded HWC pixels, or an
    undecoded {"bytes", "path"} file) as RGB PIL: the one place PIL decodes for the transforms."""
    if isinstance(value, np.ndarray):
        return PILImage.fromarray(value)
    if isinstance(value, dict):
        value = PILImage.open(io.BytesIO(value["bytes"]) if value.get("bytes") else value["path"])
    return to_rgb(value)


@dataclass
class Screening:
    """What decoding every image of a list once found: the unusable ones (position -> reason) and
    each image's content digest (b"" for an unusable one)."""

    bad: dict[int, str]
    digests: list[bytes]


def check_images(paths: list[Path], *, workers: int = 8) -> Screening:
    """Fully decode every image once, hashing the bytes it decodes."""

    def screen(i: int) -> bytes | str:
        try:
            return read_rgb(paths[i])[1]
        except BadImage as err:
            return str(err)

    found = list(bar(in_threads(screen, range(len(paths)), workers=workers), total=len(paths), desc="screening images"))
    return Screening(
        bad={i: why for i, why in enumerate(found) if isinstance(why, str)},
        digests=[digest if isinstance(digest, bytes) else b"" for digest in found],
    )
