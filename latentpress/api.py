"""The Python API: images to code files and back without the command line.

    import latentpress
    data = latentpress.compress("photo.jpg", quality=75)     # or a numpy array, a PIL image
    pixels = latentpress.decompress(data)                     # numpy uint8 (H, W, 3) or (H, W)
    image = latentpress.decompress_image(data)                # PIL image with EXIF, ICC, alpha
    Image.open("photo.jpg.lpc")                               # Pillow reads code files too

What a photograph carries besides its pixels (EXIF, XMP, ICC profile, alpha) travels in the
code file from a path or a PIL image (``transforms.metadata``; ``strip_metadata=True`` leaves
EXIF, XMP and ICC out).

Models load on first use (TensorFlow starts then, not at ``import latentpress``) and stay
loaded: ``compress`` uses the shipped codec unless given ``model``; ``decompress`` the model
the file names among the shipped ones, or ``model``.
"""

from __future__ import annotations

import functools
import itertools
import os

import numpy as np

DEFAULT_QUALITY = 50.0


@functools.lru_cache(maxsize=4)
def _compressor(model: str, refine_steps: int = 0):
    from models.compressor import Compressor

    return Compressor(model, refine_steps)


def _model_for(data: bytes, model: str | None) -> str:
    if model:
        return model
    from models import registry
    from models.codefile import CodeFile

    fingerprint = CodeFile.from_bytes(data).fingerprint
    return registry.shipped_with_fingerprint(fingerprint) or registry.DEFAULT_CODEC


def _pixels(image, strip_metadata: bool, frame: int | None):
    """(uint8 RGB pixels, source channels, Carried) of a path, PIL image or numpy array."""
    from PIL import Image

    from transforms import decode, metadata

    options = decode.DecodeOptions(metadata.ALL_FRAMES, strip_metadata)
    if isinstance(image, str | os.PathLike):
        with open(image, "rb") as handle:
            frames = decode.decode_frames(handle.read(), 2**40, options)
        chosen = next(itertools.islice(frames, frame or 0, None), None)
        if chosen is None:
            raise ValueError(f"{image} has no frame {frame}")
        if frame is None and chosen.carried.frames > 1:
            raise ValueError(f"{image} has {chosen.carried.frames} frames: pass frame=0..")
    elif isinstance(image, Image.Image):
        chosen = decode.decode_pil(image, options)
    else:
        chosen = None
    if chosen is not None:
        channels = 1 if chosen.mode in decode.GRAYSCALE_MODES else 3
        return chosen.pixels, channels, chosen.carried
    array = np.asarray(image)
    if array.dtype != np.uint8:
        raise ValueError(f"expected uint8 pixels, got {array.dtype}")
    if array.ndim == 2:
        return np.repeat(array[..., np.newaxis], 3, axis=-1), 1, metadata.Carried()
    if array.ndim == 3 and array.shape[-1] == 3:
        return np.ascontiguousarray(array), 3, metadata.Carried()
    raise ValueError(f"expected an (H, W) or (H, W, 3) array, got shape {array.shape}")


def compress(
    image,
    quality: float = DEFAULT_QUALITY,
    model: str = "codec",
    strip_metadata: bool = False,
    frame: int | None = None,
    refine_steps: int = 0,
) -> bytes:
    """A code file (bytes) of ``image``: a path, a PIL image, or a uint8 numpy array
    (H, W, 3) or (H, W) (grayscale decodes to grayscale).  ``quality`` 0-100.  A path to a
    multi-frame file needs ``frame`` (0-based): one code file per frame.  ``refine_steps``
    spends that many gradient steps on the latents for a better code (``models.refine``)."""
    from transforms import metadata

    pixels, channels, carried = _pixels(image, strip_metadata, frame)
    compressor = _compressor(model, refine_steps)
    return compressor.compress(pixels, channels, quality, metadata.to_chunks(carried))


def decompress(data: bytes, model: str | None = None) -> np.ndarray:
    """The image of a code file: uint8 (H, W, 3), or (H, W) for a grayscale source; with the
    source's alpha as a last plane when it had transparency ((H, W, 4) or (H, W, 2))."""
    return np.asarray(decompress_image(data, model))


def decompress_image(data: bytes, model: str | None = None):
    """The image of a code file as a PIL image (mode L, LA, RGB or RGBA) whose ``info`` holds
    the EXIF, ICC profile and XMP the file carries."""
    from transforms import metadata

    image, code = _compressor(_model_for(bytes(data), model)).decode(bytes(data))
    return metadata.to_image(image, metadata.from_code(code))
