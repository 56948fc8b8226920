"""The training-data contract: keys and spec of the tf.Example records the prepare stage writes.

Every writer and reader imports this module: the prepare pipeline builds examples with
``make_example``, the tf.Transform analysis reads ``ANALYSIS_FEATURE_SPEC``, and the trainer
parses with ``parse_examples``.  Change a key here and all of them follow.

One example is one patch:
  clean, noisy     raw uint8 RGB bytes in row-major (height, width, 3) order
  height, width    patch size in pixels
  noise_model      "+"-joined names of the models applied, e.g. "gaussian" or "gaussian+jpeg"
  noise_params     JSON list of the models applied with their drawn parameters
  noise_spec       the --noise SPEC the run used
  source_key       the image's path relative to the matched root (its identity)
  patch_index      index of the patch within its image
"""

from __future__ import annotations

import json

import numpy as np
import tensorflow as tf

CLEAN = "clean"
NOISY = "noisy"
HEIGHT = "height"
WIDTH = "width"
NOISE_MODEL = "noise_model"
NOISE_PARAMS = "noise_params"
NOISE_SPEC = "noise_spec"
SOURCE_KEY = "source_key"
PATCH_INDEX = "patch_index"

CHANNELS = 3

FEATURE_SPEC = {
    CLEAN: tf.io.FixedLenFeature([], tf.string),
    NOISY: tf.io.FixedLenFeature([], tf.string),
    HEIGHT: tf.io.FixedLenFeature([], tf.int64),
    WIDTH: tf.io.FixedLenFeature([], tf.int64),
    NOISE_MODEL: tf.io.FixedLenFeature([], tf.string),
    NOISE_PARAMS: tf.io.FixedLenFeature([], tf.string),
    NOISE_SPEC: tf.io.FixedLenFeature([], tf.string),
    SOURCE_KEY: tf.io.FixedLenFeature([], tf.string),
    PATCH_INDEX: tf.io.FixedLenFeature([], tf.int64),
}

# The subset tf.Transform analyses (clean patches only).
ANALYSIS_FEATURE_SPEC = {key: FEATURE_SPEC[key] for key in (CLEAN, HEIGHT, WIDTH)}

# Where the prepare stage puts things under its --output DIR.
TRAIN_DIR = "train"
EVAL_DIR = "eval"
TRANSFORM_DIR = "transform_output"
SHARD_SUFFIX = ".tfrecord"


def shard_glob(data_dir: str, split: str) -> str:
    return f"{data_dir.rstrip('/')}/{split}/*{SHARD_SUFFIX}"


def _bytes(value: bytes) -> tf.train.Feature:
    return tf.train.Feature(bytes_list=tf.train.BytesList(value=[value]))


def _int(value: int) -> tf.train.Feature:
    return tf.train.Feature(int64_list=tf.train.Int64List(value=[value]))


def make_example(
    clean: np.ndarray,
    noisy: np.ndarray,
    applied: list[dict],
    noise_spec: str,
    source_key: str,
    patch_index: int,
) -> bytes:
    """Serialises one patch pair; deterministic bytes for identical inputs."""
    if clean.shape != noisy.shape or clean.dtype != np.uint8 or noisy.dtype != np.uint8:
        raise ValueError("clean and noisy must be uint8 arrays of one shape")
    height, width, channels = clean.shape
    if channels != CHANNELS:
        raise ValueError(f"expected {CHANNELS} channels, got {channels}")
    example = tf.train.Example(
        features=tf.train.Features(
            feature={
                CLEAN: _bytes(clean.tobytes()),
                NOISY: _bytes(noisy.tobytes()),
                HEIGHT: _int(height),
                WIDTH: _int(width),
                NOISE_MODEL: _bytes("+".join(a["model"] for a in applied).encode()),
                NOISE_PARAMS: _bytes(json.dumps(applied, sort_keys=True).encode()),
                NOISE_SPEC: _bytes(noise_spec.encode()),
                SOURCE_KEY: _bytes(source_key.encode()),
                PATCH_INDEX: _int(patch_index),
            }
        )
    )
    return example.SerializeToString(deterministic=True)


def parse_examples(serialized: tf.Tensor) -> dict[str, tf.Tensor]:
    """Parses one serialized example into its features with ``clean``/``noisy`` as uint8 images."""
    features = tf.io.parse_single_example(serialized, FEATURE_SPEC)
    shape = tf.stack([features[HEIGHT], features[WIDTH], CHANNELS])
    for key in (CLEAN, NOISY):
        features[key] = tf.reshape(tf.io.decode_raw(features[key], tf.uint8), shape)
    return features
