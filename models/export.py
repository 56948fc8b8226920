"""Export of trained models: SavedModel signatures, weight fingerprint and ``model_card.json``.

An exported model directory holds::

    saved_model/      tf.saved_model.save of a tf.Module with @tf.function signatures
    model_card.json   architecture, lambda, training data, steps, eval metrics, version,
                      fingerprint

Codec signatures (one image at a time, so results never depend on batch composition):
    analyze(image uint8 [H, W, 3]) -> y_hat int32 [h, w, M], z_hat int32 [hz, wz, N]
    scale_indexes(z_hat int32) -> int32 [h, w, M], positions in the scale table
    synthesize(y_hat int32, height, width) -> image uint8 [height, width, 3]
    y_hat holds the coded integers: round(y), or round(y - mean) for a mean-scale codec
    (``config.mean_scale`` in its card), whose ``synthesize`` takes z_hat after y_hat (and
    after the quality) to add the means back.
    A variable-rate codec (``config.lmbdas`` in its card) takes one more argument,
    ``quality`` float32 in [0, 100], in ``analyze`` and ``synthesize`` (after the image and
    after y_hat); scale_indexes needs none (the side information carries the rate).
    A codec with channel slices (``config.slices``, always mean-scale) has no scale_indexes:
    its latents are coded slice after slice, each slice's scales depending on the slices
    decoded before it, so the coder asks for them one slice at a time:
    slice_parameters(z_hat int32, y_hat float32 [h, w, M], slice int32) -> indexes int32
        [h, w, M / slices], means float32 [h, w, M / slices]; y_hat holds the decoded
        latents (coded integers plus their means) of the slices before ``slice`` (the rest
        is ignored).  y_hat in ``analyze`` and ``synthesize`` are the coded integers as above.
    entropy_parameters() -> z_pmf float32 [N, 2*Z_RANGE+1], scale_table float32 [NUM_SCALES],
                            z_range, y_range
Denoiser signatures:
    denoise(image uint8 [H, W, 3]) -> image uint8 [H, W, 3]
    denoise_float(image float32 [H, W, 3] on the 0-255 scale, unclipped) -> image uint8:
        for noise that was never rounded to 8 bits (the literature's benchmark setting)
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os

import numpy as np
import tensorflow as tf
import tf_keras as keras

import latentpress
from models import exact
from models.codec import ScaleHyperprior, pad_to_multiple
from models.entropy_models import Y_RANGE, Z_RANGE, quantize_index, scale_table

SAVED_MODEL_DIR = "saved_model"
MODEL_CARD = "model_card.json"
CODEC = "codec"
DENOISER = "denoiser"

IMAGE_SPEC = tf.TensorSpec([None, None, 3], tf.uint8, name="image")
Y_HAT_SPEC = tf.TensorSpec([None, None, None], tf.int32, name="y_hat")
Z_HAT_SPEC = tf.TensorSpec([None, None, None], tf.int32, name="z_hat")
QUALITY_SPEC = tf.TensorSpec([], tf.float32, name="quality")
LATENTS_SPEC = tf.TensorSpec([None, None, None], tf.float32, name="y")
MEANS_SPEC = tf.TensorSpec([None, None, None], tf.float32, name="means")
HEIGHT_SPEC = tf.TensorSpec([], tf.int32, name="height")
WIDTH_SPEC = tf.TensorSpec([], tf.int32, name="width")


def _digest(weights) -> str:
    digest = hashlib.sha256()
    for weight in weights:
        value = np.asarray(weight.numpy())
        digest.update(str(value.shape).encode())
        digest.update(np.ascontiguousarray(value, dtype=np.float32).tobytes())
    return digest.hexdigest()[:16]


def fingerprint(model) -> str:
    """First 16 hex digits of SHA-256 over the weights in their structural order."""
    return _digest(model.weights)


def decoder_fingerprint(model: ScaleHyperprior) -> str:
    """``fingerprint`` of the weights a codec's decoder reads (all but its encoder's): two
    codecs that share it decode every code file to the same pixels, so a codec whose encoder
    alone was retrained (``--train-only encoder``) decodes the files of the one it replaces."""
    return _digest(model.decoder_weights())


def _to_unit(image: tf.Tensor) -> tf.Tensor:
    return tf.cast(image, tf.float32)[tf.newaxis] / 255.0


def _to_uint8(x: tf.Tensor) -> tf.Tensor:
    return tf.cast(tf.clip_by_value(tf.round(x * 255.0), 0.0, 255.0), tf.uint8)


class CodecModule(tf.Module):
    def __init__(self, model: ScaleHyperprior, model_fingerprint: str):
        super().__init__(name="codec")
        self.model = model
        self.fingerprint = tf.constant(model_fingerprint)
        self.z_pmf = tf.Variable(model.factorized_prior.pmf_table(), trainable=False)
        self.scale_table = tf.constant(scale_table(), tf.float32)

    @tf.function(input_signature=[IMAGE_SPEC])
    def analyze(self, image):
        return self._code(self.model.analyze(pad_to_multiple(_to_unit(image))))

    def _code(self, y):
        """The coded integers of latents y [1, h, w, M]: y_hat (minus the means) and z_hat."""
        z_hat = self.model.quantize_z(self.model.hyper_analysis_transform(y))
        y = tf.cast(y, tf.float32)
        if self.model.config.slices or self.model.config.checkerboard:
            index, mean = self.model.hyperprior(z_hat)
            code = (
                self.model.code_slices if self.model.config.slices else self.model.code_checkerboard
            )
            y_hat = code(index, mean, y=y)[2]
        else:
            if self.model.config.mean_scale:  # a scale-only codec need not run h_s for zeros
                y = y - self.model.means(z_hat)
            y_hat = self.model.quantize_y(y)
        return {"y_hat": tf.cast(y_hat[0], tf.int32), "z_hat": tf.cast(z_hat[0], tf.int32)}

    def _latents(self, y_hat, z_hat):
        """y_hat [h, w, M] as the synthesis takes it: [1, h, w, M] float, means added back."""
        y_hat = tf.cast(y_hat, tf.float32)[tf.newaxis]
        if z_hat is None:  # a scale-only codec
            return y_hat
        z_hat = tf.cast(z_hat, tf.float32)[tf.newaxis]
        if self.model.config.slices or self.model.config.checkerboard:
            index, mean = self.model.hyperprior(z_hat)
            code = (
                self.model.code_slices if self.model.config.slices else self.model.code_checkerboard
            )
            return code(index, mean, symbols=y_hat)[3]
        return y_hat + self.model.means(z_hat)

    @tf.function(input_signature=[Z_HAT_SPEC])
    def scale_indexes(self, z_hat):
        z = tf.cast(z_hat, tf.float32)[tf.newaxis]
        return {"indexes": self.model.scale_indexes(z)[0]}

    @tf.function(input_signature=[Y_HAT_SPEC, HEIGHT_SPEC, WIDTH_SPEC])
    def synthesize(self, y_hat, height, width):
        x_hat = self.model.synthesis_transform.decode(self._latents(y_hat, None))
        return {"image": _to_uint8(x_hat[0, :height, :width])}

    # --- format 3: one signature set for every codec variant, run tile by tile -----------

    @tf.function(input_signature=[IMAGE_SPEC, QUALITY_SPEC])
    def analysis(self, image, quality):
        """y of an image tile (sides multiples of 16), gains applied; a one-rate codec
        ignores the quality."""
        return {"y": self.model.analyze(_to_unit(image), quality[tf.newaxis])[0]}

    @tf.function(input_signature=[LATENTS_SPEC])
    def hyper_analysis(self, y):
        z = self.model.hyper_analysis_transform(y[tf.newaxis])
        return {"z_hat": tf.cast(self.model.quantize_z(z)[0], tf.int32)}

    @tf.function(input_signature=[LATENTS_SPEC, MEANS_SPEC, QUALITY_SPEC])
    def synthesis(self, y_hat, means, quality):
        """The image tile of decoded latents ``y_hat`` (coded integers plus their means);
        a codec with channel slices adds its latent residual prediction from the means."""
        y_hat, means = y_hat[tf.newaxis], means[tf.newaxis]
        if self.model.config.slices:
            size = self.model.config.slice_filters
            y_hat = tf.concat(
                [
                    y_hat[..., i * size : (i + 1) * size]
                    + self.model.residual_prediction(
                        means[..., i * size : (i + 1) * size], y_hat[..., : (i + 1) * size], i
                    )
                    for i in range(self.model.config.slices)
                ],
                axis=-1,
            )
        x_hat = self.model.synthesize(y_hat, quality[tf.newaxis])
        return {"image": _to_uint8(x_hat[0])}

    @tf.function(input_signature=[])
    def entropy_parameters(self):
        return {
            "z_pmf": tf.identity(self.z_pmf),
            "scale_table": self.scale_table,
            "z_range": tf.constant(Z_RANGE),
            "y_range": tf.constant(Y_RANGE),
            "fingerprint": self.fingerprint,
        }


class VariableRateCodecModule(CodecModule):
    """The codec signatures with a quality argument (see the module docstring)."""

    @tf.function(input_signature=[IMAGE_SPEC, QUALITY_SPEC])
    def analyze(self, image, quality):
        x = pad_to_multiple(_to_unit(image))
        return self._code(self.model.analyze(x, quality[tf.newaxis]))

    @tf.function(input_signature=[Y_HAT_SPEC, QUALITY_SPEC, HEIGHT_SPEC, WIDTH_SPEC])
    def synthesize(self, y_hat, quality, height, width):
        x_hat = self.model.synthesize(self._latents(y_hat, None), quality[tf.newaxis])
        return {"image": _to_uint8(x_hat[0, :height, :width])}


class MeanScaleCodecModule(CodecModule):
    """A mean-scale codec's signatures: ``synthesize`` takes z_hat for the means."""

    @tf.function(input_signature=[Y_HAT_SPEC, Z_HAT_SPEC, HEIGHT_SPEC, WIDTH_SPEC])
    def synthesize(self, y_hat, z_hat, height, width):
        x_hat = self.model.synthesis_transform.decode(self._latents(y_hat, z_hat))
        return {"image": _to_uint8(x_hat[0, :height, :width])}


class MeanScaleVariableRateCodecModule(VariableRateCodecModule):
    """A variable-rate mean-scale codec's signatures: quality, then z_hat, in ``synthesize``."""

    @tf.function(input_signature=[Y_HAT_SPEC, QUALITY_SPEC, Z_HAT_SPEC, HEIGHT_SPEC, WIDTH_SPEC])
    def synthesize(self, y_hat, quality, z_hat, height, width):
        x_hat = self.model.synthesize(self._latents(y_hat, z_hat), quality[tf.newaxis])
        return {"image": _to_uint8(x_hat[0, :height, :width])}


SLICE_SPEC = tf.TensorSpec([], tf.int32, name="slice")
DECODED_SPEC = tf.TensorSpec([None, None, None], tf.float32, name="y_hat")


class _SliceParameters:
    """``slice_parameters`` of a codec with channel slices (see the module docstring)."""

    @tf.function(input_signature=[Z_HAT_SPEC, DECODED_SPEC, SLICE_SPEC])
    def slice_parameters(self, z_hat, y_hat, slice_index):
        model = self.model
        index, mean = model.hyperprior(tf.cast(z_hat, tf.float32)[tf.newaxis])
        decoded = y_hat[tf.newaxis]
        size = model.config.slice_filters

        def branch(i):
            def parameters():
                before = decoded[..., : i * size] if i else None
                index_i, mean_i = model.slice_parameters(index, mean, before, i)
                return quantize_index(index_i)[0], mean_i[0]

            return parameters

        branches = [branch(i) for i in range(model.config.slices)]
        indexes, means = tf.switch_case(slice_index, branches)
        return {"indexes": indexes, "means": means}


class SliceCodecModule(_SliceParameters, MeanScaleCodecModule):
    pass


class SliceVariableRateCodecModule(_SliceParameters, MeanScaleVariableRateCodecModule):
    pass


class DenoiserModule(tf.Module):
    def __init__(self, model: keras.Model):
        super().__init__(name="denoiser")
        self.model = model

    @tf.function(input_signature=[IMAGE_SPEC])
    def denoise(self, image):
        return {"image": _to_uint8(self.model(_to_unit(image))[0])}

    @tf.function(input_signature=[tf.TensorSpec([None, None, 3], tf.float32, name="image")])
    def denoise_float(self, image):
        return {"image": _to_uint8(self.model(_to_unit(image))[0])}


# (variable rate, mean-scale) -> the module whose signatures serve such a codec
CODEC_MODULES = {
    (False, False): CodecModule,
    (True, False): VariableRateCodecModule,
    (False, True): MeanScaleCodecModule,
    (True, True): MeanScaleVariableRateCodecModule,
}
# variable rate -> the module of a codec with channel slices
SLICE_CODEC_MODULES = {False: SliceCodecModule, True: SliceVariableRateCodecModule}


# The signatures a code file's decoding calls (format 3: ``synthesis``; earlier formats:
# ``synthesize`` with ``scale_indexes`` or ``slice_parameters``); a decode-only copy has these.
DECODING_SIGNATURES = (
    "entropy_parameters",
    "synthesis",
    "synthesize",
    "scale_indexes",
    "slice_parameters",
)


class DecoderModule(tf.Module):
    """The decoding signatures of a codec module, saved with the decoder's weights only.

    A replaced codec stays in the package to decode the files it wrote (``models.release``);
    its encoder (about half the weights) would only let it write more, so it is left out.
    The full module is held untracked: a variable the decoding does not read is not saved.
    """

    def __init__(self, full: CodecModule, decoder_weights: list):
        super().__init__(name="codec_decoder")
        self.__dict__["_full"] = full  # untracked: its encoder's variables stay out
        self.decoder_weights = [*decoder_weights, full.z_pmf]
        self.fingerprint = full.fingerprint
        for name in DECODING_SIGNATURES:
            method = getattr(full, name, None)
            if method is not None:
                setattr(self, name, tf.function(method, input_signature=method.input_signature))

    def signatures(self) -> dict:
        return {name: getattr(self, name) for name in DECODING_SIGNATURES if hasattr(self, name)}


def _codec_module(model: ScaleHyperprior, model_fingerprint: str) -> CodecModule:
    config = model.config
    if config.slices:
        return SLICE_CODEC_MODULES[config.variable_rate](model, model_fingerprint)
    return CODEC_MODULES[(config.variable_rate, config.mean_scale)](model, model_fingerprint)


def export_decoder(model: ScaleHyperprior, export_dir: str) -> None:
    """Writes ``export_dir/saved_model`` with the decoding signatures and weights only
    (``DecoderModule``); the caller adds the exact entropy model and the card."""
    module = DecoderModule(_codec_module(model, fingerprint(model)), model.decoder_weights())
    os.makedirs(export_dir, exist_ok=True)
    tf.saved_model.save(
        module, os.path.join(export_dir, SAVED_MODEL_DIR), signatures=module.signatures()
    )


def export_model(model, task: str, export_dir: str, card: dict) -> dict:
    """Writes ``export_dir/saved_model`` and ``export_dir/model_card.json``; returns the card."""
    model_fingerprint = fingerprint(model)
    if task == CODEC:
        module = _codec_module(model, model_fingerprint)
        if model.config.slices:
            coder = {"slice_parameters": module.slice_parameters}
        elif model.config.checkerboard:  # codes format 5 on only: the exact model's walk
            coder = {}
        else:
            coder = {"scale_indexes": module.scale_indexes}
        signatures = {
            "analyze": module.analyze,
            **coder,
            "synthesize": module.synthesize,
            "entropy_parameters": module.entropy_parameters,
            "analysis": module.analysis,
            "hyper_analysis": module.hyper_analysis,
            "synthesis": module.synthesis,
        }
    elif task == DENOISER:
        module = DenoiserModule(model)
        signatures = {
            "serving_default": module.denoise,
            "denoise": module.denoise,
            "denoise_float": module.denoise_float,
        }
    else:
        raise ValueError(f"unknown task {task!r}")
    os.makedirs(export_dir, exist_ok=True)
    tf.saved_model.save(module, os.path.join(export_dir, SAVED_MODEL_DIR), signatures=signatures)
    if task == CODEC:
        tables = model.factorized_prior.pmf_table().numpy()
        arrays = exact.build(model, tables, scale_table(), Y_RANGE)
        card = {
            **card,
            "exact_identity": exact.save(arrays, export_dir),
            "decoder_fingerprint": decoder_fingerprint(model),
        }
    card = {
        **card,
        "config": model.config.as_dict(),  # readers tell a variable-rate codec by its lmbdas
        "task": task,
        "fingerprint": model_fingerprint,
        "package_version": latentpress.__version__,
        "tensorflow_version": tf.__version__,
        "exported_at": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }
    write_model_card(export_dir, card)
    return card


def _finite(value):
    """The card with non-finite numbers as null: it must stay valid JSON."""
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(item) for item in value]
    if isinstance(value, float) and not np.isfinite(value):
        return None
    return value


def write_model_card(model_dir: str, card: dict) -> None:
    with open(os.path.join(model_dir, MODEL_CARD), "w", encoding="utf-8") as handle:
        json.dump(_finite(card), handle, indent=2, sort_keys=True, allow_nan=False)
        handle.write("\n")


def load_model_card(model_dir: str) -> dict:
    with open(os.path.join(model_dir, MODEL_CARD), encoding="utf-8") as handle:
        return json.load(handle)


def load_saved_model(model_dir: str):
    """The exported tf.Module (works whichever Keras the process has active)."""
    return tf.saved_model.load(os.path.join(model_dir, SAVED_MODEL_DIR))


def read_weights(model, model_dir: str) -> None:
    """Reads an exported model's weights into ``model`` (same architecture and size)."""
    variables = os.path.join(model_dir, SAVED_MODEL_DIR, "variables", "variables")
    tf.train.Checkpoint(model=model).read(
        variables
    ).expect_partial().assert_existing_objects_matched()


def upgrade(model_dir: str) -> dict:
    """Re-exports a codec exported before code-file format 3 in place: the same weights (same
    fingerprint, so its old files still decode) with the format-3 signatures and its exact
    entropy model.  Returns the card, which gains ``exact_identity``."""
    import shutil
    import tempfile

    from models.codec import CodecConfig

    card = load_model_card(model_dir)
    if card.get("task") != CODEC:
        raise ValueError(f"{model_dir} is not a codec")
    if card.get("decode_only"):
        raise ValueError(f"{model_dir} is a decode-only copy: it has no encoder to re-export")
    model = ScaleHyperprior(CodecConfig.from_card(card))
    model.build_for_images()
    read_weights(model, model_dir)
    if fingerprint(model) != card["fingerprint"]:
        raise ValueError(f"{model_dir}: its weights are not those of its model card")
    with tempfile.TemporaryDirectory() as scratch:
        fresh = export_model(model, CODEC, scratch, {})
        shutil.rmtree(os.path.join(model_dir, SAVED_MODEL_DIR))
        shutil.move(os.path.join(scratch, SAVED_MODEL_DIR), model_dir)
        shutil.copy(os.path.join(scratch, exact.EXACT_FILE), model_dir)
    card = {**card, "exact_identity": fresh["exact_identity"]}
    write_model_card(model_dir, card)
    return card


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description="Upgrade an exported codec to format 3.")
    parser.add_argument(
        "--upgrade",
        required=True,
        metavar="MODEL_DIR",
        help="A codec's export folder: re-exported in place with the format-3 signatures "
        "and its exact entropy model (same weights, same fingerprint).",
    )
    print(json.dumps({"exact_identity": upgrade(parser.parse_args().upgrade)["exact_identity"]}))
