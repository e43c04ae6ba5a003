"""Image files and encoded bytes -> ``uint8 [H, W, 3]`` RGB, with Pillow, for any common mode.

``decode_image(source)`` (a path or encoded bytes) opens the image, refuses one of more than
``PIL.Image.MAX_IMAGE_PIXELS`` pixels (Pillow's decompression-bomb limit, 89,478,485 unless the
caller changes it; ``None`` turns the check off), applies its EXIF orientation, and converts it:

- 8-bit modes (``1``, ``L``, ``P``, ``RGB``, ``CMYK``, ``YCbCr``, ``LAB``, ``HSV`` ...) with
  Pillow's ``convert("RGB")``: a gray image is repeated on the three channels, a palette is
  looked up, CMYK uses Pillow's plain conversion (no colour profile);
- alpha (``RGBA``, ``LA``, ``PA``, a palette's transparency) is **dropped**: the colour channels are
  kept as stored, not composited on a background, as torchvision's ``ImageFolder`` loader and
  TensorFlow's ``decode_image(channels=3)`` do, so features match the backbones' own pipelines;
- 16-bit gray (``I;16*``, and ``I``, read as 16-bit) maps ``[0, 65535]`` onto ``[0, 255]`` by
  ``round(v / 257)``; 16-bit RGB PNGs are read by Pillow at 8 bits (their high byte);
- a floating-point image (``F``) has no defined range and is refused.

Any failure (not an image, truncated, a bomb, a read error) raises ``ImageReadError`` naming the
file and the reason in one line. ``check_image(path)`` decodes the file the cheap way (JPEG at
1/8 scale through Pillow's ``draft``, which still reads every byte of the compressed stream) to
tell unreadable files before an extraction starts.
"""

from __future__ import annotations

import io
import os

import numpy as np
from PIL import Image, ImageOps

SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")


class ImageReadError(ValueError):
    """An image file that cannot be decoded; the message names it and says why."""


def _one_line(err: BaseException) -> str:
    text = " ".join(str(err).split()) or type(err).__name__
    return text if len(text) <= 300 else text[:297] + "..."


def _check_size(image: Image.Image) -> None:
    limit = Image.MAX_IMAGE_PIXELS
    width, height = image.size
    if limit is not None and width * height > limit:
        raise ImageReadError(
            f"{width}x{height} pixels is more than Pillow's decompression-bomb limit "
            f"PIL.Image.MAX_IMAGE_PIXELS = {limit}"
        )


def _to_rgb(image: Image.Image) -> np.ndarray:
    """``uint8 [H, W, 3]`` of an opened, oriented image (module docstring)."""
    if image.mode == "F":
        raise ImageReadError("a floating-point image (mode F) has no defined pixel range")
    if image.mode in SIXTEEN_BIT_MODES:
        values = np.asarray(image)
        if values.size and (values.min() < 0 or values.max() > 65535):
            raise ImageReadError(f"mode {image.mode} values outside [0, 65535]")
        gray = np.round(values.astype(np.float64) / 257.0).astype(np.uint8)
        return np.repeat(gray[:, :, None], 3, axis=-1)
    return np.asarray(image.convert("RGB"))


def _open(source: str | os.PathLike | bytes) -> Image.Image:
    if isinstance(source, (bytes, bytearray, memoryview)):
        return Image.open(io.BytesIO(bytes(source)))
    return Image.open(source)


def _describe(source: str | os.PathLike | bytes) -> str:
    return "image bytes" if isinstance(source, (bytes, bytearray, memoryview)) else str(source)


def decode_image(source: str | os.PathLike | bytes) -> np.ndarray:
    """``uint8 [H, W, 3]`` of an image file or encoded bytes (module docstring)."""
    try:
        with _open(source) as image:
            _check_size(image)
            ImageOps.exif_transpose(image, in_place=True)
            return _to_rgb(image)
    except Exception as err:  # noqa: BLE001 - Pillow raises many types for a bad file
        raise ImageReadError(f"cannot read {_describe(source)}: {_one_line(err)}") from err


def check_image(path: str | os.PathLike) -> str | None:
    """None when ``path`` decodes, else the reason it does not (one line)."""
    try:
        with Image.open(path) as image:
            _check_size(image)
            if image.format == "JPEG":
                width, height = image.size
                image.draft(image.mode, (max(1, width // 8), max(1, height // 8)))
            image.load()
            if image.mode == "F":
                raise ImageReadError("a floating-point image (mode F) has no defined pixel range")
    except Exception as err:  # noqa: BLE001 - Pillow raises many types for a bad file
        return _one_line(err)
    return None
