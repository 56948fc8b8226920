"""Images to code files and back, with an exported codec (``models.export``).

``Compressor.compress`` runs the analysis network, entropy-codes the latents and packs them in
the code-file format; ``Compressor.decompress`` reverses it.  Each step is its own method so
benchmarks can time the network and the entropy coding separately.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf
from PIL import Image

from models import codefile, entropy_coding, registry
from models.codec import LATENT_STRIDE, SIDE_STRIDE, side_shape
from models.codefile import CodeFile, CodeFileError, index_checksum
from models.export import load_saved_model

DEFAULT_QUALITY = registry.NAMED_QUALITIES["medium"]  # a variable-rate codec's default


def to_grayscale(rgb: np.ndarray) -> np.ndarray:
    """ITU-R 601 luma, as Pillow converts RGB to L."""
    return np.asarray(Image.fromarray(rgb).convert("L"))


class Compressor:
    def __init__(self, model: str = registry.DEFAULT_CODEC):
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
        if parameters["fingerprint"].numpy().decode() != self.fingerprint:
            raise ValueError(
                f"{self.model_dir}: the model card's fingerprint {self.fingerprint} is not the "
                f"exported weights' {parameters['fingerprint'].numpy().decode()}"
            )
        # A variable-rate codec takes a quality (0-100) in analyze and synthesize; a
        # mean-scale codec's synthesize takes z_hat too, for the latents' means.
        self.variable_rate = len(self.card.get("config", {}).get("lmbdas") or ()) > 1
        self.mean_scale = bool(self.card.get("config", {}).get("mean_scale"))
        # A codec with channel slices codes its latents slice after slice.
        self.slices = int(self.card.get("config", {}).get("slices") or 0)

    # --- network ---------------------------------------------------------------------

    def quality_args(self, quality: float | None) -> tuple:
        """The signatures' extra argument: (quality,) for a variable-rate codec, else ()."""
        if not self.variable_rate:
            return ()
        return (tf.constant(DEFAULT_QUALITY if quality is None else quality, tf.float32),)

    def analyze(self, pixels: np.ndarray, quality: float | None = None):
        """(y_hat, z_hat) of uint8 (H, W, 3) pixels."""
        image = tf.constant(pixels, tf.uint8)
        latents = self.module.analyze(image, *self.quality_args(quality))
        return latents["y_hat"].numpy(), latents["z_hat"].numpy()

    def scale_indexes(self, z_hat: np.ndarray, y_hat: np.ndarray | None = None) -> np.ndarray:
        """Every latent's position in the scale table, as the decoder computes it: from z_hat
        (and, for a codec with channel slices, the coded integers y_hat, one slice at a time
        through the same signature calls as ``decode_latents``)."""
        if not self.slices:
            return self.module.scale_indexes(tf.constant(z_hat, tf.int32))["indexes"].numpy()
        return self._walk_slices(z_hat, lambda part, indexes_i: y_hat[..., part])[1]

    def _walk_slices(self, z_hat: np.ndarray, code_of):
        """(y_hat, indexes) slice after slice, the same signature calls at both ends:
        ``code_of(part, indexes)`` gives a slice's coded integers (the encoder's own, or the
        next ones the decoder reads with those indexes)."""
        height, width = (side * SIDE_STRIDE // LATENT_STRIDE for side in z_hat.shape[:2])
        decoded = np.zeros((height, width, self.latent_channels), np.float32)
        y_hat = np.zeros(decoded.shape, np.int32)
        indexes = []
        for i, part in enumerate(self._slice_parts()):
            indexes_i, means_i = self.slice_parameters(z_hat, decoded, i)
            y_hat[..., part] = code_of(part, indexes_i)
            decoded[..., part] = y_hat[..., part] + means_i
            indexes.append(indexes_i)
        return y_hat, np.concatenate(indexes, axis=-1)

    def _slice_parts(self) -> list[slice]:
        size = self.latent_channels // self.slices
        return [slice(i * size, (i + 1) * size) for i in range(self.slices)]

    @property
    def latent_channels(self) -> int:
        return int(self.card["config"]["latent_filters"])

    def slice_parameters(self, z_hat: np.ndarray, decoded: np.ndarray, i: int):
        """(indexes, means) of slice ``i`` from z_hat and the decoded latents before it."""
        out = self.module.slice_parameters(
            tf.constant(z_hat, tf.int32), tf.constant(decoded, tf.float32), tf.constant(i)
        )
        return out["indexes"].numpy(), out["means"].numpy()

    def synthesize(
        self,
        y_hat: np.ndarray,
        z_hat: np.ndarray,
        height: int,
        width: int,
        quality: float | None = None,
    ) -> np.ndarray:
        """The decoded image of (y_hat, z_hat); z_hat matters to a mean-scale codec only."""
        latents = [tf.constant(y_hat, tf.int32), *self.quality_args(quality)]
        if self.mean_scale:
            latents.append(tf.constant(z_hat, tf.int32))
        image = self.module.synthesize(*latents, height, width)["image"]
        return image.numpy()

    def reconstruct(self, pixels: np.ndarray, quality: float | None = None) -> np.ndarray:
        """The model's own quantized reconstruction, without entropy coding."""
        y_hat, z_hat = self.analyze(pixels, quality)
        return self.synthesize(y_hat, z_hat, pixels.shape[0], pixels.shape[1], quality)

    # --- bitstreams -------------------------------------------------------------------

    def encode(
        self,
        y_hat: np.ndarray,
        z_hat: np.ndarray,
        height: int,
        width: int,
        channels: int,
        quality: float | None = None,
    ) -> bytes:
        # The decoder recomputes the indexes from the decoded z_hat through this same
        # signature, so the encoder must use it too (not an internal shortcut).
        indexes = self.scale_indexes(z_hat, y_hat)
        code = CodeFile(
            fingerprint=self.fingerprint,
            height=height,
            width=width,
            source_channels=channels,
            index_checksum=index_checksum(indexes),
            z_stream=entropy_coding.encode_z(z_hat, self.z_pmf, self.z_range),
            y_stream=entropy_coding.encode_y(
                y_hat, indexes, self.scale_table, self.y_range, max(self.slices, 1)
            ),
            quality=quality if self.variable_rate else None,
        )
        return code.to_bytes()

    def compress(
        self, pixels: np.ndarray, source_channels: int = 3, quality: float | None = None
    ) -> bytes:
        """pixels: uint8 (H, W, 3); ``source_channels=1`` makes the decoder output grayscale.

        ``quality`` (0-100, default medium) sets a variable-rate codec's rate; others ignore it.
        """
        if pixels.ndim != 3 or pixels.shape[-1] != 3 or pixels.dtype != np.uint8:
            raise ValueError("compress expects a uint8 (height, width, 3) array")
        if self.variable_rate:
            quality = DEFAULT_QUALITY if quality is None else min(max(quality, 0.0), 100.0)
            quality = float(np.float32(quality))  # as the header keeps it
        y_hat, z_hat = self.analyze(pixels, quality)
        height, width = pixels.shape[:2]
        return self.encode(y_hat, z_hat, height, width, source_channels, quality)

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
        low, high = 0.0, 100.0
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
        if code.fingerprint != self.fingerprint:
            raise CodeFileError(
                f"written by model {code.fingerprint}, but the model given is "
                f"{self.fingerprint} ({self.model_dir}); pass the model that wrote it"
            )
        return code

    def decode_latents(self, code: CodeFile) -> tuple[np.ndarray, np.ndarray]:
        """(y_hat, z_hat) from a code file's streams."""
        z_shape = side_shape(code.height, code.width, self.z_pmf.shape[0])
        try:
            z_hat = entropy_coding.decode_z(code.z_stream, z_shape, self.z_pmf, self.z_range)
            if self.slices:
                y_hat, indexes = self._decode_slices(code, z_hat)
            else:
                indexes = self.scale_indexes(z_hat)
                y_hat = entropy_coding.decode_y(
                    code.y_stream, indexes, self.scale_table, self.y_range
                )
            # (a slice codec can only check after decoding: its indexes need the latents)
            if index_checksum(indexes) != code.index_checksum:
                raise CodeFileError(
                    "scale indexes differ from the encoder's: this platform computes the "
                    "hyperprior differently, decoding would give a wrong image"
                )
            return y_hat, z_hat
        except CodeFileError:
            raise
        except Exception as e:  # noqa: BLE001 - any coder failure means a bad stream
            raise CodeFileError(f"corrupted code file (entropy decoding failed: {e})") from e

    def _decode_slices(self, code: CodeFile, z_hat: np.ndarray):
        """(y_hat, indexes) of a codec with channel slices, decoded slice after slice."""
        decoder = entropy_coding.LatentDecoder(code.y_stream, self.scale_table, self.y_range)
        return self._walk_slices(z_hat, lambda part, indexes_i: decoder.decode(indexes_i))

    def decompress(self, data: bytes) -> np.ndarray:
        """uint8 (H, W, 3), or (H, W) for a grayscale source."""
        code = self.parse(data)
        if self.variable_rate and code.quality is None:
            raise CodeFileError("code file has no quality, but its model is variable-rate")
        y_hat, z_hat = self.decode_latents(code)
        image = self.synthesize(y_hat, z_hat, code.height, code.width, code.quality)
        return to_grayscale(image) if code.source_channels == 1 else image
