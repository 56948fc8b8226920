"""What a photograph carries besides its RGB samples, and how it travels: the one module that
reads it from a source image, stores it in a code file's chunks and writes it back.

Carried (each verbatim, unless ``--strip-metadata``):
  * EXIF (orientation set to 1: the pixels are stored upright), XMP, the ICC colour profile
    (only one describing the decoded pixels' colour space: RGB, or GRAY for a grayscale
    source; a CMYK profile does not describe Pillow's plain CMYK -> RGB conversion);
  * the alpha plane, losslessly (a PNG-compressed plane in the code file; the RGB is coded
    composited over white, as every stage sees it, and un-composited on decoding), unless
    ``--alpha drop``;
  * which frame of a multi-frame file (TIFF pages, GIF/WebP frames) an image is, and the
    source's bit depth (16-bit samples are coded at 8 bits, said in a note).
Each metadata item is carried up to ``MAX_ITEM_BYTES``; a larger one is left out with a note.
Every choice that leaves something out is written to ``notes``, which the CLI prints and the
manifest records: nothing is dropped without a word.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass, field, replace

import numpy as np
from PIL import Image, ImageCms, PngImagePlugin

from models import codefile

# Above this an EXIF, XMP or ICC item is not carried (a note says so): real ones are a few
# KB to ~100 KB (a maker note, an embedded thumbnail); 1 MiB leaves room without letting a
# pathological file grow every code file.
MAX_ITEM_BYTES = 1 << 20
ORIENTATION_TAG = 0x0112
KEEP, DROP = "keep", "drop"
ALPHA_CHOICES = (KEEP, DROP)
ALL_FRAMES, FIRST_FRAME, REFUSE_FRAMES = "all", "first", "refuse"
FRAME_CHOICES = (ALL_FRAMES, FIRST_FRAME, REFUSE_FRAMES)
_PNG_XMP_KEY = "XML:com.adobe.xmp"


@dataclass(frozen=True)
class Carried:
    """What travels with one image (one frame of its source)."""

    exif: bytes = b""
    xmp: bytes = b""
    icc: bytes = b""
    alpha: np.ndarray | None = field(default=None, compare=False)  # (H, W) uint8
    bit_depth: int = 8  # of the source's samples
    frame: int = 0  # this image's frame of the source, 0-based
    frames: int = 1  # frames in the source
    stripped: bool = False  # --strip-metadata was given
    notes: tuple[str, ...] = ()  # what was left out or changed, one phrase each

    def manifest_fields(self) -> dict:
        """The manifest's per-image account (``transforms.manifest``)."""
        return {
            "exif_bytes": len(self.exif),
            "xmp_bytes": len(self.xmp),
            "icc_bytes": len(self.icc),
            "icc_description": profile_description(self.icc),
            "alpha": self.alpha is not None,
            "frame": f"{self.frame + 1}/{self.frames}" if self.frames > 1 else "",
            "bit_depth": self.bit_depth,
            "metadata": "stripped" if self.stripped else "kept",
            "notes": "; ".join(self.notes),
        }


def frame_suffix(carried: Carried) -> str:
    """``.frame-<n>`` (1-based) for a frame of a multi-frame source, so that every frame has
    its own stable name (``a.tif`` -> ``a.tif.frame-2.lpc``); "" otherwise."""
    return f".frame-{carried.frame + 1}" if carried.frames > 1 else ""


def frame_key(key: str, carried: Carried) -> str:
    """An image's key (its relative output name before suffixes)."""
    return key + frame_suffix(carried)


def profile_description(icc: bytes) -> str:
    if not icc:
        return ""
    try:
        return ImageCms.getProfileDescription(ImageCms.ImageCmsProfile(io.BytesIO(icc))).strip()
    except (OSError, ImageCms.PyCMSError, TypeError):
        return "(unreadable profile)"


def _profile_space(icc: bytes) -> str:
    """The ICC header's data colour space (bytes 16-20), e.g. "RGB", "GRAY", "CMYK"."""
    return icc[16:20].decode("ascii", "replace").strip() if len(icc) >= 20 else ""


def source_bit_depth(image: Image.Image) -> int:
    """Bits per sample of the source as stored (Pillow opens 16-bit RGB PNGs as 8-bit "RGB",
    so the raw mode of its tiles says what the file had)."""
    tiles = getattr(image, "tile", None) or []  # a plain Image (not from a file) has none
    if image.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I", "F"):
        return 32 if image.mode in ("I", "F") and "16" not in str(tiles) else 16
    raw_modes = [str(getattr(tile, "args", "")) for tile in tiles]
    return 16 if any(";16" in mode for mode in raw_modes) else 8


def _upright_exif(image: Image.Image) -> bytes:
    exif = image.getexif()
    if not exif and not image.info.get("exif"):
        return b""
    exif[ORIENTATION_TAG] = 1  # upright pixels (exif_transpose removes the tag: say it)
    return exif.tobytes()


def _xmp(image: Image.Image) -> bytes:
    xmp = image.info.get("xmp") or image.info.get(_PNG_XMP_KEY) or b""
    return xmp.encode("utf-8") if isinstance(xmp, str) else bytes(xmp)


def _alpha(image: Image.Image) -> np.ndarray | None:
    """The alpha plane of an image with transparency, or None when it has none or every
    pixel is opaque (nothing to keep)."""
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode not in ("RGBA", "LA", "PA", "RGBa", "La"):
        return None
    alpha = np.asarray(image.getchannel("A"), dtype=np.uint8)
    return None if alpha.min() == 255 else alpha.copy()


def read(
    image: Image.Image,
    frame: int,
    frames: int,
    grayscale: bool,
    bit_depth: int,
    strip: bool = False,
    alpha: str = KEEP,
) -> Carried:
    """What ``image`` (loaded, already upright) carries, by the rules of this module."""
    notes = []
    if bit_depth > 8:
        notes.append(f"{bit_depth}-bit samples coded at 8 bits")
    plane = _alpha(image)
    if plane is not None and alpha == DROP:
        notes.append("alpha dropped (--alpha drop; composited over white)")
        plane = None
    if strip:
        return Carried(b"", b"", b"", plane, bit_depth, frame, frames, True, tuple(notes))
    items = {"exif": _upright_exif(image), "xmp": _xmp(image), "icc": b""}
    icc = image.info.get("icc_profile") or b""
    if icc:
        space = _profile_space(icc)
        if space == ("GRAY" if grayscale else "RGB"):
            items["icc"] = bytes(icc)
        else:
            notes.append(f"{space or 'unknown'} ICC profile not carried (pixels converted)")
    for name, data in items.items():
        if len(data) > MAX_ITEM_BYTES:
            notes.append(f"{name} not carried ({len(data)} bytes > {MAX_ITEM_BYTES})")
            items[name] = b""
    return Carried(
        items["exif"], items["xmp"], items["icc"], plane, bit_depth, frame, frames, False,
        tuple(notes),
    )  # fmt: skip


def to_chunks(carried: Carried) -> tuple[tuple[bytes, bytes], ...]:
    """The code file's chunks (``models.codefile``) for ``carried``."""
    chunks = []
    for tag, data in (
        (codefile.EXIF, carried.exif),
        (codefile.XMP, carried.xmp),
        (codefile.ICC, carried.icc),
    ):
        if data:
            chunks.append((tag, data))
    if carried.alpha is not None:
        chunks.append((codefile.ALPHA, _png(Image.fromarray(carried.alpha, "L"))))
    source = {"bit_depth": carried.bit_depth, "frame": carried.frame, "frames": carried.frames}
    if source != {"bit_depth": 8, "frame": 0, "frames": 1}:
        chunks.append((codefile.SOURCE, json.dumps(source, sort_keys=True).encode()))
    return tuple(chunks)


def from_code(code: codefile.CodeFile) -> Carried:
    """What a code file carries (nothing for format 1 and 2 files)."""
    alpha = code.chunk(codefile.ALPHA)
    plane = None
    if alpha is not None:
        with Image.open(io.BytesIO(alpha)) as image:
            plane = np.asarray(image.convert("L"), dtype=np.uint8).copy()
        if plane.shape != (code.height, code.width):
            raise codefile.CodeFileError(f"alpha chunk is {plane.shape[::-1]}, image is not")
    source = json.loads(code.chunk(codefile.SOURCE) or b"{}")
    return Carried(
        code.chunk(codefile.EXIF) or b"",
        code.chunk(codefile.XMP) or b"",
        code.chunk(codefile.ICC) or b"",
        plane,
        int(source.get("bit_depth", 8)),
        int(source.get("frame", 0)),
        int(source.get("frames", 1)),
    )


def composite_on_white(rgb: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """What every stage codes for a transparent image (``transforms.decode.to_rgb``)."""
    a = alpha[..., np.newaxis].astype(np.float64) / 255.0
    return np.clip(np.rint(rgb * a + 255.0 * (1.0 - a)), 0, 255).astype(np.uint8)


def uncomposite(composited: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """The straight colour back from one composited over white (0 where fully
    transparent, which no viewer shows)."""
    a = alpha[..., np.newaxis].astype(np.float64) / 255.0
    with np.errstate(divide="ignore", invalid="ignore"):
        rgb = (composited.astype(np.float64) - 255.0 * (1.0 - a)) / a
    return np.where(a > 0, np.clip(np.rint(np.nan_to_num(rgb)), 0, 255), 0).astype(np.uint8)


def to_image(pixels: np.ndarray, carried: Carried | None = None) -> Image.Image:
    """The decoded image as Pillow's: (H, W) grayscale or (H, W, 3) RGB, plus alpha (L -> LA,
    RGB -> RGBA) and the metadata in ``info``."""
    carried = carried or Carried()
    image = Image.fromarray(pixels)
    if carried.alpha is not None:
        colour = pixels if pixels.ndim == 3 else pixels[..., np.newaxis]
        straight = uncomposite(colour, carried.alpha)
        planes = np.concatenate([straight, carried.alpha[..., np.newaxis]], axis=-1)
        image = Image.fromarray(planes, "RGBA" if pixels.ndim == 3 else "LA")
    for key, value in (("exif", carried.exif), ("icc_profile", carried.icc), ("xmp", carried.xmp)):
        if value:
            image.info[key] = value
    return image


def encode_png(pixels: np.ndarray, carried: Carried | None = None) -> bytes:
    """PNG bytes of a decoded or cleaned image with what it carries: EXIF (eXIf chunk), ICC
    profile (iCCP), XMP (iTXt ``XML:com.adobe.xmp``) and alpha."""
    return _png(to_image(pixels, carried))


def _png(image: Image.Image) -> bytes:
    options = {}
    if image.info.get("exif"):
        options["exif"] = image.info["exif"]
    if image.info.get("icc_profile"):
        options["icc_profile"] = image.info["icc_profile"]
    if image.info.get("xmp"):
        text = PngImagePlugin.PngInfo()
        text.add_itxt(_PNG_XMP_KEY, image.info["xmp"].decode("utf-8", "replace"))
        options["pnginfo"] = text
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", **options)
    return buffer.getvalue()


def with_note(carried: Carried, note: str) -> Carried:
    return replace(carried, notes=(*carried.notes, note))
