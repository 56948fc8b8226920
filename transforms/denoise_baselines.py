"""Classical denoisers to compare the learned one with, all told the true noise level.

Each takes a noisy RGB image (uint8, or float on the 0-255 scale for noise that was never
rounded) and the Gaussian sigma (8-bit scale) and returns an 8-bit RGB image.  Parameters
follow each library's documented recommendations for AWGN.
"""

from __future__ import annotations

import numpy as np

from transforms import noise
from transforms.decode import to_uint8


def bm3d_color(noisy: np.ndarray, sigma: float) -> np.ndarray:
    """CBM3D (``bm3d`` package: YCbCr-opponent transform, both stages)."""
    import bm3d

    return to_uint8(255.0 * bm3d.bm3d_rgb(noisy / 255.0, sigma / 255.0))


def non_local_means(noisy: np.ndarray, sigma: float) -> np.ndarray:
    """scikit-image non-local means, h = 0.8 sigma as its documentation suggests."""
    from skimage.restoration import denoise_nl_means

    s = sigma / 255.0
    return to_uint8(
        255.0
        * denoise_nl_means(
            noisy / 255.0,
            h=0.8 * s,
            sigma=s,
            patch_size=5,
            patch_distance=6,
            fast_mode=True,
            channel_axis=-1,
        )
    )


def wavelet(noisy: np.ndarray, sigma: float) -> np.ndarray:
    """scikit-image BayesShrink wavelet denoising in YCbCr."""
    from skimage.restoration import denoise_wavelet

    return to_uint8(
        255.0
        * denoise_wavelet(
            noisy / 255.0,
            sigma=sigma / 255.0,
            method="BayesShrink",
            mode="soft",
            convert2ycbcr=True,
            rescale_sigma=True,
            channel_axis=-1,
        )
    )


def opencv_nlm(noisy: np.ndarray, sigma: float) -> np.ndarray:
    """OpenCV fastNlMeansDenoisingColored (works in Lab), filter strength tied to sigma."""
    import cv2

    noisy = to_uint8(noisy)  # OpenCV takes 8-bit input only
    bgr = np.ascontiguousarray(noisy[..., ::-1])
    strength = float(max(3.0, 0.8 * sigma))
    out = cv2.fastNlMeansDenoisingColored(bgr, None, strength, strength, 7, 21)
    return np.ascontiguousarray(out[..., ::-1])


BASELINES = {
    "bm3d": bm3d_color,
    "nlm": non_local_means,
    "wavelet": wavelet,
    "opencv_nlm": opencv_nlm,
}


def add_noise(clean: np.ndarray, sigma: float, seed: int, rounded: bool = True) -> np.ndarray:
    """Additive white Gaussian noise, rounded and clipped to 8 bits like a saved photo; with
    ``rounded=False`` left as float (the setting of the published benchmark tables)."""
    spec = noise.NoiseSpec("single", (noise.Term("gaussian", sigma, sigma),), f"gaussian:{sigma}")
    noisy, _ = spec.apply(clean, np.random.default_rng(seed), rounded=rounded)
    return noisy if rounded else noisy.astype(np.float32)
