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
)
WITH_CHUNKS = replace(CODE, quality=42.5, chunks=((b"EXIF", b"Exif\0\0MM"), (b"ICCP", b"")))


def test_round_trip_keeps_every_field():
    assert CodeFile.from_bytes(CODE.to_bytes()) == CODE
    assert CodeFile.from_bytes(WITH_CHUNKS.to_bytes()) == WITH_CHUNKS
    assert WITH_CHUNKS.chunk(b"EXIF") == b"Exif\0\0MM" and WITH_CHUNKS.chunk(b"XMP ") is None


def test_size_is_header_streams_chunks_and_checksum():
    # format 5: 48-byte header, the streams, a chunk count, each chunk's tag and length
    assert len(CODE.to_bytes()) == 48 + 8 + 12 + 2 + 4
    assert len(WITH_CHUNKS.to_bytes()) == 48 + 8 + 12 + 2 + (8 + 8) + (8 + 0) + 4


def test_only_format_5_is_written():
    with pytest.raises(CodeFileError, match="writes format 5 only"):
        replace(CODE, exact_identity=None).to_bytes()
    with pytest.raises(CodeFileError, match="writes format 5 only"):
        replace(CODE, reach=None).to_bytes()
    with pytest.raises(CodeFileError, match="reach of 256 pixels"):
        replace(CODE, reach=256).to_bytes()
    with pytest.raises(CodeFileError, match="scale offset of 128"):
        replace(CODE, scale_offset=128).to_bytes()


def as_older_format(data: bytes, version: int) -> bytes:
    """A format-5 file as format 4 (no scale offset byte after the 47-byte header) or 3
    (no reach byte either) wrote it."""
    header = 46 if version == 3 else 47
    body = data[:4] + bytes([version]) + data[5:header] + data[48:-4]
    return body + zlib.crc32(body).to_bytes(4, "big")


def test_format_3_and_4_files_still_read_without_a_scale_offset():
    old = CodeFile.from_bytes(as_older_format(WITH_CHUNKS.to_bytes(), 4))
    assert old == replace(WITH_CHUNKS, version=4, scale_offset=0)
    old = CodeFile.from_bytes(as_older_format(WITH_CHUNKS.to_bytes(), 3))
    assert old == replace(WITH_CHUNKS, version=3, reach=None, scale_offset=0)


@pytest.mark.parametrize(
    ("mangle", "message"),
    [
        (lambda b: b"", "not a latentpress code file"),
        (lambda b: b"\x89PNG\r\n\x1a\n" + b[8:], "not a latentpress code file"),
        (lambda b: b[:4] + bytes([6]) + b[5:], "unsupported code-file format version 6"),
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
