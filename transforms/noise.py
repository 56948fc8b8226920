"""Synthetic noise models and the ``--noise`` SPEC syntax.

SPEC grammar (documented in the README, "Noise specs")::

    spec   := model | "mix:" model ("+" model)* | "chain:" model ("+" model)*
    model  := name ":" value | name ":" low "-" high
    name   := gaussian | poisson | saltpepper | speckle | jpeg | camera

A range ``low-high`` draws the parameter uniformly per patch (blind training); ``mix`` picks one
of its models per patch, uniformly; ``chain`` applies its models in order (e.g. sensor noise
then compression).  Parameters are in these units:

    gaussian:SIGMA      additive white Gaussian noise, sigma in 8-bit levels (0-255)
    poisson:PEAK        shot noise, PEAK photons at full white (smaller is noisier)
    saltpepper:DENSITY  fraction of pixels (0-1) set to black or white, all channels alike
    speckle:VARIANCE    multiplicative noise x + x*n, n ~ N(0, VARIANCE), x in [0, 1]
    jpeg:QUALITY        JPEG compression artefacts at Pillow quality 1-95 (integer)
    camera:LEVEL        camera sensor noise (unprocessed to raw, shot + read noise on a Bayer
                        mosaic, processed back, sometimes JPEG), LEVEL 0-1 from low to high ISO

Every function takes a ``numpy.random.Generator`` so the caller owns the seed; the output is
clipped to [0, 255] and rounded to uint8, as saved photographs are, unless the caller asks for
the literature's float noise (``rounded=False``: the last model's output is left as it is).
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from PIL import Image

from transforms.decode import to_uint8


def gaussian(x: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    return x.astype(np.float64) + rng.normal(0.0, sigma, size=x.shape)


def poisson(x: np.ndarray, peak: float, rng: np.random.Generator) -> np.ndarray:
    photons = rng.poisson(x.astype(np.float64) / 255.0 * peak)
    return photons / peak * 255.0


def saltpepper(x: np.ndarray, density: float, rng: np.random.Generator) -> np.ndarray:
    out = x.astype(np.float64)
    height, width = x.shape[:2]
    hit = rng.random((height, width)) < density
    white = rng.random((height, width)) < 0.5
    out[hit & white] = 255.0
    out[hit & ~white] = 0.0
    return out


def speckle(x: np.ndarray, variance: float, rng: np.random.Generator) -> np.ndarray:
    unit = x.astype(np.float64) / 255.0
    return (unit + unit * rng.normal(0.0, np.sqrt(variance), size=x.shape)) * 255.0


def _tone_curve(x: np.ndarray) -> np.ndarray:
    """The smoothstep tone curve Brooks et al. fit to camera pipelines."""
    return 3.0 * x**2 - 2.0 * x**3


def _inverse_tone_curve(x: np.ndarray) -> np.ndarray:
    return 0.5 - np.sin(np.arcsin(np.clip(1.0 - 2.0 * x, -1.0, 1.0)) / 3.0)


def _bayer_noise(std: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Noise a sensor with an RGGB colour filter array gives after bilinear demosaicing:
    each pixel measures one channel, the other two are averages of its neighbours', so the
    noise is spatially correlated and coloured as in a real camera."""
    height, width = std.shape[:2]
    measured = np.zeros_like(std)
    sites = np.zeros(std.shape, bool)
    sites[0::2, 0::2, 0] = True  # R
    sites[0::2, 1::2, 1] = sites[1::2, 0::2, 1] = True  # G
    sites[1::2, 1::2, 2] = True  # B
    measured[sites] = rng.normal(0.0, 1.0, int(sites.sum())) * std[sites]
    out = np.empty_like(std)
    kernel = np.array([[0.25, 0.5, 0.25], [0.5, 1.0, 0.5], [0.25, 0.5, 0.25]])
    for channel in range(3):
        values = np.pad(measured[..., channel], 1, mode="reflect")
        weights = np.pad(sites[..., channel].astype(np.float64), 1, mode="reflect")
        total = np.zeros((height, width))
        weight = np.zeros((height, width))
        for dy in range(3):
            for dx in range(3):
                total += kernel[dy, dx] * values[dy : dy + height, dx : dx + width]
                weight += kernel[dy, dx] * weights[dy : dy + height, dx : dx + width]
        out[..., channel] = total / np.maximum(weight, 1e-12)
    return out


def camera(x: np.ndarray, level: float, rng: np.random.Generator) -> np.ndarray:
    """Camera sensor noise by "unprocessing" (Brooks et al., CVPR 2019): the sRGB patch is
    taken back to an approximate raw signal (inverse tone curve and gamma, a drawn colour
    matrix and white balance inverted), given heteroscedastic shot + read noise on a Bayer
    mosaic (demosaiced, so correlated across pixels and channels), and processed forward
    again.  ``level`` in [0, 1] places the shot noise log-uniformly over the camera range of
    Brooks et al. (1e-4 to 1.2e-2, low to high ISO); the read noise follows their fitted
    log-linear relation with a drawn deviation.  A share of patches ends as an in-camera
    JPEG at a drawn quality (CBDNet's point: real noise has been through the pipeline)."""
    unit = x.astype(np.float64) / 255.0
    linear = np.maximum(_inverse_tone_curve(unit), 1e-8) ** 2.2
    # rgb -> camera: rows mixing in the other channels (a camera's filters overlap)
    mixing = rng.uniform(0.0, 1.0, (3, 3))
    np.fill_diagonal(mixing, 0.0)
    mixing /= mixing.sum(axis=1, keepdims=True)
    share = rng.uniform(0.1, 0.35)
    rgb_to_camera = (1.0 - share) * np.eye(3) + share * mixing
    white_balance = np.array([rng.uniform(1.9, 2.4), 1.0, rng.uniform(1.5, 1.9)])
    brightness = 1.0 / np.clip(rng.normal(0.8, 0.1), 0.5, 1.2)
    raw = linear @ rgb_to_camera.T / white_balance / brightness
    log_shot = np.log(1e-4) + level * (np.log(1.2e-2) - np.log(1e-4))
    log_read = 2.18 * log_shot + 1.2 + rng.normal(0.0, 0.26)
    variance = np.exp(log_shot) * np.clip(raw, 0.0, None) + np.exp(log_read)
    raw = raw + _bayer_noise(np.sqrt(variance), rng)
    linear = (raw * white_balance * brightness) @ np.linalg.inv(rgb_to_camera).T
    srgb = _tone_curve(np.clip(linear, 0.0, 1.0) ** (1.0 / 2.2))
    out = srgb * 255.0
    if rng.random() < 0.3:
        return jpeg(to_uint8(out), float(rng.integers(70, 96)), rng).astype(np.float64)
    return out


def jpeg(x: np.ndarray, quality: float, rng: np.random.Generator) -> np.ndarray:
    del rng  # deterministic given the quality
    buffer = io.BytesIO()
    Image.fromarray(x).save(buffer, format="JPEG", quality=int(round(quality)))
    return np.asarray(Image.open(io.BytesIO(buffer.getvalue())).convert("RGB"))


@dataclass(frozen=True)
class NoiseModel:
    function: Callable[[np.ndarray, float, np.random.Generator], np.ndarray]
    parameter: str  # name of the parameter, recorded in each example
    low: float  # valid parameter range
    high: float


MODELS: dict[str, NoiseModel] = {
    "gaussian": NoiseModel(gaussian, "sigma", 0.0, 255.0),
    "poisson": NoiseModel(poisson, "peak", 1e-3, 1e6),
    "saltpepper": NoiseModel(saltpepper, "density", 0.0, 1.0),
    "speckle": NoiseModel(speckle, "variance", 0.0, 10.0),
    "jpeg": NoiseModel(jpeg, "quality", 1.0, 95.0),
    "camera": NoiseModel(camera, "level", 0.0, 1.0),
}


@dataclass(frozen=True)
class Term:
    """One model with a fixed value (low == high) or a uniform range."""

    name: str
    low: float
    high: float

    def draw(self, rng: np.random.Generator) -> float:
        value = self.low if self.low == self.high else rng.uniform(self.low, self.high)
        return float(round(value)) if self.name == "jpeg" else float(value)


@dataclass(frozen=True)
class NoiseSpec:
    combine: str  # "single", "mix" or "chain"
    terms: tuple[Term, ...]
    text: str

    def apply(
        self, x: np.ndarray, rng: np.random.Generator, rounded: bool = True
    ) -> tuple[np.ndarray, list[dict]]:
        """Returns the noisy patch and what was applied, one dict per model used.

        The patch is uint8, or with ``rounded=False`` float64 on the 0-255 scale, unclipped
        (models before the last in a chain still see uint8, as JPEG needs)."""
        if self.combine == "mix":
            terms = (self.terms[int(rng.integers(len(self.terms)))],)
        else:
            terms = self.terms
        applied = []
        out = x
        for position, term in enumerate(terms, 1):
            model = MODELS[term.name]
            value = term.draw(rng)
            out = model.function(out, value, rng)
            if rounded or position < len(terms):
                out = to_uint8(out)
            else:
                out = np.asarray(out, np.float64)
            applied.append({"model": term.name, model.parameter: value})
        return out, applied


def _parse_term(text: str) -> Term:
    name, sep, value = text.partition(":")
    if not sep or name not in MODELS:
        raise ValueError(
            f"noise model {text!r}: expected NAME:VALUE with NAME one of {sorted(MODELS)}"
        )
    try:
        # a range is low-high; values are non-negative so '-' is unambiguous
        low_text, dash, high_text = value.partition("-")
        low = float(low_text)
        high = float(high_text) if dash else low
    except ValueError as e:
        raise ValueError(f"noise model {text!r}: {value!r} is not a number or range") from e
    model = MODELS[name]
    if not (model.low <= low <= high <= model.high):
        raise ValueError(
            f"noise model {text!r}: {model.parameter} must satisfy "
            f"{model.low} <= low <= high <= {model.high}"
        )
    return Term(name, low, high)


def parse_spec(text: str) -> NoiseSpec:
    """Parses a SPEC string such as ``gaussian:0-55`` or ``mix:gaussian:5-50+jpeg:20-60``."""
    text = text.strip()
    for combine in ("mix", "chain"):
        prefix = combine + ":"
        if text.startswith(prefix):
            parts = [part for part in text[len(prefix) :].split("+") if part]
            if not parts:
                raise ValueError(f"noise spec {text!r}: {combine} needs at least one model")
            return NoiseSpec(combine, tuple(_parse_term(part) for part in parts), text)
    return NoiseSpec("single", (_parse_term(text),), text)
