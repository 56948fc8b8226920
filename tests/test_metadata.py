"""Nothing of a photograph is lost: EXIF, XMP, ICC profiles, alpha, every frame and the bit
depth travel from the source through code files (and cleaned images) back to the decoded PNG,
or are accounted for by a note (issue 32)."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from models import codefile
from tests.carried_files import XMP, exif_tags, write_carried_files
from transforms import decode, metadata, reasons


@pytest.fixture(scope="module")
def carried(tmp_path_factory):
    return write_carried_files(tmp_path_factory.mktemp("carried"))


EVERYTHING = decode.DecodeOptions()


def frames_of(path: Path, options=EVERYTHING) -> list[decode.DecodedFrame]:
    return list(decode.decode_frames(path.read_bytes(), options=options))


def test_exif_xmp_and_icc_are_read_verbatim_with_the_orientation_made_upright(carried):
    (frame,) = frames_of(carried["exif"])
    assert frame.pixels.shape == (96, 64, 3)  # orientation 6 applied: the pixels stand upright
    with Image.open(carried["exif"]) as source:
        expected = {**exif_tags(source), 0x0112: 1}
    written = Image.open(io.BytesIO(metadata.encode_png(frame.pixels, frame.carried)))
    assert exif_tags(written) == expected
    with Image.open(carried["exif"]) as source:
        assert written.info["icc_profile"] == source.info["icc_profile"]
    assert written.info["XML:com.adobe.xmp"].encode() == XMP
    fields = frame.carried.manifest_fields()
    assert fields["icc_description"] == "sRGB built-in" and fields["metadata"] == "kept"
    assert fields["exif_bytes"] > 0 and fields["xmp_bytes"] == len(XMP)


def test_strip_metadata_leaves_exif_xmp_and_icc_out_and_says_so(carried):
    (frame,) = frames_of(carried["exif"], decode.DecodeOptions(strip_metadata=True))
    assert (frame.carried.exif, frame.carried.xmp, frame.carried.icc) == (b"", b"", b"")
    assert frame.carried.manifest_fields()["metadata"] == "stripped"
    written = Image.open(io.BytesIO(metadata.encode_png(frame.pixels, frame.carried)))
    assert not written.getexif() and "icc_profile" not in written.info


def test_alpha_travels_exactly_through_the_chunks_and_drop_is_said(carried):
    (frame,) = frames_of(carried["alpha"])
    with Image.open(carried["alpha"]) as source:
        alpha = np.asarray(source.getchannel("A"))
    np.testing.assert_array_equal(frame.carried.alpha, alpha)
    code = codefile.CodeFile(
        "0" * 16,
        64,
        96,
        3,
        0,
        b"",
        b"",
        None,
        "0" * 16,
        metadata.to_chunks(frame.carried),
        reach=8,
    )
    back = metadata.from_code(codefile.CodeFile.from_bytes(code.to_bytes()))
    np.testing.assert_array_equal(back.alpha, alpha)
    image = metadata.to_image(frame.pixels, back)
    assert image.mode == "RGBA"
    np.testing.assert_array_equal(np.asarray(image)[..., 3], alpha)
    opaque = alpha == 255  # straight colour comes back where the pixel is seen
    np.testing.assert_array_equal(np.asarray(image)[..., :3][opaque], frame.pixels[opaque])
    (dropped,) = frames_of(carried["alpha"], decode.DecodeOptions(alpha=metadata.DROP))
    assert dropped.carried.alpha is None and "alpha dropped" in dropped.carried.notes[0]


def test_every_frame_is_an_image_of_its_own_or_the_file_is_refused_by_name(carried):
    pages = frames_of(carried["pages"])
    assert [f.carried.frame for f in pages] == [0, 1] and pages[1].carried.frames == 2
    np.testing.assert_array_equal(pages[1].pixels, pages[0].pixels[:, ::-1])
    assert [metadata.frame_key("scan.tif", f.carried) for f in pages] == [
        "scan.tif.frame-1",
        "scan.tif.frame-2",
    ]
    (first,) = frames_of(carried["pages"], decode.DecodeOptions(frames=metadata.FIRST_FRAME))
    assert "first of 2 frames" in "; ".join(first.carried.notes)
    refuse = decode.DecodeOptions(frames=metadata.REFUSE_FRAMES)
    with pytest.raises(decode.DecodeError) as refused:
        frames_of(carried["pages"], refuse)
    assert refused.value.reason == reasons.MULTI_FRAME and "2 frames" in str(refused.value)


def test_sixteen_bits_are_said_or_refused_and_a_cmyk_profile_stays_off_rgb_pixels(carried):
    (deep,) = frames_of(carried["deep"])
    assert deep.carried.bit_depth == 16 and "16-bit samples coded at 8 bits" in deep.carried.notes
    with pytest.raises(decode.DecodeError) as refused:
        frames_of(carried["deep"], decode.DecodeOptions(strict_depth=True))
    assert refused.value.reason == reasons.DEEP_SAMPLES
    (cmyk,) = frames_of(carried["cmyk"])
    assert cmyk.carried.icc == b"" and "CMYK ICC profile not carried" in cmyk.carried.notes[0]
    (palette,) = frames_of(carried["palette"])
    assert palette.carried.bit_depth == 8 and palette.carried.notes == ()


def test_an_item_over_the_size_limit_is_left_out_with_a_note(carried, monkeypatch):
    monkeypatch.setattr(metadata, "MAX_ITEM_BYTES", 100)
    (frame,) = frames_of(carried["exif"])
    assert frame.carried.xmp == b"" and frame.carried.exif == b""
    assert any(note.startswith("xmp not carried (211 bytes > 100)") for note in frame.carried.notes)
    assert frame.carried.icc == b""  # 588 bytes: over this limit too


def test_compress_and_decompress_give_back_exif_icc_alpha_and_every_page(
    latentpress, carried, tmp_path
):
    """The issue's folder through the real command line: identical EXIF tags and ICC bytes,
    identical alpha, both pages, a line for the bit depth and for the CMYK profile."""
    sources = [str(p) for p in carried.values()]
    done = latentpress("compress", *sources, "-o", str(tmp_path / "codes"))
    assert done.returncode == 0, done.stderr
    codes = sorted(p.name for p in (tmp_path / "codes").iterdir())
    assert "scan.tif.frame-1.lpc" in codes and "scan.tif.frame-2.lpc" in codes
    assert len(codes) == 7  # six files, one of two pages
    lines = {line.split(":")[0].rsplit("/", 1)[-1]: line for line in done.stdout.splitlines()}
    assert "16-bit samples coded at 8 bits" in lines["deep.png.lpc"]
    assert "CMYK ICC profile not carried" in lines["print.jpg.lpc"]
    assert "EXIF, XMP, ICC" in lines["camera.jpg.lpc"] and "alpha" in lines["cutout.png.lpc"]

    done = latentpress(
        "decompress", *sorted(map(str, (tmp_path / "codes").iterdir())), "-o", str(tmp_path / "d")
    )
    assert done.returncode == 0, done.stderr
    decoded = tmp_path / "d"
    with Image.open(carried["exif"]) as source, Image.open(decoded / "camera.jpg.png") as back:
        assert exif_tags(back) == {**exif_tags(source), 0x0112: 1}
        assert back.info["icc_profile"] == source.info["icc_profile"]
        assert back.size == (64, 96)  # upright
    with Image.open(carried["alpha"]) as source, Image.open(decoded / "cutout.png") as back:
        assert back.mode == "RGBA"
        np.testing.assert_array_equal(np.asarray(back)[..., 3], np.asarray(source)[..., 3])
    pages = [Image.open(decoded / f"scan.tif.frame-{n}.png") for n in (1, 2)]
    left, right = (np.asarray(p, dtype=np.float64) for p in pages)
    # page 2 is page 1 mirrored: each decode is much closer to its own page than to the other
    assert np.abs(left - right[:, ::-1]).mean() < 0.5 * np.abs(left - right).mean()
    with Image.open(decoded / "deep.png") as back, Image.open(decoded / "palette.png") as p:
        assert back.mode == "L" and p.mode == "RGB"


def test_apply_and_archive_carry_what_the_source_carries_and_account_for_it(
    latentpress, carried, tmp_path
):
    folder = carried["exif"].parent
    out = tmp_path / "applied"
    done = latentpress("apply", "--input", f"{folder}/*", "--output", str(out), "--keep-cleaned")
    assert done.returncode == 0, done.stderr
    records = {}
    for shard in out.glob("manifest-*.jsonl"):
        for line in shard.read_text().splitlines():
            record = json.loads(line)
            records[record["key"]] = record
    assert set(records) == {
        "camera.jpg", "cutout.png", "scan.tif.frame-1", "scan.tif.frame-2", "deep.png",
        "print.jpg", "palette.png",
    }  # fmt: skip
    assert records["camera.jpg"]["icc_description"] == "sRGB built-in"
    assert records["camera.jpg"]["exif_bytes"] > 0 and records["cutout.png"]["alpha"] is True
    assert records["scan.tif.frame-2"]["frame"] == "2/2" and records["deep.png"]["bit_depth"] == 16
    assert "CMYK ICC profile not carried" in records["print.jpg"]["notes"]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["matched"] == 7 and summary["frames_beyond_first"] == 1
    with Image.open(out / "clean" / "cutout.png") as clean, Image.open(carried["alpha"]) as src:
        np.testing.assert_array_equal(np.asarray(clean)[..., 3], np.asarray(src)[..., 3])
    with Image.open(out / "clean" / "camera.jpg.png") as clean, Image.open(carried["exif"]) as src:
        assert clean.info["icc_profile"] == src.info["icc_profile"]
    code = codefile.CodeFile.from_bytes((out / "codes" / "camera.jpg.lpc").read_bytes())
    assert metadata.from_code(code).xmp == XMP
    decoded = tmp_path / "decoded"  # the Beam form of decompress gives it back too
    done = latentpress("decompress", "--input", f"{out}/codes/*", "-o", str(decoded))
    assert done.returncode == 0, done.stderr
    with Image.open(decoded / "camera.jpg.png") as back, Image.open(carried["exif"]) as src:
        assert exif_tags(back) == {**exif_tags(src), 0x0112: 1}
        assert back.info["icc_profile"] == src.info["icc_profile"]
    with Image.open(decoded / "cutout.png") as back, Image.open(carried["alpha"]) as src:
        np.testing.assert_array_equal(np.asarray(back)[..., 3], np.asarray(src)[..., 3])

    archive = tmp_path / "archive"
    done = latentpress(
        "archive", "--input", f"{folder}/*", "--archive", str(archive), "--strip-metadata"
    )
    assert done.returncode == 0, done.stderr
    held = [
        json.loads(line)
        for shard in (archive / "manifest").glob("*.jsonl")
        for line in shard.read_text().splitlines()
    ]
    assert len(held) == 7 and {r["metadata"] for r in held} == {"stripped"}
    (run,) = (archive / "runs").iterdir()
    summary = json.loads((run / "summary.json").read_text())
    assert (summary["matched"], summary["processed"], summary["frames_beyond_first"]) == (6, 6, 1)
    assert summary["bytes_in"] == sum(p.stat().st_size for p in carried.values())
    assert sorted(r["frame"] for r in held if r["frame"]) == ["1/2", "2/2"]
    names = [p.name for p in (archive / "codes").rglob("*.lpc")]
    assert sum(".frame-" in name for name in names) == 2 and len(names) == 7
    for path in (archive / "codes").rglob("*.lpc"):
        assert metadata.from_code(codefile.CodeFile.from_bytes(path.read_bytes())).exif == b""

    kept = tmp_path / "kept"  # without --strip-metadata the archive's codes carry it all
    done = latentpress("archive", "--input", f"{folder}/*", "--archive", str(kept))
    assert done.returncode == 0, done.stderr
    (camera,) = [
        json.loads(line)
        for shard in (kept / "manifest").glob("*.jsonl")
        for line in shard.read_text().splitlines()
        if json.loads(line)["source_path"].endswith("camera.jpg")
    ]
    carried_back = metadata.from_code(
        codefile.CodeFile.from_bytes(Path(camera["code_path"]).read_bytes())
    )
    with Image.open(carried["exif"]) as source:
        assert carried_back.icc == source.info["icc_profile"] and carried_back.xmp == XMP
        written = Image.open(
            io.BytesIO(metadata.encode_png(np.zeros((96, 64, 3), np.uint8), carried_back))
        )
        assert exif_tags(written) == {**exif_tags(source), 0x0112: 1}


def test_apply_refuses_a_multi_frame_file_by_name_when_asked(latentpress, carried, tmp_path):
    out = tmp_path / "refused"
    pages = carried["pages"]
    done = latentpress(
        "apply", "--input", str(pages), "--output", str(out), "--frames=refuse", "--mode=compress"
    )
    assert done.returncode == 1  # every input failed: said, and the run exits non-zero
    (record,) = [
        json.loads(line) for f in out.glob("manifest-*") for line in f.read_text().splitlines()
    ]
    assert (record["status"], record["reason"]) == ("failed", reasons.MULTI_FRAME)
    assert record["source_path"].endswith("scan.tif") and "2 frames" in record["detail"]
