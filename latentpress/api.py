"""The Python API: images to code files and back without the command line.

    import latentpress
    data = latentpress.compress("photo.jpg", quality=75)     # or a numpy array, a PIL image
    pixels = latentpress.decompress(data)                     # numpy uint8 (H, W, 3) or (H, W)
    Image.open("photo.jpg.lpc")                               # Pillow reads code files too

Models load on first use (TensorFlow starts then, not at ``import latentpress``) and stay
loaded: ``compress`` uses the shipped codec unless given ``model``; ``decompress`` the model
the file names among the shipped ones, or ``model``.
"""

from __future__ import annotations

import functools
import os

import numpy as np

DEFAULT_QUALITY = 50.0


@functools.lru_cache(maxsize=4)
def _compressor(model: str):
    from models.compressor import Compressor

    return Compressor(model)


def _model_for(data: bytes, model: str | None) -> str:
    if model:
        return model
    from models import registry
    from models.codefile import CodeFile

    fingerprint = CodeFile.from_bytes(data).fingerprint
    return registry.shipped_with_fingerprint(fingerprint) or registry.DEFAULT_CODEC


def _pixels(image) -> tuple[np.ndarray, int]:
    """(uint8 RGB pixels, source channels) of a path, PIL image or numpy array."""
    from PIL import Image

    from transforms.decode import GRAYSCALE_MODES, decode_with_mode, to_rgb

    if isinstance(image, str | os.PathLike):
        with open(image, "rb") as handle:
            pixels, mode = decode_with_mode(handle.read(), 2**40)
        return pixels, 1 if mode in GRAYSCALE_MODES else 3
    if isinstance(image, Image.Image):
        return to_rgb(image), 1 if image.mode in GRAYSCALE_MODES else 3
    array = np.asarray(image)
    if array.dtype != np.uint8:
        raise ValueError(f"expected uint8 pixels, got {array.dtype}")
    if array.ndim == 2:
        return np.repeat(array[..., np.newaxis], 3, axis=-1), 1
    if array.ndim == 3 and array.shape[-1] == 3:
        return np.ascontiguousarray(array), 3
    raise ValueError(f"expected an (H, W) or (H, W, 3) array, got shape {array.shape}")


def compress(image, quality: float = DEFAULT_QUALITY, model: str = "codec") -> bytes:
    """A code file (bytes) of ``image``: a path, a PIL image, or a uint8 numpy array
    (H, W, 3) or (H, W) (grayscale decodes to grayscale).  ``quality`` 0-100."""
    pixels, channels = _pixels(image)
    return _compressor(model).compress(pixels, channels, quality)


def decompress(data: bytes, model: str | None = None) -> np.ndarray:
    """The image of a code file: uint8 (H, W, 3), or (H, W) for a grayscale source."""
    return _compressor(_model_for(bytes(data), model)).decompress(bytes(data))
