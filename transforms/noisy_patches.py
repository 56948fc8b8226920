"""Composite PTransforms that turn decoded images into seeded (clean, noisy) patch pairs."""

from __future__ import annotations

from dataclasses import dataclass

import apache_beam as beam
import numpy as np
from apache_beam.metrics import Metrics

from transforms.noise import parse_spec
from transforms.patches import extract_patches, rng_for, split_for
from transforms.read_images import DecodedImage


@dataclass
class Patch:
    key: str  # source image key
    index: int
    split: str
    clean: np.ndarray
    noisy: np.ndarray | None = None
    applied: list | None = None  # noise models and drawn parameters


class ExtractPatches(beam.PTransform):
    """DecodedImage -> ``count`` Patch per image, placed by (key, seed), split by key."""

    def __init__(self, patch_size: int, count: int, seed: int, eval_fraction: float):
        super().__init__()
        self._patch_size = patch_size
        self._count = count
        self._seed = seed
        self._eval_fraction = eval_fraction

    def _patches(self, image: DecodedImage):
        split = split_for(image.key, self._eval_fraction)
        crops = extract_patches(image.pixels, image.key, self._patch_size, self._count, self._seed)
        for index, crop in enumerate(crops):
            yield Patch(image.key, index, split, crop)

    def expand(self, images):
        return images | "Crop" >> beam.FlatMap(self._patches)


class _NoiseFn(beam.DoFn):
    def __init__(self, spec_text: str, seed: int):
        self._spec_text = spec_text
        self._seed = seed
        self._patches = Metrics.counter("add_noise", "patches")

    def setup(self):
        self._spec = parse_spec(self._spec_text)

    def process(self, patch: Patch):
        # One generator per (image key, patch index, seed): independent of bundle order.
        rng = rng_for("noise", patch.key, patch.index, self._seed)
        noisy, applied = self._spec.apply(patch.clean, rng)
        self._patches.inc()
        yield Patch(patch.key, patch.index, patch.split, patch.clean, noisy, applied)


class AddNoise(beam.PTransform):
    """Patch -> Patch with ``noisy`` and ``applied`` set, reproducibly from ``seed``."""

    def __init__(self, spec_text: str, seed: int):
        super().__init__()
        parse_spec(spec_text)  # fail at construction, not on a worker
        self._spec_text = spec_text
        self._seed = seed

    def expand(self, patches):
        return patches | "Noise" >> beam.ParDo(_NoiseFn(self._spec_text, self._seed))
