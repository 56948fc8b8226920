"""Shared fixtures: real image files on disk, good and deliberately broken."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from latentpress.samples import sample_paths

REPO = Path(__file__).resolve().parents[1]
SHARED_DATASETS = REPO.parent / "shared" / "datasets"


def latentpress_process(*args: str) -> subprocess.CompletedProcess:
    """`latentpress ARGS` in a fresh process, as a user runs it.  For what only a new process
    shows (a quiet TensorFlow start-up, a decode without this process's state); everything
    else uses the ``latentpress`` fixture: each process start costs a TensorFlow import."""
    return subprocess.run(
        [sys.executable, "-m", "latentpress.cli", *args], capture_output=True, text=True, cwd=REPO
    )


@pytest.fixture
def latentpress(capfd):
    """`latentpress ARGS` through the command's own ``main`` in this process: the same exit
    code, stdout and stderr (captured at the file descriptors) as the command."""
    from latentpress import cli

    def run(*args: str) -> subprocess.CompletedProcess:
        capfd.readouterr()
        environment = dict(os.environ)  # main sets TF_CPP_MIN_LOG_LEVEL for its process
        try:
            code = cli.main(list(args))
        except SystemExit as e:  # argparse's usage errors and --help
            code = e.code if isinstance(e.code, int) else 1
        finally:
            os.environ.clear()
            os.environ.update(environment)
        out, err = capfd.readouterr()
        return subprocess.CompletedProcess(["latentpress", *args], code, out, err)

    return run


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


def export_untrained_codec(
    directory: Path, name: str, lmbdas: tuple = (), seed: int | None = None, **config
) -> str:
    """A small untrained codec exported like a trained one: "another model" for tests.

    With ``lmbdas`` it is variable-rate; its initial gains already order the rates.  Other
    ``CodecConfig`` fields (mean_scale, slices) go in ``config``.  ``seed`` fixes its weights
    where a test needs more than format: some random starts code next to nothing at every
    quality (PSNR and size the same at 0 and 100)."""
    import tf_keras as keras

    from models.codec import CodecConfig, ScaleHyperprior
    from models.export import CODEC, export_model

    if seed is not None:
        keras.utils.set_random_seed(seed)

    model = ScaleHyperprior(CodecConfig(num_filters=16, latent_filters=24, lmbdas=lmbdas, **config))
    model.build_for_images()
    export_model(model, CODEC, str(directory), {"name": name})
    return str(directory)


@pytest.fixture
def rng():
    return np.random.default_rng(1234)
