"""The training data: prepare's TFRecord patch pairs as a tf.data pipeline (augmentation,
random crops, fresh noise per step)."""

from __future__ import annotations

import logging

import numpy as np
import tensorflow as tf

from transforms import features, noise

LOG = logging.getLogger(__name__)


# --- data --------------------------------------------------------------------------------


def _augment(pair: tuple[tf.Tensor, tf.Tensor], crop: int) -> tuple[tf.Tensor, tf.Tensor]:
    """Same random flip, quarter turn and crop for the noisy and the clean patch."""
    both = tf.concat(pair, axis=-1)
    both = tf.image.rot90(both, tf.random.uniform([], 0, 4, tf.int32))
    both = tf.image.random_flip_left_right(both)
    if crop:
        both = tf.image.random_crop(both, [crop, crop, 2 * features.CHANNELS])
    return both[..., : features.CHANNELS], both[..., features.CHANNELS :]


def fresh_noise(spec_text: str, seed: int, float_share: float = 0.0):
    """A tf.data map (index, clean uint8) -> noisy float32 (0-255 scale) from the noise SPEC.

    Each example's noise is seeded from (seed, index), so a run is reproducible and a resumed
    run (which starts counting at the examples already used) does not repeat earlier draws.
    A ``float_share`` of the examples keep their noise unrounded and unclipped.
    """
    spec = noise.parse_spec(spec_text)

    def draw(index, clean):
        rng = np.random.default_rng([seed, int(index)])
        # no extra draw when every patch is rounded: such runs keep their noise stream
        rounded = float_share <= 0 or rng.random() >= float_share
        return spec.apply(clean, rng, rounded=rounded)[0].astype(np.float32)

    def add_noise(index, clean):
        noisy = tf.numpy_function(draw, [index, clean], tf.float32, stateful=False)
        return tf.ensure_shape(noisy, clean.shape)

    return add_noise


def make_dataset(
    data_dir: str,
    split: str,
    batch_size: int,
    training: bool,
    crop: int = 0,
    seed: int = 0,
    train_noise: str | None = None,
    first_example: int = 0,
    float_noise_share: float = 0.0,
) -> tf.data.Dataset:
    """(noisy, clean) float [0, 1] batches: interleaved reads, shuffle, parallel map, prefetch.

    With ``train_noise`` (training only) the stored noisy patch is replaced by fresh noise on
    the augmented clean patch; ``first_example`` numbers the examples for its seeds.
    """
    pattern = features.shard_glob(data_dir, split)
    if not tf.io.gfile.glob(pattern):
        raise FileNotFoundError(f"no {split} shards match {pattern}")
    files = tf.data.Dataset.list_files(pattern, shuffle=training, seed=seed)
    dataset = files.interleave(
        tf.data.TFRecordDataset,
        cycle_length=tf.data.AUTOTUNE,
        num_parallel_calls=tf.data.AUTOTUNE,
        deterministic=not training,
    )
    if training:
        dataset = dataset.shuffle(2048, seed=seed).repeat()

    def to_pair(serialized):
        example = features.parse_examples(serialized)
        return example[features.NOISY], example[features.CLEAN]

    dataset = dataset.map(to_pair, num_parallel_calls=tf.data.AUTOTUNE)
    if training:
        dataset = dataset.map(lambda n, c: _augment((n, c), crop), tf.data.AUTOTUNE)
        if train_noise:
            add_noise = fresh_noise(train_noise, seed, float_noise_share)
            dataset = dataset.enumerate(first_example).map(
                lambda i, pair: (add_noise(i, pair[1]), pair[1]), tf.data.AUTOTUNE
            )

    def to_unit(noisy, clean):
        return tf.cast(noisy, tf.float32) / 255.0, tf.cast(clean, tf.float32) / 255.0

    dataset = dataset.map(to_unit, num_parallel_calls=tf.data.AUTOTUNE)
    return dataset.batch(batch_size, drop_remainder=training).prefetch(tf.data.AUTOTUNE)
