"""Decoding image bytes into RGB uint8 arrays: the one rule every stage uses.

Conversion rule (documented in the README, "Input images"):
  * formats: whatever Pillow decodes (JPEG, PNG, WebP, TIFF, BMP, GIF, ...); for animated or
    multi-page files only the first frame is used.
  * EXIF orientation is applied first, so the array is upright as a viewer shows it.
  * grayscale (``1``, ``L``) is replicated to three channels.
  * palette (``P``) is expanded through its palette; palette transparency counts as alpha.
  * alpha (``RGBA``, ``LA``, ``PA``) is composited over a white background.
  * ``CMYK`` and ``YCbCr`` go through Pillow's colour conversion (no ICC colour management).
  * 16-bit and 32-bit integer samples (``I;16*``, ``I``) are scaled from [0, 65535] to
    [0, 255] by ``round(v / 257)``; 32-bit float (``F``) is read as [0, 255] and clipped.
  * the result is ``numpy.uint8`` with shape ``(height, width, 3)``.
"""

from __future__ import annotations

import io
import warnings

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

# Larger images are refused before decoding (a dead-letter record, not an out-of-memory worker).
DEFAULT_MAX_PIXELS = 64_000_000

# Dead-letter reasons, stable strings that summaries count by.
EMPTY = "empty_file"
NOT_AN_IMAGE = "not_an_image"
TRUNCATED = "truncated_or_corrupt"
TOO_LARGE = "too_many_pixels"
TOO_SMALL = "smaller_than_patch"
UNREADABLE = "unreadable_path"
UNSAFE_PATH = "unsafe_relative_path"


class DecodeError(ValueError):
    """An input that cannot become an RGB array; ``reason`` is one of the constants above."""

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


def decode_image(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Decodes ``data`` to an upright ``(H, W, 3)`` uint8 array or raises ``DecodeError``."""
    return decode_with_mode(data, max_pixels)[0]


def decode_with_mode(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS) -> tuple[np.ndarray, str]:
    """Like ``decode_image``, plus the source's Pillow mode (e.g. "L" for grayscale)."""
    if not data:
        raise DecodeError(EMPTY, "file has zero bytes")
    try:
        # Our own pixel limit replaces Pillow's decompression-bomb warning.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
    except UnidentifiedImageError as e:
        raise DecodeError(NOT_AN_IMAGE, "not a recognised image format") from e
    except Image.DecompressionBombError as e:  # a header claiming > 2x Pillow's own limit
        raise DecodeError(TOO_LARGE, str(e)) from e
    except Exception as e:  # Pillow raises many types on garbage headers
        raise DecodeError(NOT_AN_IMAGE, f"unreadable header ({type(e).__name__}: {e})") from e
    with image:
        width, height = image.size
        if width * height > max_pixels:
            raise DecodeError(
                TOO_LARGE, f"{width}x{height} = {width * height} pixels exceeds {max_pixels}"
            )
        try:
            image.seek(0)  # first frame of GIF / multi-page TIFF
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                image.load()
                mode = image.mode
                image = ImageOps.exif_transpose(image)
            return to_rgb(image), mode
        except (OSError, SyntaxError, ValueError, EOFError) as e:
            raise DecodeError(TRUNCATED, f"{type(e).__name__}: {e}") from e
