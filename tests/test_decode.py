"""Every decode conversion of the documented rule, on real encoded files."""

from __future__ import annotations

import io
import zlib

import numpy as np
import pytest
from PIL import Image

from transforms import decode, reasons


def encode(image: Image.Image, fmt: str, **kwargs) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **kwargs)
    return buffer.getvalue()


def gradient_rgb(width=48, height=32) -> np.ndarray:
    y, x = np.mgrid[0:height, 0:width]
    return np.stack([x * 5 % 256, y * 7 % 256, (x + y) * 3 % 256], -1).astype(np.uint8)


@pytest.mark.parametrize("fmt", ["PNG", "BMP", "TIFF", "WEBP"])
def test_lossless_formats_decode_exactly(fmt):
    pixels = gradient_rgb()
    kwargs = {"lossless": True} if fmt == "WEBP" else {}
    out = decode.decode_image(encode(Image.fromarray(pixels), fmt, **kwargs))
    assert out.dtype == np.uint8 and out.shape == (32, 48, 3)
    np.testing.assert_array_equal(out, pixels)


def test_jpeg_decodes_close_to_source():
    pixels = gradient_rgb()
    out = decode.decode_image(encode(Image.fromarray(pixels), "JPEG", quality=95))
    assert out.shape == pixels.shape
    assert np.abs(out.astype(int) - pixels).mean() < 4


def test_gif_uses_first_frame():
    red = Image.new("RGB", (20, 10), (255, 0, 0))
    blue = Image.new("RGB", (20, 10), (0, 0, 255))
    data = encode(red, "GIF", save_all=True, append_images=[blue])
    out = decode.decode_image(data)
    assert out.shape == (10, 20, 3)
    assert tuple(out[5, 5]) == (255, 0, 0)


def test_exif_orientation_is_applied():
    pixels = np.zeros((10, 30, 3), np.uint8)
    pixels[:, :5] = 255  # white band on the left
    image = Image.fromarray(pixels)
    exif = image.getexif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    out = decode.decode_image(encode(image, "JPEG", quality=95, exif=exif.tobytes()))
    assert out.shape == (30, 10, 3)  # upright: portrait now
    assert out[:5].mean() > 200 and out[-5:].mean() < 50  # band moved to the top


def test_grayscale_is_replicated_to_three_channels():
    gray = np.arange(0, 240, 5, dtype=np.uint8).reshape(6, 8)
    out = decode.decode_image(encode(Image.fromarray(gray, "L"), "PNG"))
    assert out.shape == (6, 8, 3)
    for channel in range(3):
        np.testing.assert_array_equal(out[..., channel], gray)


def test_one_bit_image_becomes_black_and_white():
    image = Image.new("1", (8, 4), 0)
    image.putpixel((3, 2), 1)
    out = decode.decode_image(encode(image, "PNG"))
    assert tuple(out[2, 3]) == (255, 255, 255) and tuple(out[0, 0]) == (0, 0, 0)


def test_palette_is_expanded():
    image = Image.new("P", (4, 4))
    image.putpalette([0, 0, 0, 10, 200, 30] + [0] * 762)
    image.putpixel((1, 1), 1)
    out = decode.decode_image(encode(image, "PNG"))
    assert tuple(out[1, 1]) == (10, 200, 30)


def test_palette_transparency_composites_over_white():
    image = Image.new("P", (4, 4))
    image.putpalette([0, 0, 0, 10, 200, 30] + [0] * 762)
    image.putpixel((1, 1), 1)
    out = decode.decode_image(encode(image, "PNG", transparency=0))
    assert tuple(out[0, 0]) == (255, 255, 255)  # index 0 is transparent
    assert tuple(out[1, 1]) == (10, 200, 30)


def test_rgba_composites_over_white():
    rgba = np.zeros((2, 2, 4), np.uint8)
    rgba[0, 0] = (200, 0, 0, 255)  # opaque red
    rgba[0, 1] = (0, 0, 0, 0)  # fully transparent
    rgba[1, 0] = (0, 0, 0, 128)  # half-transparent black
    out = decode.decode_image(encode(Image.fromarray(rgba, "RGBA"), "PNG"))
    assert tuple(out[0, 0]) == (200, 0, 0)
    assert tuple(out[0, 1]) == (255, 255, 255)
    assert all(abs(int(v) - 127) <= 1 for v in out[1, 0])


def test_gray_alpha_composites_over_white():
    la = Image.new("LA", (2, 1), (0, 0))
    out = decode.decode_image(encode(la, "PNG"))
    assert tuple(out[0, 0]) == (255, 255, 255)


def test_cmyk_converts_to_rgb():
    cmyk = Image.new("CMYK", (4, 4), (0, 255, 255, 0))  # pure red in CMYK
    out = decode.decode_image(encode(cmyk, "JPEG", quality=95))
    red, green, blue = (int(v) for v in out[2, 2])
    assert red > 230 and green < 30 and blue < 30


def test_sixteen_bit_gray_scales_by_257():
    wide = np.array([[0, 257, 65535, 32896]], dtype=np.uint16)
    out = decode.decode_image(encode(Image.fromarray(wide), "PNG"))
    np.testing.assert_array_equal(out[0, :, 0], [0, 1, 255, 128])
    np.testing.assert_array_equal(out[..., 0], out[..., 2])


def test_empty_file_is_refused():
    with pytest.raises(decode.DecodeError) as error:
        decode.decode_image(b"")
    assert error.value.reason == reasons.EMPTY


def test_text_file_is_refused():
    with pytest.raises(decode.DecodeError) as error:
        decode.decode_image(b"not an image at all\n")
    assert error.value.reason == reasons.NOT_AN_IMAGE


def test_truncated_file_is_refused():
    data = encode(Image.fromarray(gradient_rgb(300, 200)), "JPEG", quality=90)
    with pytest.raises(decode.DecodeError) as error:
        decode.decode_image(data[: len(data) // 2])
    assert error.value.reason == reasons.TRUNCATED


def test_a_decompression_bomb_header_is_too_large_not_unreadable():
    """A few bytes of PNG header claiming 40000 x 40000 pixels (Pillow refuses to open it)."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (
            len(body).to_bytes(4, "big") + kind + body + zlib.crc32(kind + body).to_bytes(4, "big")
        )

    header = (40_000).to_bytes(4, "big") * 2 + bytes([8, 2, 0, 0, 0])  # 8-bit RGB
    data = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IEND", b"")
    for limit in (decode.DEFAULT_MAX_PIXELS, 10**10):
        with pytest.raises(decode.DecodeError) as error:
            decode.decode_image(data, max_pixels=limit)
        assert error.value.reason == reasons.TOO_LARGE and "1600000000" in str(error.value)


def test_pixel_limit_is_checked_before_decoding():
    data = encode(Image.fromarray(gradient_rgb(100, 100)), "PNG")
    assert decode.decode_image(data, max_pixels=10_000).shape == (100, 100, 3)
    with pytest.raises(decode.DecodeError) as error:
        decode.decode_image(data, max_pixels=9_999)
    assert error.value.reason == reasons.TOO_LARGE
