"""Image preprocessing as a string mini-language in big_vision's style.

A spec is ops joined by ``|``, each ``name`` or ``name(args)`` with Python literal arguments::

    decode|resize_small(256)|central_crop(224)|value_range(-1,1)

Ops (``image`` is ``[H, W, C]``; sizes are ``size`` or ``(height, width)``):

- ``decode``: encoded bytes (JPEG/PNG...) or an array -> ``uint8 [H, W, 3]`` (grey repeated to 3
  channels, alpha dropped; bytes through ``decoding.decode_image``: any Pillow mode, EXIF
  orientation, the decompression-bomb limit).
- ``resize(size)`` / ``resize(h, w)``: bilinear resize to exactly that size (PIL, which
  antialiases when it shrinks).
- ``resize_small(s)``: bilinear resize so that the shorter side is ``s``; the longer side becomes
  ``round(long * s / short)``, keeping the aspect ratio.
- ``central_crop(size)`` / ``central_crop(h, w)``: the centred window, offset
  ``(H - h) // 2``, ``(W - w) // 2``.
- ``value_range(vmin, vmax, in_min=0, in_max=255)``: affine map of ``[in_min, in_max]`` onto
  ``[vmin, vmax]``: ``vmin + (x - in_min) * (vmax - vmin) / (in_max - in_min)``, float32.

``parse(spec)`` checks the whole string up front and raises ``PreprocessError`` naming the bad op;
``build(spec)`` returns the composed function ``image -> np.ndarray``.
"""

from __future__ import annotations

import ast
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from PIL import Image

from feature_extract.decoding import ImageReadError, decode_image

ImageFn = Callable[[np.ndarray], np.ndarray]


class PreprocessError(ValueError):
    """A preprocessing spec that cannot be parsed, or an op applied to an unsuitable image."""


def _size(h: int, w: int | None = None) -> tuple[int, int]:
    w = h if w is None else w
    for v in (h, w):
        if not isinstance(v, int) or isinstance(v, bool) or v < 1:
            raise PreprocessError(f"sizes must be positive integers, got {(h, w)}")
    return h, w


def decode(image: np.ndarray | bytes) -> np.ndarray:
    """Encoded bytes or an array -> ``uint8 [H, W, 3]``."""
    if isinstance(image, (bytes, bytearray, np.bytes_)):
        try:
            image = decode_image(bytes(image))
        except ImageReadError as err:
            raise PreprocessError(f"cannot decode {str(err).removeprefix('cannot read ')}") from err
    image = np.asarray(image)
    if image.ndim == 2:
        image = image[:, :, None]
    if image.ndim != 3 or image.shape[-1] not in (1, 3, 4):
        raise PreprocessError(f"decode needs an [H, W] or [H, W, 1|3|4] image, got {image.shape}")
    if image.shape[-1] == 1:
        image = np.repeat(image, 3, axis=-1)
    image = image[:, :, :3]
    if image.dtype != np.uint8:
        if not np.issubdtype(image.dtype, np.integer) or image.min() < 0 or image.max() > 255:
            raise PreprocessError(f"decode expects uint8 pixel values, got dtype {image.dtype}")
        image = image.astype(np.uint8)
    return image


def _resize_to(image: np.ndarray, h: int, w: int) -> np.ndarray:
    """Bilinear resize with PIL; uint8 stays uint8, other dtypes are resized as float32."""
    if image.shape[:2] == (h, w):
        return image
    if image.dtype == np.uint8 and image.shape[-1] in (3, 4):
        return np.asarray(Image.fromarray(image).resize((w, h), Image.BILINEAR))
    channels = [
        Image.fromarray(np.ascontiguousarray(image[:, :, c], np.float32), mode="F").resize(
            (w, h), Image.BILINEAR
        )
        for c in range(image.shape[-1])
    ]
    out = np.stack([np.asarray(c) for c in channels], axis=-1)
    return (
        out.astype(image.dtype)
        if image.dtype != np.uint8
        else np.clip(np.round(out), 0, 255).astype(np.uint8)
    )


def resize(h: int, w: int | None = None) -> ImageFn:
    """Resize to exactly ``(h, w)`` (``w = h`` when omitted)."""
    h, w = _size(h, w)
    return lambda image: _resize_to(image, h, w)


def resize_small(smaller: int) -> ImageFn:
    """Resize so the shorter side is ``smaller``, the longer ``round(long * smaller / short)``."""
    smaller, _ = _size(smaller)

    def op(image: np.ndarray) -> np.ndarray:
        h, w = image.shape[:2]
        scale = smaller / min(h, w)
        return _resize_to(image, max(1, round(h * scale)), max(1, round(w * scale)))

    return op


def central_crop(h: int, w: int | None = None) -> ImageFn:
    """The centred ``(h, w)`` window; the image must be at least that large."""
    h, w = _size(h, w)

    def op(image: np.ndarray) -> np.ndarray:
        ih, iw = image.shape[:2]
        if ih < h or iw < w:
            raise PreprocessError(
                f"central_crop({h}, {w}) of a {ih}x{iw} image: resize first "
                f"(e.g. resize_small({max(h, w)})|central_crop(...))"
            )
        top, left = (ih - h) // 2, (iw - w) // 2
        return image[top : top + h, left : left + w]

    return op


def value_range(vmin: float, vmax: float, in_min: float = 0.0, in_max: float = 255.0) -> ImageFn:
    """``vmin + (x - in_min) * (vmax - vmin) / (in_max - in_min)`` as float32."""
    for v in (vmin, vmax, in_min, in_max):
        if not isinstance(v, (int, float)) or isinstance(v, bool):
            raise PreprocessError(f"value_range arguments must be numbers, got {v!r}")
    if in_max == in_min:
        raise PreprocessError("value_range needs in_max != in_min")
    scale = (vmax - vmin) / (in_max - in_min)
    return lambda image: ((image.astype(np.float32) - in_min) * scale + vmin).astype(np.float32)


OPS: dict[str, Callable[..., ImageFn]] = {
    "decode": lambda: decode,
    "resize": resize,
    "resize_small": resize_small,
    "central_crop": central_crop,
    "value_range": value_range,
}


@dataclass(frozen=True)
class Op:
    """One parsed op: its name, literal arguments and the image function they build."""

    name: str
    args: tuple
    kwargs: tuple[tuple[str, object], ...]
    fn: ImageFn


def _parse_op(text: str) -> Op:
    try:
        node = ast.parse(text.strip(), mode="eval").body
    except SyntaxError:
        raise PreprocessError(
            f"cannot parse preprocessing op {text!r}; write name or "
            "name(arg, ...), e.g. resize(224)"
        ) from None
    if isinstance(node, ast.Name):
        name, args, kwargs = node.id, (), ()
    elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
        name = node.func.id
        try:
            args = tuple(ast.literal_eval(a) for a in node.args)
            kwargs = tuple((k.arg, ast.literal_eval(k.value)) for k in node.keywords)
        except ValueError:
            raise PreprocessError(f"arguments of {text!r} must be literals (numbers)") from None
    else:
        raise PreprocessError(f"cannot parse preprocessing op {text!r}")
    if name not in OPS:
        raise PreprocessError(f"unknown preprocessing op {name!r}; known ops: {', '.join(OPS)}")
    try:
        fn = OPS[name](*args, **dict(kwargs))
    except TypeError as err:
        raise PreprocessError(f"bad arguments for {text.strip()!r}: {err}") from None
    return Op(name, args, kwargs, fn)


def parse(spec: str) -> list[Op]:
    """Parse ``"op|op(args)|..."`` into ops, raising ``PreprocessError`` on any bad op."""
    parts = [p for p in str(spec).split("|")]
    if any(not p.strip() for p in parts) and spec.strip():
        raise PreprocessError(f"empty op in preprocessing spec {spec!r}")
    return [_parse_op(p) for p in parts if p.strip()]


def with_decode(spec: str) -> str:
    """``spec`` with ``decode`` as its first op (added when missing): what the pipeline runs."""
    ops = parse(spec)
    if ops and ops[0].name == "decode":
        return spec
    return f"decode|{spec}" if spec.strip() else "decode"


def split_for_device(spec: str) -> tuple[str, ImageFn | None]:
    """``(host spec, device op)``: a trailing ``value_range`` moves to the accelerator.

    The host then ships ``uint8`` images (4x less to copy than float32) and the affine map runs
    inside the compiled function; ``value_range``'s function works on numpy and jax arrays alike.
    """
    ops = parse(spec)
    if ops and ops[-1].name == "value_range":
        return "|".join(spec.split("|")[:-1]), ops[-1].fn
    return spec, None


def build(spec: str) -> ImageFn:
    """The function that applies every op of ``spec`` in order."""
    fns = [op.fn for op in parse(spec)]

    def apply(image: np.ndarray) -> np.ndarray:
        for fn in fns:
            image = fn(image)
        return image

    return apply
