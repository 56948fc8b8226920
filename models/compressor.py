"""Images to code files and back, with an exported codec (``models.export``).

Formats 3 and 4 (``models.codefile``; 4 codes only the image's latents, not the padding),
written by every codec exported with an exact entropy model (``models.exact``):

* the analysis runs tile by tile (``TILE`` pixels plus a ``HALO`` of context on every side,
  cropped away), so its working set does not grow with the image; y is kept whole (3 bytes
  a pixel, like the image itself) for the hyper-analysis;
* the coding distributions come from the exact model, in stripes of ``STRIPE_ROWS`` latent
  rows (and slice after slice for a codec with channel context): integers on every machine;
* the synthesis runs tile by tile too, from the decoded latents.

A tile's halo covers the transforms' receptive field, so tiling changes nothing but the
floating-point rounding: the code is the one whole-image coding would give (checked in the
tests).  Version 1 and 2 files decode through the floating-point signatures that wrote them.
Each step is its own method so benchmarks can time the networks and the coding separately.
"""

from __future__ import annotations

import ctypes
import zlib
from dataclasses import dataclass

import numpy as np
import tensorflow as tf
from PIL import Image

from models import codefile, entropy_coding, exact, registry
from models.codec import (
    CONTEXT_REACH,
    LATENT_STRIDE,
    SIDE_STRIDE,
    CodecConfig,
    SynthesisTransform,
    coded_latents,
    padded_side,
    padding_edges,
    side_shape,
    synthesis_reach,
)
from models.codefile import QUALITY_MAX, QUALITY_MIN, STRIPE_ROWS, CodeFile, CodeFileError
from models.export import load_saved_model

# Pixels of an analysis or synthesis tile, and of context around it (a multiple of
# LATENT_STRIDE, beyond the transforms' receptive field: g_a sees 61 pixels, g_s 3 latents;
# measured: 32 pixels decode within float noise of the whole image, 16 do not).
TILE = 768
HALO = 48
# z rows of context for a stripe of the exact hyperprior (h_s sees 2 z rows around a latent),
# and latent rows for the channel context (two 3x3 layers).
_SIDE_HALO = 2
_CONTEXT_HALO = CONTEXT_REACH
# The image scale offsets the encoder weighs: whole steps of the scale table up to this
# many quarter steps either way (a multiple of 4), then the quarters around the best.
# Measured on the shipped codec (benchmarks.coding_search, 24 CBSD68 photographs): it chose
# -0.25 to 1.75 steps at quality 0, 0 to 5 at quality 100.
_SCALE_OFFSET_REACH = 32
# ... judged on this many coding stripes spread over the image at most (all of a small one):
# on a 3.5-megapixel photograph every stripe's hyperprior added 34-48% to the encoding.
_OFFSET_STRIPES = 4

DEFAULT_QUALITY = registry.NAMED_QUALITIES["medium"]  # a variable-rate codec's default


def to_grayscale(rgb: np.ndarray) -> np.ndarray:
    """ITU-R 601 luma, as Pillow converts RGB to L."""
    return np.asarray(Image.fromarray(rgb).convert("L"))


@dataclass
class Latents:
    """What the exact entropy model makes of an image's latents: the side information, the
    coded integers, their scale indexes and their means (all [h, w, M] on the padded grid),
    the CRC-32 of the indexes in coding order, and the latent rows and columns the file codes
    (``codec.coded_latents``; beyond them the integers are 0)."""

    z_hat: np.ndarray  # int32 [hz, wz, N]
    code: np.ndarray  # int16: round(y - mean)
    indexes: np.ndarray  # uint8 positions in the scale table
    # float32, exact multiples of 2**-exact.ACTIVATION_BITS; kept for a codec with context
    # (slices, checkerboard) only, which refined them: others recompute them where needed
    # from z_hat, which saves 3 bytes a pixel
    means: np.ndarray | None
    index_crc: int = 0
    coded: tuple[int, int] = (0, 0)
    scale_offset: int = 0  # the image's, in quarter steps of the scale table (format 5)
    coding_shape: int = 0  # the distribution the latents are coded with (format 6)


def _stripes(rows: int):
    """(first, end) latent rows of each coding stripe."""
    return [(top, min(top + STRIPE_ROWS, rows)) for top in range(0, rows, STRIPE_ROWS)]


def _release_freed_memory() -> None:
    """Hands the heap TensorFlow's tiles freed back to the system (glibc keeps it otherwise,
    and the peak of a large image is what decides whether a worker survives it)."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: nothing to trim
        pass


def _edge_padded(pixels: np.ndarray, rows: tuple, cols: tuple, edges: tuple) -> np.ndarray:
    """The window rows x cols of the image padded to the codec's multiple as the whole-image
    analysis pads (``pad_to_multiple``; ``edges`` from ``padding_edges``), without padding
    the image."""
    height, width = pixels.shape[:2]
    row_index, col_index = np.arange(*rows), np.arange(*cols)
    window = pixels[
        np.minimum(row_index, height - 1)[:, np.newaxis],
        np.minimum(col_index, width - 1)[np.newaxis, :],
    ]
    last_row, last_col = edges
    window[row_index >= height] = last_row[np.minimum(col_index, width - 1)]
    window[:, col_index >= width] = last_col[np.minimum(row_index, height - 1), np.newaxis]
    return window


def _grid(top: int, bottom: int, left: int, right: int, stride: int) -> tuple:
    return slice(top // stride, bottom // stride), slice(left // stride, right // stride)


def _inside(rows: tuple, cols: tuple, tile: tuple, stride: int) -> tuple:
    """Where ``tile`` (top, bottom, left, right) lies in the output of the window rows x cols."""
    top, bottom, left, right = tile
    return _grid(top - rows[0], bottom - rows[0], left - cols[0], right - cols[0], stride)


def _tiles(height: int, width: int):
    """(top, bottom, left, right) pixel bounds of each tile of a padded image."""
    return [
        (top, min(top + TILE, height), left, min(left + TILE, width))
        for top in range(0, height, TILE)
        for left in range(0, width, TILE)
    ]


class Compressor:
    def __init__(self, model: str = registry.DEFAULT_CODEC, refine_steps: int = 0):
        """``refine_steps``: gradient steps per image on the latents before coding
        (``models.refine``); 0 codes the analysis network's latents as they are."""
        if refine_steps < 0:
            raise ValueError(f"refine_steps {refine_steps}: a number of steps, 0 or more")
        self.refine_steps = refine_steps
        self._refiner = None
        self.model_dir = registry.resolve(model)
        self.card = registry.card(self.model_dir, "codec")
        self.module = load_saved_model(self.model_dir)
        parameters = self.module.entropy_parameters()
        self.z_pmf = parameters["z_pmf"].numpy()
        self.scale_table = parameters["scale_table"].numpy()
        self.z_range = int(parameters["z_range"])
        self.y_range = int(parameters["y_range"])
        # The model card is the one source of the fingerprint (manifests, archive names and
        # code-file headers); the SavedModel's own copy must agree, or the card is not its.
        self.fingerprint = self.card["fingerprint"]
        # whose code files it decodes: its own, and earlier releases' with its decoder
        self.decodes_files_of = registry.decodes_files_of(self.card)
        if parameters["fingerprint"].numpy().decode() != self.fingerprint:
            raise ValueError(
                f"{self.model_dir}: the model card's fingerprint {self.fingerprint} is not the "
                f"exported weights' {parameters['fingerprint'].numpy().decode()}"
            )
        # A variable-rate codec takes a quality (0-100) in analyze and synthesize; a
        # mean-scale codec's synthesize takes z_hat too, for the latents' means.
        self.config = CodecConfig.from_card(self.card)
        self.variable_rate = self.config.variable_rate
        self.mean_scale = self.config.mean_scale
        # A codec with channel slices codes its latents slice after slice; one with a
        # checkerboard in two passes over every channel.
        self.slices = self.config.slices
        self.checkerboard = self.config.checkerboard
        self.context = bool(self.slices or self.checkerboard)  # scales from decoded latents
        # How far a latent reaches in the decoded image, which decides the latents of the
        # padding a file must code (format 4 on codes only those): through the synthesis, and
        # for a slice codec through the context that moves its neighbours' decoded values
        config = self.config
        self.reach = synthesis_reach(
            SynthesisTransform(
                config.num_filters,
                config.kernel_size,
                config.latent_kernel_size,
                config.image_kernel_size,
            )
        ) + (CONTEXT_REACH * LATENT_STRIDE if self.context else 0)
        # Format 5: the encoder weighs image scale offsets (off: every file's is 0, what
        # benchmarks.coding_search compares against); format 6: and coding shapes (only the
        # Gaussian, 0: what format 5 wrote).
        self.search_scale_offset = True
        self.coding_shapes = (0, *exact.SHAPE_DEGREES)
        # A replaced codec kept in the package to decode its files has no encoder.
        self.decode_only = bool(self.card.get("decode_only"))
        # Format 3 needs the exact entropy model; a codec exported before it only reads.
        self.exact = exact.load(self.model_dir)
        if self.exact is not None and self.exact.identity != self.card.get("exact_identity"):
            raise ValueError(
                f"{self.model_dir}: {exact.EXACT_FILE} is not the one its model card names"
            )

    # --- format 3: tiles and the exact entropy model ----------------------------------------

    def _require_exact(self) -> exact.ExactModel:
        if self.exact is None:
            raise CodeFileError(
                f"model {self.fingerprint} ({self.model_dir}) was exported before code-file "
                f"format 3 and can only decode; upgrade it with: python -m models.export "
                f"--upgrade {self.model_dir}"
            )
        return self.exact

    def _require_encoder(self) -> None:
        if self.decode_only:
            raise ValueError(
                f"model {self.fingerprint} ({self.model_dir}) is a decode-only copy "
                f"({self.card.get('status', 'replaced')}); encode with a current codec"
            )

    def _quality(self, quality: float | None) -> tf.Tensor:
        return tf.constant(DEFAULT_QUALITY if quality is None else quality, tf.float32)

    def latents(self, pixels: np.ndarray, quality: float | None = None) -> np.ndarray:
        """y (float32 [h, w, M], gains applied) of uint8 (H, W, 3) pixels, tile by tile."""
        self._require_encoder()
        height, width = padded_side(pixels.shape[0]), padded_side(pixels.shape[1])
        y = np.empty(
            (height // LATENT_STRIDE, width // LATENT_STRIDE, self.latent_channels), np.float32
        )
        edges = padding_edges(pixels)
        for top, bottom, left, right in _tiles(height, width):
            rows = (max(top - HALO, 0), min(bottom + HALO, height))
            cols = (max(left - HALO, 0), min(right + HALO, width))
            tile = _edge_padded(pixels, rows, cols, edges)
            out = self.module.analysis(tf.constant(tile), self._quality(quality))["y"].numpy()
            inside = _inside(rows, cols, (top, bottom, left, right), LATENT_STRIDE)
            y[_grid(top, bottom, left, right, LATENT_STRIDE)] = out[inside]
        _release_freed_memory()
        return y

    def side_information(self, y: np.ndarray) -> np.ndarray:
        """z_hat of y, in stripes of latent rows with context (h_a sees 11 rows around)."""
        step = SIDE_STRIDE // LATENT_STRIDE
        stripe, halo = 16 * step, 4 * step
        parts = []
        for top in range(0, y.shape[0], stripe):
            bottom = min(top + stripe, y.shape[0])
            first, last = max(top - halo, 0), min(bottom + halo, y.shape[0])
            z_hat = self.module.hyper_analysis(tf.constant(y[first:last]))["z_hat"].numpy()
            parts.append(z_hat[(top - first) // step : (bottom - first) // step])
        return np.concatenate(parts, axis=0)

    def _hyperprior_rows(self, z_hat: np.ndarray, top: int, end: int, position_offset=0.0):
        """Exact (positions, means) of latent rows [top, end), from the z rows around them;
        ``position_offset`` (fixed point) added to the positions."""
        first = max(top * LATENT_STRIDE // SIDE_STRIDE - _SIDE_HALO, 0)
        last = min(-(-end * LATENT_STRIDE // SIDE_STRIDE) + _SIDE_HALO, z_hat.shape[0])
        offset = first * SIDE_STRIDE // LATENT_STRIDE
        positions, means = self.exact.hyperprior(z_hat[first:last], (top - offset, end - offset))
        return positions + position_offset, means

    def means(self, latents: Latents) -> np.ndarray:
        """The latents' means, float32 [h, w, M] (recomputed unless kept)."""
        if latents.means is not None:
            return latents.means
        return self._means_rows(latents.z_hat, 0, latents.code.shape[0])

    def _means_rows(self, z_hat: np.ndarray, top: int, end: int) -> np.ndarray:
        """float32 means of latent rows [top, end) (a codec without channel slices), a
        stripe at a time (h_s's float64 working set is ~40 bytes a latent)."""
        parts = []
        for first in range(top, end, STRIPE_ROWS):
            means = self._hyperprior_rows(z_hat, first, min(first + STRIPE_ROWS, end))[1]
            parts.append(exact.ExactModel.to_real(means).astype(np.float32))
        return np.concatenate(parts, axis=0)

    def _walk(
        self,
        z_hat: np.ndarray,
        code_of,
        coded: tuple[int, int] | None = None,
        quality=None,
        scale_offset: int = 0,
        hyperprior_stripes: dict | None = None,
    ) -> Latents:
        """The exact walk both ends make: part after part (a channel slice, or the
        checkerboard's anchors then the others), stripe after stripe, the stripe's scale
        indexes and means from the exact model, then ``code_of(rows, cols, part, indexes,
        means, where)`` gives the coded integers of its first ``coded`` rows and columns (the
        encoder's rounding, or the decoder's reading; all latents if None), at the positions
        ``where`` ([rows, cols] bool) only if given, as [positions, channels].  A codec with
        level scale offsets shifts every scale position by its ``quality``'s, and every codec
        by the image's ``scale_offset`` (quarter steps).  ``hyperprior_stripes`` (first row ->
        exact positions and means with the level offset, without the image's) are stripes
        already computed (``choose_coding``'s)."""
        model = self._require_exact()
        offset = model.scale_offset(quality) + model.quarter_steps(scale_offset)
        rows = z_hat.shape[0] * SIDE_STRIDE // LATENT_STRIDE
        cols = z_hat.shape[1] * SIDE_STRIDE // LATENT_STRIDE
        coded_rows, coded_cols = coded or (rows, cols)
        shape = (rows, cols, self.latent_channels)
        latents = Latents(
            z_hat,
            np.zeros(shape, np.int16),
            np.zeros(shape, np.uint8),
            np.zeros(shape, np.float32) if self.context else None,
            coded=(coded_rows, coded_cols),
            scale_offset=scale_offset,
        )
        crc = 0
        for i, part in enumerate(self._parts()):
            for top, end in _stripes(rows):
                # the context needs the decoded latents it reads around the stripe: fixed
                # point, exact
                first, last = max(top - _CONTEXT_HALO, 0), min(end + _CONTEXT_HALO, rows)
                if self.slices:
                    positions, means = self._hyperprior_rows(z_hat, first, last, offset)
                    before = slice(0, part.start)
                    decoded = exact.ExactModel.to_fixed(
                        latents.code[first:last, :, before].astype(np.float64)
                        + latents.means[first:last, :, before]
                    )
                    positions, means = model.slice_parameters(positions, means, decoded, i)
                    positions = positions[top - first : end - first]
                    means = means[top - first : end - first]
                elif self.checkerboard and i:
                    positions, means = self._hyperprior_rows(z_hat, first, last, offset)
                    decoded = exact.ExactModel.to_fixed(
                        latents.code[first:last].astype(np.float64) + latents.means[first:last]
                    )
                    positions, means = model.checkerboard_parameters(
                        positions, means, decoded, first
                    )
                    positions = positions[top - first : end - first]
                    means = means[top - first : end - first]
                elif hyperprior_stripes and top in hyperprior_stripes:
                    positions, means = (a.astype(np.float64) for a in hyperprior_stripes[top])
                    positions = positions + model.quarter_steps(scale_offset)
                else:
                    positions, means = self._hyperprior_rows(z_hat, top, end, offset)
                indexes = model.indexes(positions)
                means = exact.ExactModel.to_real(means).astype(np.float32)
                where = None
                if self.checkerboard:  # this pass's half of the grid
                    where = exact.anchor_mask(top, end - top, cols) == (i == 0)
                    indexes = np.where(where[..., np.newaxis], indexes, latents.indexes[top:end])
                    means = np.where(where[..., np.newaxis], means, latents.means[top:end])
                latents.indexes[top:end, :, part] = indexes
                if self.context:
                    latents.means[top:end, :, part] = means
                last = min(end, coded_rows)
                if top < last:
                    window = (slice(top, last), slice(0, coded_cols), part)
                    inside = None if where is None else where[: last - top, :coded_cols]
                    values = code_of(
                        (top, last),
                        coded_cols,
                        part,
                        indexes[: last - top, :coded_cols],
                        means[: last - top, :coded_cols],
                        inside,
                    )
                    if inside is None:
                        latents.code[window] = values
                    else:
                        latents.code[window][inside] = values
                coded_indexes = indexes if where is None else indexes[where]
                crc = zlib.crc32(np.ascontiguousarray(coded_indexes, "<i4").tobytes(), crc)
        latents.index_crc = crc
        return latents

    def analyze(self, pixels: np.ndarray, quality: float | None = None) -> Latents:
        """The coded latents of uint8 (H, W, 3) pixels (format 6)."""
        y = self.latents(pixels, quality)
        z_hat = self.side_information(y)
        if self.refine_steps:
            y = self.refiner.refine(pixels, y, z_hat, quality, self.refine_steps)
        return self.code_latents(y, z_hat, pixels.shape[:2], quality)

    @property
    def refiner(self):
        if self._refiner is None:
            from models.refine import LatentRefiner

            self._refiner = LatentRefiner(self)
        return self._refiner

    def code_latents(
        self, y: np.ndarray, z_hat: np.ndarray, size: tuple[int, int], quality=None
    ) -> Latents:
        """The coded integers of y for an image of ``size`` (height, width) pixels:
        round(y - mean) with the exact model's means, 0 beyond the image's latents."""

        def rounded(rows, cols, part, indexes, means, where):
            values = self._code_of(y[rows[0] : rows[1], :cols, part], means)
            return values if where is None else values[where]

        coded = coded_latents(*size, self.reach)
        shape, offset, stripes = 0, 0, {}
        if self.search_scale_offset or self.coding_shapes != (0,):
            shape, offset, stripes = self.choose_coding(y, z_hat, coded, quality)
        latents = self._walk(z_hat, rounded, coded, quality, offset, stripes)
        latents.coding_shape = shape
        return latents

    def _code_of(self, y: np.ndarray, means: np.ndarray) -> np.ndarray:
        """The coded integers of latents y around their means (float, in the coder's range)."""
        return np.clip(np.round(y - means), -self.y_range, self.y_range)

    def choose_coding(self, y: np.ndarray, z_hat: np.ndarray, coded, quality) -> tuple:
        """(shape, offset, stripes): the coding shape (``coding_shapes``) and image scale
        offset (quarter steps; 0 unless ``search_scale_offset``) that code y's ``coded``
        latents in the fewest bits by the exact model's tables, the first shape and the
        smallest offset on a tie, judged on at most ``_OFFSET_STRIPES`` coding stripes spread
        over the image; and those stripes' exact (positions, means) by first row, which the
        walk then reuses.  A codec with context gets (0, 0) (its scales depend on the decoded
        latents).

        Shifted by k quarters, a latent's scale index is floor((a + k) / 4) for its position
        a in quarter steps (rounded down, half a step added: the index rounding), so one
        histogram of (a, coded integer) gives every candidate's bits.
        """
        model = self._require_exact()
        if self.context:
            return 0, 0, {}
        level_offset = model.scale_offset(quality)
        rows, cols = coded
        stripes = _stripes(z_hat.shape[0] * SIDE_STRIDE // LATENT_STRIDE)
        stripes = [stripe for stripe in stripes if stripe[0] < rows]
        spread = np.linspace(0, len(stripes) - 1, _OFFSET_STRIPES).round().astype(int)
        cache, quarters, symbols = {}, [], []
        for top, end in sorted({stripes[i] for i in spread}):
            positions, means = self._hyperprior_rows(z_hat, top, end, level_offset)
            # integers below 2**24: float32 holds them exactly, in half the memory
            cache[top] = (positions.astype(np.float32), means.astype(np.float32))
            last = min(end, rows) - top
            positions, means = positions[:last, :cols], means[:last, :cols]
            means = exact.ExactModel.to_real(means).astype(np.float32)
            code = self._code_of(y[top : top + last, :cols], means)
            half = 2.0 ** (exact.ACTIVATION_BITS - 1)
            quarters.append(np.floor((positions + half) / model.quarter_steps(1)).ravel())
            symbols.append(code.astype(np.int64).ravel() + self.y_range)
        # quarter positions beyond these index the table's ends whatever the offset
        low = -(_SCALE_OFFSET_REACH + 4)
        high = 4 * (model.num_scales - 1) + _SCALE_OFFSET_REACH + 4
        quarters = np.clip(np.concatenate(quarters), low, high).astype(np.int64)
        symbols = np.concatenate(symbols)
        first_quarter, first_symbol = quarters.min(), symbols.min()
        width = int(symbols.max() - first_symbol) + 1
        cells = (quarters - first_quarter) * width + symbols - first_symbol
        counts = np.bincount(cells).astype(np.float64)
        counts = np.pad(counts, (0, -counts.size % width)).reshape(-1, width)
        levels = first_quarter + np.arange(counts.shape[0])
        rows = np.arange(counts.shape[0])

        def bits(by_index: np.ndarray, shift: int) -> float:
            indexes = np.clip((levels + shift) // 4, 0, model.num_scales - 1)
            return float(by_index[rows, indexes].sum())

        choices = []  # (bits, shape's rank, |offset|, shape, offset)
        for rank, shape in enumerate(self.coding_shapes):
            costs = model.bit_costs(shape)[:, first_symbol : first_symbol + width]
            # [quarter position, scale index]: the bits of those latents at that index
            by_index = counts @ costs.T

            def best(candidates, by_index=by_index) -> int:
                return min(candidates, key=lambda shift: (bits(by_index, shift), abs(shift)))

            offset = 0
            if self.search_scale_offset:
                # whole steps, then the quarters around the best (the bits fall and rise once)
                coarse = best(range(-_SCALE_OFFSET_REACH, _SCALE_OFFSET_REACH + 1, 4))
                offset = best(range(coarse - 3, coarse + 4))
            choices.append((bits(by_index, offset), rank, abs(offset), shape, offset))
        _, _, _, shape, offset = min(choices)
        return shape, offset, cache

    def synthesize(
        self, latents: Latents, height: int, width: int, quality: float | None = None
    ) -> np.ndarray:
        """The decoded image (uint8 [height, width, 3]) of ``latents``, tile by tile."""
        padded_height, padded_width = padded_side(height), padded_side(width)
        image = np.empty((height, width, 3), np.uint8)
        halo = HALO // LATENT_STRIDE
        band = (None, None)  # (latent rows, their means) of the tile row being decoded
        for top, bottom, left, right in _tiles(padded_height, padded_width):
            if top >= height or left >= width:
                continue
            rows = (
                max(top // LATENT_STRIDE - halo, 0),
                min(bottom // LATENT_STRIDE + halo, latents.code.shape[0]),
            )
            cols = (
                max(left // LATENT_STRIDE - halo, 0),
                min(right // LATENT_STRIDE + halo, latents.code.shape[1]),
            )
            window = (slice(*rows), slice(*cols))
            if latents.means is not None:
                means = latents.means[window]
            else:
                if band[0] != rows:  # the tile row's means, once for all its tiles
                    band = (rows, self._means_rows(latents.z_hat, *rows))
                means = band[1][:, slice(*cols)]
            y_hat = latents.code[window].astype(np.float32) + means
            out = self.module.synthesis(
                tf.constant(y_hat), tf.constant(means), self._quality(quality)
            )["image"].numpy()
            row0 = top - rows[0] * LATENT_STRIDE
            col0 = left - cols[0] * LATENT_STRIDE
            bottom, right = min(bottom, height), min(right, width)
            image[top:bottom, left:right] = out[
                row0 : row0 + bottom - top, col0 : col0 + right - left
            ]
        return image

    def reconstruct(self, pixels: np.ndarray, quality: float | None = None) -> np.ndarray:
        """The model's own quantized reconstruction, without entropy coding."""
        return self.synthesize(self.analyze(pixels, quality), *pixels.shape[:2], quality)

    def _parts(self) -> list[slice]:
        """The channels each coding pass codes: a slice each, or all of them in both of the
        checkerboard's passes (anchors, then the others)."""
        if self.checkerboard:
            return [slice(0, self.latent_channels)] * 2
        count = max(self.slices, 1)
        size = self.latent_channels // count
        return [slice(i * size, (i + 1) * size) for i in range(count)]

    @property
    def latent_channels(self) -> int:
        return self.config.latent_filters

    # --- bitstreams -------------------------------------------------------------------

    def encode(
        self,
        latents: Latents,
        height: int,
        width: int,
        channels: int,
        quality: float | None = None,
        chunks: tuple = (),
    ) -> bytes:
        model = self._require_exact()
        if latents.coded != coded_latents(height, width, self.reach):
            raise ValueError(
                f"latents coded for {latents.coded} latent rows and columns, not a "
                f"{height}x{width} image's"
            )
        encoder = entropy_coding.ExactLatentEncoder(
            model.y_tables(latents.coding_shape), self.y_range
        )
        rows, cols = latents.coded
        for i, part in enumerate(self._parts()):
            for top, end in _stripes(rows):
                window = (slice(top, end), slice(0, cols), part)
                code, indexes = latents.code[window], latents.indexes[window]
                if self.checkerboard:
                    where = exact.anchor_mask(top, end - top, cols) == (i == 0)
                    code, indexes = code[where], indexes[where]
                encoder.encode(code, indexes)
        code = CodeFile(
            fingerprint=self.fingerprint,
            height=height,
            width=width,
            source_channels=channels,
            index_checksum=latents.index_crc,
            scale_offset=latents.scale_offset,
            coding_shape=latents.coding_shape,
            z_stream=entropy_coding.encode_z_exact(
                latents.z_hat, model.z_frequencies, self.z_range
            ),
            y_stream=encoder.stream(),
            quality=quality if self.variable_rate else None,
            exact_identity=model.identity,
            chunks=tuple(chunks),
            reach=self.reach,
        )
        return code.to_bytes()

    def compress(
        self,
        pixels: np.ndarray,
        source_channels: int = 3,
        quality: float | None = None,
        chunks: tuple = (),
    ) -> bytes:
        """pixels: uint8 (H, W, 3); ``source_channels=1`` makes the decoder output grayscale.

        ``quality`` (0-100, default medium) sets a variable-rate codec's rate; others ignore it.
        ``chunks``: (tag, data) pairs the file carries besides the image (``codefile``).
        """
        if pixels.ndim != 3 or pixels.shape[-1] != 3 or pixels.dtype != np.uint8:
            raise ValueError("compress expects a uint8 (height, width, 3) array")
        quality = self.clamp_quality(quality)
        latents = self.analyze(pixels, quality)
        height, width = pixels.shape[:2]
        return self.encode(latents, height, width, source_channels, quality, chunks)

    def clamp_quality(self, quality: float | None) -> float | None:
        """A variable-rate codec's quality as the header keeps it (float32 in [0, 100])."""
        if not self.variable_rate:
            return None
        quality = (
            DEFAULT_QUALITY if quality is None else min(max(quality, QUALITY_MIN), QUALITY_MAX)
        )
        return float(np.float32(quality))

    def choose_quality(
        self,
        pixels: np.ndarray,
        source_channels: int = 3,
        target_psnr: float | None = None,
        target_bpp: float | None = None,
        probes: int = 7,
    ) -> tuple[float, bool]:
        """(quality, met): the lowest quality whose decoded image reaches ``target_psnr`` dB,
        or the highest whose code file stays within ``target_bpp``, found by bisection over
        [0, 100] (``probes`` steps after the two ends: within 100 / 2^probes).  When no
        quality meets the target, the nearest end (100 for PSNR, 0 for bpp) and False.

        PSNR is measured as the user gets the image back (luma for a grayscale source); bpp
        from real code files, header included.
        """
        if not self.variable_rate:
            raise ValueError("a target needs a variable-rate codec")
        if (target_psnr is None) == (target_bpp is None):
            raise ValueError("give exactly one of target_psnr and target_bpp")
        from models.inference import psnr

        height, width = pixels.shape[:2]
        reference = to_grayscale(pixels) if source_channels == 1 else pixels

        def good_enough(quality: float) -> bool:
            if target_bpp is not None:
                data = self.compress(pixels, source_channels, quality)
                return codefile.bits_per_pixel(len(data), height * width) <= target_bpp
            decoded = self.reconstruct(pixels, quality)
            if source_channels == 1:
                decoded = to_grayscale(decoded)
            return psnr(reference, decoded) >= target_psnr

        # PSNR rises with quality: search the lowest good one.  bpp rises too: the highest.
        low, high = QUALITY_MIN, QUALITY_MAX
        if target_psnr is not None:
            if not good_enough(high):
                return high, False
            if good_enough(low):
                return low, True
            for _ in range(probes):
                middle = float(np.float32((low + high) / 2))
                low, high = (low, middle) if good_enough(middle) else (middle, high)
            return high, True
        if not good_enough(low):
            return low, False
        if good_enough(high):
            return high, True
        for _ in range(probes):
            middle = float(np.float32((low + high) / 2))
            low, high = (middle, high) if good_enough(middle) else (low, middle)
        return low, True

    def parse(self, data: bytes) -> CodeFile:
        code = CodeFile.from_bytes(data)
        if code.fingerprint not in self.decodes_files_of:
            raise CodeFileError(
                f"written by model {code.fingerprint}, but the model given is "
                f"{self.fingerprint} ({self.model_dir}); pass the model that wrote it"
            )
        return code

    def decode_latents(self, code: CodeFile) -> Latents:
        """The latents of a format-3 file's streams."""
        model = self._require_exact()
        if code.exact_identity != model.identity:
            raise CodeFileError(
                f"written with exact entropy model {code.exact_identity}, but model "
                f"{self.fingerprint} has {model.identity}; pass the model that wrote it"
            )
        z_shape = side_shape(code.height, code.width, model.z_frequencies.shape[0])
        try:
            z_hat = entropy_coding.decode_z_exact(
                code.z_stream, z_shape, model.z_frequencies, self.z_range
            )
            decoder = entropy_coding.ExactLatentDecoder(
                code.y_stream, model.y_tables(code.coding_shape), self.y_range
            )
            # version 3 coded every latent of the padded image; 4 those that reach the image
            coded = (
                None if code.reach is None else coded_latents(code.height, code.width, code.reach)
            )
            latents = self._walk(
                z_hat,
                lambda rows, cols, part, indexes, means, where: decoder.decode(
                    indexes if where is None else indexes[where]
                ),
                coded,
                code.quality,
                code.scale_offset,
            )
        except Exception as e:  # noqa: BLE001 - any coder failure means a bad stream
            raise CodeFileError(f"corrupted code file (entropy decoding failed: {e})") from e
        if latents.index_crc != code.index_checksum:
            raise CodeFileError("corrupted code file (scale indexes differ from the encoder's)")
        return latents

    def decompress(self, data: bytes) -> np.ndarray:
        """uint8 (H, W, 3), or (H, W) for a grayscale source."""
        return self.decode(data)[0]

    def decode(self, data: bytes) -> tuple[np.ndarray, CodeFile]:
        """(image, parsed file): the image uint8 (H, W, 3), or (H, W) for a grayscale source."""
        code = self.parse(data)
        if self.variable_rate and code.quality is None:
            raise CodeFileError("code file has no quality, but its model is variable-rate")
        if code.version < 3:
            image = self._legacy.decompress(code)
        else:
            latents = self.decode_latents(code)
            image = self.synthesize(latents, code.height, code.width, code.quality)
        return (to_grayscale(image) if code.source_channels == 1 else image), code

    @property
    def _legacy(self):
        from models.legacy_codefile import LegacyDecoder

        return LegacyDecoder(self)
