"""Pillow reads latentpress code files: after ``import latentpress``, ``Image.open(path)``
of a ``.lpc`` file gives the decoded image (format "LPC"), as pillow-heif and
pillow-avif-plugin do for theirs.  The header is read at open; decoding (and TensorFlow)
waits for the first access to the pixels."""

from __future__ import annotations

from PIL import Image, ImageFile

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
        self._mode = "L" if code.source_channels == 1 else "RGB"
        self._size = (code.width, code.height)
        self.info["latentpress_model"] = code.fingerprint
        self.info["latentpress_version"] = code.version
        if code.quality is not None:
            self.info["quality"] = code.quality
        self.tile = []

    def load(self):
        if self._data is not None:
            from latentpress.api import decompress

            pixels = decompress(self._data)
            self.im = Image.fromarray(pixels, self.mode).im
            self._data = None
        return Image.Image.load(self)


def register() -> None:
    Image.register_open(FORMAT, LatentpressImageFile, _accept)
    Image.register_extensions(FORMAT, [SUFFIX])
    Image.register_mime(FORMAT, "image/x-latentpress")
