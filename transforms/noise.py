"""Synthetic noise models and the ``--noise`` SPEC syntax.

SPEC grammar (documented in the README, "Noise specs")::

    spec   := model | "mix:" model ("+" model)* | "chain:" model ("+" model)*
    model  := name ":" value | name ":" low "-" high
    name   := gaussian | poisson | saltpepper | speckle | jpeg

A range ``low-high`` draws the parameter uniformly per patch (blind training); ``mix`` picks one
of its models per patch, uniformly; ``chain`` applies its models in order (e.g. sensor noise
then compression).  Parameters are in these units:

    gaussian:SIGMA      additive white Gaussian noise, sigma in 8-bit levels (0-255)
    poisson:PEAK        shot noise, PEAK photons at full white (smaller is noisier)
    saltpepper:DENSITY  fraction of pixels (0-1) set to black or white, all channels alike
    speckle:VARIANCE    multiplicative noise x + x*n, n ~ N(0, VARIANCE), x in [0, 1]
    jpeg:QUALITY        JPEG compression artefacts at Pillow quality 1-95 (integer)

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
