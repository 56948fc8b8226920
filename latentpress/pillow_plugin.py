"""Pillow reads latentpress code files: after ``import latentpress``, ``Image.open(path)``
of a ``.lpc`` file gives the decoded image (format "LPC"), as pillow-heif and
pillow-avif-plugin do for theirs.  The header is read at open; decoding (and TensorFlow)
waits for the first access to the pixels.  ``info`` holds the EXIF, ICC profile and XMP the
file carries; a file with alpha opens as RGBA (or LA)."""

from __future__ import annotations

from PIL import Image, ImageFile

from models import codefile
from models.codefile import MAGIC, SUFFIX, CodeFile, CodeFileError

FORMAT = "LPC"


def _accept(prefix: bytes) -> bool:
    return prefix[: len(MAGIC)] == MAGIC


class LatentpressImageFile(ImageFile.ImageFile):
    format = FORMAT
    format_description = "latentpress code file"

    def _open(self):
        self._data = self.fp.read()
        try:
            code = CodeFile.from_bytes(self._data)
        except CodeFileError as e:
            raise SyntaxError(str(e)) from e
        alpha = code.chunk(codefile.ALPHA) is not None
        self._mode = (
            ("LA" if alpha else "L") if code.source_channels == 1 else ("RGBA" if alpha else "RGB")
        )
        self._size = (code.width, code.height)
        self.info["latentpress_model"] = code.fingerprint
        self.info["latentpress_version"] = code.version
        if code.quality is not None:
            self.info["quality"] = code.quality
        for key, tag in (
            ("exif", codefile.EXIF),
            ("icc_profile", codefile.ICC),
            ("xmp", codefile.XMP),
        ):
            if code.chunk(tag):
                self.info[key] = code.chunk(tag)
        self.tile = []

    def load(self):
        if self._data is not None:
            from latentpress.api import decompress_image

            self.im = decompress_image(self._data).im
            self._data = None
        return Image.Image.load(self)


def register() -> None:
    Image.register_open(FORMAT, LatentpressImageFile, _accept)
    Image.register_extensions(FORMAT, [SUFFIX])
    Image.register_mime(FORMAT, "image/x-latentpress")
