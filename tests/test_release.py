"""Shipping a model: its card keeps exact commands but no build machine's folders."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace

import numpy as np
import pytest
from PIL import Image

import latentpress
from latentpress import api
from latentpress.samples import sample_paths
from models import registry, release
from models.codefile import CodeFile
from models.release import measured, without_machine_paths
from tests.conftest import export_untrained_codec


def test_the_working_folder_becomes_a_placeholder_in_every_field(tmp_path):
    work = tmp_path / "lp-work"
    card = {
        "command": f"latentpress train --data {work}/cbsd432 --model-dir {work}/runs/codec",
        "commands": [f"latentpress train --init-from {work}/runs/old/export"],
        "training_data": {"dir": f"{work}/cbsd432", "inputs": ["/data/CBSD432/*.jpg"]},
        "steps": 10,
    }
    shipped = without_machine_paths(card, f"{work}/")
    assert shipped["command"] == (
        "latentpress train --data $LP_WORK/cbsd432 --model-dir $LP_WORK/runs/codec"
    )
    assert shipped["commands"] == ["latentpress train --init-from $LP_WORK/runs/old/export"]
    assert shipped["training_data"] == {
        "dir": "$LP_WORK/cbsd432",
        "inputs": ["/data/CBSD432/*.jpg"],  # not under the working folder: kept
    }
    assert shipped["steps"] == 10
    assert without_machine_paths(card, "") == card


def test_the_card_carries_what_the_evaluation_measured_of_this_model_only():
    results = {  # the shape evaluate writes to results.json
        "config": {
            "images": ["CBSD68/*.png"],
            "image_count": 68,
            "models": {"/runs/codec/export": "aaaa"},
            "denoiser_fingerprint": "dddd",
            "float_noise": False,
        },
        "curves": {
            "latentpress": [
                {"setting": "/runs/codec/export@0", "bpp": 0.39, "psnr_db": 28.04, "ms_ssim": 0.95},
                {"setting": "/runs/codec/export@100", "bpp": 1.4, "psnr_db": 31.2, "ms_ssim": 0.98},
            ],
            "jpeg": [],
        },
        "bjontegaard": {
            "latentpress vs jpeg": {"bd_rate_psnr_pct": -14.83},
            "webp vs jpeg": {"bd_rate_psnr_pct": -29.3},
        },
        "denoising": {"25": {"latentpress": {"psnr_db": 30.719}, "noisy": {"psnr_db": 20.2}}},
    }
    codec = measured(results, {"task": "codec", "fingerprint": "aaaa"})
    assert [p["quality"] for p in codec["curve"]] == ["0", "100"]
    assert codec["curve"][1]["psnr_db"] == 31.2 and codec["bd_rate_psnr_pct"] == {"jpeg": -14.8}
    denoiser = measured(results, {"task": "denoiser", "fingerprint": "dddd"})
    assert denoiser["psnr_db"] == {"25": 30.72} and "8 bits" in denoiser["noise"]
    assert denoiser["others_psnr_db"] == {"25": {"noisy": 20.2}}
    real = {  # a --pairs evaluation: real noise, the input and CBM3D beside the model
        "config": {
            "images": [],
            "image_count": 12,
            "pairs": ["SIDD/noisy/*.png", "SIDD/clean/*.png"],
            "denoiser_fingerprint": "dddd",
            "float_noise": False,
        },
        "denoising": {
            "real": {
                "latentpress": {"psnr_db": 27.163},
                "noisy": {"psnr_db": 22.977},
                "cbm3d": {"psnr_db": 24.241},
            }
        },
    }
    on_real = measured(real, {"task": "denoiser", "fingerprint": "dddd"})
    assert (
        on_real["noise"] == "real, noisy/clean pairs" and on_real["pairs"][0] == "SIDD/noisy/*.png"
    )
    assert on_real["psnr_db"] == {"real": 27.16}
    assert on_real["others_psnr_db"] == {"real": {"noisy": 22.98, "cbm3d": 24.24}}
    with pytest.raises(ValueError, match="did not measure codec bbbb"):
        measured(results, {"task": "codec", "fingerprint": "bbbb"})
    with pytest.raises(ValueError, match="did not measure denoiser eeee"):
        measured(results, {"task": "denoiser", "fingerprint": "eeee"})


def test_release_puts_every_evaluation_on_the_card(tmp_path, monkeypatch):
    export_dir = tmp_path / "export"
    (export_dir / "saved_model").mkdir(parents=True)
    (export_dir / "saved_model" / "saved_model.pb").write_bytes(b"weights")
    card = {"task": "denoiser", "fingerprint": "dddd", "command": "latentpress train"}
    (export_dir / "model_card.json").write_text(json.dumps(card))
    evaluations = []
    for float_noise, psnr in ((False, 30.73), (True, 30.71)):
        folder = tmp_path / f"eval-{float_noise}"
        folder.mkdir()
        results = {
            "config": {"images": ["x/*.png"], "image_count": 2, "float_noise": float_noise},
            "denoising": {"25": {"latentpress": {"psnr_db": psnr}}},
        }
        (folder / "results.json").write_text(json.dumps(results))
        evaluations.append(str(folder))
    monkeypatch.setattr(release, "PRETRAINED_DIR", str(tmp_path / "pretrained"))
    shipped = release.release(
        str(export_dir), "denoiser", "interim", "research only", evaluations=tuple(evaluations)
    )
    assert [m["psnr_db"]["25"] for m in shipped["measured"]] == [30.73, 30.71]
    assert [m["noise"] for m in shipped["measured"]] == ["gaussian, rounded to 8 bits", "float"]
    assert (tmp_path / "pretrained" / "denoiser" / "saved_model" / "saved_model.pb").exists()


def test_a_codec_released_over_another_keeps_it_so_its_files_still_decode(
    tmp_path, monkeypatch, request
):
    """The user's side of a release: a file written with the shipped codec before a new codec
    ships decodes after it (found by the fingerprint the file names), to the same pixels; the
    new codec ships with its exact entropy model, so it codes too."""
    pretrained = tmp_path / "pretrained"
    shutil.copytree(registry.resolve("codec"), pretrained / "codec")
    shutil.copytree(registry.resolve("codec"), tmp_path / "old-codec")  # to compare with
    monkeypatch.setattr(release, "PRETRAINED_DIR", str(pretrained))
    monkeypatch.setattr(registry, "PRETRAINED_DIR", str(pretrained))
    # the API keeps a compressor per model name: none from this test may outlive it
    api._compressor.cache_clear()
    request.addfinalizer(api._compressor.cache_clear)
    old = registry.card("codec")["fingerprint"]
    pixels = np.asarray(Image.open(sample_paths()[0]).convert("RGB"))[:64, :96]
    data = latentpress.compress(pixels)
    before = latentpress.decompress(data)

    new = export_untrained_codec(tmp_path / "new", "new", mean_scale=True)
    shipped = release.release(new, "codec", "interim", "test data")
    api._compressor.cache_clear()  # a new process, as a user's next run would be

    assert shipped["fingerprint"] != old
    assert registry.shipped_with_fingerprint(old) == f"codec-{old}"
    kept = registry.card(f"codec-{old}")
    assert "replaced by" in kept["status"] and kept["decode_only"]
    np.testing.assert_array_equal(latentpress.decompress(data), before)
    # kept without its encoder: the SavedModel holds the decoder's weights alone
    from models.export import load_saved_model
    from models.growth import exported_codec

    full = exported_codec(str(tmp_path / "old-codec"))
    encoder = {w.ref() for w in full.encoder_weights()}
    module = load_saved_model(registry.resolve(f"codec-{old}"))
    assert not hasattr(module, "analysis") and not hasattr(module, "analyze")
    decoder_sizes = sorted(w.shape.num_elements() for w in full.weights if w.ref() not in encoder)
    assert sorted(v.shape.num_elements() for v in module.decoder_weights[:-1]) == decoder_sizes
    with pytest.raises(ValueError, match="decode-only"):
        latentpress.compress(pixels, model=f"codec-{old}")
    with pytest.raises(ValueError, match="decode-only"):
        exported_codec(f"codec-{old}")  # nothing to warm-start or grow from
    fresh = latentpress.compress(pixels)  # the new codec, exact model included
    assert latentpress.decompress(fresh).shape == pixels.shape
    assert CodeFile.from_bytes(fresh).fingerprint == shipped["fingerprint"]


def test_a_codec_with_only_a_new_encoder_decodes_the_files_of_the_one_it_replaces(
    tmp_path, monkeypatch, request
):
    """An encoder-only retraining (--train-only encoder) keeps the decoder bit for bit: the
    release keeps no copy of the codec it replaces, its card names that codec's files as its
    own to decode, and a file written before decodes after it to the same pixels."""
    from models.codec import CodecConfig, ScaleHyperprior
    from models.export import CODEC, export_model
    from models.growth import load_exported_weights

    pretrained = tmp_path / "pretrained"
    monkeypatch.setattr(release, "PRETRAINED_DIR", str(pretrained))
    monkeypatch.setattr(registry, "PRETRAINED_DIR", str(pretrained))
    api._compressor.cache_clear()
    request.addfinalizer(api._compressor.cache_clear)
    first = export_untrained_codec(tmp_path / "first", "first", (0.005, 0.02), mean_scale=True)
    old = release.release(first, "codec", "interim", "test data")
    # the same codec with a narrower encoder first stage, its encoder moved
    card = registry.card(first)
    model = ScaleHyperprior(replace(CodecConfig.from_card(card), analysis_entry_filters=8))
    model.build_for_images()
    load_exported_weights(model, first)
    for weight in model.encoder_weights():
        weight.assign(weight * 0.9)
    export_model(model, CODEC, str(tmp_path / "second"), {"name": "second"})
    pixels = np.asarray(Image.open(sample_paths()[0]).convert("RGB"))[:64, :96]
    data = latentpress.compress(pixels, quality=80)
    before = latentpress.decompress(data)

    new = release.release(str(tmp_path / "second"), "codec", "interim", "test data")
    api._compressor.cache_clear()

    assert sorted(p.name for p in pretrained.iterdir()) == ["codec"]  # no copy kept
    assert new["fingerprint"] != old["fingerprint"]
    assert new["decodes_files_of"] == [old["fingerprint"]]
    assert registry.shipped_with_fingerprint(old["fingerprint"]) == "codec"
    np.testing.assert_array_equal(latentpress.decompress(data), before)
    fresh = latentpress.compress(pixels, quality=80)
    assert CodeFile.from_bytes(fresh).fingerprint == new["fingerprint"] != old["fingerprint"]

    # a codec with another decoder still moves the old one aside, and the list goes with it
    third = export_untrained_codec(tmp_path / "third", "third", (0.005, 0.02), mean_scale=True)
    release.release(third, "codec", "interim", "test data")
    kept = f"codec-{new['fingerprint']}"
    assert registry.shipped_with_fingerprint(old["fingerprint"]) == kept
    api._compressor.cache_clear()
    np.testing.assert_array_equal(latentpress.decompress(data), before)


def test_re_releasing_the_same_codec_or_a_denoiser_keeps_no_copy(tmp_path, monkeypatch):
    monkeypatch.setattr(release, "PRETRAINED_DIR", str(tmp_path / "pretrained"))
    codec = export_untrained_codec(tmp_path / "codec", "codec", mean_scale=True)
    release.release(codec, "codec", "interim", "test data")
    release.release(codec, "codec", "release", "test data", notes="same weights, new card")
    denoiser = tmp_path / "denoiser"
    (denoiser / "saved_model").mkdir(parents=True)
    for fingerprint in ("d1", "d2"):
        (denoiser / "model_card.json").write_text(
            json.dumps({"task": "denoiser", "fingerprint": fingerprint})
        )
        release.release(str(denoiser), "denoiser", "interim", "test data")
    assert sorted(p.name for p in (tmp_path / "pretrained").iterdir()) == ["codec", "denoiser"]
