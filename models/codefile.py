"""The code-file format: the one module that writes and reads ``.lpc`` files.

Layout (all integers big-endian)::

    offset  size  field
    0       4     magic b"LPC\\x00"
    4       1     format version (2)
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

Version 1 (latentpress 0.1, one-rate codecs only) is the same without the quality field; it
is still read.

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
VERSION = 2
SUFFIX = ".lpc"
_HEADERS = {1: struct.Struct(">4sB8sIIBIII"), 2: struct.Struct(">4sB8sIIBfIII")}
_CHECKSUM = struct.Struct(">I")


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

    def to_bytes(self) -> bytes:
        header = _HEADERS[VERSION].pack(
            MAGIC,
            VERSION,
            bytes.fromhex(self.fingerprint),
            self.height,
            self.width,
            self.source_channels,
            math.nan if self.quality is None else self.quality,
            self.index_checksum,
            len(self.z_stream),
            len(self.y_stream),
        )
        body = header + self.z_stream + self.y_stream
        return body + _CHECKSUM.pack(zlib.crc32(body))

    @classmethod
    def from_bytes(cls, data: bytes) -> CodeFile:
        if len(data) < len(MAGIC) or data[: len(MAGIC)] != MAGIC:
            raise CodeFileError("not a latentpress code file (bad magic bytes)")
        if len(data) < len(MAGIC) + 1:
            raise CodeFileError("truncated code file (no format version)")
        version = data[len(MAGIC)]
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
        z_length, y_length = fields[8], fields[9]
        expected = header.size + z_length + y_length + _CHECKSUM.size
        if len(data) != expected:
            raise CodeFileError(
                f"truncated or padded code file ({len(data)} bytes, header says {expected})"
            )
        (stored,) = _CHECKSUM.unpack_from(data, expected - _CHECKSUM.size)
        if zlib.crc32(data[: expected - _CHECKSUM.size]) != stored:
            raise CodeFileError("corrupted code file (checksum mismatch)")
        _, _, fingerprint, height, width, channels, quality, index_checksum, _, _ = fields
        if channels not in (1, 3) or height == 0 or width == 0:
            raise CodeFileError(f"invalid header ({width}x{height}, {channels} channels)")
        if not (math.isnan(quality) or 0.0 <= quality <= 100.0):
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
        )


def index_checksum(indexes) -> int:
    """CRC-32 of the scale indexes as little-endian int32 bytes."""
    import numpy as np

    return zlib.crc32(np.ascontiguousarray(indexes, dtype="<i4").tobytes())


def bits_per_pixel(num_bytes: int, pixels: int) -> float:
    """The reported rate: every byte of the file, header included, over the image's pixels."""
    return 8.0 * num_bytes / pixels if pixels else 0.0
