"""tf.Transform analysis of the clean training patches: per-channel mean, std and patch count.

``preprocessing_fn`` is pure and module-level so it can be unit-tested and re-run.  The values
live as constants in the transform graph written to ``DIR/transform_output``; ``read_stats``
gets them back by running that graph, and the prepare stage copies them to
``DIR/transform_stats.json`` for people and for stages that do not load tf.Transform.

Pixel values are analysed on the [0, 1] scale.  All patches of one run have the same size, so
the mean of per-patch channel means is the mean over all pixels (likewise for squares).
"""

from __future__ import annotations

import apache_beam as beam
import numpy as np
import tensorflow as tf

from transforms import features

CHANNEL_MEAN = "channel_mean"
CHANNEL_STD = "channel_std"
PATCH_COUNT = "patch_count"
STATS_FILE = "transform_stats.json"


def preprocessing_fn(inputs: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
    import tensorflow_transform as tft  # sets TF_USE_LEGACY_KERAS; keep it out of import time

    raw = inputs[features.CLEAN]
    batch = tf.shape(raw)[0]
    pixels = tf.cast(tf.io.decode_raw(raw, tf.uint8), tf.float32) / 255.0
    pixels = tf.reshape(pixels, [batch, -1, features.CHANNELS])
    mean = tft.mean(tf.reduce_mean(pixels, axis=1), reduce_instance_dims=False)
    mean_of_squares = tft.mean(
        tf.reduce_mean(tf.square(pixels), axis=1), reduce_instance_dims=False
    )
    std = tf.sqrt(tf.maximum(mean_of_squares - tf.square(mean), 0.0))
    count = tft.size(inputs[features.HEIGHT])
    return {
        CHANNEL_MEAN: tf.tile(mean[tf.newaxis], [batch, 1]),
        CHANNEL_STD: tf.tile(std[tf.newaxis], [batch, 1]),
        PATCH_COUNT: tf.fill([batch], count),
    }


class AnalyzeExamples(beam.PTransform):
    """Serialized train examples -> the tf.Transform graph of ``preprocessing_fn``, written to
    ``transform_dir``.  Runs inside the caller's ``tft_beam.Context`` (its temp dir)."""

    def __init__(self, transform_dir: str):
        super().__init__()
        self._transform_dir = transform_dir

    def expand(self, examples):
        import tensorflow_transform.beam as tft_beam
        from tensorflow_transform.tf_metadata import schema_utils
        from tfx_bsl.public import tfxio

        source = tfxio.TFExampleBeamRecord(
            physical_format="inmem",
            telemetry_descriptors=["latentpress", "prepare"],
            schema=schema_utils.schema_from_feature_spec(features.ANALYSIS_FEATURE_SPEC),
        )
        transform_fn = (
            examples | "ToRecordBatches" >> source.BeamSource(),
            source.TensorAdapterConfig(),
        ) | "AnalyzeCleanPatches" >> tft_beam.AnalyzeDataset(preprocessing_fn)
        return transform_fn | "WriteTransformFn" >> tft_beam.WriteTransformFn(self._transform_dir)


def read_stats(transform_dir: str) -> dict[str, object]:
    """The analysed statistics, read back from a local transform output directory."""
    import tensorflow_transform as tft

    output = tft.TFTransformOutput(transform_dir)
    # The stats do not depend on the input, so one dummy 1x1 patch returns them.
    raw = {
        features.CLEAN: tf.constant([b"\0\0\0"]),
        features.HEIGHT: tf.constant([1], tf.int64),
        features.WIDTH: tf.constant([1], tf.int64),
    }
    values = output.transform_raw_features(raw)
    return {
        CHANNEL_MEAN: np.asarray(values[CHANNEL_MEAN][0]).tolist(),
        CHANNEL_STD: np.asarray(values[CHANNEL_STD][0]).tolist(),
        PATCH_COUNT: int(values[PATCH_COUNT][0]),
    }
