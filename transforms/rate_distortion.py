"""Rate-distortion measurement: the classical codecs (through Pillow), the quality metrics and
the Bjøntegaard deltas that compare two rate-distortion curves.

Rates are bits per pixel from the actual encoded bytes; PSNR is on 8-bit RGB; MS-SSIM is
TensorFlow's ``tf.image.ssim_multiscale`` (max value 255).
"""

from __future__ import annotations

import io
import math

import numpy as np
from PIL import Image, features

from models import codefile

# codec -> (Pillow format, settings swept, save options for a setting).  Settings run from
# low to high rate.  JPEG 2000's setting is its compression ratio (rate = 24 / ratio bpp).
CLASSICAL = {
    "jpeg": ("JPEG", (5, 10, 15, 20, 30, 40, 50, 60, 70, 80, 90, 95)),
    "webp": ("WEBP", (5, 10, 20, 30, 40, 50, 60, 70, 80, 90, 95)),
    "avif": ("AVIF", (5, 10, 20, 30, 40, 50, 60, 70, 80, 90)),
    "jpeg2000": ("JPEG2000", (240, 160, 120, 80, 60, 40, 30, 20, 12)),
    # libjxl through the pillow-jxl-plugin (importing it registers the format with Pillow)
    "jpegxl": ("JXL", (10, 20, 30, 40, 50, 60, 70, 80, 90, 95)),
}
_FEATURE = {"jpeg": "jpg", "webp": "webp", "avif": "avif", "jpeg2000": "jpg_2000"}


def _jpegxl_available() -> bool:
    try:
        import pillow_jxl  # noqa: F401 - registers JXL with Pillow
    except ImportError:
        return False
    return True


def available_codecs() -> list[str]:
    """The classical codecs this Pillow build (and its plugins) can both write and read."""
    return [
        name
        for name in CLASSICAL
        if (_jpegxl_available() if name == "jpegxl" else features.check(_FEATURE[name]))
    ]


def jpeg_recompression(jpeg: bytes) -> tuple[bytes, bool]:
    """JPEG XL's lossless recompression of a JPEG file: (its bytes, whether it decodes to the
    very pixels of the JPEG).  What an archive of JPEGs saves with no loss at all."""
    import tempfile

    _jpegxl_available()
    with tempfile.NamedTemporaryFile(suffix=".jpg") as source:
        source.write(jpeg)
        source.flush()
        with Image.open(source.name) as image:  # JPEG reconstruction needs the JPEG's file
            buffer = io.BytesIO()
            image.save(buffer, format="JXL", lossless_jpeg=True)
            pixels = np.asarray(image.convert("RGB"))
    data = buffer.getvalue()
    return data, bool(np.array_equal(decode(data), pixels))


def save_options(codec: str, setting: int) -> dict:
    if codec == "jpeg":  # libjpeg-turbo with optimised Huffman tables, 4:2:0 as usual
        return {"quality": setting, "optimize": True}
    if codec == "webp":
        return {"quality": setting, "method": 6}
    if codec == "avif":
        return {"quality": setting}
    if codec == "jpeg2000":
        return {"quality_mode": "rates", "quality_layers": [setting], "irreversible": True}
    if codec == "jpegxl":
        return {"quality": setting, "effort": 7, "lossless_jpeg": False}
    raise ValueError(f"unknown codec {codec!r} (known: {', '.join(CLASSICAL)})")


def encode(pixels: np.ndarray, codec: str, setting: int) -> bytes:
    if codec == "jpegxl":
        _jpegxl_available()
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format=CLASSICAL[codec][0], **save_options(codec, setting))
    return buffer.getvalue()


def decode(data: bytes) -> np.ndarray:
    _jpegxl_available()  # a JXL file opens only with the plugin registered
    with Image.open(io.BytesIO(data)) as image:
        return np.asarray(image.convert("RGB"))


def bits_per_pixel(num_bytes: int, pixels: np.ndarray) -> float:
    """Of any codec's file for the image ``pixels``, by the code-file format's definition."""
    return codefile.bits_per_pixel(num_bytes, pixels.shape[0] * pixels.shape[1])


def psnr(reference: np.ndarray, test: np.ndarray) -> float:
    from models.inference import psnr as capped_psnr

    return capped_psnr(reference, test)


MS_SSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)  # Wang et al. 2003, TF's default


_MS_SSIM_FUNCTIONS: dict = {}


def _ms_ssim_function(scales: int):
    """A compiled MS-SSIM for this number of scales (eager op-by-op is ~50x slower)."""
    if scales not in _MS_SSIM_FUNCTIONS:
        import tensorflow as tf

        weights = np.array(MS_SSIM_WEIGHTS[:scales])
        factors = (weights / weights.sum()).tolist()

        @tf.function(
            input_signature=[tf.TensorSpec([None, None, 3], tf.uint8)] * 2, jit_compile=False
        )
        def compiled(a, b):
            return tf.image.ssim_multiscale(
                tf.cast(a, tf.float32)[None],
                tf.cast(b, tf.float32)[None],
                max_val=255.0,
                power_factors=factors,
            )[0]

        _MS_SSIM_FUNCTIONS[scales] = compiled
    return _MS_SSIM_FUNCTIONS[scales]


def ms_ssim(reference: np.ndarray, test: np.ndarray) -> float:
    """MS-SSIM on RGB 8-bit.  Images too small for five scales use as many as fit (the
    weights renormalised), since each scale halves the image and the window is 11 pixels."""
    scales = max(1, min(5, int(math.log2(min(reference.shape[:2]) / 11)) + 1))
    return float(_ms_ssim_function(scales)(reference, test).numpy())


def ms_ssim_db(value: float) -> float:
    """MS-SSIM as decibels, -10 log10(1 - MS-SSIM): the scale rate-distortion plots use."""
    return -10.0 * math.log10(max(1e-10, 1.0 - value))


def _monotone(points):
    """(x, y) pairs sorted by x, equal x averaged: PCHIP needs strictly increasing x."""
    by_x: dict[float, list[float]] = {}
    for x, y in points:
        by_x.setdefault(round(float(x), 9), []).append(float(y))
    xs = np.array(sorted(by_x))
    return xs, np.array([np.mean(by_x[x]) for x in xs])


def _overlap(curve_a, curve_b):
    """(curve_a, curve_b, low, high) as monotone arrays with their common x range, or the
    reason there is none: the one place both the deltas and their "n/a" reasons come from."""
    xa, ya = _monotone(curve_a)
    xb, yb = _monotone(curve_b)
    if len(xa) < 2 or len(xb) < 2:
        return "a curve has fewer than two distinct points"
    low, high = max(xa[0], xb[0]), min(xa[-1], xb[-1])
    if high <= low:
        return (
            f"the curves do not overlap in quality ({xa[0]:.2f}-{xa[-1]:.2f} against "
            f"{xb[0]:.2f}-{xb[-1]:.2f})"
        )
    return (xa, ya), (xb, yb), low, high


def _mean_difference(curve_a, curve_b) -> float | None:
    """Mean of curve_b - curve_a over the overlap of their x ranges (PCHIP interpolation)."""
    from scipy.interpolate import PchipInterpolator

    overlap = _overlap(curve_a, curve_b)
    if isinstance(overlap, str):
        return None
    (xa, ya), (xb, yb), low, high = overlap
    area_a = PchipInterpolator(xa, ya).integrate(low, high)
    area_b = PchipInterpolator(xb, yb).integrate(low, high)
    return float((area_b - area_a) / (high - low))


def _by_quality(curve):
    """(bpp, quality) points as (quality, log rate): how the deltas integrate them."""
    return [(q, math.log(r)) for r, q in curve]


def why_no_delta(anchor, test) -> str:
    """Why ``bd_rate``/``bd_quality`` of these (bpp, quality) curves is None ("" if it is not),
    in words a report can print instead of a bare null."""
    overlap = _overlap(_by_quality(anchor), _by_quality(test))
    return overlap if isinstance(overlap, str) else ""


def bd_rate(anchor, test) -> float | None:
    """Bjøntegaard delta rate in percent: the average rate change of ``test`` against
    ``anchor`` at equal quality (negative = fewer bits).  Curves are (bpp, quality) points;
    None when they have fewer than two points or their quality ranges do not overlap."""
    difference = _mean_difference(_by_quality(anchor), _by_quality(test))
    return None if difference is None else 100.0 * (math.exp(difference) - 1.0)


def rate_at(curve, quality: float) -> float | None:
    """The rate of the (bpp, quality) ``curve`` at ``quality``, read as the BD-rate reads it
    (PCHIP of log rate over quality); None outside the curve's quality range."""
    from scipy.interpolate import PchipInterpolator

    xs, ys = _monotone(_by_quality(curve))
    quality = round(float(quality), 9)  # as _monotone rounds the curve's own
    if len(xs) < 2 or not xs[0] <= quality <= xs[-1]:
        return None
    return float(math.exp(PchipInterpolator(xs, ys)(quality)))


def bd_quality(anchor, test) -> float | None:
    """Bjøntegaard delta quality (e.g. dB of PSNR) of ``test`` against ``anchor`` at equal
    rate (positive = better), over the overlap of their log-rate ranges."""
    return _mean_difference(
        [(math.log(r), q) for r, q in anchor], [(math.log(r), q) for r, q in test]
    )
