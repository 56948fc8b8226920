"""Command-line plumbing shared by the pipelines: our flags first, Beam's options after."""

from __future__ import annotations

import argparse
import logging
import os
import sys

from apache_beam.options.pipeline_options import PipelineOptions, SetupOptions, StandardOptions

from models import registry


class _HelpWithDefaults(argparse.HelpFormatter):
    """Shows each flag's default in --help, except where there is none to show (None, a
    switch that is off) or the help already says it."""

    def _get_help_string(self, action):
        text = action.help or ""
        default = action.default
        if (
            "default" in text
            or any(default is nothing for nothing in (None, False, argparse.SUPPRESS))
            or not action.option_strings
        ):
            return text
        shown = ",".join(map(str, default)) if isinstance(default, list) else default
        return f"{text} (default: {shown})"


def stage_parser(prog: str, description: str) -> argparse.ArgumentParser:
    """The argument parser of a ``latentpress`` stage: one look for every --help."""
    return argparse.ArgumentParser(
        prog=prog, description=description, formatter_class=_HelpWithDefaults
    )


def add_corpus_args(
    parser: argparse.ArgumentParser, what: str = "images", output: bool = True
) -> None:
    """--input (repeatable, defaults to the embedded samples), --output and --max-pixels."""

    parser.add_argument(
        "--input",
        action="append",
        help=f"A file, glob or gs:// pattern of {what}; repeat for several. '**' matches across "
        "folders. Defaults to the embedded sample photographs.",
    )
    if output:
        parser.add_argument(
            "-o", "--output", required=True, help="Directory (local or gs://) to write."
        )
    add_max_pixels_arg(parser)
    add_progress_arg(parser)
    parser.add_argument(
        "--strict",
        action="store_true",
        help="Exit non-zero when any input failed or any pattern matched nothing (for "
        "schedulers that should alert); by default only when nothing matched or all failed.",
    )


def run_outcome(
    stage: str, summary: dict, done: int, dead_letters: str, strict: bool = False
) -> int:
    """The exit code of a corpus run, with one line on stderr for what went wrong.

    Non-zero when no input matched, or every input failed (``done`` counts the inputs that
    ended well, e.g. written or already archived); with ``strict`` also on any failure or
    unmatched pattern.  Failures are counted by reason, with where their records are.
    """
    matched, failed = summary["matched"], summary["failed"]
    unmatched = summary.get("patterns_unmatched") or []
    reasons = ", ".join(f"{n} {r}" for r, n in sorted(summary.get("failed_by_reason", {}).items()))
    if unmatched:
        print(f"latentpress {stage}: nothing matched {', '.join(unmatched)}", file=sys.stderr)
    if matched == 0:
        print(f"latentpress {stage}: no input matched; nothing was done", file=sys.stderr)
        return 1
    if failed:
        print(
            f"latentpress {stage}: {failed} of {matched} inputs failed ({reasons}); "
            f"dead letters: {dead_letters}",
            file=sys.stderr,
        )
    if failed and not done:
        return 1
    return 1 if strict and (failed or unmatched) else 0


def corpus_main(run, argv=None) -> int:
    """The console entry of a corpus stage (prepare, apply, evaluate, archive): logging set up,
    ``run(argv)``'s exit code, or 0 for a job only launched (it has no outcome yet)."""
    configure_logging()
    outcome = run(argv)
    return outcome if isinstance(outcome, int) else 0


class Refused(Exception):
    """An output a file-by-file command must not write; the message says why."""


def each_file(stage: str, pairs, work, errors: tuple) -> int:
    """The file loop of the file-by-file commands (compress, decompress): ``work(path, name)``
    yields one line per output it wrote; ``Refused`` or an error of ``errors`` is one line on
    stderr naming the file, and the other files still run.  The exit code: 1 if any failed."""
    failed = 0
    for path, name in pairs:
        try:
            for line in work(path, name):
                print(line)
        except (Refused, *errors) as e:
            where = "" if isinstance(e, Refused) else f"{path}: "
            print(f"latentpress {stage}: {where}{e}", file=sys.stderr)
            failed += 1
    return 1 if failed else 0


def add_progress_arg(parser: argparse.ArgumentParser) -> None:
    from transforms.progress import DEFAULT_EVERY_SECONDS

    parser.add_argument(
        "--progress-every",
        type=float,
        default=DEFAULT_EVERY_SECONDS,
        metavar="SECONDS",
        help="How often the log shows the counts done and failed and the rate while it runs.",
    )


def expected_inputs(patterns: list[str], options: PipelineOptions) -> int | None:
    """The progress lines' total: the patterns' matches listed on the driver, except on
    Dataflow, where a listing of a whole bucket is not the launcher's job (its console counts)."""
    from transforms.progress import count_inputs

    return None if is_dataflow(options) else count_inputs(patterns)


def add_max_pixels_arg(parser: argparse.ArgumentParser) -> None:
    from transforms.decode import DEFAULT_MAX_PIXELS

    parser.add_argument(
        "--max-pixels",
        type=int,
        default=DEFAULT_MAX_PIXELS,
        help="Images with more pixels are refused (reason too_many_pixels) before decoding.",
    )


def add_carry_args(parser: argparse.ArgumentParser) -> None:
    """What travels with each image besides its pixels (``transforms.metadata``)."""
    from transforms import metadata

    parser.add_argument(
        "--strip-metadata",
        action="store_true",
        help="Do not carry EXIF, XMP or the ICC profile (e.g. GPS and names must not be "
        "kept); the manifest says so.",
    )
    parser.add_argument(
        "--alpha",
        choices=metadata.ALPHA_CHOICES,
        default=metadata.KEEP,
        help="Transparency: kept losslessly in the code file, or dropped (composited over "
        "white, with a note).",
    )
    parser.add_argument(
        "--frames",
        choices=metadata.FRAME_CHOICES,
        default=metadata.ALL_FRAMES,
        help="Multi-frame inputs (TIFF pages, GIF/WebP frames): every frame as its own image "
        "(NAME.frame-N), the first only (noted), or refuse the file (reason multi_frame).",
    )
    parser.add_argument(
        "--strict-depth",
        action="store_true",
        help="Refuse inputs with more than 8 bits per sample (reason more_than_8_bits) "
        "instead of coding them at 8 bits with a note.",
    )


def decode_options(args: argparse.Namespace):
    from transforms.decode import DecodeOptions

    return DecodeOptions(args.frames, args.strip_metadata, args.alpha, args.strict_depth)


def add_codec_args(parser: argparse.ArgumentParser) -> None:
    """--model and --quality: which codec a stage uses, at which rate (see ``resolve_codec``)."""
    parser.add_argument(
        "--model",
        help="Codec: shipped model name or exported model directory (default: the shipped codec).",
    )
    rate = parser.add_mutually_exclusive_group()
    rate.add_argument(
        "--quality",
        help="Rate: low, medium (default), high, or a number from 0 (smallest files) to 100 "
        "(best quality) for a variable-rate codec.",
    )
    rate.add_argument(
        "--target-psnr",
        type=float,
        metavar="DB",
        help="Variable-rate codec: per image, the lowest quality whose decoded image reaches "
        "this PSNR (several trial encodings per image).",
    )
    rate.add_argument(
        "--target-bpp",
        type=float,
        metavar="BPP",
        help="Variable-rate codec: per image, the highest quality whose code file stays "
        "within this many bits per pixel.",
    )
    parser.add_argument(
        "--refine-steps",
        type=step_count,
        default=0,
        metavar="N",
        help="Refine each image's latents with N gradient steps against the decoder before "
        "coding (files and decoder unchanged): higher quality at about the same size, most at "
        "the top qualities (CBSD68, codec-high-rate, 20 steps: +1.3 dB at quality 100), for "
        "about 1.3N-1.5N times the unrefined encoding time. Default 0.",
    )


def _whole_number(text: str, unit: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text}: a number of {unit}, 0 or more")
    return value


def step_count(text: str) -> int:
    """argparse type of --refine-steps: a whole number, 0 or more."""
    return _whole_number(text, "steps")


def pixel_count(text: str) -> int:
    """argparse type of evaluate's --crop-offset: a whole number of pixels, 0 or more."""
    return _whole_number(text, "pixels")


def resolve_codec(args: argparse.Namespace) -> tuple[str, float | None]:
    """(codec name or directory, quality) from --model/--quality.

    A variable-rate codec gets a number in [0, 100] (``low|medium|high`` are named points on
    that scale).  A one-rate codec has no quality; ``--quality low|high`` without ``--model``
    then picks the shipped one-rate codec of that rate, if the release has one.  Raises
    ValueError (a one-line message) for a quality the codec cannot give.
    """
    model = args.model or registry.DEFAULT_CODEC
    registry.card(model, "codec")  # `--model denoiser` is a one-line error here
    text = args.quality
    if getattr(args, "target_psnr", None) is not None or getattr(args, "target_bpp", None):
        if not registry.is_variable_rate(model):
            raise ValueError(f"--target-psnr/--target-bpp: codec {model!r} has a single rate")
        return model, None
    if registry.is_variable_rate(model):
        return model, registry.parse_quality(text or "medium")
    if text is None or text == "medium" and not args.model:
        return model, None
    if not args.model and text in registry.ONE_RATE_QUALITIES:
        return registry.ONE_RATE_QUALITIES[text], None
    raise ValueError(f"--quality {text}: codec {model!r} has a single rate")


def add_model_args(parser: argparse.ArgumentParser) -> None:
    """The flags of the apply and archive stages that choose and run the models."""
    from transforms.apply_models import BOTH, MODES

    parser.add_argument(
        "--mode",
        choices=MODES,
        default=BOTH,
        help="What to do per image: compress (a code file), denoise (a cleaned PNG), or both "
        "(a code file of the cleaned image, which decodes to it; default).",
    )
    parser.add_argument(
        "--keep-cleaned",
        action="store_true",
        help="With --mode both: also keep each cleaned image as a PNG (about 18x the code "
        "file's size; the code file alone decodes to the cleaned image).",
    )
    add_codec_args(parser)
    parser.add_argument(
        "--denoiser",
        default=registry.DEFAULT_DENOISER,
        help="Denoiser: shipped model name or exported directory (default: %(default)s).",
    )
    parser.add_argument(
        "--inference-threads",
        type=int,
        default=0,
        help="TensorFlow threads per worker process (0: TensorFlow's default). With one "
        "worker per core, 1 scales best.",
    )
    parser.add_argument(
        "--gpu-memory-mb",
        type=int,
        default=0,
        help="GPU memory per worker process in MB (0: grow on demand). Dataflow runs one "
        "process per vCPU, all sharing the VM's GPU.",
    )


def add_ensemble_arg(parser: argparse.ArgumentParser) -> None:
    from models.inference import ENSEMBLE_SIZES

    parser.add_argument(
        "--denoise-ensemble",
        type=int,
        choices=ENSEMBLE_SIZES,
        default=1,
        help="Denoise each image as the mean of this many turned and mirrored views (a "
        "geometric self-ensemble): a little more PSNR for that many times the denoising time.",
    )
    parser.add_argument(
        "--denoise-strength",
        type=_share,
        default=1.0,
        help="Share of the noise the denoiser finds that it removes (0-1; default 1: all of "
        "it). The denoiser is blind either way; below 1 keeps some grain.",
    )


def _share(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"{text}: a share from 0 to 1")
    return value


def make_handler(args):
    """The RunInference handler of the apply and archive stages, from their flags."""
    from transforms.apply_models import LatentpressModelHandler

    return LatentpressModelHandler(
        args.mode,
        args.model,
        args.denoiser,
        args.inference_threads,
        args.gpu_memory_mb,
        args.quality,
        rate_target(args),
        getattr(args, "denoise_ensemble", 1),  # apply's flags; the archive runs one full pass
        getattr(args, "denoise_strength", 1.0),
        args.keep_cleaned,
        args.refine_steps,
    )


def missed_targets_note(count: int, model: str | None) -> str:
    """What a user reads when ``count`` images missed their --target-psnr/--target-bpp, and
    which shipped codec reaches further than the default where that is the one used."""
    from models import registry

    note = (
        f"{count} image{'s' if count != 1 else ''} missed the rate target: coded at the nearest "
        "end of the codec's range (quality 100 for --target-psnr, 0 for --target-bpp)"
    )
    default = (model or registry.DEFAULT_CODEC) == registry.DEFAULT_CODEC
    if default and registry.HIGH_RATE_CODEC in registry.available():
        note += f"; --model {registry.HIGH_RATE_CODEC} reaches higher PSNRs and lower rates"
        spans = [_measured_span(name) for name in (registry.HIGH_RATE_CODEC, model or "codec")]
        if all(spans):
            note += f" ({spans[0]}, against {spans[1]}, measured on their model cards)"
    return note


def _measured_span(name: str) -> str:
    """ "bpp and dB from quality 0 to 100" of a shipped codec's first measured curve, or ""."""
    from models import registry

    curves = [m["curve"] for m in registry.card(name).get("measured", []) if m.get("curve")]
    if not curves:
        return ""
    bpp, psnr = [p["bpp"] for p in curves[0]], [p["psnr_db"] for p in curves[0]]
    return f"{min(bpp):.2f}-{max(bpp):.2f} bpp, {min(psnr):.1f}-{max(psnr):.1f} dB"


def rate_target(args) -> dict | None:
    """{"target_psnr": dB} or {"target_bpp": bpp} from the flags, or None."""
    if args.target_psnr is not None:
        return {"target_psnr": args.target_psnr}
    if args.target_bpp is not None:
        return {"target_bpp": args.target_bpp}
    return None


def fingerprints(args) -> tuple[str, str]:
    """The fingerprints of the models the run uses ("" for one it does not)."""
    from transforms.apply_models import BOTH, COMPRESS, DENOISE

    codec = denoiser = ""
    if args.mode in (COMPRESS, BOTH):
        codec = registry.card(args.model, "codec")["fingerprint"]
    if args.mode in (DENOISE, BOTH):
        denoiser = registry.card(args.denoiser, "denoiser")["fingerprint"]
    return codec, denoiser


def split_args(
    parser: argparse.ArgumentParser, argv: list[str] | None, save_main_session: bool = True
) -> tuple[argparse.Namespace, PipelineOptions]:
    """Parses the stage's own flags; everything else becomes Beam pipeline options.

    Our flags may also be spelled with underscores (``--keep_runs=3``), as Beam's are and as
    Dataflow Flex Templates pass their parameters.
    """
    known, beam_args = parser.parse_known_args(_dashed_flags(parser, argv))
    unknown = _not_beam_options(beam_args)
    if unknown:
        parser.error(
            f"unrecognized arguments: {' '.join(unknown)} (neither a flag of this stage nor a "
            "Beam pipeline option)"
        )
    options = PipelineOptions(beam_args)
    options.view_as(SetupOptions).save_main_session = save_main_session
    if not options.view_as(StandardOptions).runner:
        options.view_as(StandardOptions).runner = "DirectRunner"
    return known, options


def _not_beam_options(args: list[str]) -> list[str]:
    """The arguments Beam would discard with a warning: typos, stray words."""
    flags = PipelineOptions(args)
    known = set(flags.get_all_options())
    retained = flags.get_all_options(retain_unknown_options=True)
    unknown = [f"--{name}" for name in retained if name not in known]
    strays = [a for a in args if not a.startswith("-") and not _is_flag_value(args, a)]
    return unknown + strays


def _is_flag_value(args: list[str], arg: str) -> bool:
    """Whether ``arg`` is the value of the flag before it (``--runner DirectRunner``)."""
    index = args.index(arg)
    return index > 0 and args[index - 1].startswith("--") and "=" not in args[index - 1]


def _dashed_flags(parser: argparse.ArgumentParser, argv: list[str] | None) -> list[str] | None:
    if argv is None:
        argv = sys.argv[1:]
    """Our flags as the Flex Template launcher passes them (``--name_with_underscores=v``)
    turned into their dashed names; a switch given a value (``--switch=true``) becomes the
    switch or nothing, so a switch stays a plain switch on the command line."""
    ours = parser._option_string_actions
    dashed = []
    for arg in argv:
        name, equals, value = arg.partition("=")
        alias = "--" + name[2:].replace("_", "-")
        if not (name.startswith("--") and alias in ours):
            dashed.append(arg)
        elif equals and ours[alias].nargs == 0:
            try:
                dashed.extend([alias] if truthy(value) else [])
            except argparse.ArgumentTypeError as e:
                parser.error(f"{alias}: {e}")
        else:
            dashed.append(alias + equals + value)
    return dashed


def truthy(value: str) -> bool:
    """argparse type for flags that may also be given a value (``--flag=true``)."""
    if value.lower() in ("1", "true", "yes"):
        return True
    if value.lower() in ("0", "false", "no", ""):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, not {value!r}")


class _DropBeamChatter(logging.Filter):
    """Beam warnings that are no problem of the user's run and say nothing they can act on:
    RunInference cannot measure memory on this platform (twice per run), and a dead-letter
    file skipped because the run had no failures has "no shards to finalize"."""

    NOT_FOR_USERS = ("Resource module is not available", "No shards found to finalize")

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(self.NOT_FOR_USERS)


def configure_logging() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    for handler in logging.getLogger().handlers:
        handler.addFilter(_DropBeamChatter())
    # Our progress lines at INFO, the libraries' chatter only from WARNING.
    logging.getLogger().setLevel(logging.WARNING)
    for name in ("latentpress", "pipelines", "transforms", "models"):
        logging.getLogger(name).setLevel(logging.INFO)


def is_dataflow(options: PipelineOptions) -> bool:
    return "dataflow" in (options.view_as(StandardOptions).runner or "").lower()


def only_launches(options: PipelineOptions) -> bool:
    """True when running only builds or submits a job, so the caller must not wait for it:
    a Dataflow dry run, a classic template, or a Flex Template launcher (whose container sets
    FLEX_TEMPLATE_PYTHON_PY_FILE)."""
    from apache_beam.options.pipeline_options import GoogleCloudOptions, TestOptions

    return is_dataflow(options) and bool(
        options.view_as(TestOptions).dry_run
        or options.view_as(GoogleCloudOptions).template_location
        or os.environ.get("FLEX_TEMPLATE_PYTHON_PY_FILE")
    )


def run_pipeline(pipeline, options: PipelineOptions):
    """Runs the pipeline; waits for it unless it only launches. Returns (result, finished)."""
    result = pipeline.run()
    if only_launches(options):
        job = getattr(result, "job", None)
        name = getattr(getattr(job, "proto", None), "name", "") if job else ""
        logging.getLogger("pipelines").info("launched Dataflow job %s", name or "(dry run)")
        return result, False
    result.wait_until_finish()
    return result, True


def start_model_stage(parser: argparse.ArgumentParser, argv, save_main_session: bool):
    """How apply and archive start: their flags and the Beam options, the codec setting
    resolved, the embedded sample photographs when no --input is given, and both models'
    fingerprints (which fails early when a model is missing).
    Returns (args, options, codec_fingerprint, denoiser_fingerprint)."""
    args, options = split_args(parser, argv, save_main_session)
    args.model, args.quality = resolve_codec(args)
    if not args.input:
        from latentpress.samples import sample_paths

        args.input = sample_paths()
    return args, options, *fingerprints(args)
