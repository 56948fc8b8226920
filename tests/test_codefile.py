"""The code-file format refuses every kind of bad file with a one-line reason."""

from __future__ import annotations

import zlib
from dataclasses import replace

import pytest

from models.codefile import CodeFile, CodeFileError

CODE = CodeFile(
    "0123456789abcdef",
    321,
    481,
    3,
    0xDEADBEEF,
    b"z" * 8,
    b"y" * 12,
    exact_identity="fedcba9876543210",
    reach=8,
    scale_offset=-7,
    coding_shape=3,
)
WITH_CHUNKS = replace(CODE, quality=42.5, chunks=((b"EXIF", b"Exif\0\0MM"), (b"ICCP", b"")))


def test_round_trip_keeps_every_field():
    assert CodeFile.from_bytes(CODE.to_bytes()) == CODE
    assert CodeFile.from_bytes(WITH_CHUNKS.to_bytes()) == WITH_CHUNKS
    assert WITH_CHUNKS.chunk(b"EXIF") == b"Exif\0\0MM" and WITH_CHUNKS.chunk(b"XMP ") is None


def test_size_is_header_streams_chunks_and_checksum():
    # format 6: 49-byte header, the streams, a chunk count, each chunk's tag and length
    assert len(CODE.to_bytes()) == 49 + 8 + 12 + 2 + 4
    assert len(WITH_CHUNKS.to_bytes()) == 49 + 8 + 12 + 2 + (8 + 8) + (8 + 0) + 4


def test_only_format_6_is_written():
    with pytest.raises(CodeFileError, match="writes format 6 only"):
        replace(CODE, exact_identity=None).to_bytes()
    with pytest.raises(CodeFileError, match="writes format 6 only"):
        replace(CODE, reach=None).to_bytes()
    with pytest.raises(CodeFileError, match="reach of 256 pixels"):
        replace(CODE, reach=256).to_bytes()
    with pytest.raises(CodeFileError, match="scale offset of 128"):
        replace(CODE, scale_offset=128).to_bytes()
    with pytest.raises(CodeFileError, match="coding shape of 256"):
        replace(CODE, coding_shape=256).to_bytes()


def as_older_format(data: bytes, version: int) -> bytes:
    """A format-6 file as format 5 (no coding shape byte after the 48-byte header), 4 (no
    scale offset byte either) or 3 (no reach byte either) wrote it."""
    header = 46 + version - 3
    body = data[:4] + bytes([version]) + data[5:header] + data[49:-4]
    return body + zlib.crc32(body).to_bytes(4, "big")


def test_format_3_to_5_files_still_read_with_the_fields_they_lack_at_their_old_values():
    old = CodeFile.from_bytes(as_older_format(WITH_CHUNKS.to_bytes(), 5))
    assert old == replace(WITH_CHUNKS, version=5, coding_shape=0)
    old = CodeFile.from_bytes(as_older_format(WITH_CHUNKS.to_bytes(), 4))
    assert old == replace(WITH_CHUNKS, version=4, scale_offset=0, coding_shape=0)
    old = CodeFile.from_bytes(as_older_format(WITH_CHUNKS.to_bytes(), 3))
    assert old == replace(WITH_CHUNKS, version=3, reach=None, scale_offset=0, coding_shape=0)


@pytest.mark.parametrize(
    ("mangle", "message"),
    [
        (lambda b: b"", "not a latentpress code file"),
        (lambda b: b"\x89PNG\r\n\x1a\n" + b[8:], "not a latentpress code file"),
        (lambda b: b[:4] + bytes([7]) + b[5:], "unsupported code-file format version 7"),
        (lambda b: b[:20], "header incomplete"),
        (lambda b: b[:-1], "truncated"),
        (lambda b: b + b"\0", "padded"),
        (lambda b: b[:50] + bytes([b[50] ^ 0x10]) + b[51:], "checksum mismatch"),
        (lambda b: b[:14] + bytes([b[14] ^ 0x01]) + b[15:], "checksum mismatch"),
    ],
)
def test_bad_files_raise_one_line_errors(mangle, message):
    with pytest.raises(CodeFileError, match=message) as error:
        CodeFile.from_bytes(mangle(CODE.to_bytes()))
    assert "\n" not in str(error.value)


def test_a_chunk_longer_than_the_file_is_truncation():
    data = WITH_CHUNKS.to_bytes()
    with pytest.raises(CodeFileError, match="truncated"):
        CodeFile.from_bytes(data[:-12] + data[-4:])
