"""The input geometry, owned once: the model's input size and the eval resize as the checkpoint's
image processor gives them, the eval resize + centre crop, and that same eval as a transformers
image processor for exports. The train transforms, the data store, the benchmark and the export
all take their sizes from here.
"""

from __future__ import annotations

from typing import Any

from PIL import Image as PILImage


def input_sizes(processor: Any) -> tuple[tuple[int, int], int]:
    """(model input height/width, eval resize of the shorter side), as the processor says:
    resize to `size`, then centre-crop to `crop_size` where it crops (DeiT, DINOv2: 256 -> 224)."""
    size = processor.size
    resize = size["height"] if "height" in size else size["shortest_edge"]
    crop = getattr(processor, "crop_size", None) if getattr(processor, "do_center_crop", False) else None
    if crop:
        return (crop["height"], crop["width"]), resize
    if "height" in size:
        return (size["height"], size["width"]), resize
    return (resize, resize), resize


def eval_geometry(resize: int, size: tuple[int, int]) -> Any:
    """As the seed: resize the shorter side, then crop the centre (no squashing of the aspect).
    One owner for eval pixels: the JPEG path and the data store's eval crops both apply this."""
    from torchvision import (
        transforms as T,  # torchvision loads with pixels, not with the command line
    )

    return T.Compose([T.Resize(resize), T.CenterCrop(size)])


def eval_processor(processor: Any) -> Any:
    """The eval transform above as a transformers image processor, for exported models: resize the
    shorter side, centre-crop, scale and normalise as the run evaluated, so pipeline() on an export
    scores as the run did. (A ViTImageProcessor would squash the image to a square instead.)
    BitImageProcessor's default torchvision backend crops where torchvision's CenterCrop does;
    its tensor resize differs from PIL's by at most a grey level on a few pixels."""
    from transformers import BitImageProcessor

    (height, width), resize = input_sizes(processor)
    return BitImageProcessor(
        do_resize=True,
        size={"shortest_edge": resize},
        resample=PILImage.Resampling.BILINEAR,
        do_center_crop=True,
        crop_size={"height": height, "width": width},
        do_rescale=True,
        rescale_factor=1 / 255,
        do_normalize=True,
        image_mean=list(processor.image_mean),
        image_std=list(processor.image_std),
        do_convert_rgb=True,
    )
