"""``latentpress evaluate``: our codec against JPEG, WebP, AVIF (and JPEG 2000), our denoiser
against classical ones, on a set of images, as a Beam pipeline with a report at the end.

    latentpress evaluate --images 'CBSD68/*.png' --out out/eval \
        [--model codec-low --model codec --model codec-high] [--denoiser denoiser] \
        [--sigma 15,25,50 | --pairs 'noisy/*.png' 'clean/*.png'] \
        [--codecs jpeg,webp,avif,jpeg2000] [--codec-settings jpeg=5,10,...,90,97] \
        [--baselines bm3d,nlm,wavelet,opencv_nlm] [Beam options]

One pipeline element per image x codec x setting and per image x sigma x denoiser, so a large
evaluation set spreads over workers (Dataflow included).  Every measured point goes to
``DIR/points-codec.jsonl`` and ``DIR/points-denoise.jsonl``; the aggregation (per-dataset mean
curves, Bjøntegaard deltas, speeds), ``results.json``, the plots and ``report.md`` are made at
the end (``pipelines/evaluate_report``) from every part present in DIR, so a run with
``--no-codec`` or ``--no-denoise`` replaces its part and keeps the other.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time

import apache_beam as beam
import numpy as np
from apache_beam.io.filesystems import FileSystems

from models import registry
from pipelines import evaluate_report
from pipelines.evaluate_report import (
    NOISY,
    OURS,
    REFERENCE,
    image_name,
    our_setting,
    split_setting,
)
from pipelines.options import (
    add_ensemble_arg,
    corpus_main,
    pixel_count,
    run_pipeline,
    split_args,
    stage_parser,
    step_count,
)
from transforms import denoise_baselines, rate_distortion, records
from transforms.decode import decode_image
from transforms.patches import noise_seed

LOG = logging.getLogger(__name__)
POINTS_PREFIX = "points"
PARTS = ("codec", "denoise")  # task kinds, each with its own points file


def build_parser() -> argparse.ArgumentParser:
    parser = stage_parser(
        "latentpress evaluate",
        "Rate-distortion and denoising report against classical methods.",
    )
    # --input/-o/--output like every stage; --images/--out stay accepted (0.2's names).
    parser.add_argument(
        "--input",
        "--images",
        dest="images",
        action="append",
        default=[],
        help="Pattern of images; repeatable (needed unless --pairs alone is measured).",
    )
    parser.add_argument(
        "--pairs",
        nargs=2,
        metavar=("NOISY", "CLEAN"),
        help="Real noise: patterns of noisy photographs and of their clean references, "
        "matched by file name.  The denoising part then measures these pairs (ours, the "
        "baselines with the noise level estimated per image, and the noisy input) instead of "
        "synthetic Gaussian noise.",
    )
    parser.add_argument(
        "-o", "--output", "--out", dest="out", required=True, help="Directory for the report."
    )
    parser.add_argument(
        "--model",
        action="append",
        help="Codec to evaluate (shipped name or exported directory); repeat for the points "
        "of one rate-distortion curve. Default: the shipped codec(s).",
    )
    parser.add_argument(
        "--reference-model",
        help="Another learned codec measured beside it at the same qualities (e.g. the shipped "
        "`codec`, to judge a newly trained one): its curve is `reference`, and the report "
        "gives `latentpress vs reference` with the classical deltas.",
    )
    parser.add_argument(
        "--qualities",
        default="0,12.5,25,37.5,50,62.5,75,87.5,100",
        help="Qualities at which a variable-rate codec is measured, comma-separated.",
    )
    parser.add_argument(
        "--refine-steps",
        type=step_count,
        default=0,
        metavar="N",
        help="Refine the latents of --model's codes with N gradient steps each (the "
        "reference model is measured without): see `latentpress compress --help`.",
    )
    parser.add_argument("--denoiser", default=registry.DEFAULT_DENOISER)
    add_ensemble_arg(parser)
    parser.add_argument(
        "--sigma", default="15,25,50", help="Gaussian noise levels (8-bit scale), comma-separated."
    )
    parser.add_argument(
        "--codecs",
        default=",".join(rate_distortion.available_codecs()),
        help="Classical codecs to sweep (default: those this Pillow supports).",
    )
    parser.add_argument(
        "--codec-settings",
        action="append",
        default=[],
        metavar="CODEC=S1,S2,...",
        help="The settings to sweep for one classical codec instead of its default ones "
        "(quality, or JPEG 2000's compression ratio); repeatable.  Mind a set of decoded "
        "JPEGs (CBSD68: quality 95): JPEG near the quality they were saved at re-quantizes "
        "them onto their own grid (at it, nearly losslessly), which is not compression.",
    )
    parser.add_argument(
        "--crop-offset",
        type=pixel_count,
        default=0,
        metavar="N",
        help="Codecs: measure each image without its first N rows and columns.  On a set of "
        "decoded JPEGs (CBSD68) an odd N, e.g. 3, keeps the source's 8x8 and 2x2 blocks from "
        "lining up with a block codec's own (aligned, they lift AVIF's, WebP's and JPEG XL's "
        "top by 0.3-1.3 dB; a learned codec gains nothing from them).",
    )
    parser.add_argument(
        "--baselines",
        default=",".join(denoise_baselines.BASELINES),
        help="Classical denoisers (bm3d, nlm, wavelet, opencv_nlm); empty for none.",
    )
    parser.add_argument(
        "--float-noise",
        action="store_true",
        help="Denoising: leave the Gaussian noise unrounded and unclipped (float), as the "
        "published tables do; default: rounded to 8 bits like a saved photograph.",
    )
    parser.add_argument("--no-codec", action="store_true", help="Skip the rate-distortion part.")
    parser.add_argument("--no-denoise", action="store_true", help="Skip the denoising part.")
    return parser


def _names(text: str) -> list[str]:
    return [name.strip() for name in text.split(",") if name.strip()]


def codec_settings(flags: list[str]) -> dict[str, tuple[int, ...]]:
    """Each classical codec's settings to sweep: its defaults, or what ``--codec-settings
    CODEC=S1,S2,...`` gives (whole numbers > 0, run from low to high rate as given)."""
    settings = {codec: values for codec, (_, values) in rate_distortion.CLASSICAL.items()}
    for flag in flags:
        codec, _, values = flag.partition("=")
        codec = codec.strip()
        if codec not in rate_distortion.CLASSICAL:
            raise ValueError(f"--codec-settings {flag}: unknown codec {codec!r}")
        try:
            parsed = tuple(int(v) for v in _names(values))
        except ValueError:
            parsed = ()
        if not parsed or min(parsed) <= 0:
            raise ValueError(f"--codec-settings {flag}: give CODEC=S1,S2,... (whole numbers > 0)")
        settings[codec] = parsed
    return settings


def make_tasks(paths: list[str], args, sweeps: dict[str, tuple[int, ...]]) -> list[dict]:
    """One task per image x codec x setting (``sweeps``: each classical codec's settings)
    and per image x sigma x denoiser."""
    tasks = []
    for path in paths:
        if not args.no_codec:
            learned = [(OURS, model) for model in args.model]
            if args.reference_model:
                learned.append((REFERENCE, args.reference_model))
            for codec, model in learned:
                qualities = _names(args.qualities) if registry.is_variable_rate(model) else [None]
                for quality in qualities:
                    setting = our_setting(model, None if quality is None else float(quality))
                    tasks.append(
                        {"path": path, "kind": "codec", "codec": codec, "setting": setting}
                    )
            for codec in _names(args.codecs):
                for setting in sweeps[codec]:
                    tasks.append(
                        {"path": path, "kind": "codec", "codec": codec, "setting": setting}
                    )
        if not args.no_denoise and not args.pairs:
            for sigma in [float(s) for s in _names(args.sigma)]:
                for method in [NOISY, OURS, *_names(args.baselines)]:
                    tasks.append(
                        {"path": path, "kind": "denoise", "method": method, "sigma": sigma}
                    )
    return tasks


def pair_tasks(noisy_paths: list[str], clean_paths: list[str], baselines: list[str]) -> list:
    """Denoising tasks of real noisy/clean pairs, matched by file name."""
    clean_by_name = {image_name(path): path for path in clean_paths}
    missing = [path for path in noisy_paths if image_name(path) not in clean_by_name]
    if missing:
        raise FileNotFoundError(f"--pairs: no clean reference named like {', '.join(missing)}")
    return [
        {
            "path": clean_by_name[image_name(noisy)],
            "noisy_path": noisy,
            "kind": "denoise",
            "method": method,
            "sigma": evaluate_report.REAL_NOISE,
        }
        for noisy in noisy_paths
        for method in [NOISY, OURS, *baselines]
    ]


def estimated_sigma(noisy: np.ndarray) -> float:
    """The noise level (8-bit scale) of a photograph, as a blind user of a classical
    denoiser would set it: wavelet-based (Donoho), averaged over the channels."""
    from skimage.restoration import estimate_sigma

    return float(estimate_sigma(noisy.astype(np.float64), channel_axis=-1, average_sigmas=True))


class Evaluate(beam.DoFn):
    """One task -> one measured point (or the point with an ``error``)."""

    def __init__(
        self,
        denoiser: str,
        total: int,
        float_noise: bool = False,
        denoise_ensemble: int = 1,
        refine_steps: int = 0,
        crop_offset: int = 0,
    ):
        self._refine_steps = refine_steps
        self._crop_offset = crop_offset
        self._denoiser_name = denoiser
        self._denoise_ensemble = denoise_ensemble
        self._float_noise = float_noise
        self._total = total

    def setup(self):
        self._compressors = {}
        self._denoiser = None
        self._bar = None
        self._done = 0

    def _progress(self):
        self._done += 1
        if self._bar is None:
            from tqdm import tqdm

            self._bar = tqdm(total=self._total, desc="evaluate", unit="task", mininterval=2)
        self._bar.update(1)

    def teardown(self):
        if self._bar is not None:
            self._bar.close()

    def process(self, task: dict):
        point = {**task, "image": image_name(task["path"])}
        try:
            with FileSystems.open(task["path"]) as handle:
                clean = decode_image(handle.read())
            if task["kind"] == "codec" and self._crop_offset:
                clean = self._cropped(clean)
            point["pixels"] = int(clean.shape[0] * clean.shape[1])
            if task["kind"] == "codec":
                point.update(self._codec_point(clean, task))
            else:
                point.update(self._denoise_point(clean, task, point["image"]))
        except Exception as e:  # noqa: BLE001 - a failed point is reported, the run goes on
            LOG.warning("evaluation task failed: %s: %s", task, e)
            point["error"] = f"{type(e).__name__}: {e}"
        self._progress()
        yield point

    def _cropped(self, image: np.ndarray) -> np.ndarray:
        offset = self._crop_offset
        if min(image.shape[:2]) <= offset:
            raise ValueError(
                f"a {image.shape[1]}x{image.shape[0]} image has nothing left "
                f"after --crop-offset {offset}"
            )
        return image[offset:, offset:]

    def _codec_point(self, clean: np.ndarray, task: dict) -> dict:
        if task["codec"] in (OURS, REFERENCE):
            from models.compressor import Compressor

            model, quality = split_setting(task["setting"])
            # the reference is measured as shipped: refined latents are ours alone
            steps = self._refine_steps if task["codec"] == OURS else 0
            if (model, steps) not in self._compressors:  # loading and warm-up are not timed
                compressor = Compressor(model, steps)
                self._compressors[model, steps] = compressor
                compressor.decompress(compressor.compress(clean, quality=quality))
            compressor = self._compressors[model, steps]
            start = time.perf_counter()
            data = compressor.compress(clean, quality=quality)
            encoded = time.perf_counter()
            decoded = compressor.decompress(data)
        else:
            start = time.perf_counter()
            data = rate_distortion.encode(clean, task["codec"], task["setting"])
            encoded = time.perf_counter()
            decoded = rate_distortion.decode(data)
        finished = time.perf_counter()
        megapixels = clean.shape[0] * clean.shape[1] / 1e6
        return {
            "bytes": len(data),
            "bpp": rate_distortion.bits_per_pixel(len(data), clean),
            "psnr_db": rate_distortion.psnr(clean, decoded),
            "ms_ssim": rate_distortion.ms_ssim(clean, decoded),
            "encode_ms_per_mp": 1000 * (encoded - start) / megapixels,
            "decode_ms_per_mp": 1000 * (finished - encoded) / megapixels,
        }

    def _denoise_point(self, clean: np.ndarray, task: dict, name: str) -> dict:
        from skimage.metrics import structural_similarity

        sigma = task["sigma"]
        extra = {}
        if task.get("noisy_path"):
            with FileSystems.open(task["noisy_path"]) as handle:
                noisy = decode_image(handle.read())
            if noisy.shape != clean.shape:
                raise ValueError(f"noisy {noisy.shape} and clean {clean.shape} differ in size")
            sigma = estimated_sigma(noisy)
            extra["sigma_estimated"] = sigma
        else:
            noisy = denoise_baselines.add_noise(
                clean, sigma, noise_seed(name, sigma), rounded=not self._float_noise
            )
        start = time.perf_counter()
        if task["method"] == NOISY:
            result = noisy
        elif task["method"] == OURS:
            if self._denoiser is None:
                from models.inference import Denoiser

                self._denoiser = Denoiser(self._denoiser_name, ensemble=self._denoise_ensemble)
                self._denoiser.denoise(noisy)  # warm-up, not timed
                start = time.perf_counter()
            result = self._denoiser.denoise(noisy)
        else:
            result = denoise_baselines.BASELINES[task["method"]](noisy, sigma)
        seconds = time.perf_counter() - start
        return {
            "psnr_db": rate_distortion.psnr(clean, result),
            "ssim": float(structural_similarity(clean, result, channel_axis=2, data_range=255)),
            "seconds": seconds,
            **extra,
        }


def run(argv=None, save_main_session=True, test_pipeline=None):
    args, options = split_args(build_parser(), argv, save_main_session)
    shipped = [
        name for name in registry.ONE_RATE_QUALITIES.values() if name in registry.available()
    ]
    args.model = args.model or shipped or [registry.DEFAULT_CODEC]
    for model in args.model:
        registry.card(model, "codec")  # a missing or wrong model fails now, with its name
    if args.reference_model:
        registry.card(args.reference_model, "codec")
    registry.card(args.denoiser, "denoiser")
    sweeps = codec_settings(args.codec_settings)  # a malformed one fails now, before any work
    records.check_output_folder(args.out)
    unknown = set(_names(args.codecs)) - set(rate_distortion.CLASSICAL)
    unknown |= set(_names(args.baselines)) - set(denoise_baselines.BASELINES)
    if unknown:
        raise ValueError(f"unknown codecs or baselines: {', '.join(sorted(unknown))}")

    def matching(patterns: list[str]) -> list[str]:
        return sorted(
            {m.path for pattern in patterns for m in FileSystems.match([pattern])[0].metadata_list}
        )

    paths = matching(args.images)
    if not paths and not args.pairs:
        raise FileNotFoundError(f"no images match {args.images or '(no --input)'}")
    tasks = make_tasks(paths, args, sweeps)
    sample_noisy = None
    if args.pairs and not args.no_denoise:
        noisy_paths = matching([args.pairs[0]])
        if not noisy_paths:
            raise FileNotFoundError(f"--pairs: no noisy images match {args.pairs[0]}")
        tasks += pair_tasks(noisy_paths, matching([args.pairs[1]]), _names(args.baselines))
        sample_noisy = noisy_paths[0]
        paths = paths or sorted({task["path"] for task in tasks})
    LOG.info("evaluate: %d images, %d tasks", len(paths), len(tasks))

    pipeline = test_pipeline or beam.Pipeline(options=options)
    points = (
        pipeline
        | "Tasks" >> beam.Create(tasks)
        | "Spread" >> beam.Reshuffle()
        | "Evaluate"
        >> beam.ParDo(
            Evaluate(
                args.denoiser,
                len(tasks),
                args.float_noise,
                args.denoise_ensemble,
                args.refine_steps,
                args.crop_offset,
            )
        )
    )
    for part in PARTS:
        if part in {task["kind"] for task in tasks}:
            _ = (
                points
                | f"Only{part.title()}" >> beam.Filter(lambda p, part=part: p["kind"] == part)
                | f"Write{part.title()}Points"
                >> records.WriteJsonLines(args.out, f"{POINTS_PREFIX}-{part}", single_file=True)
            )
    result, finished = run_pipeline(pipeline, options)
    if not finished:
        return result
    points = []
    for part in PARTS:
        part_file = records.join(args.out, f"{POINTS_PREFIX}-{part}.jsonl")
        if FileSystems.exists(part_file):
            points += records.read_json_lines(part_file)
    config = {
        "images": args.images,
        "image_count": len(paths),
        "models": {m: registry.card(m).get("fingerprint", "") for m in args.model},
        "reference_model": (
            {args.reference_model: registry.card(args.reference_model).get("fingerprint", "")}
            if args.reference_model
            else {}
        ),
        "denoiser": args.denoiser,
        "denoiser_fingerprint": registry.card(args.denoiser)["fingerprint"],
        "sigmas": [float(s) for s in _names(args.sigma)],
        "float_noise": args.float_noise,
        "denoise_ensemble": args.denoise_ensemble,
        "refine_steps": args.refine_steps,
        "crop_offset": args.crop_offset,
        "pairs": args.pairs,
        "codec_settings": {
            codec: list(values) for codec, values in sweeps.items() if codec in _names(args.codecs)
        },
    }
    measured = sorted({p["path"] for p in points if "error" not in p})
    sample = measured[0] if measured else None  # the example grid needs a readable image
    if sample_noisy:  # the grid shows a real pair
        sample = next(t["path"] for t in tasks if t.get("noisy_path") == sample_noisy)
        config["sample_noisy"] = sample_noisy
    summary = evaluate_report.write_report(points, args.out, config, sample_path=sample)
    print(f"evaluate: {summary}")
    failed = [p for p in points if "error" in p]
    if failed:
        print(
            f"latentpress evaluate: {len(failed)} of {len(points)} measurements failed "
            f"(results.json lists them), e.g. {failed[0]['error']}",
            file=sys.stderr,
        )
    if not measured:
        print("latentpress evaluate: nothing could be measured", file=sys.stderr)
        return 1
    return 0


def main(argv=None) -> int:
    return corpus_main(run, argv)


if __name__ == "__main__":
    sys.exit(main())
