"""A folder of the images an archive meets besides plain RGB: a JPEG with EXIF, XMP and an ICC
profile (rotated by its orientation tag), an RGBA PNG with transparent areas, a two-page TIFF,
a 16-bit PNG, a CMYK JPEG with a CMYK-tagged profile, and a palette PNG.  Small (96x64) real
photograph crops, so that every stage runs them in seconds."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageCms

from tests.conftest import copy_samples

EXIF_TAGS = {0x010F: "latentpress camera", 0x0110: "LP-1", 0x0132: "2026:12:05 10:00:00"}
XMP = (
    b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/'
    b'22-rdf-syntax-ns#"><rdf:Description xmlns:dc="http://purl.org/dc/elements/1.1/" '
    b'dc:creator="an archivist"/></rdf:RDF></x:xmpmeta>'
)


def srgb_profile() -> bytes:
    return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()


def photo_crop(folder: Path, size=(96, 64)) -> Image.Image:
    (path,) = copy_samples(folder / "_source", 0, 1)
    with Image.open(path) as image:
        return image.convert("RGB").crop((0, 0, *size))


def write_carried_files(folder: Path) -> dict[str, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    rgb = photo_crop(folder)
    paths = {}

    exif = Image.Exif()
    exif.update(EXIF_TAGS)
    exif[0x0112] = 6  # stored sideways: shown rotated 90 degrees
    paths["exif"] = folder / "camera.jpg"
    rgb.save(paths["exif"], quality=95, exif=exif.tobytes(), icc_profile=srgb_profile(), xmp=XMP)

    alpha = np.full((64, 96), 255, np.uint8)
    alpha[:, :30] = 0  # fully transparent
    alpha[20:40, 40:70] = 128  # half
    paths["alpha"] = folder / "cutout.png"
    Image.fromarray(np.dstack([np.asarray(rgb), alpha]), "RGBA").save(paths["alpha"])

    paths["pages"] = folder / "scan.tif"
    second = rgb.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    rgb.save(paths["pages"], save_all=True, append_images=[second])

    wide = (np.asarray(rgb.convert("L"), dtype=np.uint16) * 257).astype(np.uint16)
    paths["deep"] = folder / "deep.png"
    Image.fromarray(wide).save(paths["deep"])  # I;16

    paths["cmyk"] = folder / "print.jpg"
    cmyk_profile = bytearray(srgb_profile())
    cmyk_profile[16:20] = b"CMYK"  # tagged as a CMYK profile: it must not land on RGB pixels
    rgb.convert("CMYK").save(paths["cmyk"], quality=95, icc_profile=bytes(cmyk_profile))

    paths["palette"] = folder / "palette.png"
    rgb.quantize(64).save(paths["palette"])

    for leftover in (folder / "_source").iterdir():
        leftover.unlink()
    (folder / "_source").rmdir()
    return paths


def exif_tags(image: Image.Image) -> dict:
    exif = image.getexif()
    return {tag: exif.get(tag) for tag in (*EXIF_TAGS, 0x0112)}
