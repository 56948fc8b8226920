"""The code-file format: the one module that writes and reads ``.lpc`` files.

Layout (all integers big-endian)::

    offset  size  field
    0       4     magic b"LPC\\x00"
    4       1     format version (2; 3 below)
    5       8     model fingerprint (16 hex digits of the weights' SHA-256)
    13      4     image height in pixels
    17      4     image width in pixels
    21      1     source channels: 1 = decode to grayscale, 3 = RGB
    22      4     quality (float32, 0-100) of a variable-rate codec; NaN for a one-rate codec
    26      4     CRC-32 of the latents' scale indexes (catches a platform whose hyperprior
                  arithmetic differs, which would otherwise decode to a wrong image)
    30      4     length of the z stream in bytes (Z)
    34      4     length of the y stream in bytes (Y)
    38      Z     z stream: range-coded side information
    38+Z    Y     y stream: range-coded latents
    38+Z+Y  4     CRC-32 of every byte before it

Version 3 (written since 2026-12-04) adds, after the fingerprint, the identity of the exact
entropy model (``models.exact``: 8 bytes, the 16 hex digits of its arrays' SHA-256) whose
integer arithmetic chose every coding distribution, so any machine decodes the file the same,
and after the y stream a list of tagged chunks for what a photograph carries besides its
pixels::

    38+8+Z+Y   2   number of chunks
    then each  4   tag (ASCII, e.g. b"EXIF")
               4   length L
               L   data
    ...        4   CRC-32 of every byte before it

Version 4 (written since 2026-12-07) adds one byte at the end of version 3's header, the
synthesis's reach R in pixels (how far above and left of its own 16x16 block a latent moves
the decoded image), and codes only the latents that reach the image: the first
ceil((height + R) / 16) rows and ceil((width + R) / 16) columns of the padded grid
(``models.codec.coded_latents``).  The rest, padding up to the side information's 64-pixel
multiple, decode as their means (integer 0).  A 481x321 photograph pads to 512x384: version 3
spent ~9% of its bits on latents no pixel of the image depends on.

Version 5 (written since 2026-12-07) adds one signed byte after the reach: the image's scale
offset in quarter steps of the scale table, which the encoder chose (the one that codes the
image in the fewest bits) and which every latent's scale position adds, besides the codec's
own offset for the quality.  One hyperprior for every photograph gets the overall scale of
some wrong (smooth smartphone photographs at the top quality: 2 steps, 28%, too large).

Version 6 (written since 2026-12-07) adds one byte after the scale offset: the shape of the
distribution the latents are coded with, which the encoder chose with the offset: 0 the
codec's Gaussian tables (versions 3-5), else Student's t of ``models.exact.SHAPE_DEGREES``
degrees of freedom, whose integer tables every decoder builds from the formula.

Chunks written (``transforms.metadata`` fills and reads them): ``EXIF`` (TIFF-structured
EXIF as Pillow writes it, orientation 1), ``XMP `` (the XMP packet), ``ICCP`` (an ICC
profile), ``ALPH`` (the alpha plane as a PNG image, lossless), ``SRCE`` (JSON: the source's
bit depth and which of its frames this is, when not 8-bit and single-frame).
Readers skip tags they do not know.  Versions 1 and 2 chose the coding distributions in
floating point, so they decode only where the arithmetic matches the machine that wrote them;
they are still read.  Version 1 (latentpress 0.1, one-rate codecs only) is version 2 without
the quality field.

The padded size and latent shapes follow from height and width (see ``models.codec``).  The
reported rate of an image is 8 * file size / (height * width) bits per pixel, header included
(``bits_per_pixel``, the one definition every report uses).
"""

from __future__ import annotations

import math
import struct
import zlib
from dataclasses import dataclass

MAGIC = b"LPC\x00"
VERSION = 6
SUFFIX = ".lpc"
_HEADERS = {
    1: struct.Struct(">4sB8sIIBIII"),
    2: struct.Struct(">4sB8sIIBfIII"),
    3: struct.Struct(">4sB8s8sIIBfIII"),
    4: struct.Struct(">4sB8s8sIIBfIIIB"),  # version 3's, and the synthesis's reach
    5: struct.Struct(">4sB8s8sIIBfIIIBb"),  # version 4's, and the image's scale offset
    6: struct.Struct(">4sB8s8sIIBfIIIBbB"),  # version 5's, and the latents' coding shape
}
_CHECKSUM = struct.Struct(">I")
# Format 3 codes the latents in stripes of this many latent rows (each stripe's latents
# grouped by scale index), slice after slice: coder and decoder walk the same order.
STRIPE_ROWS = 16
_CHUNK_COUNT = struct.Struct(">H")
_CHUNK = struct.Struct(">4sI")
EXIF, XMP, ICC, ALPHA, SOURCE = b"EXIF", b"XMP ", b"ICCP", b"ALPH", b"SRCE"
# A variable-rate codec's quality scale, as JPEG's and WebP's settings: every reader of a
# quality (the command line, the codec, the Compressor, this header) uses these.
QUALITY_MIN, QUALITY_MAX = 0.0, 100.0


class CodeFileError(ValueError):
    """A file that cannot be decoded; the message is one line naming the problem."""


@dataclass(frozen=True)
class CodeFile:
    fingerprint: str  # 16 hex digits
    height: int
    width: int
    source_channels: int
    index_checksum: int
    z_stream: bytes
    y_stream: bytes
    quality: float | None = None  # variable-rate codecs only
    # version 3 on: the exact entropy model's identity (16 hex digits); None in older files
    exact_identity: str | None = None
    chunks: tuple[tuple[bytes, bytes], ...] = ()  # (4-byte tag, data), version 3 on
    version: int = VERSION
    # version 4: the synthesis's reach in pixels, which decides the latents coded; None before
    reach: int | None = None
    # version 5: the image's scale offset in quarter steps of the scale table; 0 before
    scale_offset: int = 0
    # version 6: the latents' coding shape (models.exact.SHAPE_DEGREES; 0, the codec's
    # Gaussian, before)
    coding_shape: int = 0

    def chunk(self, tag: bytes) -> bytes | None:
        return next((data for name, data in self.chunks if name == tag), None)

    def to_bytes(self) -> bytes:
        if self.version != VERSION or self.exact_identity is None or self.reach is None:
            raise CodeFileError(f"this latentpress writes format {VERSION} only")
        if not 0 <= self.reach <= 255:
            raise CodeFileError(f"a synthesis reach of {self.reach} pixels is not 0-255")
        if not -128 <= self.scale_offset <= 127:
            raise CodeFileError(f"a scale offset of {self.scale_offset} is not -128-127")
        if not 0 <= self.coding_shape <= 255:
            raise CodeFileError(f"a coding shape of {self.coding_shape} is not 0-255")
        header = _HEADERS[VERSION].pack(
            MAGIC,
            VERSION,
            bytes.fromhex(self.fingerprint),
            bytes.fromhex(self.exact_identity),
            self.height,
            self.width,
            self.source_channels,
            math.nan if self.quality is None else self.quality,
            self.index_checksum,
            len(self.z_stream),
            len(self.y_stream),
            self.reach,
            self.scale_offset,
            self.coding_shape,
        )
        parts = [header, self.z_stream, self.y_stream, _CHUNK_COUNT.pack(len(self.chunks))]
        for tag, data in self.chunks:
            parts += [_CHUNK.pack(tag, len(data)), data]
        body = b"".join(parts)
        return body + _CHECKSUM.pack(zlib.crc32(body))

    @staticmethod
    def version_of(data: bytes) -> int:
        """The format version a code file's bytes were written in (without parsing the rest)."""
        if len(data) < len(MAGIC) or data[: len(MAGIC)] != MAGIC:
            raise CodeFileError("not a latentpress code file (bad magic bytes)")
        if len(data) < len(MAGIC) + 1:
            raise CodeFileError("truncated code file (no format version)")
        return data[len(MAGIC)]

    @classmethod
    def from_bytes(cls, data: bytes) -> CodeFile:
        version = cls.version_of(data)
        if version not in _HEADERS:
            raise CodeFileError(
                f"unsupported code-file format version {version} (this latentpress reads "
                f"versions {', '.join(map(str, _HEADERS))})"
            )
        header = _HEADERS[version]
        if len(data) < header.size + _CHECKSUM.size:
            raise CodeFileError(f"truncated code file ({len(data)} bytes, header incomplete)")
        fields = list(header.unpack_from(data))
        if version == 1:
            fields.insert(6, math.nan)
        if version < 3:
            fields.insert(3, None)
        z_length, y_length = fields[9], fields[10]
        streams_end = header.size + z_length + y_length
        chunks, end = _read_chunks(data, streams_end) if version >= 3 else ((), streams_end)
        if len(data) != end + _CHECKSUM.size:
            raise CodeFileError(
                f"truncated or padded code file ({len(data)} bytes, header says "
                f"{end + _CHECKSUM.size})"
            )
        (stored,) = _CHECKSUM.unpack_from(data, end)
        if zlib.crc32(data[:end]) != stored:
            raise CodeFileError("corrupted code file (checksum mismatch)")
        _, _, fingerprint, identity, height, width, channels, quality, index_checksum = fields[:9]
        reach = fields[11] if version >= 4 else None
        scale_offset = fields[12] if version >= 5 else 0
        coding_shape = fields[13] if version >= 6 else 0
        if channels not in (1, 3) or height == 0 or width == 0:
            raise CodeFileError(f"invalid header ({width}x{height}, {channels} channels)")
        if not (math.isnan(quality) or QUALITY_MIN <= quality <= QUALITY_MAX):
            raise CodeFileError(f"invalid header (quality {quality})")
        z_start = header.size
        return cls(
            fingerprint.hex(),
            height,
            width,
            channels,
            index_checksum,
            data[z_start : z_start + z_length],
            data[z_start + z_length : z_start + z_length + y_length],
            None if math.isnan(quality) else quality,
            identity.hex() if identity else None,
            chunks,
            version,
            reach,
            scale_offset,
            coding_shape,
        )


def _read_chunks(data: bytes, start: int) -> tuple[tuple, int]:
    """((tag, data), ...) of a version-3 file from ``start``, and where they end."""
    limit = len(data) - _CHECKSUM.size
    if start + _CHUNK_COUNT.size > limit:
        raise CodeFileError("truncated code file (streams longer than the file)")
    (count,) = _CHUNK_COUNT.unpack_from(data, start)
    position, chunks = start + _CHUNK_COUNT.size, []
    for _ in range(count):
        if position + _CHUNK.size > limit:
            raise CodeFileError("truncated code file (chunk header)")
        tag, length = _CHUNK.unpack_from(data, position)
        position += _CHUNK.size
        if position + length > limit:
            raise CodeFileError(f"truncated code file (chunk {tag!r})")
        chunks.append((tag, data[position : position + length]))
        position += length
    return tuple(chunks), position


def index_checksum(indexes) -> int:
    """CRC-32 of the scale indexes as little-endian int32 bytes."""
    import numpy as np

    return zlib.crc32(np.ascontiguousarray(indexes, dtype="<i4").tobytes())


def bits_per_pixel(num_bytes: int, pixels: int) -> float:
    """The reported rate: every byte of the file, header included, over the image's pixels."""
    return 8.0 * num_bytes / pixels if pixels else 0.0
