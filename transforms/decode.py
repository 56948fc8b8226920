"""Decoding image bytes into RGB uint8 arrays: the one rule every stage uses.

Conversion rule (documented in the README, "Input images"):
  * formats: whatever Pillow decodes (JPEG, PNG, WebP, TIFF, BMP, GIF, ...); an animated or
    multi-page file gives one image per frame (``decode_frames``; ``decode_image``: the first).
  * EXIF orientation is applied first, so the array is upright as a viewer shows it.
  * grayscale (``1``, ``L``) is replicated to three channels.
  * palette (``P``) is expanded through its palette; palette transparency counts as alpha.
  * alpha (``RGBA``, ``LA``, ``PA``) is composited over a white background.
  * ``CMYK`` and ``YCbCr`` go through Pillow's colour conversion (no ICC colour management).
  * 16-bit and 32-bit integer samples (``I;16*``, ``I``) are scaled from [0, 65535] to
    [0, 255] by ``round(v / 257)``; 32-bit float (``F``) is read as [0, 255] and clipped.
  * the result is ``numpy.uint8`` with shape ``(height, width, 3)``; what the image carries
    besides (EXIF, XMP, ICC profile, alpha, frame, bit depth) comes with it from
    ``decode_frames`` by the rules of ``transforms.metadata``.
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from transforms import metadata
from transforms.reasons import (
    DEEP_SAMPLES,
    EMPTY,
    MULTI_FRAME,
    NOT_AN_IMAGE,
    TOO_LARGE,
    TRUNCATED,
)

# Larger images are refused before decoding (a dead-letter record, not an out-of-memory worker).
DEFAULT_MAX_PIXELS = 64_000_000


class DecodeError(ValueError):
    """An input that cannot become an RGB array; ``reason`` is one of ``transforms.reasons``."""

    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


def to_uint8(values: np.ndarray) -> np.ndarray:
    """Sample values on the 0-255 scale -> 8-bit samples, rounded to nearest and clipped."""
    return np.clip(np.rint(values), 0, 255).astype(np.uint8)


def to_rgb(image: Image.Image) -> np.ndarray:
    """The one rule taking any Pillow mode to uint8 RGB (16-bit scaled, alpha over white)."""
    mode = image.mode
    if mode == "P":
        has_alpha = "transparency" in image.info
        image = image.convert("RGBA" if has_alpha else "RGB")
        mode = image.mode
    if mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):
        wide = np.asarray(image, dtype=np.float64)
        gray = to_uint8(wide / 257.0)
        return np.repeat(gray[..., None], 3, axis=-1)
    if mode == "F":
        gray = to_uint8(np.asarray(image, dtype=np.float64))
        return np.repeat(gray[..., None], 3, axis=-1)
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, rgba).convert("RGB")
    elif mode != "RGB":
        image = image.convert("RGB")
    return np.asarray(image, dtype=np.uint8).copy()


GRAYSCALE_MODES = ("1", "L", "LA", "I", "I;16", "I;16L", "I;16B", "I;16N", "F")


@dataclass
class DecodedFrame:
    pixels: np.ndarray  # (H, W, 3) uint8, upright
    mode: str  # the source's Pillow mode, e.g. "L" for grayscale
    carried: metadata.Carried


@dataclass(frozen=True)
class DecodeOptions:
    """How a stage treats what an image carries besides its pixels (``transforms.metadata``)."""

    frames: str = metadata.ALL_FRAMES
    strip_metadata: bool = False
    alpha: str = metadata.KEEP
    strict_depth: bool = False


# Training data wants pixels: the first frame, nothing else.
PIXELS_ONLY = DecodeOptions(frames=metadata.FIRST_FRAME, strip_metadata=True)


def decode_image(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Decodes ``data`` to an upright ``(H, W, 3)`` uint8 array or raises ``DecodeError``."""
    return decode_with_mode(data, max_pixels)[0]


def decode_with_mode(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS) -> tuple[np.ndarray, str]:
    """Like ``decode_image``, plus the source's Pillow mode (e.g. "L" for grayscale)."""
    first = next(decode_frames(data, max_pixels, PIXELS_ONLY))
    return first.pixels, first.mode


def _open(data: bytes) -> Image.Image:
    if not data:
        raise DecodeError(EMPTY, "file has zero bytes")
    try:
        # Our own pixel limit replaces Pillow's decompression-bomb warning.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            return Image.open(io.BytesIO(data))
    except UnidentifiedImageError as e:
        raise DecodeError(NOT_AN_IMAGE, "not a recognised image format") from e
    except Image.DecompressionBombError as e:  # a header claiming > 2x Pillow's own limit
        raise DecodeError(TOO_LARGE, str(e)) from e
    except Exception as e:  # Pillow raises many types on garbage headers
        raise DecodeError(NOT_AN_IMAGE, f"unreadable header ({type(e).__name__}: {e})") from e


def decode_frames(
    data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS, options: DecodeOptions = DecodeOptions()
) -> Iterator[DecodedFrame]:
    """The frames of ``data`` (one for most files), each decoded by the rule above with what
    it carries, one at a time (a 50-page TIFF is never held whole); raises ``DecodeError``
    (before the first frame for a refused file)."""
    with _open(data) as image:
        frames = getattr(image, "n_frames", 1)
        if frames > 1 and options.frames == metadata.REFUSE_FRAMES:
            raise DecodeError(MULTI_FRAME, f"{frames} frames (--frames refuse)")
        wanted = frames if options.frames == metadata.ALL_FRAMES else 1
        for index in range(wanted):
            try:
                image.seek(index)
            except (OSError, EOFError, ValueError) as e:
                raise DecodeError(TRUNCATED, f"frame {index + 1}: {type(e).__name__}: {e}") from e
            yield _decode_frame(image, index, frames, max_pixels, options)


def decode_pil(image: Image.Image, options: DecodeOptions = DecodeOptions()) -> DecodedFrame:
    """A Pillow image already open (its current frame) by the same rule as a file's."""
    return _decode_frame(image, 0, 1, 2**63, options)


def _decode_frame(
    image: Image.Image, index: int, frames: int, max_pixels: int, options: DecodeOptions
) -> DecodedFrame:
    width, height = image.size
    if width * height > max_pixels:
        raise DecodeError(
            TOO_LARGE, f"{width}x{height} = {width * height} pixels exceeds {max_pixels}"
        )
    depth = metadata.source_bit_depth(image)
    if depth > 8 and options.strict_depth:
        raise DecodeError(DEEP_SAMPLES, f"{depth}-bit samples (--strict-depth)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image.load()
            mode = image.mode
            upright = ImageOps.exif_transpose(image)
        carried = metadata.read(
            upright,
            index,
            frames if options.frames == metadata.ALL_FRAMES else 1,
            mode in GRAYSCALE_MODES,
            depth,
            options.strip_metadata,
            options.alpha,
        )
        if frames > 1 and options.frames == metadata.FIRST_FRAME:
            carried = metadata.with_note(carried, f"first of {frames} frames only (--frames first)")
        return DecodedFrame(to_rgb(upright), mode, carried)
    except (OSError, SyntaxError, ValueError, EOFError) as e:
        raise DecodeError(TRUNCATED, f"{type(e).__name__}: {e}") from e
