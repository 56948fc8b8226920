"""Training: loss goes down, a killed run resumes, exports match, two replicas train."""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras

from models import export, growth
from models import trainer as trainers
from models.codec import CodecConfig, pad_to_multiple
from pipelines import prepare, train
from tests.conftest import copy_samples
from transforms import features, noise, statistics, training_data

TINY_CODEC = ["--task=codec", "--num-filters=16", "--latent-filters=24", "--lmbda=0.01"]
TINY_DENOISER = ["--task=denoise", "--depth=3", "--filters=16"]
TINY_UNET = ["--task=denoise", "--architecture=unet", "--filters=8", "--blocks=1", "--unshuffle=2"]
QUIET = ["--no-progress", "--eval-batches=2"]


@pytest.fixture(scope="module")
def prepared(tmp_path_factory) -> Path:
    """Real patches from the sample photographs, both splits filled."""
    corpus = tmp_path_factory.mktemp("corpus")
    copy_samples(corpus)
    output = tmp_path_factory.mktemp("prepared")
    prepare.run(
        [
            f"--input={corpus}/*",
            f"--output={output}",
            "--noise=gaussian:10-40",
            "--patch-size=64",
            "--patches-per-image=8",
            "--eval-fraction=0.3",
            "--num-shards=2",
            "--runner=DirectRunner",
        ]
    )
    return output


def python(code: str, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", code, *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        cwd=Path(__file__).resolve().parents[1],
    )


def make_trainer(prepared: Path, model_dir: Path, flags: list[str]):
    args = train.build_parser().parse_args(
        [f"--data={prepared}", f"--model-dir={model_dir}", "--batch-size=8", *flags]
    )
    stats = statistics.read_stats(str(prepared / features.TRANSFORM_DIR))
    return args, trainers.Trainer(
        args, tf.distribute.get_strategy(), lambda: train.build_model(args, stats)
    )


TINY_BALANCED = [*TINY_CODEC[:3], "--lmbdas=0.0025,0.64", "--balance-levels"]
TINY_PER_BATCH = [
    *TINY_CODEC[:3],
    "--lmbdas=0.0025,0.64",
    "--quality-per-batch",
    "--quality-range=0,60",
]


@pytest.mark.parametrize(
    "flags",
    [
        TINY_CODEC + ["--learning-rate=1e-3"],
        TINY_BALANCED + ["--learning-rate=1e-3"],
        TINY_PER_BATCH + ["--learning-rate=1e-3", "--rate-shapes"],
        TINY_DENOISER + ["--learning-rate=1e-3"],
    ],
)
def test_a_short_run_on_real_patches_lowers_the_loss(prepared, tmp_path, flags):
    # Seeded like `train.run`: otherwise the start depends on the tests that ran before.
    keras.utils.set_random_seed(0)
    args, trainer = make_trainer(prepared, tmp_path, ["--steps=60", *flags])
    # --rate-shapes reaches the codec (its rate: the cheapest coding shape per image)
    assert getattr(trainer.model, "rate_shapes", False) == ("--rate-shapes" in flags)
    fixed = training_data.make_dataset(str(prepared), features.TRAIN_DIR, 8, training=False)
    before = trainer.evaluate(fixed, 4)["loss"]
    batches = iter(training_data.make_dataset(str(prepared), features.TRAIN_DIR, 8, training=True))
    for _ in range(args.steps):
        trainer.train_step(next(batches))
    after = trainer.evaluate(fixed, 4)["loss"]
    assert trainer.step == 60
    assert after < 0.8 * before, (before, after)


def test_the_trainer_draws_each_steps_qualities_as_its_flags_say(prepared, tmp_path):
    _, trainer = make_trainer(prepared, tmp_path / "a", TINY_PER_BATCH)
    drawn = np.array([trainer.training_qualities(4).numpy() for _ in range(40)])
    assert np.all(drawn == drawn[:, :1])  # one per batch
    assert drawn.min() >= 0 and drawn.max() <= 60 and drawn.max() > 40
    _, per_image = make_trainer(prepared, tmp_path / "b", [*TINY_CODEC[:3], "--lmbdas=0.0025,0.64"])
    assert len(set(per_image.training_qualities(4).numpy().tolist())) == 4
    _, denoiser = make_trainer(prepared, tmp_path / "c", TINY_DENOISER)
    assert denoiser.training_qualities(4) is None
    with pytest.raises(SystemExit):
        train.build_parser().parse_args(["--data=d", "--model-dir=m", "--quality-range=60,10"])
    _, skewed = make_trainer(
        prepared, tmp_path / "d", [*TINY_CODEC[:3], "--lmbdas=0.0025,0.64", "--quality-power=3"]
    )
    low_share = np.mean(
        np.concatenate([skewed.training_qualities(8).numpy() for _ in range(250)]) < 30
    )
    assert 0.6 < low_share < 0.75  # 0.3 ** (1/3) = 0.67; uniform draws would give 0.30
    with pytest.raises(SystemExit):
        train.build_parser().parse_args(["--data=d", "--model-dir=m", "--quality-power=0"])


def test_killed_run_resumes_with_its_optimizer_state(prepared, tmp_path):
    model_dir = tmp_path / "run"
    argv = [
        f"--data={prepared}",
        f"--model-dir={model_dir}",
        "--steps=400",
        "--checkpoint-every=5",
        "--eval-every=1000",
        *TINY_DENOISER,
        *QUIET,
    ]
    code = "import sys; from pipelines import train; train.run(sys.argv[1:])"
    process = subprocess.Popen(
        [sys.executable, "-c", code, *argv],
        cwd=Path(__file__).resolve().parents[1],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    checkpoints = model_dir / "checkpoints"
    deadline = time.monotonic() + 120

    def pointed_step() -> int:
        # the "checkpoint" pointer file, written after a checkpoint's files: what a resume reads
        latest = tf.train.latest_checkpoint(str(checkpoints))
        return int(latest.rsplit("-", 1)[1]) if latest else 0

    while time.monotonic() < deadline and pointed_step() == 0:
        time.sleep(0.2)
    process.send_signal(signal.SIGKILL)  # no chance to save on the way out
    process.wait()
    latest = tf.train.latest_checkpoint(str(checkpoints))
    assert latest, "the run was killed before its second checkpoint"
    saved_step = int(latest.rsplit("-", 1)[1])
    assert 0 < saved_step < 400

    # The resumed trainer holds exactly the saved optimizer state (step and Adam moments).
    args, trainer = make_trainer(prepared, model_dir, ["--steps=400", *TINY_DENOISER])
    assert trainer.restore() == saved_step
    reader = tf.train.load_checkpoint(latest)
    optimizer_variables = trainer.optimizer.variables()
    saved = [
        (int(name.split("/")[2]), reader.get_tensor(name))
        for name, _ in tf.train.list_variables(latest)
        if name.startswith("optimizer/_variables/")
    ]
    assert len(saved) == len(optimizer_variables) - 1 > 0  # [0] is the step, checked above
    for index, value in saved:
        np.testing.assert_array_equal(optimizer_variables[index].numpy(), value)
    assert any(np.abs(value).sum() > 0 for _, value in saved[1:])  # moments, not zeros

    short = [a if not a.startswith("--steps") else f"--steps={saved_step + 10}" for a in argv]
    card = train.run(short)
    assert card["steps"] == saved_step + 10  # continued, not restarted from zero
    assert tf.train.latest_checkpoint(str(checkpoints)).endswith(f"-{saved_step + 10}")


def _reference_outputs(model_dir: Path, image: np.ndarray) -> dict:
    """Outputs of the exported model in a fresh process, as JSON-able lists."""
    code = """
import json, sys
import numpy as np
import tensorflow as tf
import tf_keras as keras
from models.export import load_saved_model
model = load_saved_model(sys.argv[1])
image = tf.constant(np.load(sys.argv[2]))
out = {}
if hasattr(model, "analyze"):
    latents = model.analyze(image)
    out["y_hat"] = latents["y_hat"].numpy().tolist()
    shape = image.shape
    out["x_hat"] = model.synthesize(latents["y_hat"], shape[0], shape[1])["image"].numpy().tolist()
else:
    out["x_hat"] = model.denoise(image)["image"].numpy().tolist()
print(json.dumps(out))
"""
    path = model_dir / "image.npy"
    np.save(path, image)
    results = []
    for legacy in ("0", "1"):  # whichever Keras the loading process has active
        done = python(
            code, str(model_dir / "export"), str(path), env={"TF_USE_LEGACY_KERAS": legacy}
        )
        assert done.returncode == 0, done.stderr[-2000:]
        results.append(json.loads(done.stdout.strip().splitlines()[-1]))
    assert results[0] == results[1]
    return {key: np.array(value) for key, value in results[0].items()}


@pytest.mark.parametrize("flags", [TINY_CODEC, TINY_DENOISER])
def test_export_in_a_fresh_process_matches_the_trained_model(prepared, tmp_path, flags):
    card = train.run(
        [f"--data={prepared}", f"--model-dir={tmp_path}", "--steps=10", *flags, *QUIET]
    )
    image = np.asarray(tf.random.stateless_uniform([61, 97, 3], [1, 2], 0, 256, tf.int32))
    image = image.astype(np.uint8)
    exported = _reference_outputs(tmp_path, image)

    args, trainer = make_trainer(prepared, tmp_path, ["--steps=10", *flags])
    trainer.restore()
    model = trainer.model
    assert export.fingerprint(model) == card["fingerprint"]
    x = tf.constant(image, tf.float32)[tf.newaxis] / 255.0
    if card["task"] == export.CODEC:
        y_hat = model.quantize_y(model.analysis_transform(pad_to_multiple(x)))[0].numpy()
        assert (y_hat == exported["y_hat"]).mean() > 0.999
        x_hat = model.synthesis_transform(y_hat[np.newaxis])[0, :61, :97].numpy()
    else:
        x_hat = model(x)[0].numpy()
    expected = np.clip(np.round(x_hat * 255), 0, 255)
    assert exported["x_hat"].shape == (61, 97, 3)
    assert np.abs(expected - exported["x_hat"]).max() <= 1


def test_mirrored_strategy_trains_over_two_logical_cpus(prepared, tmp_path):
    """The multi-device path (what several GPUs run), with the U-Net denoiser: its functional
    body's variables are mirrored like the plain network's."""
    code = (
        "import json, sys; from pipelines import train; "
        "card = train.run(sys.argv[1:]); print(json.dumps(card))"
    )
    done = python(
        code,
        f"--data={prepared}",
        f"--model-dir={tmp_path}",
        "--steps=30",
        "--cpu-replicas=2",
        "--batch-size=8",
        "--learning-rate=1e-3",
        "--ema-decay=0.9",  # the average is updated by the first replica only
        *TINY_UNET,
        *QUIET,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    card = json.loads(done.stdout.strip().splitlines()[-1])
    assert card["replicas"] == 2 and card["ema_decay"] == 0.9
    assert card["architecture"] == "UNetDenoiser"
    assert card["steps"] == 30
    noisy_psnr, psnr = card["eval"]["noisy_psnr"], card["eval"]["psnr"]
    assert psnr > noisy_psnr, card["eval"]  # it learned to denoise across both replicas


def test_a_non_finite_step_rolls_back_to_the_last_checkpoint_at_a_lower_rate(prepared, tmp_path):
    args, trainer = make_trainer(prepared, tmp_path, ["--steps=20", *TINY_DENOISER])
    batches = iter(training_data.make_dataset(str(prepared), features.TRAIN_DIR, 8, True))
    for _ in range(3):
        assert trainer.step_or_roll_back(next(batches)) is not None
    trainer.save()
    saved = [w.numpy().copy() for w in trainer.model.weights]
    trainer.step_or_roll_back(next(batches))
    # A blow-up: the output layer's kernel turns NaN, so the next loss is NaN.  (Not an
    # inner layer: a ReLU after it may turn NaN into 0 on some CPU kernels.)
    (kernel,) = [w for w in trainer.model.weights if "residual" in w.name and "kernel" in w.name]
    kernel.assign(tf.fill(kernel.shape, np.nan))

    assert trainer.step_or_roll_back(next(batches)) is None
    assert trainer.step == 3
    assert trainer.learning_rate.numpy() == pytest.approx(args.learning_rate * 0.5)
    for weight, before in zip(trainer.model.weights, saved, strict=True):
        np.testing.assert_array_equal(weight.numpy(), before)
    assert trainer.step_or_roll_back(next(batches)) is not None  # and it trains on


def test_a_non_finite_gradient_never_reaches_the_weights(prepared, tmp_path):
    _, trainer = make_trainer(prepared, tmp_path, ["--steps=20", *TINY_DENOISER])
    noisy, clean = next(
        iter(training_data.make_dataset(str(prepared), features.TRAIN_DIR, 8, True))
    )
    trainer.train_step((noisy, clean))
    trainer.save()
    before = [w.numpy().copy() for w in trainer.model.weights]
    poisoned = tf.tensor_scatter_nd_update(noisy, [[0, 0, 0, 0]], [np.inf])
    metrics = trainer.train_step((poisoned, clean))
    assert not np.isfinite(float(metrics["loss"]))
    assert trainer.weights_are_finite()
    # ... and the guarded step undoes even the momentum's small move.
    assert trainer.step_or_roll_back((poisoned, clean)) is None
    for weight, old in zip(trainer.model.weights, before, strict=True):
        np.testing.assert_array_equal(weight.numpy(), old)


def test_the_learning_rate_drops_only_after_a_plateau(prepared, tmp_path):
    _, trainer = make_trainer(
        prepared, tmp_path, ["--plateau-patience=2", "--learning-rate=1e-3", *TINY_DENOISER]
    )
    for loss in (5.0, 4.0, 4.5, 3.9, 4.2):  # improvements reset the count
        trainer.after_evaluation(loss)
    assert trainer.learning_rate.numpy() == pytest.approx(1e-3)
    trainer.after_evaluation(4.1)  # second evaluation in a row without a better loss
    assert trainer.learning_rate.numpy() == pytest.approx(5e-4)


def test_a_loss_better_by_less_than_the_threshold_is_no_progress(prepared, tmp_path):
    flags = ["--plateau-patience=2", "--plateau-threshold=0.01", "--learning-rate=1e-3"]
    _, trainer = make_trainer(prepared, tmp_path, [*flags, *TINY_DENOISER])
    for loss in (5.0, 4.9, 4.88):  # 2% better: progress; then 0.4%: not
        trainer.after_evaluation(loss)
    assert trainer.learning_rate.numpy() == pytest.approx(1e-3)
    assert float(trainer.best_eval_loss.numpy()) == pytest.approx(4.9)
    trainer.after_evaluation(4.86)  # a new best by a hair each time: still a plateau
    assert trainer.learning_rate.numpy() == pytest.approx(5e-4)


def test_fresh_noise_follows_the_spec_and_is_seeded_by_example(prepared):
    dataset = training_data.make_dataset(
        str(prepared), features.TRAIN_DIR, 8, True, train_noise="gaussian:25"
    )
    noisy, clean = (t.numpy() for t in next(iter(dataset)))
    residual = (noisy - clean) * 255.0  # the stored patches had sigma 10-40
    inside = (clean > 0.2) & (clean < 0.8)  # away from clipping
    assert np.std(residual[inside]) == pytest.approx(25.0, rel=0.05)

    add_noise = training_data.fresh_noise("gaussian:25", seed=0)
    patch = tf.constant(np.full((16, 16, 3), 128, np.uint8))
    first = add_noise(tf.constant(7, tf.int64), patch).numpy()
    np.testing.assert_array_equal(first, add_noise(tf.constant(7, tf.int64), patch).numpy())
    # A resumed run numbers its examples on from where it stopped: new draws.
    assert not np.array_equal(first, add_noise(tf.constant(8007, tf.int64), patch).numpy())
    assert not np.array_equal(
        first,
        training_data.fresh_noise("gaussian:25", seed=1)(tf.constant(7, tf.int64), patch).numpy(),
    )


def test_float_noise_share_leaves_that_share_of_patches_unrounded_and_unclipped():
    patch = tf.constant(np.full((16, 16, 3), 250, np.uint8))  # near white: noise clips
    draws = [
        training_data.fresh_noise("gaussian:25", seed=0, float_share=0.5)(
            tf.constant(i, tf.int64), patch
        )
        for i in range(40)
    ]
    floats = [d.numpy() for d in draws if not np.array_equal(d, np.rint(d))]
    assert 10 <= len(floats) <= 30  # about half
    assert all(f.max() > 255 for f in floats)  # not clipped
    rounded = [d.numpy() for d in draws if np.array_equal(d, np.rint(d))]
    assert all(r.max() <= 255 for r in rounded)
    # share 0 keeps the noise stream of runs that never asked for float noise
    np.testing.assert_array_equal(
        training_data.fresh_noise("gaussian:25", seed=0)(tf.constant(3, tf.int64), patch).numpy(),
        noise.parse_spec("gaussian:25").apply(patch.numpy(), np.random.default_rng([0, 3]))[0],
    )


def test_float_noise_share_is_checked_up_front(prepared, tmp_path, capsys):
    with pytest.raises(SystemExit) as exited:
        train.run(
            [
                f"--data={prepared}",
                f"--model-dir={tmp_path}",
                "--task=denoise",
                "--train-float-noise=0.5",
            ]
        )
    assert exited.value.code == 2
    assert "--train-float-noise needs --train-noise" in capsys.readouterr().err


def test_init_from_copies_the_weights_and_adds_up_steps_and_commands(prepared, tmp_path):
    source = tmp_path / "source"
    first = train.run(
        [f"--data={prepared}", f"--model-dir={source}", "--steps=6", *TINY_CODEC, *QUIET]
    )
    second = train.run(
        [
            f"--data={prepared}",
            f"--model-dir={tmp_path / 'warm'}",
            f"--init-from={source / 'export'}",
            "--steps=4",
            *TINY_CODEC,
            *QUIET,
        ]
    )
    assert second["steps"] == 4 and second["cumulative_steps"] == 10
    assert second["cumulative_cpu_hours"] > first["cumulative_cpu_hours"] > 0
    assert second["commands"][0] == first["command"]
    assert second["init_from"] == str(source / "export")
    assert (second["init_fingerprint"], second["init_steps"]) == (first["fingerprint"], 6)
    assert first["init_fingerprint"] is None and first["init_steps"] is None

    # Right after the warm start the weights are the source's.
    _, trainer = make_trainer(prepared, tmp_path / "check", ["--steps=1", *TINY_CODEC])
    growth.load_exported_weights(trainer.model, str(source / "export"))
    assert export.fingerprint(trainer.model) == first["fingerprint"]


def test_init_from_refuses_another_architecture(prepared, tmp_path):
    source = tmp_path / "source"
    train.run([f"--data={prepared}", f"--model-dir={source}", "--steps=2", *TINY_CODEC, *QUIET])
    narrower = [f if not f.startswith("--num-filters") else "--num-filters=8" for f in TINY_CODEC]
    _, trainer = make_trainer(prepared, tmp_path / "w", ["--steps=1", *narrower])
    with pytest.raises(ValueError, match="same architecture"):
        growth.load_exported_weights(trainer.model, str(source / "export"))
    _, trainer = make_trainer(
        prepared, tmp_path / "k", ["--steps=1", "--kernel-size=3", *TINY_CODEC]
    )
    with pytest.raises(ValueError, match="5x5 kernels, this codec's 3x3"):
        growth.load_exported_weights(trainer.model, str(source / "export"))


def test_init_from_widens_the_latents_and_decodes_the_same_image(prepared, tmp_path):
    """More --latent-filters than the source: the source's weights; the new latents are 0
    (their code is 0, at the smallest scale) and the synthesis reads them with fresh
    weights, through which they learn."""
    source = tmp_path / "source"
    variable = ["--lmbdas=0.005,0.02", "--steps=3", *QUIET]
    train.run([f"--data={prepared}", f"--model-dir={source}", *TINY_CODEC, *variable])
    _, narrow = make_trainer(prepared, tmp_path / "n", ["--lmbdas=0.005,0.02", *TINY_CODEC])
    growth.load_exported_weights(narrow.model, str(source / "export"))
    wide_flags = [f if f != "--latent-filters=24" else "--latent-filters=40" for f in TINY_CODEC]
    _, wide = make_trainer(prepared, tmp_path / "w", ["--lmbdas=0.005,0.02", *wide_flags])
    growth.load_exported_weights(wide.model, str(source / "export"))

    x = tf.constant(np.random.default_rng(0).random((1, 64, 128, 3)), tf.float32)
    for quality in (0.0, 60.0, 100.0):
        q = tf.constant([quality])
        y_narrow, y_wide = narrow.model.analyze(x, q), wide.model.analyze(x, q)
        assert y_wide.shape[-1] == 40
        np.testing.assert_allclose(y_wide[..., :24], y_narrow, rtol=1e-5, atol=1e-5)
        assert float(tf.reduce_max(tf.abs(y_wide[..., 24:]))) == 0  # unused until learned
        decoded = [
            m.model.synthesize(m.model.quantize_y(y), q).numpy()
            for m, y in ((narrow, y_narrow), (wide, y_wide))
        ]
        np.testing.assert_allclose(decoded[1], decoded[0], atol=1e-5)
        z = [m.model.hyper_analysis_transform(y) for m, y in ((narrow, y_narrow), (wide, y_wide))]
        np.testing.assert_allclose(z[1], z[0], atol=1e-5)
        new_scales = wide.model.scale_indexes(wide.model.quantize_z(z[1]))[..., 24:]
        assert int(tf.reduce_max(new_scales)) == 0  # the smallest scale: no bits for 0
    reader = wide.model.synthesis_transform.layers[0].kernel.numpy()  # [k, k, N, M]
    # every new latent is read: the distortion's gradient reaches the encoder through it
    assert np.all(np.abs(reader[..., 24:]).max(axis=(0, 1, 2)) > 0)


def train_from(prepared, source: Path, model_dir: Path, flags: list[str]):
    """3 steps of `train --init-from SOURCE/export FLAGS`: (its card, its export read back
    into a model of those flags, the export's folder)."""
    card = train.run(
        [
            f"--data={prepared}",
            f"--model-dir={model_dir}",
            "--steps=3",
            f"--init-from={source / 'export'}",
            *flags,
        ]
    )
    _, trainer = make_trainer(prepared, model_dir.with_name(model_dir.name + "-read"), flags)
    growth.load_exported_weights(trainer.model, str(model_dir / "export"))
    return card, trainer.model, model_dir / "export"


@pytest.mark.parametrize(
    ("flag", "sides", "ring_at"),
    [
        ("--coarse-kernel-size=5", [[3, 3, 3, 5], [5, 3, 3, 3]], -1),  # next to the latents
        ("--fine-kernel-size=5", [[5, 3, 3, 3], [3, 3, 3, 5]], 0),  # next to the image
    ],
)
def test_init_from_a_3x3_codec_grows_5x5_kernels_which_learn(
    prepared, tmp_path, flag, sides, ring_at
):
    """--coarse-kernel-size 5 (or --fine-kernel-size 5) from a 3x3 codec: the source's
    kernels sit in the centre of the two 5x5 ones (zeros around), so the same latents and
    decoded image at first; training then moves the ring, and the card and code files carry
    the new shape."""
    source = tmp_path / "source"
    k3 = [*TINY_CODEC, "--kernel-size=3", "--lmbdas=0.005,0.02", *QUIET]
    train.run([f"--data={prepared}", f"--model-dir={source}", "--steps=3", *k3])
    larger = [*k3, flag]
    models = []
    for flags, name in ((k3, "small"), (larger, "grown")):
        _, trainer = make_trainer(prepared, tmp_path / name, flags)
        growth.load_exported_weights(trainer.model, str(source / "export"))
        models.append(trainer.model)
    small, grown = models
    grown_sides = [
        [layer.kernel.shape[0] for layer in transform.layers if "layer" in layer.name]
        for transform in (grown.analysis_transform, grown.synthesis_transform)
    ]
    assert grown_sides == sides

    x = tf.constant(np.random.default_rng(2).random((1, 64, 128, 3)), tf.float32)
    for quality in (0.0, 100.0):
        q = tf.constant([quality])
        y = [m.analyze(x, q) for m in models]
        np.testing.assert_allclose(y[1], y[0], rtol=1e-5, atol=1e-5)
        decoded = [m.synthesize(m.quantize_y(y[0]), q) for m in models]
        np.testing.assert_allclose(decoded[1], decoded[0], atol=1e-5)

    card, trained, export_dir = train_from(prepared, source, tmp_path / "trained", larger)
    key = flag[2:].split("=")[0].replace("-", "_")
    assert card["config"][key] == 5 and card["cumulative_steps"] == 6
    analysis_layers = [lr for lr in trained.analysis_transform.layers if "layer" in lr.name]
    ring = analysis_layers[ring_at].kernel.numpy()[[0, -1]]
    assert np.abs(ring).max() > 0  # zero at the warm start, learned since

    from models.compressor import Compressor

    image = np.asarray(tf.random.stateless_uniform([61, 97, 3], [5, 7], 0, 256, tf.int32))
    compressor = Compressor(str(export_dir))
    assert compressor.decompress(compressor.compress(image.astype(np.uint8))).shape == (61, 97, 3)


def test_revive_latents_splits_live_channels_into_dead_ones_and_they_learn(prepared, tmp_path):
    """--revive-latents: latents that are 0 on every training patch become copies of the
    busiest live ones, each of a pair read with half the decoder's weights: the decoded image
    stays nearly the same, the revived channels code non-zero values from the start, and
    training moves them."""
    source = tmp_path / "source"
    variable = ["--lmbdas=0.005,0.02", *QUIET]
    train.run([f"--data={prepared}", f"--model-dir={source}", "--steps=2", *TINY_CODEC, *variable])
    dead = [3, 10, 17]
    _, killed = make_trainer(prepared, tmp_path / "k", [*TINY_CODEC, *variable])
    growth.load_exported_weights(killed.model, str(source / "export"))
    producer = killed.model.analysis_transform.layers[-1]
    kernel, bias = producer.kernel.numpy(), producer.bias.numpy()
    kernel[..., dead], bias[dead] = 0.0, 0.0
    producer.kernel.assign(kernel)
    producer.bias.assign(bias)
    reader = killed.model.synthesis_transform.layers[0].kernel
    reader.assign(np.where(np.isin(np.arange(24), dead), 0.0, reader.numpy()))  # deadlocked
    card = export.load_model_card(str(source / "export"))
    export.export_model(killed.model, export.CODEC, str(tmp_path / "dead"), card)

    batches = training_data.make_dataset(str(prepared), features.TRAIN_DIR, 8, False).take(4)
    usage = growth.latent_usage(killed.model, batches)
    found = np.flatnonzero(usage == 0)  # a 2-step codec has others too
    assert set(dead) <= set(found) and len(found) < 24
    assert killed.evaluate(batches, 4)["dead_latents"] == len(found)  # the eval's count
    x = pad_to_multiple(next(iter(batches))[1][:2])
    top = tf.constant([100.0, 100.0])
    before = killed.model(x, training=False, quality=top)
    pairs = growth.split_latents(killed.model, usage)
    after = killed.model(x, training=False, quality=top)
    assert sorted(d for d, _ in pairs) == sorted(found.tolist())
    # the busiest live channels are the ones split
    assert {live for _, live in pairs} == set(np.argsort(-usage)[: len(pairs)].tolist())
    (_, _, mse_before, _), (_, _, mse_after, _) = before, after
    assert abs(float(mse_after) - float(mse_before)) < 0.05 * float(mse_before)
    revived_usage = growth.latent_usage(killed.model, batches)
    assert np.all(revived_usage[dead] > 0)  # coding from step 0: a gradient through g_s
    assert killed.evaluate(batches, 4)["dead_latents"] == int((revived_usage == 0).sum())

    revived = tmp_path / "revived"
    flags = [f"--data={prepared}", f"--model-dir={revived}", "--steps=5", "--learning-rate=1e-2"]
    run = [*flags, f"--init-from={tmp_path / 'dead'}", "--revive-latents", *TINY_CODEC, *variable]
    train.run(run)
    lineage = json.loads((revived / train.LINEAGE_FILE).read_text())
    assert set(dead) <= set(lineage["revived_latents"])
    assert len(lineage["split_from"]) == len(lineage["revived_latents"])
    _, trained = make_trainer(prepared, tmp_path / "t", [*TINY_CODEC, *variable])
    growth.load_exported_weights(trained.model, str(revived / "export"))
    learned = trained.model.synthesis_transform.layers[0].kernel.numpy()
    split = killed.model.synthesis_transform.layers[0].kernel.numpy()
    # training moved each revived channel's decoder weights away from the split copy
    assert np.abs(learned[..., dead] - split[..., dead]).max(axis=(0, 1, 2)).min() > 0


def test_init_from_widens_the_transforms_and_the_new_channels_learn(prepared, tmp_path):
    """More --num-filters (and --hyper-filters) than the source: the same latents, scales and
    decoded image at first although the GDNs couple channels; training then moves the new
    channels, which started at zero."""
    source = tmp_path / "source"
    variable = ["--lmbdas=0.005,0.02", *QUIET]
    train.run([f"--data={prepared}", f"--model-dir={source}", "--steps=3", *TINY_CODEC, *variable])
    _, narrow = make_trainer(prepared, tmp_path / "n", [*TINY_CODEC, *variable])
    growth.load_exported_weights(narrow.model, str(source / "export"))
    wide_flags = [*TINY_CODEC, "--num-filters=28", "--hyper-filters=20", *variable]
    _, wide = make_trainer(prepared, tmp_path / "w", wide_flags)
    growth.load_exported_weights(wide.model, str(source / "export"))
    assert wide.model.analysis_transform.layers[0].kernel.shape[-1] == 28

    x = tf.constant(np.random.default_rng(1).random((1, 64, 128, 3)), tf.float32)
    for quality in (0.0, 100.0):
        q = tf.constant([quality])
        y = [m.model.analyze(x, q) for m in (narrow, wide)]
        np.testing.assert_allclose(y[1], y[0], rtol=1e-5, atol=1e-5)
        decoded = [m.model.synthesize(m.model.quantize_y(y[0]), q) for m in (narrow, wide)]
        np.testing.assert_allclose(decoded[1], decoded[0], atol=1e-5)
        z = [m.model.hyper_analysis_transform(y[0]) for m in (narrow, wide)]
        assert z[1].shape[-1] == 20
        np.testing.assert_allclose(z[1][..., :16], z[0], atol=1e-5)
        pairs = zip((narrow, wide), z, strict=True)
        scales = [m.model.scale_indexes(m.model.quantize_z(zi)) for m, zi in pairs]
        np.testing.assert_allclose(scales[1], scales[0], atol=1e-4)

    card, trained, export_dir = train_from(prepared, source, tmp_path / "grown", wide_flags)
    assert card["config"]["num_filters"] == 28 and card["cumulative_steps"] == 6
    new_kernel = trained.analysis_transform.layers[0].kernel.numpy()[..., 16:]
    assert np.abs(new_kernel).max() > 0  # zero at the warm start, learned since

    from models.compressor import Compressor  # z has 20 channels, not N: the code says so

    image = np.asarray(tf.random.stateless_uniform([61, 97, 3], [5, 6], 0, 256, tf.int32))
    compressor = Compressor(str(export_dir))
    assert compressor.decompress(compressor.compress(image.astype(np.uint8))).shape == (61, 97, 3)


def test_a_narrowed_encoder_keeps_the_channels_read_most_and_trains_alone(prepared, tmp_path):
    """--analysis-entry-filters below the source's N keeps the first-stage channels the next
    layer reads most; --train-only encoder then trains g_a, h_a and the gains alone, so every
    weight the decoder reads is the source's, bit for bit, and the codes still decode."""
    source = tmp_path / "source"
    variable = ["--lmbdas=0.005,0.02", *QUIET]
    train.run([f"--data={prepared}", f"--model-dir={source}", "--steps=3", *TINY_CODEC, *variable])
    _, full = make_trainer(prepared, tmp_path / "full", [*TINY_CODEC, *variable])
    growth.load_exported_weights(full.model, str(source / "export"))
    # Make channels 0-7 nearly unread by the next layer: they are the ones to drop.
    reader = full.model.analysis_transform.layers[2].kernel
    reader.assign(reader.numpy() * np.repeat([1e-3, 1.0], 8)[:, np.newaxis])
    narrow_flags = [*TINY_CODEC, *variable, "--analysis-entry-filters=8"]
    _, narrow = make_trainer(prepared, tmp_path / "narrow", narrow_flags)
    kept = growth.narrow_analysis_entry(full.model, narrow.model, growth.sample_batch(64))
    assert kept.tolist() == list(range(8, 16))
    assert narrow.model.analysis_transform.layers[0].kernel.shape[-1] == 8
    x = growth.sample_batch(64)
    for quality in (0.0, 100.0):
        q = tf.fill([x.shape[0]], quality)
        y_full, y_narrow = full.model.analyze(x, q), narrow.model.analyze(x, q)
        error = float(tf.norm(y_narrow - y_full) / tf.norm(y_full))
        assert error < 0.05, error

    with pytest.raises(ValueError, match="rest of the codec as it is"):
        _, both = make_trainer(prepared, tmp_path / "both", [*narrow_flags, "--latent-filters=32"])
        growth.load_exported_weights(both.model, str(source / "export"))

    trained_flags = [*narrow_flags, "--train-only=encoder"]
    card, trained, export_dir = train_from(prepared, source, tmp_path / "enc", trained_flags)
    assert card["config"]["analysis_entry_filters"] == 8 and card["cumulative_steps"] == 6
    _, start = make_trainer(prepared, tmp_path / "start", narrow_flags)
    growth.load_exported_weights(start.model, str(source / "export"))
    encoder = {id(w) for w in trained.encoder_weights()}
    moved = []
    for before, after in zip(start.model.weights, trained.weights, strict=True):
        if id(after) in encoder:
            moved.append(not np.array_equal(before.numpy(), after.numpy()))
        else:  # the decoder's and the entropy model's weights
            np.testing.assert_array_equal(after.numpy(), before.numpy(), err_msg=after.name)
    assert len(moved) > 10 and all(moved)

    from models.compressor import Compressor

    image = np.asarray(tf.random.stateless_uniform([61, 97, 3], [5, 8], 0, 256, tf.int32))
    compressor = Compressor(str(export_dir))
    assert compressor.decompress(compressor.compress(image.astype(np.uint8))).shape == (61, 97, 3)


def test_analysis_level_gains_start_as_the_source_and_learn_a_gain_per_level(prepared, tmp_path):
    """--analysis-level-gains --init-from a codec without them: the same latents at first
    (every gain 1); --train-only encoder then moves them apart per level, and the exported
    codec codes and decodes."""
    source = tmp_path / "source"
    variable = ["--lmbdas=0.005,0.02", *QUIET]
    train.run([f"--data={prepared}", f"--model-dir={source}", "--steps=3", *TINY_CODEC, *variable])
    flags = [*TINY_CODEC, *variable, "--analysis-level-gains", "--analysis-entry-filters=12"]
    models = []
    for name, extra in (("plain", ["--analysis-entry-filters=12"]), ("gains", flags)):
        _, trainer = make_trainer(prepared, tmp_path / name, [*TINY_CODEC, *variable, *extra])
        growth.load_exported_weights(trainer.model, str(source / "export"))
        models.append(trainer.model)
    x = growth.sample_batch(64)
    for quality in (0.0, 100.0):
        q = tf.fill([x.shape[0]], quality)
        np.testing.assert_allclose(models[1].analyze(x, q), models[0].analyze(x, q), atol=1e-6)

    card, trained, export_dir = train_from(
        prepared, source, tmp_path / "trained", [*flags, "--train-only=encoder"]
    )
    assert card["config"]["analysis_level_gains"] is True
    gains = [g.numpy() for g in trained.log_stage_gains]
    assert [g.shape for g in gains] == [(2, 12), (2, 16), (2, 16)]
    assert all(np.abs(g[0] - g[1]).max() > 0 for g in gains)  # each level its own

    from models.compressor import Compressor

    image = np.asarray(tf.random.stateless_uniform([61, 97, 3], [5, 9], 0, 256, tf.int32))
    compressor = Compressor(str(export_dir))
    data = compressor.compress(image.astype(np.uint8), quality=100)
    assert compressor.decompress(data).shape == (61, 97, 3)


def test_synthesis_level_gains_start_as_the_source_and_learn_a_gain_per_level(prepared, tmp_path):
    """--synthesis-level-gains --init-from a codec without them: the same image from the same
    latents at first (every gain 1); training moves them apart per level; they are decoder
    weights (a new decoder fingerprint), and the exported codec codes and decodes."""
    source = tmp_path / "source"
    variable = ["--lmbdas=0.005,0.02", *QUIET]
    train.run([f"--data={prepared}", f"--model-dir={source}", "--steps=3", *TINY_CODEC, *variable])
    flags = [*TINY_CODEC, *variable, "--synthesis-level-gains"]
    models = []
    for name, extra in (("plain", []), ("gains", ["--synthesis-level-gains"])):
        _, trainer = make_trainer(prepared, tmp_path / name, [*TINY_CODEC, *variable, *extra])
        growth.load_exported_weights(trainer.model, str(source / "export"))
        models.append(trainer.model)
    x = growth.sample_batch(64)
    y_hat = tf.round(models[0].analyze(x, tf.fill([x.shape[0]], 50.0)))
    for quality in (0.0, 100.0):
        q = tf.fill([y_hat.shape[0]], quality)
        for training in (True, False):
            np.testing.assert_allclose(
                models[1].synthesize(y_hat, q, training),
                models[0].synthesize(y_hat, q, training),
                atol=1e-6,
            )
    decoder = {id(w) for w in models[1].decoder_weights()}
    assert all(id(w) in decoder for w in models[1].log_synthesis_gains)

    card, trained, export_dir = train_from(
        prepared, source, tmp_path / "trained", [*flags, "--learning-rate=0.02"]
    )
    assert card["config"]["synthesis_level_gains"] is True
    gains = [g.numpy() for g in trained.log_synthesis_gains]
    assert [g.shape for g in gains] == [(2, 16)] * 3
    assert all(np.abs(g[0] - g[1]).max() > 0 for g in gains)  # each level its own
    source_card = json.loads((source / "export" / "model_card.json").read_text())
    assert card["decoder_fingerprint"] != source_card["decoder_fingerprint"]

    from models.compressor import Compressor

    image = np.asarray(tf.random.stateless_uniform([61, 97, 3], [5, 7], 0, 256, tf.int32))
    compressor = Compressor(str(export_dir))
    data = compressor.compress(image.astype(np.uint8), quality=100)
    assert compressor.decompress(data).shape == (61, 97, 3)


def test_an_analysis_tail_starts_as_the_identity_and_trains_with_the_encoder(prepared, tmp_path):
    """--analysis-tail-filters --init-from a codec without it: the same latents at first;
    --train-only encoder then trains it (an encoder weight), and the export's code, which the
    tail now shapes, decodes."""
    source = tmp_path / "source"
    variable = ["--lmbdas=0.005,0.02", *QUIET]
    train.run([f"--data={prepared}", f"--model-dir={source}", "--steps=3", *TINY_CODEC, *variable])
    flags = [*TINY_CODEC, *variable, "--analysis-tail-filters=8"]
    models = []
    for name, extra in (("plain", []), ("tail", ["--analysis-tail-filters=8"])):
        _, trainer = make_trainer(prepared, tmp_path / name, [*TINY_CODEC, *variable, *extra])
        growth.load_exported_weights(trainer.model, str(source / "export"))
        models.append(trainer.model)
    x = growth.sample_batch(64)
    q = tf.fill([x.shape[0]], 100.0)
    np.testing.assert_allclose(models[1].analyze(x, q), models[0].analyze(x, q), atol=1e-6)
    encoder = {id(w) for w in models[1].encoder_weights()}
    assert all(id(w) in encoder for w in models[1].analysis_tail.weights)

    card, trained, export_dir = train_from(
        prepared,
        source,
        tmp_path / "trained",
        [*flags, "--train-only=encoder", "--learning-rate=0.02"],
    )
    assert card["config"]["analysis_tail_filters"] == 8
    last_kernel = trained.analysis_tail.layers[-1].kernel.numpy()
    assert np.abs(last_kernel).max() > 0  # it learned, so it now changes the latents

    from models.compressor import Compressor

    image = np.asarray(tf.random.stateless_uniform([64, 128, 3], [5, 10], 0, 256, tf.int32))
    pixels = image.astype(np.uint8)
    compressor = Compressor(str(export_dir))
    exported = compressor.latents(pixels, 100.0)
    unit = tf.constant(pixels, tf.float32)[tf.newaxis] / 255.0
    quality = tf.constant([100.0])
    np.testing.assert_allclose(exported, trained.analyze(unit, quality)[0], atol=1e-4)
    for weight in trained.analysis_tail.layers[-1].weights:  # the export without its tail
        weight.assign(tf.zeros_like(weight))
    assert np.abs(exported - trained.analyze(unit, quality)[0].numpy()).max() > 1e-2
    assert compressor.decompress(compressor.compress(pixels, quality=100)).shape == (64, 128, 3)


def test_train_only_encoder_needs_a_codec_to_start_from(prepared, tmp_path, capsys):
    with pytest.raises(SystemExit):
        train.run(
            [f"--data={prepared}", f"--model-dir={tmp_path}", *TINY_CODEC, "--train-only=encoder"]
        )
    assert "--train-only encoder needs --task codec and --init-from" in capsys.readouterr().err


@pytest.mark.parametrize("signal_name", ["SIGTERM", "SIGINT"])
def test_a_signal_stops_training_with_a_checkpoint(prepared, tmp_path, signal_name):
    """`nohup latentpress train ... &` starts with SIGINT ignored, and schedulers stop with
    SIGTERM: either signal saves the step reached, and the run resumes from it."""
    code = (
        "import os, signal, sys; from pipelines import train; from models import trainer\n"
        "signal.signal(signal.SIGINT, signal.SIG_IGN)  # as in a background job\n"
        "step = trainer.Trainer.step_or_roll_back\n"
        "def step_then_signal(self, batch):\n"
        "    metrics = step(self, batch)\n"
        "    if self.step == 5:\n"
        f"        os.kill(os.getpid(), signal.{signal_name})\n"
        "    return metrics\n"
        "trainer.Trainer.step_or_roll_back = step_then_signal\n"
        "train.main(sys.argv[1:])\n"
    )
    flags = [f"--data={prepared}", f"--model-dir={tmp_path}", *TINY_CODEC, *QUIET]
    stopped = python(code, *flags, "--steps=1000", "--checkpoint-every=1000")
    assert stopped.returncode == 130 and "interrupted: saved" in stopped.stderr, stopped.stderr[
        -2000:
    ]
    assert "Traceback" not in stopped.stderr  # a requested stop is not a crash
    assert tf.train.latest_checkpoint(str(tmp_path / "checkpoints")).endswith("ckpt-5")
    card = train.run([*flags, "--steps=7"])
    assert card["steps"] == 7


def test_the_codec_trains_on_crops_of_any_size(prepared, tmp_path):
    """40 is no multiple of the codec's 64: the scales and the output are cropped to fit."""
    card = train.run(
        [
            f"--data={prepared}",
            f"--model-dir={tmp_path}",
            "--steps=2",
            "--crop=40",
            *TINY_CODEC,
            *QUIET,
        ]
    )
    assert card["steps"] == 2 and np.isfinite(card["eval"]["loss"])


@pytest.mark.parametrize(
    "flags",
    [TINY_CODEC + ["--lmbdas=0.005,0.02"], TINY_UNET],
    ids=["variable-rate codec", "unet denoiser"],
)
def test_bfloat16_training_learns_and_exports_a_float32_model(prepared, tmp_path, flags):
    """--precision bfloat16 (in a process of its own: the Keras policy is global) trains with
    float32 variables and exports a model that serves float32 like any other."""
    code = (
        "import json, sys; from pipelines import train; "
        "card = train.run(sys.argv[1:]); print(json.dumps(card))"
    )
    args = [f"--data={prepared}", f"--model-dir={tmp_path}", "--steps=40", "--batch-size=8"]
    done = python(code, *args, "--learning-rate=1e-3", "--precision=bfloat16", *flags, *QUIET)
    assert done.returncode == 0, done.stderr[-3000:]
    card = json.loads(done.stdout.strip().splitlines()[-1])
    assert card["precision"] == "mixed_bfloat16"
    image = np.asarray(tf.random.stateless_uniform([61, 97, 3], [3, 4], 0, 256, tf.int32))
    image = image.astype(np.uint8)
    if card["task"] == export.CODEC:
        from models.compressor import Compressor

        compressor = Compressor(str(tmp_path / "export"))
        low, high = (compressor.compress(image, quality=q) for q in (0.0, 100.0))
        assert compressor.decompress(high).shape == image.shape
        assert np.isfinite(card["eval"]["loss"]) and len(low) < len(high)
    else:
        assert card["eval"]["psnr"] > card["eval"]["noisy_psnr"], card["eval"]
        module = export.load_saved_model(str(tmp_path / "export"))
        assert module.denoise(tf.constant(image))["image"].dtype == tf.uint8
        assert card["architecture"] == "UNetDenoiser"
    # the checkpoint resumes under float32 (the variables never were 16-bit)
    _, trainer = make_trainer(prepared, tmp_path, ["--steps=40", *flags])
    assert trainer.restore() == 40
    assert all(w.dtype == tf.float32 for w in trainer.model.weights)
    # its evaluations measured what it exports, float32, as a float32 run of it measures
    eval_data = training_data.make_dataset(str(prepared), features.EVAL_DIR, 8, False)
    float32_eval = trainer.evaluate(eval_data, 2)
    for name in ("loss", "psnr"):
        assert card["eval"][name] == pytest.approx(float32_eval[name], rel=1e-4, abs=1e-4), name


def test_init_from_grows_a_denoiser_that_denoises_the_same_at_first(prepared, tmp_path):
    """A deeper, wider denoiser warm-started from a smaller one gives the same output before
    training (identity layers after ReLUs, zero weights from the new channels), then trains."""
    small = train.run(
        [f"--data={prepared}", f"--model-dir={tmp_path / 'small'}", "--steps=20"]
        + ["--learning-rate=1e-3", *TINY_DENOISER, *QUIET]
    )
    source = str(tmp_path / "small" / "export")
    bigger_flags = ["--task=denoise", "--depth=5", "--filters=24", f"--init-from={source}"]
    _, trainer = make_trainer(prepared, tmp_path / "big", ["--steps=0", *bigger_flags])
    growth.load_exported_weights(trainer.model, source)
    module = export.load_saved_model(source)
    image = np.asarray(tf.random.stateless_uniform([37, 53, 3], [5, 6], 0, 256, tf.int32))
    image = image.astype(np.uint8)
    expected = module.denoise(tf.constant(image))["image"].numpy().astype(np.float32)
    grown = trainer.model(tf.constant(image, tf.float32)[tf.newaxis] / 255.0)[0].numpy()
    assert np.abs(np.clip(np.round(grown * 255), 0, 255) - expected).max() <= 1
    assert len(trainer.model.noise_estimator.layers) == 5

    card = train.run(
        [f"--data={prepared}", f"--model-dir={tmp_path / 'big'}", "--steps=10"]
        + [*bigger_flags, *QUIET]
    )
    assert card["config"]["depth"] == 5 and card["config"]["filters"] == 24
    assert card["cumulative_steps"] == small["cumulative_steps"] + 10
    assert np.isfinite(card["eval"]["loss"])


def test_a_variable_rate_codec_is_evaluated_at_every_level(prepared, tmp_path):
    """Every eval batch is coded at every level: a per-level curve on the same patches, ordered
    by rate, whose mean is the eval loss's; plus the transforms' ceiling (no quantization)."""
    flags = ["--lmbdas=0.0025,0.01,0.04", *TINY_CODEC]
    _, trainer = make_trainer(prepared, tmp_path, ["--steps=0", *flags])
    data = training_data.make_dataset(str(prepared), features.TRAIN_DIR, 8, training=False)
    metrics = trainer.evaluate(data, 3)
    assert trainer.eval_qualities() == [0.0, 50.0, 100.0]
    bpps = [metrics[f"bpp_q{q:g}"] for q in (0, 50, 100)]
    assert bpps == sorted(bpps) and bpps[0] < bpps[-1]
    assert metrics["bpp"] == pytest.approx(np.mean(bpps), rel=1e-6)
    one = trainer.evaluate(data.take(1), 1)  # one batch: still every level
    assert set(one) >= {"bpp_q0", "bpp_q50", "bpp_q100"}
    assert one["bpp"] == pytest.approx(np.mean([one[f"bpp_q{q}"] for q in (0, 50, 100)]))
    x = next(iter(data.take(1)))[1]
    ceiling = trainers.transform_ceiling(trainer.model, x)
    assert np.isfinite(metrics["psnr_unquantized"]) and one["psnr_unquantized"] == float(ceiling)
    # --rate-shapes: the same patches cost fewer estimated bits, and the curve says how it
    # was measured (benchmarks.compare_runs refuses to set it against a Gaussian one)
    assert "rate_shapes" not in metrics
    trainer.model.rate_shapes = True
    shaped = trainer.evaluate(data, 3)
    assert shaped["rate_shapes"] == 1.0 and shaped["bpp"] <= metrics["bpp"]
    assert shaped["psnr"] == pytest.approx(metrics["psnr"], rel=1e-6)


def test_a_collapse_with_a_finite_loss_rolls_back_to_the_best_checkpoint(prepared, tmp_path):
    """An eval loss over --collapse-factor times the best (a denoiser whose ReLUs died gives a
    finite loss at the noisy input's PSNR) returns to the best evaluation's weights and step
    at half the learning rate; a worse but not collapsed eval does not."""
    flags = ["--steps=20", "--collapse-factor=2", *TINY_DENOISER]
    args, trainer = make_trainer(prepared, tmp_path, flags)
    batches = iter(training_data.make_dataset(str(prepared), features.TRAIN_DIR, 8, True))
    for _ in range(3):
        trainer.step_or_roll_back(next(batches))
    trainer.after_evaluation(1.0)  # the best: saved apart
    best_weights = [w.numpy() for w in trainer.model.weights]
    for _ in range(3):
        trainer.step_or_roll_back(next(batches))
    trainer.after_evaluation(1.5)  # worse, not collapsed: training goes on
    assert trainer.step == 6
    trainer.after_evaluation(2.5)
    assert trainer.step == 3
    for weight, best in zip(trainer.model.weights, best_weights, strict=True):
        np.testing.assert_array_equal(weight.numpy(), best)
    assert float(trainer.learning_rate.numpy()) == pytest.approx(args.learning_rate / 2)


def test_reset_learning_rate_on_resume_clears_the_plateau_state(prepared, tmp_path):
    flags = ["--steps=4", "--checkpoint-every=2", "--plateau-patience=1", *TINY_DENOISER]
    args, trainer = make_trainer(prepared, tmp_path, flags)
    trainer.after_evaluation(1.0)
    trainer.after_evaluation(2.0)  # no progress: halved
    lowered = float(trainer.learning_rate.numpy())
    assert lowered == pytest.approx(args.learning_rate / 2)
    trainer.save()

    _, resumed = make_trainer(prepared, tmp_path, flags)
    resumed.restore()
    assert float(resumed.learning_rate.numpy()) == pytest.approx(lowered)  # kept by default
    _, reset = make_trainer(prepared, tmp_path, [*flags, "--reset-learning-rate=3e-4"])
    reset.restore()
    assert float(reset.learning_rate.numpy()) == pytest.approx(3e-4)
    assert float(reset.best_eval_loss.numpy()) == np.inf
    reset.after_evaluation(1.5)  # worse than the forgotten best: now the best, no cut
    assert float(reset.learning_rate.numpy()) == pytest.approx(3e-4)


def test_init_from_a_scale_only_codec_gives_a_mean_scale_codec_whose_means_learn(
    prepared, tmp_path
):
    """--mean-scale from a scale-only source: means of zero, so the same code and image at
    step 0; training then predicts means."""
    source = tmp_path / "source"
    train.run([f"--data={prepared}", f"--model-dir={source}", "--steps=3", *TINY_CODEC, *QUIET])
    _, plain = make_trainer(prepared, tmp_path / "p", TINY_CODEC)
    growth.load_exported_weights(plain.model, str(source / "export"))
    _, mean = make_trainer(prepared, tmp_path / "m", [*TINY_CODEC, "--mean-scale"])
    growth.load_exported_weights(mean.model, str(source / "export"))

    x = tf.constant(np.random.default_rng(2).random((1, 64, 128, 3)), tf.float32)
    outputs = [m.model(x, training=False) for m in (plain, mean)]
    for before, after in zip(outputs[0], outputs[1], strict=True):
        np.testing.assert_allclose(after, before, rtol=1e-5, atol=1e-5)
    z_hat = mean.model.quantize_z(mean.model.hyper_analysis_transform(mean.model.analyze(x)))
    assert float(tf.reduce_max(tf.abs(mean.model.means(z_hat)))) == 0.0

    grown = tmp_path / "grown"
    flags = [f"--data={prepared}", f"--model-dir={grown}", "--steps=3", "--learning-rate=1e-2"]
    train.run([*flags, f"--init-from={source / 'export'}", *TINY_CODEC, "--mean-scale", *QUIET])
    _, trained = make_trainer(prepared, tmp_path / "t", [*TINY_CODEC, "--mean-scale"])
    growth.load_exported_weights(trained.model, str(grown / "export"))
    assert float(tf.reduce_max(tf.abs(trained.model.means(z_hat)))) > 0.0
    _, back = make_trainer(prepared, tmp_path / "b", TINY_CODEC)
    with pytest.raises(ValueError, match="same architecture"):  # means cannot be dropped
        growth.load_exported_weights(back.model, str(grown / "export"))


def test_init_from_a_codec_whose_hyperprior_read_magnitudes_adds_the_signs_which_learn(
    prepared, tmp_path
):
    """--hyper-signs from a mean-scale source without: h_a's new inputs (the signed latents)
    start with zero weights, so the same side information and code at first; training then
    reads them, and the means can follow the signs."""
    source = tmp_path / "source"
    mean_scale = [*TINY_CODEC, "--mean-scale", "--lmbdas=0.005,0.02", *QUIET]
    signs = [*mean_scale, "--hyper-signs"]
    train.run([f"--data={prepared}", f"--model-dir={source}", "--steps=3", *mean_scale])
    models = []
    for flags, name in ((mean_scale, "plain"), (signs, "signs")):
        _, trainer = make_trainer(prepared, tmp_path / name, flags)
        growth.load_exported_weights(trainer.model, str(source / "export"))
        models.append(trainer.model)
    assert models[1].hyper_analysis_transform.layers[1].kernel.shape[2] == 2 * 24

    x = tf.constant(np.random.default_rng(3).random((1, 64, 128, 3)), tf.float32)
    for quality in (0.0, 100.0):
        q = tf.constant([quality])
        y = models[0].analyze(x, q)
        z = [m.hyper_analysis_transform(y) for m in models]
        np.testing.assert_allclose(z[1], z[0], rtol=1e-5, atol=1e-5)
        outputs = [m(x, training=False, quality=q) for m in models]
        for before, after in zip(outputs[0], outputs[1], strict=True):
            np.testing.assert_allclose(after, before, rtol=1e-5, atol=1e-5)

    flags = [*signs, "--learning-rate=1e-2"]
    card, trained, _ = train_from(prepared, source, tmp_path / "trained", flags)
    assert card["config"]["hyper_signs"] is True
    signed = trained.hyper_analysis_transform.layers[1].kernel.numpy()[:, :, 24:]
    assert np.abs(signed).max() > 0  # zero at the warm start, learned since
    _, back = make_trainer(prepared, tmp_path / "b", mean_scale)
    with pytest.raises(ValueError, match="same architecture"):  # signs cannot be dropped
        growth.load_exported_weights(back.model, str(tmp_path / "trained" / "export"))
    with pytest.raises(ValueError, match="mean-scale"):
        make_trainer(prepared, tmp_path / "s", [*TINY_CODEC, "--hyper-signs"])


@pytest.mark.parametrize(
    ("context", "refused_by", "refusal"),
    [
        ("--slices=2", ["--slices=4", None], "coded in 2 slices"),
        ("--checkerboard", [None], "larger than this codec"),
    ],
)
def test_init_from_a_mean_scale_codec_adds_context_that_learns(
    prepared, tmp_path, context, refused_by, refusal
):
    """--slices or --checkerboard from a mean-scale source without them: the context networks
    refine nothing at first (same code, rate and image at step 0); training makes them
    refine, and the export cannot be read into a codec with other context or none (the code
    would differ)."""
    source = tmp_path / "source"
    mean_scale = [*TINY_CODEC, "--mean-scale"]
    with_context = [*mean_scale, context]
    train.run([f"--data={prepared}", f"--model-dir={source}", "--steps=3", *mean_scale, *QUIET])
    _, plain = make_trainer(prepared, tmp_path / "p", mean_scale)
    growth.load_exported_weights(plain.model, str(source / "export"))
    _, grown_at_0 = make_trainer(prepared, tmp_path / "c", with_context)
    growth.load_exported_weights(grown_at_0.model, str(source / "export"))

    x = tf.constant(np.random.default_rng(2).random((1, 64, 128, 3)), tf.float32)
    outputs = [m.model(x, training=False) for m in (plain, grown_at_0)]
    for before, after in zip(outputs[0], outputs[1], strict=True):
        np.testing.assert_allclose(after, before, rtol=1e-5, atol=1e-5)

    grown = tmp_path / "grown"
    flags = [f"--data={prepared}", f"--model-dir={grown}", "--steps=3", "--learning-rate=1e-2"]
    train.run([*flags, f"--init-from={source / 'export'}", *with_context, *QUIET])
    _, trained = make_trainer(prepared, tmp_path / "t", with_context)
    growth.load_exported_weights(trained.model, str(grown / "export"))
    model = trained.model
    networks = model.slice_entropy + model.slice_residual
    networks += [model.checkerboard_entropy] if model.checkerboard_entropy is not None else []
    assert networks
    assert all(float(tf.reduce_max(tf.abs(net.layers[-1].kernel))) > 0.0 for net in networks)
    for i, other in enumerate(refused_by):
        _, reader = make_trainer(
            prepared, tmp_path / f"o{i}", [*mean_scale, *filter(None, [other])]
        )
        with pytest.raises(ValueError, match=refusal):
            growth.load_exported_weights(reader.model, str(grown / "export"))


def test_level_scale_offsets_start_calibrated_from_a_codec_without_them(prepared, tmp_path):
    """--level-scale-offsets from a variable-rate codec without them: the offsets start at
    what codes a training batch in the fewest bits (recorded in lineage.json), and the
    calibration moves a badly set offset back, lowering that level's rate."""
    source = tmp_path / "source"
    variable = [*TINY_CODEC, "--lmbdas=0.005,0.04"]
    train.run([f"--data={prepared}", f"--model-dir={source}", "--steps=3", *variable, *QUIET])
    grown = tmp_path / "grown"
    flags = [f"--data={prepared}", f"--model-dir={grown}", "--steps=1"]
    train.run([*flags, f"--init-from={source / 'export'}", *variable, "--level-scale-offsets"])
    lineage = json.loads((grown / "lineage.json").read_text())
    assert len(lineage["calibrated_scale_offsets"]) == 2

    _, trainer = make_trainer(prepared, tmp_path / "t", [*variable, "--level-scale-offsets"])
    model = trainer.model
    growth.load_exported_weights(model, str(source / "export"))
    _, images = next(iter(training_data.make_dataset(str(prepared), features.TRAIN_DIR, 4, False)))
    x = pad_to_multiple(images)
    lowest = tf.fill([4], 0.0)
    # 3 steps of the table too large at the lowest level (a codec trained 3 steps wants
    # smaller scales, not larger)
    model.scale_offsets.assign([3.0, 0.0])
    rate_before = float(model(x, training=False, quality=lowest)[1])
    offsets = growth.calibrate_scale_offsets(model, images)
    assert offsets[0] < 3.0
    assert float(model(x, training=False, quality=lowest)[1]) < rate_before


def test_the_context_networks_can_train_at_a_multiple_of_the_learning_rate(prepared, tmp_path):
    """--context-learning-rate-scale K: from the same weights and batch, one step moves the
    channel-context networks K times as far (Adam's first step is ~lr per weight) and every
    other weight as far as without it; a run keeps the grouping it was trained with."""
    sliced = [*TINY_CODEC, "--mean-scale", "--slices=2", "--learning-rate=1e-3", "--warmup-steps=1"]
    keras.utils.set_random_seed(0)
    _, plain = make_trainer(prepared, tmp_path / "plain", sliced)
    _, scaled = make_trainer(
        prepared, tmp_path / "scaled", [*sliced, "--context-learning-rate-scale=10"]
    )
    scaled.model.set_weights(plain.model.get_weights())
    batch = next(iter(training_data.make_dataset(str(prepared), features.TRAIN_DIR, 8, False)))
    moved = {}
    for name, trainer in (("plain", plain), ("scaled", scaled)):
        context = {w.ref() for w in trainer.model.context_weights()}
        before = [w.numpy() for w in trainer.model.trainable_variables]
        trainer.train_step(batch)
        moved[name] = {"context": [], "rest": []}
        for weight, old in zip(trainer.model.trainable_variables, before, strict=True):
            step = np.abs(weight.numpy() - old)
            moved[name]["context" if weight.ref() in context else "rest"].append(step.max())
    # plain and scaled list their weights in the same order
    pairs = zip(moved["plain"]["context"], moved["scaled"]["context"], strict=True)
    context_moved = [(a, b) for a, b in pairs if a > 0]
    assert context_moved, "no context weight moved"
    for plain_step, scaled_step in context_moved:
        assert scaled_step == pytest.approx(10 * plain_step, rel=0.05)
    np.testing.assert_allclose(moved["scaled"]["rest"], moved["plain"]["rest"], rtol=0.05)
    assert max(moved["plain"]["rest"]) > 0

    scaled.save()
    _, resumed = make_trainer(prepared, tmp_path / "scaled", sliced)  # without the flag
    with pytest.raises(ValueError, match="context-learning-rate-scale"):
        resumed.restore()
    with pytest.raises(ValueError, match="needs a codec with --slices or --checkerboard"):
        make_trainer(prepared, tmp_path / "none", [*TINY_CODEC, "--context-learning-rate-scale=2"])


def test_channel_slices_need_means_and_must_divide_the_latents():
    with pytest.raises(ValueError, match="mean-scale"):
        CodecConfig(latent_filters=24, slices=2)
    with pytest.raises(ValueError, match="divide"):
        CodecConfig(latent_filters=24, mean_scale=True, slices=5)
    with pytest.raises(ValueError, match="checkerboard needs a mean-scale"):
        CodecConfig(latent_filters=24, checkerboard=True)
    with pytest.raises(ValueError, match="no channel slices"):
        CodecConfig(latent_filters=24, mean_scale=True, slices=2, checkerboard=True)


def test_the_moving_average_is_what_is_evaluated_exported_and_resumed(prepared, tmp_path):
    """--ema-decay: the average follows its formula step by step, the export serves it (not
    the last weights), and a resumed run continues the same average."""
    decay = 0.6
    flags = [*TINY_DENOISER, f"--ema-decay={decay}", "--learning-rate=1e-2"]
    _, trainer = make_trainer(prepared, tmp_path / "manual", ["--steps=4", *flags])
    expected = [w.numpy() for w in trainer.model.trainable_variables]
    batches = iter(training_data.make_dataset(str(prepared), features.TRAIN_DIR, 8, True))
    for step in range(1, 5):
        trainer.train_step(next(batches))
        rate = min(decay, (1.0 + step) / (10.0 + step))
        weights = [w.numpy() for w in trainer.model.trainable_variables]
        expected = [rate * a + (1.0 - rate) * w for a, w in zip(expected, weights, strict=True)]
    for average, value in zip(trainer.averages, expected, strict=True):
        np.testing.assert_allclose(average.numpy(), value, rtol=1e-5, atol=1e-6)
    last = [w.numpy() for w in trainer.model.trainable_variables]
    with trainer.averaged():
        inside = [w.numpy() for w in trainer.model.trainable_variables]
    np.testing.assert_allclose(inside[0], expected[0], rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(trainer.model.trainable_variables[0].numpy(), last[0])

    run_flags = [f"--data={prepared}", f"--model-dir={tmp_path / 'run'}", *flags, *QUIET]
    card = train.run([*run_flags, "--steps=4"])
    assert card["ema_decay"] == decay
    _, resumed = make_trainer(prepared, tmp_path / "run", ["--steps=4", *flags])
    resumed.restore()
    assert int(resumed.average_steps.numpy()) == 4  # the checkpoint kept the average
    _, served = make_trainer(prepared, tmp_path / "served", ["--steps=4", *TINY_DENOISER])
    growth.load_exported_weights(served.model, str(tmp_path / "run" / "export"))
    trained = resumed.model.trainable_variables
    exported = served.model.trainable_variables
    for average, weight in zip(resumed.averages, exported, strict=True):
        np.testing.assert_allclose(weight.numpy(), average.numpy(), rtol=1e-6)
    assert not np.allclose(exported[0].numpy(), trained[0].numpy())
    card = train.run([*run_flags, "--steps=6"])
    assert card["steps"] == 6
    without = [f"--data={prepared}", f"--model-dir={tmp_path / 'run'}", *TINY_DENOISER, *QUIET]
    card = train.run([*without, "--steps=7"])  # ... or switch it off
    assert card["steps"] == 7 and card["ema_decay"] is None

    # A run checkpointed without an average may switch it on when it resumes.
    plain = [f"--data={prepared}", f"--model-dir={tmp_path / 'plain'}", *TINY_DENOISER, *QUIET]
    train.run([*plain, "--steps=2"])
    card = train.run([*plain, "--steps=5", f"--ema-decay={decay}"])
    _, switched = make_trainer(prepared, tmp_path / "plain", ["--steps=5", *flags])
    switched.restore()
    assert card["steps"] == 5 and int(switched.average_steps.numpy()) == 3


def test_a_codec_on_small_crops_is_warned_about_and_a_denoiser_is_not(caplog):
    parse = train.build_parser().parse_args
    codec = parse(["--data=d", "--model-dir=m", "--task=codec"])
    assert train.warn_about_small_codec_crops(codec, 128)  # prepared 128² patches, no crop
    assert "128x128 crops" in caplog.text
    assert not train.warn_about_small_codec_crops(codec, 320)
    cropped = parse(["--data=d", "--model-dir=m", "--task=codec", "--crop=128"])
    assert train.warn_about_small_codec_crops(cropped, 320)
    denoiser = parse(["--data=d", "--model-dir=m", "--task=denoise", "--crop=48"])
    assert not train.warn_about_small_codec_crops(denoiser, 128)


@pytest.mark.parametrize("stage_gains", [False, True])
def test_init_from_carries_the_rate_levels_to_new_ones(prepared, tmp_path, stage_gains):
    """More rate levels than the source (issue 30's higher rates): the source's levels keep
    their gains, so each old quality decodes the same at its place on the new scale; a new
    level beyond the top continues at the high-rate slope (finer steps, more bits), while
    the transforms' per-level stage gains keep the top's (they scale features, not steps)."""
    source = tmp_path / "source"
    staged = ["--analysis-level-gains", "--synthesis-level-gains"] if stage_gains else []
    train.run(
        [
            f"--data={prepared}",
            f"--model-dir={source}",
            *TINY_CODEC,
            *staged,
            "--lmbdas=0.005,0.02",
            "--steps=3",
            *QUIET,
        ]
    )
    old_flags = ["--lmbdas=0.005,0.02", *TINY_CODEC, *staged]
    _, old = make_trainer(prepared, tmp_path / "o", old_flags)
    growth.load_exported_weights(old.model, str(source / "export"))
    more = ["--lmbdas=0.005,0.01,0.02,0.08", *TINY_CODEC, *staged]
    _, new = make_trainer(prepared, tmp_path / "n", more)
    growth.load_exported_weights(new.model, str(source / "export"))

    x = tf.constant(np.random.default_rng(0).random((1, 64, 64, 3)), tf.float32)
    # old 0 / 100 are the new levels 0 and 2 of 0..3: qualities 0 and 200/3
    for old_quality, new_quality in ((0.0, 0.0), (100.0, 200.0 / 3.0)):
        a = old.model(x, quality=tf.constant([old_quality]))[3]
        b = new.model(x, quality=tf.constant([new_quality]))[3]
        np.testing.assert_allclose(a.numpy(), b.numpy(), atol=1e-5)
    gains = new.model.log_gain.numpy()
    np.testing.assert_allclose(gains[3] - gains[2], 0.5 * np.log(4.0), rtol=1e-5)
    np.testing.assert_allclose(gains[1], (gains[0] + gains[2]) / 2, rtol=1e-5)
    inverse = new.model.log_inverse_gain.numpy()
    np.testing.assert_allclose(inverse[3] - inverse[2], -0.5 * np.log(4.0), rtol=1e-5)
    for table in new.model.log_stage_gains + new.model.log_synthesis_gains:
        rows = table.numpy()
        assert np.abs(rows[2]).max() > 0  # trained: the test tells the slopes apart
        np.testing.assert_allclose(rows[3], rows[2], rtol=1e-6)
        np.testing.assert_allclose(rows[1], (rows[0] + rows[2]) / 2, rtol=1e-5, atol=1e-7)
    assert len(new.model.log_stage_gains) == (3 if stage_gains else 0)


def test_the_convergence_benchmark_trains_each_recipe_on_its_own_data(prepared, tmp_path):
    """Training sets compared at equal steps: a recipe's --data replaces the command's."""
    from benchmarks import convergence

    fewer = tmp_path / "fewer"  # the same prepared set with one of its two training shards
    shutil.copytree(prepared, fewer)
    shards = sorted((fewer / features.TRAIN_DIR).iterdir())
    assert len(shards) == 2
    shards[0].unlink()
    copy_samples(tmp_path / "eval", 0, 2)
    results = convergence.main(
        [
            "--task=codec",
            f"--data={prepared}",
            "--recipe=default=" + " ".join(TINY_CODEC[1:]),
            f"--recipe=same=--data={prepared} " + " ".join(TINY_CODEC[1:]),
            f"--recipe=fewer=--data={fewer} " + " ".join(TINY_CODEC[1:]),
            "--steps=2",
            "--eval-every=2",
            f"--images={tmp_path}/eval/*",
            "--crop=64",
            f"--out={tmp_path / 'convergence.json'}",
            "--threads=0",
        ]
    )
    losses = {name: result["points"][-1]["train_loss"] for name, result in results.items()}
    # Seeded: the same data trains the same (up to the order of float sums, which threads vary:
    # 1.1e-4 apart measured on a clean clone, 2026-12-05); other data not (15% apart).
    assert losses["same"] == pytest.approx(losses["default"], rel=1e-3)
    assert losses["fewer"] != pytest.approx(losses["default"], rel=1e-2), losses
    saved = json.loads((tmp_path / "convergence.json").read_text())["results"]
    assert f"--data={fewer}" in saved["fewer"]["flags"]


def test_bfloat16_on_a_cpu_without_it_warns_that_float32_is_faster(tmp_path, caplog):
    """Emulated bfloat16 ran 0.55x float32's steps/s (2026-12-05): a command carried to such
    a machine says so instead of quietly training at half speed."""
    amx = tmp_path / "amx"
    amx.write_text("processor\t: 0\nflags\t\t: fpu avx2 avx512f amx_bf16 amx_tile\n")
    plain = tmp_path / "plain"
    plain.write_text("processor\t: 0\nflags\t\t: fpu avx2 avx512f avx512_vnni\n")
    assert trainers.native_bfloat16(str(amx)) is True
    assert trainers.native_bfloat16(str(plain)) is False
    assert trainers.native_bfloat16(str(tmp_path / "absent")) is None
    try:
        with caplog.at_level(logging.WARNING, logger="models.trainer"):
            assert trainers.use_precision("bfloat16") == "mixed_bfloat16"
        warned = any("without native bfloat16" in r.getMessage() for r in caplog.records)
        assert warned == (trainers.native_bfloat16() is False)
    finally:
        keras.mixed_precision.set_global_policy("float32")


def test_ramp_new_latents_prices_the_grown_latents_bits_from_zero_up(prepared, tmp_path):
    """--ramp-new-latents STEPS: a run grown from a codec of fewer latents records which are
    new, and its loss weighs their bits by step / STEPS, then fully; the old ones' always
    fully.  A run that grew no latents refuses the flag."""
    source = tmp_path / "source"
    variable = ["--lmbdas=0.01,0.64", *QUIET]
    base = [f"--data={prepared}", "--eval-every=1000"]
    train.run([*base, f"--model-dir={source}", *TINY_CODEC, *variable, "--steps=2"])
    wide = [f if f != "--latent-filters=24" else "--latent-filters=40" for f in TINY_CODEC]
    grown = tmp_path / "grown"
    flags = [*base, f"--init-from={source / 'export'}", *wide, *variable]
    train.run([*flags, f"--model-dir={grown}", "--steps=3", "--ramp-new-latents=10"])
    lineage = json.loads((grown / train.LINEAGE_FILE).read_text())
    assert lineage["new_latents"] == [24, 40]

    _, trainer = make_trainer(prepared, tmp_path / "t", [*wide, "--lmbdas=0.01,0.64"])
    assert trainer.latent_rate_weights() is None  # no ramp: every bit counts
    trainer.ramp_in_latents(24, 10)
    for step, share in ((0, 0.0), (5, 0.5), (10, 1.0), (30, 1.0)):
        trainer.optimizer.iterations.assign(step)
        weights = trainer.latent_rate_weights().numpy()
        np.testing.assert_allclose(weights[:24], 1.0)
        np.testing.assert_allclose(weights[24:], share)
    # the train step hands them to the loss: at step 0 the new latents' bits are free
    trainer.optimizer.iterations.assign(0)
    batch = next(iter(training_data.make_dataset(str(prepared), features.TRAIN_DIR, 8, False)))
    growth.load_exported_weights(trainer.model, str(grown / "export"))
    seen = []
    real_call = trainer.model.call
    trainer.model.call = lambda *a, **k: seen.append(k.get("rate_weights")) or real_call(*a, **k)
    trainer.train_step(batch)
    assert seen and seen[0] is not None

    with pytest.raises(ValueError, match="did not grow latents"):
        train.run(
            [
                *base,
                f"--model-dir={tmp_path / 'same'}",
                *TINY_CODEC,
                *variable,
                f"--init-from={source / 'export'}",
                "--steps=1",
                "--ramp-new-latents=5",
            ]
        )
