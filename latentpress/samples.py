"""The embedded sample corpus: natural photographs that install with scikit-image's wheel.

They are the default ``--input`` of every stage, so a fresh install runs with no download.
``camera.png`` is grayscale on purpose: it exercises the grayscale-to-RGB rule.
"""

from __future__ import annotations

import os

SAMPLE_FILES = (
    "astronaut.png",
    "camera.png",
    "chelsea.png",
    "coffee.png",
    "hubble_deep_field.jpg",
    "motorcycle_left.png",
    "rocket.jpg",
)


def sample_dir() -> str:
    import skimage.data  # the photographs sit beside this module in the wheel

    return os.path.dirname(os.path.abspath(skimage.data.__file__))


def sample_paths() -> list[str]:
    root = sample_dir()
    paths = [os.path.join(root, name) for name in SAMPLE_FILES]
    missing = [p for p in paths if not os.path.exists(p)]
    if missing:
        raise FileNotFoundError(f"embedded sample images missing from scikit-image: {missing}")
    return paths
