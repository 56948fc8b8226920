"""Shared fixtures: real image files on disk, good and deliberately broken."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from latentpress.samples import sample_paths

SHARED_DATASETS = Path(__file__).resolve().parents[2] / "shared" / "datasets"


def shared_dataset(name: str) -> Path:
    """A folder of ../shared/datasets, or a skip with the reason when it is absent."""
    path = SHARED_DATASETS / name
    if not path.is_dir():
        pytest.skip(f"{path} not present (developer/CI data set, not part of the product)")
    return path


def write_broken_files(folder: Path) -> dict[str, str]:
    """Writes one file per failure mode; returns {file name: expected dead-letter reason}."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "empty.jpg").write_bytes(b"")
    (folder / "notes.jpg").write_text("this is a text file named like a JPEG\n")
    jpeg = Path(sample_paths()[-1]).read_bytes()  # rocket.jpg
    (folder / "truncated.jpg").write_bytes(jpeg[: len(jpeg) // 3])
    Image.new("RGB", (40, 30), (10, 20, 30)).save(folder / "tiny.png")
    os.symlink(folder / "does-not-exist.png", folder / "dangling.png")
    return {
        "empty.jpg": "empty_file",
        "notes.jpg": "not_an_image",
        "truncated.jpg": "truncated_or_corrupt",
        "tiny.png": "smaller_than_patch",
        "dangling.png": "unreadable_path",
    }


def copy_samples(folder: Path, start: int = 0, stop: int | None = None) -> list[Path]:
    """Copies the embedded sample photographs [start:stop] into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    copied = []
    for path in sample_paths()[start:stop]:
        target = folder / os.path.basename(path)
        shutil.copy(path, target)
        copied.append(target)
    return copied


def export_untrained_codec(directory: Path, name: str, lmbdas: tuple = (), **config) -> str:
    """A small untrained codec exported like a trained one: "another model" for tests.

    With ``lmbdas`` it is variable-rate; its initial gains already order the rates.  Other
    ``CodecConfig`` fields (mean_scale, slices) go in ``config``."""
    from models.codec import CodecConfig, ScaleHyperprior
    from models.export import CODEC, export_model

    model = ScaleHyperprior(CodecConfig(num_filters=16, latent_filters=24, lmbdas=lmbdas, **config))
    model.build_for_images()
    export_model(model, CODEC, str(directory), {"name": name})
    return str(directory)


@pytest.fixture
def rng():
    return np.random.default_rng(1234)
