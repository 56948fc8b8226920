"""Running the denoiser and the codec inside Beam, and writing their outputs.

``LatentpressModelHandler`` is a RunInference ModelHandler of our own (not Beam's TF handlers,
which load through Keras and cannot read our SavedModels): it loads the models once per worker
process and runs each image of a batch through them on its own, so batches of mixed image
sizes just work and results never depend on how images were batched.  Per-image failures come
back as results with a reason instead of failing the whole batch.

``WriteOutputs`` writes the code file and the cleaned PNG atomically (temporary name, then
rename) and turns each result into its manifest record.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import apache_beam as beam
from apache_beam.metrics import Metrics
from apache_beam.ml.inference.base import ModelHandler, RunInference

from models import codefile
from transforms import decode, manifest, metadata, reasons
from transforms.read_images import DecodedImage
from transforms.records import join, write_atomically

LOG = logging.getLogger(__name__)
COMPRESS, DENOISE, BOTH = "compress", "denoise", "both"
MODES = (COMPRESS, DENOISE, BOTH)


@dataclass
class Processed:
    image: DecodedImage
    code: bytes | None = None
    clean_png: bytes | None = None
    psnr_db: float = 0.0
    quality: float | None = None  # what a variable-rate codec encoded at
    target_met: bool | None = None  # with a --target-psnr/--target-bpp
    denoised: bool = False  # the denoiser ran (its output may be stored only as the code)
    error: str = ""  # set when the models failed on this image


@dataclass
class Models:
    compressor: object | None
    denoiser: object | None


def configure_threads(threads: int) -> None:
    """Limits TensorFlow's thread pools (one worker per core scales best); 0 keeps defaults."""
    if threads <= 0:
        return
    import tensorflow as tf

    try:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)
    except RuntimeError:  # TensorFlow already started in this process (in-process runner)
        LOG.info("TensorFlow already initialised here; keeping its thread settings")


def configure_gpus(memory_mb: int) -> None:
    """Lets several worker processes share a GPU: memory grows on demand, or is capped.

    Dataflow runs one SDK process per vCPU, each loading its own models; by default the first
    would reserve the whole GPU.  No-op without GPUs.
    """
    import tensorflow as tf

    try:
        for gpu in tf.config.list_physical_devices("GPU"):
            if memory_mb > 0:
                tf.config.set_logical_device_configuration(
                    gpu, [tf.config.LogicalDeviceConfiguration(memory_limit=memory_mb)]
                )
            else:
                tf.config.experimental.set_memory_growth(gpu, True)
    except RuntimeError:  # TensorFlow already started in this process
        LOG.info("TensorFlow already initialised here; keeping its GPU settings")


def process_image(
    models: Models,
    image: DecodedImage,
    mode: str,
    quality: float | None = None,
    target: dict | None = None,
    keep_cleaned: bool = False,
) -> Processed:
    """Denoise and/or compress one image; in ``both`` the cleaned image is what is encoded,
    and its PNG is kept only with ``keep_cleaned`` (the code decodes to it).

    ``quality`` (0-100) is the rate of a variable-rate codec (None for a one-rate codec);
    ``target`` ({"target_psnr": dB} or {"target_bpp": bpp}) chooses it per image instead."""
    from models.compressor import to_grayscale
    from models.inference import psnr

    result = Processed(image)
    pixels = image.pixels
    grayscale = image.mode in decode.GRAYSCALE_MODES
    if mode in (DENOISE, BOTH):
        pixels = models.denoiser.denoise(pixels)
        # A grayscale source gets a grayscale cleaned image, as the decoder does for codes;
        # it carries what the source did (EXIF, ICC, alpha: transforms.metadata).
        result.denoised = True
        if mode == DENOISE or keep_cleaned:
            cleaned = to_grayscale(pixels) if grayscale else pixels
            result.clean_png = metadata.encode_png(cleaned, image.carried)
    if mode in (COMPRESS, BOTH):
        channels = 1 if grayscale else 3
        if target:
            quality, result.target_met = models.compressor.choose_quality(
                pixels, channels, **target
            )
        quality = models.compressor.clamp_quality(quality)
        result.quality = quality
        latents = models.compressor.analyze(pixels, quality)
        height, width = pixels.shape[:2]
        chunks = metadata.to_chunks(image.carried)
        result.code = models.compressor.encode(latents, height, width, channels, quality, chunks)
        # The decoder's output is the synthesis of these very latents; PSNR is measured on
        # what the user gets back (grayscale for a grayscale source).
        decoded = models.compressor.synthesize(latents, height, width, quality)
        if grayscale:
            pixels, decoded = to_grayscale(pixels), to_grayscale(decoded)
        result.psnr_db = psnr(pixels, decoded)
    return result


class LatentpressModelHandler(ModelHandler[DecodedImage, Processed, Models]):
    def __init__(
        self,
        mode: str,
        codec: str,
        denoiser: str,
        threads: int = 0,
        gpu_memory_mb: int = 0,
        quality: float | None = None,
        target: dict | None = None,
        denoise_ensemble: int = 1,
        denoise_strength: float = 1.0,
        keep_cleaned: bool = False,
        refine_steps: int = 0,
    ):
        super().__init__()
        self._refine_steps = refine_steps
        self._denoise_strength = denoise_strength
        self._keep_cleaned = keep_cleaned
        self._denoise_ensemble = denoise_ensemble
        self._mode = mode
        self._quality = quality
        self._target = target
        self._codec = codec
        self._denoiser = denoiser
        self._threads = threads
        self._gpu_memory_mb = gpu_memory_mb

    def load_model(self) -> Models:
        configure_threads(self._threads)
        configure_gpus(self._gpu_memory_mb)
        from models.compressor import Compressor
        from models.inference import Denoiser

        return Models(
            Compressor(self._codec, self._refine_steps) if self._mode in (COMPRESS, BOTH) else None,
            Denoiser(
                self._denoiser, ensemble=self._denoise_ensemble, strength=self._denoise_strength
            )
            if self._mode in (DENOISE, BOTH)
            else None,
        )

    def run_inference(
        self, batch: Sequence[DecodedImage], model: Models, inference_args=None
    ) -> Iterable[Processed]:
        results = []
        for image in batch:
            try:
                results.append(
                    process_image(
                        model, image, self._mode, self._quality, self._target, self._keep_cleaned
                    )
                )
            except Exception as e:  # noqa: BLE001 - one bad image must not sink its batch
                LOG.warning("inference failed on %s: %s", image.path, e)
                results.append(Processed(image, error=f"{type(e).__name__}: {e}"))
        return results

    def batch_elements_kwargs(self):
        # Images are large and processed one by one: small batches keep memory flat.
        return {"min_batch_size": 1, "max_batch_size": 4}

    def get_num_bytes(self, batch: Sequence[DecodedImage]) -> int:
        return sum(image.pixels.nbytes for image in batch)


def safe_key(key: str) -> bool:
    """A key may become a relative output path: no absolute paths, no '..' components."""
    parts = key.replace("\\", "/").split("/")
    return bool(key) and not key.startswith(("/", "\\")) and ".." not in parts and ":" not in key


class WriteOutputs(beam.DoFn):
    """Processed -> manifest record, after writing its files under the output directory."""

    STAGE = "apply"

    def __init__(
        self,
        output: str,
        mode: str,
        codec_fingerprint: str,
        denoiser_fingerprint: str,
        run_id: str = "",
        codec_setting: str = "",
    ):
        self._output = output
        self.codec_setting = codec_setting
        self._mode = mode
        self.codec_fingerprint = codec_fingerprint
        self.denoiser_fingerprint = denoiser_fingerprint
        self._run_id = run_id
        # Beam counters under the stage's own name (apply, archive)
        stage = self.STAGE
        self._images = Metrics.counter(stage, "images")
        self._pixels = Metrics.counter(stage, "pixels")
        self._bytes_in = Metrics.counter(stage, "bytes_in")
        self._bytes_out = Metrics.counter(stage, "bytes_out")
        self._failures = Metrics.counter(stage, "failures")

    def output_name(self, image: DecodedImage, directory: str, suffix: str) -> str:
        """Relative path of an image's output under ``directory``."""
        return manifest.output_name(image.key, suffix)

    def _write(self, directory: str, image: DecodedImage, suffix: str, data: bytes) -> str:
        path = join(self._output, directory, self.output_name(image, directory, suffix))
        parent = path.rsplit("/", 1)[0]
        if "://" not in path:
            os.makedirs(parent, exist_ok=True)
        write_atomically(path, data)
        return path

    def process(self, result: Processed):
        image = result.image
        common = {
            "content_sha256": image.sha256,
            "bytes_in": image.size_bytes,
            "width": int(image.pixels.shape[1]),
            "height": int(image.pixels.shape[0]),
            "model_fingerprint": self.codec_fingerprint if result.code is not None else "",
            "denoiser_fingerprint": self.denoiser_fingerprint if result.denoised else "",
            "run_id": self._run_id,
            **image.carried.manifest_fields(),
        }
        if result.error:
            self._failures.inc()
            yield manifest.failed(
                image.path, image.key, self._mode, reasons.INFERENCE_FAILED, result.error, **common
            )
            return
        code_path = clean_path = ""
        if result.code is not None:
            code_path = self._write(manifest.CODES_DIR, image, manifest.CODE_SUFFIX, result.code)
        if result.clean_png is not None:
            clean_path = self._write(
                manifest.CLEAN_DIR, image, manifest.CLEAN_SUFFIX, result.clean_png
            )
        code_bytes = len(result.code or b"")
        clean_bytes = len(result.clean_png or b"")
        pixels = common["width"] * common["height"]
        self._images.inc()
        self._pixels.inc(pixels)
        self._bytes_in.inc(image.size_bytes)
        self._bytes_out.inc(code_bytes + clean_bytes)
        yield manifest.record(
            source_path=image.path,
            key=image.key,
            status=manifest.OK,
            mode=self._mode,
            code_path=code_path,
            clean_path=clean_path,
            code_bytes=code_bytes,
            clean_bytes=clean_bytes,
            bpp=codefile.bits_per_pixel(code_bytes, pixels),
            psnr_db=result.psnr_db,
            psnr_reference=("clean" if self._mode == BOTH else "input") if code_bytes else "",
            code_of=("cleaned" if result.denoised else "input") if code_bytes else "",
            quality=result.quality,
            codec_setting=self.codec_setting if code_bytes else "",
            code_format=codefile.CodeFile.version_of(result.code) if code_bytes else 0,
            target_met=result.target_met,
            **common,
        )


class ProcessImages(beam.PTransform):
    """DecodedImage -> one manifest record per image, ok or failed: the models run in
    RunInference, ``writer`` writes what they made, progress is logged as records come (the
    apply and archive stages differ only in their writer and progress)."""

    def __init__(self, handler: LatentpressModelHandler, writer: WriteOutputs, progress):
        super().__init__()
        self._handler = handler
        self._writer = writer
        self._progress = progress

    def expand(self, images):
        return (
            images
            | "RunModels" >> RunInference(self._handler)
            | "WriteOutputs" >> beam.ParDo(self._writer)
            # fused with the writer: behind a shuffle it would see the records only at the end
            | "ReportProgress" >> beam.ParDo(self._progress)
        )
