"""Seeding, the train/eval split rule, and patch extraction.

Every random choice is seeded from a stable hash of the element's identity (never Python's
``hash``, which changes per process), so a retried bundle or a re-run gives the same bytes.
"""

from __future__ import annotations

import hashlib

import numpy as np

TRAIN = "train"
EVAL = "eval"


def stable_hash(*parts: object) -> int:
    """A 64-bit integer from the parts' text, identical in every process and on every machine."""
    text = "\x1f".join(str(part) for part in parts)
    return int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:8], "big")


def rng_for(*parts: object) -> np.random.Generator:
    return np.random.default_rng(stable_hash(*parts))


def noise_seed(image: str, sigma: float) -> int:
    """The seed of an evaluated image's noise, so every method sees the same noisy image.

    32 bits of the stable hash of "image:sigma", the seeds every evaluation report so far used
    (another seed would move their figures slightly)."""
    return stable_hash(f"{image}:{sigma}") >> 32


def split_for(image_key: str, eval_fraction: float) -> str:
    """The split of an image, from its key alone: all of an image's patches share it.

    The seed is deliberately not part of the hash, so the eval images stay the same when the
    noise seed changes.
    """
    unit = stable_hash("split", image_key) / 2.0**64
    return EVAL if unit < eval_fraction else TRAIN


def patch_corners(
    height: int, width: int, patch_size: int, count: int, rng: np.random.Generator
) -> list[tuple[int, int]]:
    """``count`` top-left corners of ``patch_size`` squares inside a height x width image."""
    if height < patch_size or width < patch_size:
        raise ValueError(f"{width}x{height} image is smaller than a {patch_size} patch")
    rows = rng.integers(0, height - patch_size + 1, size=count)
    cols = rng.integers(0, width - patch_size + 1, size=count)
    return [(int(r), int(c)) for r, c in zip(rows, cols, strict=True)]


def extract_patches(
    image: np.ndarray, image_key: str, patch_size: int, count: int, seed: int
) -> list[np.ndarray]:
    """``count`` random crops, placed by a seed derived from (image key, seed)."""
    corners = patch_corners(
        image.shape[0], image.shape[1], patch_size, count, rng_for("crop", image_key, seed)
    )
    return [image[r : r + patch_size, c : c + patch_size].copy() for r, c in corners]
