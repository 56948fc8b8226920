"""The code-file format refuses every kind of bad file with a one-line reason."""

from __future__ import annotations

import pytest

from models.codefile import CodeFile, CodeFileError

CODE = CodeFile("0123456789abcdef", 321, 481, 3, 0xDEADBEEF, b"z" * 8, b"y" * 12)


def test_round_trip_keeps_every_field():
    assert CodeFile.from_bytes(CODE.to_bytes()) == CODE


def test_size_is_header_streams_and_checksum():
    assert len(CODE.to_bytes()) == 38 + 8 + 12 + 4  # format 2: 38-byte header


@pytest.mark.parametrize(
    ("mangle", "message"),
    [
        (lambda b: b"", "not a latentpress code file"),
        (lambda b: b"\x89PNG\r\n\x1a\n" + b[8:], "not a latentpress code file"),
        (lambda b: b[:4] + bytes([3]) + b[5:], "unsupported code-file format version 3"),
        (lambda b: b[:20], "header incomplete"),
        (lambda b: b[:-1], "truncated"),
        (lambda b: b + b"\0", "padded"),
        (lambda b: b[:40] + bytes([b[40] ^ 0x10]) + b[41:], "checksum mismatch"),
        (lambda b: b[:14] + bytes([b[14] ^ 0x01]) + b[15:], "checksum mismatch"),
    ],
)
def test_bad_files_raise_one_line_errors(mangle, message):
    with pytest.raises(CodeFileError, match=message) as error:
        CodeFile.from_bytes(mangle(CODE.to_bytes()))
    assert "\n" not in str(error.value)
