"""The Python API and the Pillow plugin: what a Python user reaches code files with."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from PIL import Image, UnidentifiedImageError

import latentpress
from latentpress.samples import sample_paths
from models.compressor import Compressor


@pytest.fixture(scope="module")
def photo() -> np.ndarray:
    path = next(p for p in sample_paths() if p.endswith("chelsea.png"))
    return np.asarray(Image.open(path).convert("RGB"))[:120, :200]


def test_compress_takes_arrays_pil_images_and_paths_alike(photo, tmp_path):
    path = tmp_path / "photo.png"
    Image.fromarray(photo).save(path)
    from_array = latentpress.compress(photo, quality=30)
    assert latentpress.compress(Image.fromarray(photo), quality=30) == from_array
    assert latentpress.compress(path, quality=30) == from_array
    assert latentpress.compress(str(path), quality=30) == from_array
    # the file is the command line's and the Compressor's own
    assert from_array == Compressor().compress(photo, quality=30.0)
    decoded = latentpress.decompress(from_array)
    assert decoded.shape == photo.shape and decoded.dtype == np.uint8
    np.testing.assert_array_equal(decoded, Compressor().decompress(from_array))
    assert latentpress.compress(photo, quality=90) != from_array  # quality is used


def test_a_grayscale_array_comes_back_grayscale(photo):
    gray = np.asarray(Image.fromarray(photo).convert("L"))
    decoded = latentpress.decompress(latentpress.compress(gray))
    assert decoded.shape == gray.shape


def test_bad_arrays_are_clear_errors():
    with pytest.raises(ValueError, match="uint8"):
        latentpress.compress(np.zeros((8, 8, 3), np.float32))
    with pytest.raises(ValueError, match="shape"):
        latentpress.compress(np.zeros((8, 8, 4), np.uint8))


def test_pillow_opens_code_files_after_import_latentpress(photo, tmp_path):
    path = tmp_path / "photo.png.lpc"
    data = latentpress.compress(photo, quality=60)
    path.write_bytes(data)
    with Image.open(path) as image:
        assert image.format == "LPC" and image.mode == "RGB"
        assert image.size == (photo.shape[1], photo.shape[0])
        assert image.info["quality"] == 60.0
        np.testing.assert_array_equal(np.asarray(image), latentpress.decompress(data))
    gray = np.asarray(Image.fromarray(photo).convert("L"))
    path.write_bytes(latentpress.compress(gray))
    with Image.open(path) as image:
        assert image.mode == "L" and np.asarray(image).shape == gray.shape
    path.write_bytes(data[:-9] + b"corrupted")
    with pytest.raises(UnidentifiedImageError):
        Image.open(path)


def test_import_latentpress_does_not_start_tensorflow():
    done = subprocess.run(
        [sys.executable, "-c", "import sys, latentpress; print('tensorflow' in sys.modules)"],
        capture_output=True,
        text=True,
    )
    assert done.stdout.strip() == "False", done.stderr


def test_what_a_photograph_carries_comes_back_through_the_api_and_pillow(tmp_path):
    """EXIF, ICC and alpha from a path or a PIL image reach decompress_image, the array's
    alpha plane and Image.open of the code file; a multi-frame path asks for its frame."""
    from tests.carried_files import exif_tags, write_carried_files

    files = write_carried_files(tmp_path / "in")
    code = latentpress.compress(files["exif"], quality=30)
    with Image.open(files["exif"]) as source:
        assert latentpress.compress(source, quality=30) == code  # a PIL image carries the same
        expected_exif, icc = {**exif_tags(source), 0x0112: 1}, source.info["icc_profile"]
    back = latentpress.decompress_image(code)
    assert exif_tags(back) == expected_exif and back.info["icc_profile"] == icc
    (tmp_path / "camera.jpg.lpc").write_bytes(code)
    with Image.open(tmp_path / "camera.jpg.lpc") as opened:
        assert opened.info["icc_profile"] == icc and exif_tags(opened) == expected_exif

    cutout = latentpress.compress(files["alpha"])
    with Image.open(files["alpha"]) as source:
        alpha = np.asarray(source)[..., 3]
    pixels = latentpress.decompress(cutout)
    assert pixels.shape == (*alpha.shape, 4)
    np.testing.assert_array_equal(pixels[..., 3], alpha)
    (tmp_path / "cutout.png.lpc").write_bytes(cutout)
    with Image.open(tmp_path / "cutout.png.lpc") as opened:
        assert opened.mode == "RGBA"
        np.testing.assert_array_equal(np.asarray(opened)[..., 3], alpha)

    with pytest.raises(ValueError, match="2 frames"):
        latentpress.compress(files["pages"])
    second = latentpress.decompress(latentpress.compress(files["pages"], frame=1))
    first = latentpress.decompress(latentpress.compress(files["pages"], frame=0))
    assert (
        np.abs(second.astype(int) - first[:, ::-1]).mean()
        < np.abs(second.astype(int) - first).mean()
    )
