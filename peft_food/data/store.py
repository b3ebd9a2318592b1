"""Preprocess once, train many: decoded images on disk, built by the first run (or ahead of time)
and read by every later run, sweep job, DDP rank and SLURM task that needs the same pixels.

    peft-food-prepare data=food101_local data.root=../shared/data/food101-mini     # ahead of an array
    peft-food-train data=food101_local data.root=... data.store=true               # builds it if missing

A store holds one part of a dataset (an image list: Food-101's train.txt, a Hub split) in one form:
  train: every image as RGB, its shorter side at most `side` (larger ones downscaled by PIL's
         antialiased bilinear resize), at its own aspect. The train crop is drawn on the original
         size and scaled to the stored one, so a seed crops the same region as from the JPEG.
  eval:  every image's final eval crop (shorter side resized, centre crop: geometry.eval_geometry,
         the JPEG path's own), so eval pixels are identical by construction.
Building one also screens the images (it decodes every one, hashing the bytes it decodes): the
unusable ones are listed in its meta.json and every image's digest is kept, and later runs apply
data.bad_images to that list, and check the splits are disjoint, without reading any image. A part that
needs both forms (an eval set carved out of it) gets both from one decode of each image.

On disk, `<store_dir>/<part>-<form>-<key>/`:
  pixels.u8    the HWC uint8 images back to back
  index.npy    one row per image: byte offset, stored height, width, original height, width
  digests.bin  each image's content digest (16 bytes, images.content_digest; zeros for an unusable
               one): later runs find an image in two splits (data/disjoint.py) without reading it
  meta.json    what was stored (form, count, bytes, the unusable images), written last
The key hashes everything that changes the content: each file's absolute path, size and mtime
(or a Hub dataset's fingerprint and split), the form and its sizes, and FORMAT. A changed dataset
gets a new key, so a stale store is never read. A build runs under an flock on `<name>.lock`
(other processes wait for it, then reuse its store) in `<name>.tmp-<pid>/`, renamed into place
only when complete: a build killed half-way leaves a tmp dir that is never read, and is removed
by the next build.
"""

from __future__ import annotations

import errno
import functools
import hashlib
import io
import json
import logging
import os
import shutil
import time
from contextlib import ExitStack
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image as PILImage

from peft_food.data.geometry import eval_geometry, input_sizes
from peft_food.data.images import BadImage, content_digest, in_threads, open_rgb, read_rgb
from peft_food.errors import DataError
from peft_food.files import FileLock, fsync_dir, write_atomic
from peft_food.progress import bar

log = logging.getLogger(__name__)

# Bump when the layout or the pixels' arithmetic changes: every old store is then rebuilt.
# 2: digests.bin (a store without it could not show its images are not in another split).
FORMAT = 2
DIGEST_SIZE = 16  # bytes of images.content_digest
# A full disk or quota shows up as any of these (EFBIG: a file-size limit, e.g. ulimit -f).
DISK_FULL = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)


def default_dir() -> Path:
    """$PEFT_FOOD_CACHE/stores, else ~/.cache/peft_food/stores (XDG_CACHE_HOME honoured)."""
    if os.environ.get("PEFT_FOOD_CACHE"):
        return Path(os.environ["PEFT_FOOD_CACHE"]) / "stores"
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache) / "peft_food" / "stores"


@dataclass(frozen=True)
class Form:
    """How a part's images are stored: `train` (shorter side at most `side`) or `eval` (the final
    crop: shorter side resized to `resize`, centre-cropped to height x width)."""

    kind: str
    side: int = 0
    resize: int = 0
    height: int = 0
    width: int = 0

    @property
    def label(self) -> str:
        return f"train{self.side}" if self.kind == "train" else f"eval{self.resize}-{self.height}x{self.width}"

    def apply(self, img: PILImage.Image) -> PILImage.Image:
        if self.kind == "eval":
            return eval_geometry(self.resize, (self.height, self.width))(img)
        short = min(img.size)
        if short <= self.side:
            return img  # stored as decoded: the same pixels the JPEG path crops
        scale = self.side / short
        size = (self.side, round(img.height * scale)) if img.width == short else (round(img.width * scale), self.side)
        return img.resize(size, PILImage.Resampling.BILINEAR)


@dataclass(frozen=True)
class Plan:
    """The stores a run reads: the two forms at its model's sizes, and where they live."""

    train: Form
    eval: Form
    root: Path
    workers: int


def store_plan(processor: Any, *, side: int | None, store_dir: str | None) -> Plan:
    """The data stores a run at this processor's sizes reads: train images with their shorter side
    at most `side` (null: twice the input side, so a crop of a quarter of the image or more still
    has input-size pixels), eval images as the eval transform's final crop."""
    (height, width), resize = input_sizes(processor)
    return Plan(
        train=Form("train", side=side or 2 * max(height, width)),
        eval=Form("eval", resize=resize, height=height, width=width),
        root=Path(store_dir) if store_dir else default_dir(),
        workers=os.cpu_count() or 1,
    )


# --- what a store is built from ----------------------------------------------------------------


class Images:
    """A part's images: how many, what identifies their content, and how to open one."""

    def __len__(self) -> int:
        raise NotImplementedError

    def fingerprint(self) -> str:
        raise NotImplementedError

    def read(self, i: int) -> tuple[PILImage.Image, bytes]:
        """Image i decoded to RGB and its content digest, from one read of it, or BadImage."""
        raise NotImplementedError

    def describe(self, i: int) -> str:
        raise NotImplementedError


class FileImages(Images):
    def __init__(self, paths: list[Path]):
        self.paths = paths

    def __len__(self) -> int:
        return len(self.paths)

    def fingerprint(self) -> str:
        digest = hashlib.sha256()
        for path in self.paths:  # a stat per file: ~10 us, no read
            stat = path.stat()
            digest.update(f"{os.path.abspath(path)}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
        return digest.hexdigest()

    def read(self, i: int) -> tuple[PILImage.Image, bytes]:
        return read_rgb(self.paths[i])

    def describe(self, i: int) -> str:
        return str(self.paths[i])


class DatasetImages(Images):
    """A `datasets.Dataset`'s image column (the Hub's parquet): its fingerprint names its content."""

    def __init__(self, ds: Any, *, name: str):
        from datasets import Image as ImageFeature

        self.ds = ds.cast_column("image", ImageFeature(decode=False)).with_format(None)
        self.name = name

    def __len__(self) -> int:
        return len(self.ds)

    def fingerprint(self) -> str:
        return hashlib.sha256(f"{self.name}\0{self.ds._fingerprint}".encode()).hexdigest()

    def read(self, i: int) -> tuple[PILImage.Image, bytes]:
        value = self.ds[i]["image"]
        if not value.get("bytes"):
            return read_rgb(Path(value["path"]))
        return open_rgb(io.BytesIO(value["bytes"])), content_digest(value["bytes"])

    def describe(self, i: int) -> str:
        return f"{self.name}[{i}]"


# --- reading -----------------------------------------------------------------------------------


class Store:
    """A complete store, read with pread: only the rows a crop needs, into a fresh buffer, so
    nothing of the store stays resident in this process (a page-cache hit is a memcpy)."""

    def __init__(self, path: Path):
        self.path = path
        meta = json.loads((path / "meta.json").read_text())
        self.form = Form(**meta["form"])
        self.bad: dict[int, str] = {int(i): why for i, why in meta["bad"].items()}
        self.index = np.load(path / "index.npy")
        raw = (path / "digests.bin").read_bytes()
        self.digests = [raw[k : k + DIGEST_SIZE] for k in range(0, len(raw), DIGEST_SIZE)]
        self.nbytes, self.build_s = int(meta["bytes"]), float(meta["build_s"])
        self._fd, self._pid = -1, -1

    def __len__(self) -> int:
        return len(self.index)

    def __getstate__(self) -> dict[str, Any]:  # to spawned workers: they open their own descriptor
        return {**self.__dict__, "_fd": -1, "_pid": -1}

    def _file(self) -> int:
        if self._pid != os.getpid():  # a forked worker opens its own (pread needs no shared offset)
            self._fd, self._pid = os.open(self.path / "pixels.u8", os.O_RDONLY), os.getpid()
        return self._fd

    def size(self, i: int) -> tuple[int, int]:
        return int(self.index[i, 1]), int(self.index[i, 2])

    def original_size(self, i: int) -> tuple[int, int]:
        return int(self.index[i, 3]), int(self.index[i, 4])

    def rows(self, i: int, top: int = 0, height: int | None = None) -> np.ndarray:
        """Rows top..top+height of image i as (height, width, 3) uint8 (all rows by default)."""
        offset, h, w = (int(v) for v in self.index[i, :3])
        height = h - top if height is None else height
        out = np.empty((height, w, 3), dtype=np.uint8)
        got = os.preadv(self._file(), [out], offset + top * w * 3)
        if got != out.nbytes:
            raise DataError(f"{self.path / 'pixels.u8'} is shorter than its index: delete {self.path} to rebuild it")
        return out


# --- building ----------------------------------------------------------------------------------


def ensure(images: Images, forms: list[Form], *, root: Path, part: str, workers: int) -> list[Store]:
    """The stores of `images` in each of `forms` under `root`: opened if complete; the missing ones
    are built together in one decode pass, once, under their locks (concurrent callers wait for the
    builder and open its stores)."""
    fingerprint = images.fingerprint()  # a stat per file: once for every form
    paths = [root / _name(part, form, fingerprint) for form in forms]
    if not all(_complete(path) for path in paths):
        try:
            root.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise DataError(
                f"cannot create the data store directory {root} ({err.strerror}): "
                f"set data.store_dir to a writable directory"
            ) from None
        with ExitStack() as held:
            for path in sorted(paths):  # one order in every process: two builders never deadlock
                held.enter_context(
                    FileLock(
                        root / f"{path.name}.lock",
                        wait=True,
                        on_wait=functools.partial(
                            log.info, "waiting for another process to finish building the data store %s", path.name
                        ),
                    )
                )
            # Another process may have built some while we waited.
            missing = [(form, path) for form, path in zip(forms, paths) if not _complete(path)]
            for _, path in missing:  # killed builds (we hold the lock: none is live)
                for stale in root.glob(f"{path.name}.tmp-*"):
                    shutil.rmtree(stale, ignore_errors=True)
            if missing:
                _build(images, missing, workers=workers)
    return [Store(path) for path in paths]


def _name(part: str, form: Form, fingerprint: str) -> str:
    key = json.dumps({"format": FORMAT, "form": asdict(form), "images": fingerprint}, sort_keys=True)
    return f"{part}-{form.label}-{hashlib.sha256(key.encode()).hexdigest()[:16]}"


def _complete(path: Path) -> bool:
    return (path / "meta.json").is_file()  # written last, in a tmp dir renamed into place


def _build(images: Images, targets: list[tuple[Form, Path]], *, workers: int) -> None:
    """Every target store in one pass over the images, each in its tmp dir, renamed into place."""
    tmps = [path.with_name(f"{path.name}.tmp-{os.getpid()}") for _, path in targets]
    started = time.perf_counter()
    try:
        for tmp in tmps:
            tmp.mkdir()
        forms = [form for form, _ in targets]
        written, bad, digests = _write_pixels(images, forms, [tmp / "pixels.u8" for tmp in tmps], workers=workers)
        build_s = round(time.perf_counter() - started, 2)
        for form, tmp, (index, total) in zip(forms, tmps, written):
            buffer = io.BytesIO()
            np.save(buffer, index)
            write_atomic(tmp / "index.npy", buffer.getvalue())
            write_atomic(tmp / "digests.bin", b"".join(digests))
            meta = {
                "format": FORMAT,
                "form": asdict(form),
                "count": len(images),
                "bytes": total,
                "bad": {str(i): why for i, why in bad.items()},
                "build_s": build_s,
                "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
                "example": images.describe(0) if len(images) else None,
            }
            write_atomic(tmp / "meta.json", json.dumps(meta, indent=1).encode())
        for tmp, (_, path) in zip(tmps, targets):
            os.rename(tmp, path)  # atomic: each store appears complete or not at all
        fsync_dir(tmps[0].parent)
    except OSError as err:
        for tmp in tmps:
            shutil.rmtree(tmp, ignore_errors=True)
        if err.errno in DISK_FULL:
            raise DataError(
                f"the disk holding {tmps[0].parent} is full ({err.strerror}) while building the data "
                f"store ({len(images)} images): free space, set data.store_dir to a larger disk, or "
                f"data.store=false"
            ) from None
        raise
    except BaseException:
        for tmp in tmps:
            shutil.rmtree(tmp, ignore_errors=True)
        raise
    for (_, path), (_, total) in zip(targets, written):
        log.info("built the data store %s: %d images, %.1f MB in %.1f s", path, len(images), total / 2**20, build_s)


def _write_pixels(
    images: Images, forms: list[Form], targets: list[Path], *, workers: int
) -> tuple[list[tuple[np.ndarray, int]], dict[int, str], list[bytes]]:
    """Decode each image once (threads: PIL releases the GIL), shape it to every form, append in
    order to each form's file. Returns each form's (index, bytes), the unusable images and every
    image's content digest."""
    indexes = [np.zeros((len(images), 5), dtype=np.int64) for _ in forms]
    offsets = [0] * len(forms)
    bad: dict[int, str] = {}
    digests = [bytes(DIGEST_SIZE)] * len(images)

    def prepare(i: int) -> tuple[list[np.ndarray], tuple[int, int], bytes] | str:
        try:
            img, digest = images.read(i)
        except BadImage as err:
            return str(err)
        return [np.ascontiguousarray(np.asarray(form.apply(img))) for form in forms], (img.height, img.width), digest

    with ExitStack() as files:
        outs = [files.enter_context(open(target, "wb", buffering=8 << 20)) for target in targets]
        done = in_threads(prepare, range(len(images)), workers=workers)
        desc = f"building the data store ({', '.join(form.kind for form in forms)})"
        for i, result in enumerate(bar(done, total=len(images), desc=desc)):
            if isinstance(result, str):
                bad[i] = result
                for index, offset in zip(indexes, offsets):
                    index[i] = (offset, 0, 0, 0, 0)
                continue
            shaped, (orig_h, orig_w), digests[i] = result
            for k, (out, pixels) in enumerate(zip(outs, shaped)):
                out.write(pixels.data)
                indexes[k][i] = (offsets[k], pixels.shape[0], pixels.shape[1], orig_h, orig_w)
                offsets[k] += pixels.nbytes
        for out in outs:
            out.flush()
            os.fsync(out.fileno())
    return list(zip(indexes, offsets)), bad, digests
