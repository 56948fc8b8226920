"""The flags of ``latentpress train``: what a run trains (task, model size, warm start), on what
(data, noise, crops) and how (schedule, precision, devices, checkpoints).  Their own module so
that the training code reads without 200 lines of help text in the way."""

from __future__ import annotations

import argparse

from models.denoiser import ARCHITECTURES
from models.export import CODEC, DENOISER
from models.trainer import PRECISIONS
from pipelines.options import stage_parser

TASKS = {"codec": CODEC, "denoise": DENOISER}  # the flag's words -> the export's task names


def _quality_range(text: str) -> tuple[float, float]:
    try:
        low, high = (float(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected LOW,HIGH qualities, got {text!r}") from None
    if not 0.0 <= low < high <= 100.0:
        raise argparse.ArgumentTypeError(f"expected 0 <= LOW < HIGH <= 100, got {text!r}")
    return low, high


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a number above 0, got {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = stage_parser("latentpress train", "Train the codec or the denoiser, then export it.")
    parser.add_argument("--data", required=True, help="Output directory of the prepare stage.")
    parser.add_argument(
        "--model-dir", required=True, help="Checkpoints, TensorBoard logs and the export."
    )
    parser.add_argument("--task", choices=sorted(TASKS), required=True, help="What to train.")
    parser.add_argument("--steps", type=int, default=20000, help="Total optimizer steps.")
    parser.add_argument("--batch-size", type=int, default=8, help="Global batch size.")
    parser.add_argument(
        "--learning-rate",
        type=float,
        default=1e-3,
        help="Adam learning rate at the start of a run (a resumed run keeps its own, which "
        "plateaus and non-finite losses may have lowered).",
    )
    parser.add_argument(
        "--analysis-level-gains",
        action="store_true",
        help="Variable-rate codec: per-level channel gains after each of the encoder's GDNs, "
        "so it may analyse each rate differently (the decoder is unchanged; they start at 1, "
        "so --init-from a codec without them starts as that codec).",
    )
    parser.add_argument(
        "--synthesis-level-gains",
        action="store_true",
        help="Variable-rate codec: per-level channel gains after each of the decoder's inverse "
        "GDNs, so it may synthesize each rate differently (decoder weights: a new decoder; they "
        "start at 1, so --init-from a codec without them starts as that codec).",
    )
    parser.add_argument(
        "--analysis-tail-filters",
        type=int,
        default=0,
        metavar="F",
        help="Codec: a residual block with F hidden channels closing the encoder at the "
        "latents' resolution (encoder capacity at 1/256 of the pixels' cost; 0: none).  It "
        "starts as the identity, so --init-from a codec without it starts as that codec.",
    )
    parser.add_argument(
        "--train-only",
        choices=["encoder"],
        default="",
        help="Train only the codec's encoder (g_a, h_a and its gains): the decoder and the "
        "entropy model stay bit for bit as --init-from left them.  A resumed run needs the "
        "same choice (its optimizer holds only those weights).",
    )
    parser.add_argument(
        "--context-learning-rate-scale",
        type=_positive_float,
        default=1.0,
        metavar="K",
        help="Codec with --slices or --checkerboard: train the context networks at K times "
        "the learning rate (their own Adam).  Grown into a trained codec they start at zero, "
        "and at that codec's low rate they hardly move (2e-4: last layers at |w| <= 0.09 "
        "after 4,000 steps).",
    )
    parser.add_argument(
        "--warmup-steps",
        type=int,
        default=200,
        help="Linear learning-rate warm-up over the first N steps of a fresh run.",
    )
    parser.add_argument(
        "--clip-norm",
        type=float,
        default=1.0,
        help="Clip each step's gradients to this global norm (0: no clipping).",
    )
    parser.add_argument(
        "--balance-levels",
        action="store_true",
        help="Variable-rate codec: divide each image's gradient by its own loss, so a "
        "batch's low-rate images are not swamped by its high-rate ones (whose loss is ~30x "
        "larger); the reported loss is unchanged.",
    )
    parser.add_argument(
        "--quality-per-batch",
        action="store_true",
        help="Variable-rate codec: draw one quality per batch, not one per image, so each "
        "clipped step trains one rate (in a mixed batch the highest-rate image sets the step).",
    )
    parser.add_argument(
        "--quality-range",
        type=_quality_range,
        default=(0.0, 100.0),
        metavar="LOW,HIGH",
        help="Variable-rate codec: train only qualities in [LOW, HIGH] (default 0,100), e.g. "
        "to fine-tune one end of the range, or to measure how far it gets with every step.",
    )
    parser.add_argument(
        "--quality-power",
        type=_positive_float,
        default=1.0,
        metavar="P",
        help="Variable-rate codec: draw qualities as LOW + (HIGH - LOW) * u**P for uniform u "
        "(default 1: uniform). P > 1 trains the low rates more often (2: 55%% of images in "
        "the lowest 30%% of the range), P < 1 the high ones.",
    )
    parser.add_argument(
        "--plateau-patience",
        type=int,
        default=6,
        help="Multiply the learning rate by --plateau-factor after N evaluations without a "
        "better eval loss (0: never).  Needs no final step count, so a resumed, extended "
        "run finds its learning rate where the curve left it.",
    )
    parser.add_argument("--plateau-factor", type=float, default=0.5, help="See above.")
    parser.add_argument(
        "--plateau-threshold",
        type=float,
        default=1e-3,
        help="The relative fall of the eval loss that counts as progress for the plateau rule "
        "(0.001: 0.1%%; as PyTorch's ReduceLROnPlateau threshold).  A curve whose best is "
        "beaten by a hair at every few evaluations is flat, and keeps its rate without it.",
    )
    parser.add_argument(
        "--collapse-factor",
        type=float,
        default=2.0,
        help="Roll back to the best checkpoint (checkpoints/best/) at a lower learning rate "
        "when an eval loss exceeds this many times the best one: a collapse with a finite "
        "loss (measured: a denoiser whose ReLUs died fell to the noisy input's PSNR at step "
        "10,600 and its last good checkpoint had been rotated out).  0: never.",
    )
    parser.add_argument(
        "--ema-decay",
        type=float,
        default=0.0,
        help="Evaluate and export an exponential moving average of the weights with this "
        "decay (e.g. 0.999: about the last 1,000 steps), which smooths out the noise of the "
        "last steps; 0: the weights as trained.  May be switched on when resuming.",
    )
    parser.add_argument(
        "--min-learning-rate",
        type=float,
        default=1e-5,
        help="Floor for plateau cuts; a run that keeps turning non-finite below it stops.",
    )
    parser.add_argument(
        "--reset-learning-rate",
        type=float,
        default=None,
        help="On resuming, set the learning rate to this and forget the plateau state (best "
        "eval loss, evaluations since): for a run whose eval changed or whose rate was cut "
        "too early.  No effect on a fresh run (use --learning-rate).",
    )
    parser.add_argument(
        "--init-from",
        default=None,
        help="Warm start: copy the weights of a shipped model (name) or an exported model "
        "directory into a fresh run (the optimizer starts anew).  Ignored when the run "
        "resumes from its own checkpoints.  The model card adds up steps and CPU hours.",
    )
    parser.add_argument(
        "--train-noise",
        default=None,
        help="Denoiser: draw fresh noise on the clean patches at every step from this noise "
        "SPEC (e.g. gaussian:0-55), seeded from (--seed, example index); the stored noisy "
        "patches remain the eval set.  Default: train on the stored noisy patches.",
    )
    parser.add_argument(
        "--train-float-noise",
        type=float,
        default=0.0,
        help="Denoiser, with --train-noise: the share (0-1) of training patches whose noise is "
        "left unrounded and unclipped, the float noise published results use (evaluate "
        "--float-noise); the rest is rounded to 8 bits, as saved photographs are.",
    )
    parser.add_argument(
        "--rate-shapes",
        action="store_true",
        help="Codec training (no context): each image's rate is what the cheapest of the "
        "code file's coding shapes (the Gaussian or Student's t) would code its latents in, "
        "as the encoder chooses one per file; without, the Gaussian's.",
    )
    parser.add_argument(
        "--synthesis-quantizer",
        choices=["straight-through", "noise"],
        default="straight-through",
        help="Codec training: the synthesis decodes rounded latents with a straight-through "
        "gradient, or the noisy latents the rate is measured on.",
    )
    parser.add_argument(
        "--lmbda",
        type=float,
        default=0.01,
        help="Codec rate-distortion trade-off: loss = bpp + lmbda * MSE (8-bit scale).",
    )
    parser.add_argument(
        "--lmbdas",
        default=None,
        help="Variable-rate codec: comma-separated trade-offs of its rate levels, lowest "
        "first (e.g. 0.0025,0.005,0.01,0.02,0.04); --quality 0-100 then spans them.  "
        "Training draws a quality per image.  Overrides --lmbda.",
    )
    parser.add_argument(
        "--num-filters", type=int, default=64, help="Codec N (analysis and synthesis)."
    )
    parser.add_argument("--latent-filters", type=int, default=96, help="Codec M.")
    parser.add_argument(
        "--analysis-entry-filters",
        type=int,
        default=0,
        metavar="C",
        help="Channels of the codec encoder's first stage (0: N).  It is a third of the "
        "encoder's time at N=112; with --init-from a codec of more, the C channels its next "
        "layer relies on most are kept (train them with --train-only encoder).",
    )
    parser.add_argument(
        "--mean-scale",
        action="store_true",
        help="The codec's hyperprior predicts the latents' means too (Minnen et al. 2018); "
        "with --init-from a scale-only codec, the means start at zero.",
    )
    parser.add_argument(
        "--revive-latents",
        action="store_true",
        help="With --init-from a codec: latent channels that code nothing (0 on every "
        "training patch at the top rate) are revived by splitting the busiest live ones "
        "into them (a copy of the encoder's filter, each read with half the decoder's "
        "weights: nearly the same image, more bits at first, and a gradient through both).",
    )
    parser.add_argument(
        "--ramp-new-latents",
        type=int,
        default=0,
        metavar="STEPS",
        help="With --init-from a codec of fewer latents (--latent-filters grows it): the new "
        "latent channels' bits count in the loss by step/STEPS until STEPS, then fully, so "
        "they learn to carry something before the rate can silence them (0: from the start).",
    )
    parser.add_argument(
        "--slices",
        type=int,
        default=0,
        help="Channel context (Minnen & Singh 2020): code the latents in this many slices, "
        "each slice's means and scales refined from the slices before it, plus a latent "
        "residual prediction.  Needs --mean-scale; 0: off.  With --init-from a codec "
        "without slices, the context starts refining nothing (same code, same image).",
    )
    parser.add_argument(
        "--checkerboard",
        action="store_true",
        help="Spatial context in two passes (He et al. 2021): the latents where row + column "
        "is even are coded from the hyperprior, the others' means and scales refined from "
        "those decoded around them.  Needs --mean-scale, not with --slices.  With --init-from "
        "a codec without it, the context starts refining nothing (same code, same image).",
    )
    parser.add_argument(
        "--level-scale-offsets",
        action="store_true",
        help="Variable-rate codec: a learned offset per rate level on every latent's scale "
        "(h_s does not know the rate; the shipped codec's scales were 28%% too small at "
        "quality 100).  With --init-from a codec without them, they start calibrated: per "
        "level, the offset that codes a training batch in the fewest bits.",
    )
    parser.add_argument(
        "--kernel-size",
        type=int,
        default=5,
        choices=(3, 5),
        help="Codec: kernel side of the analysis and synthesis convolutions (3: 2.8x cheaper "
        "per channel pair, so wider transforms at the same speed).",
    )
    parser.add_argument(
        "--coarse-kernel-size",
        type=int,
        default=0,
        choices=(0, 3, 5),
        help="Codec: kernel side of the two convolutions next to the latents (the analysis' "
        "last, the synthesis' first; 0: --kernel-size).  5 with --kernel-size 3 widens what "
        "one latent reaches in the decoded image from 31 to 47 pixels, at low resolution "
        "where it costs little (benchmarks.codec_speed).  "
        "With --init-from a codec of smaller kernels there, they start as its kernels in "
        "the centre (the same image at first).",
    )
    parser.add_argument(
        "--fine-kernel-size",
        type=int,
        default=0,
        choices=(0, 3, 5),
        help="Codec: kernel side of the two convolutions next to the image (the analysis' "
        "first, the synthesis' last; 0: --kernel-size).  5 with --kernel-size 3 lets each "
        "decoded pixel draw on more of the half-resolution features; these layers have 3 "
        "image channels, so it costs little (benchmarks.codec_speed).  With --init-from a "
        "codec of smaller kernels there, they start as its kernels in the centre (the same "
        "image at first).",
    )
    parser.add_argument(
        "--hyper-signs",
        action="store_true",
        help="Codec, with --mean-scale: the hyper-analysis reads the latents with their signs "
        "beside their magnitudes, so the hyperprior can predict the signs of the means "
        "(Minnen et al. 2018 feed it y).  With --init-from a codec without, it starts "
        "blind to the signs (the same code at first).",
    )
    parser.add_argument(
        "--hyper-filters",
        type=int,
        default=0,
        help="Channels of the codec's hyper transforms and side information (default: N).",
    )
    parser.add_argument("--depth", type=int, default=10, help="Denoiser convolution layers.")
    parser.add_argument("--filters", type=int, default=48, help="Denoiser channels.")
    parser.add_argument(
        "--unshuffle",
        type=int,
        default=1,
        help="Denoiser: pixel-unshuffle factor (2: FFDNet-style, at half resolution).",
    )
    parser.add_argument(
        "--architecture",
        choices=ARCHITECTURES,
        default="dncnn",
        help="Denoiser: dncnn (--depth plain layers) or unet (residual blocks at --levels "
        "resolutions, --filters channels at the top, doubled per level down).",
    )
    parser.add_argument("--levels", type=int, default=2, help="Denoiser unet: resolutions.")
    parser.add_argument(
        "--blocks", type=int, default=2, help="Denoiser unet: residual blocks per level and side."
    )
    parser.add_argument("--crop", type=int, default=0, help="Random crop of each patch (0: none).")
    parser.add_argument(
        "--checkpoint-every", type=int, default=200, help="Save a checkpoint every N steps."
    )
    parser.add_argument("--eval-every", type=int, default=500, help="Evaluate every N steps.")
    parser.add_argument("--eval-batches", type=int, default=20, help="Batches per evaluation.")
    parser.add_argument(
        "--cpu-replicas",
        type=int,
        default=0,
        help="Split the CPU into N logical devices under MirroredStrategy (testing the "
        "multi-device path without GPUs).",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=0,
        help="TensorFlow threads for the model's ops (0: all cores).  One process per core "
        "with --threads 1 trains more steps per CPU-second than one process on all.",
    )
    parser.add_argument(
        "--precision",
        choices=["auto", *PRECISIONS],
        default="auto",
        help="Compute precision: auto (mixed float16 on GPU, float32 on CPU), float32, or "
        "mixed bfloat16/float16 (float32 variables; exports serve in float32).  bfloat16 "
        "trains ~1.9x faster on CPUs with AVX512_BF16 or AMX.",
    )
    parser.add_argument("--no-progress", action="store_true", help="Log lines, not a bar.")
    parser.add_argument(
        "--export-only",
        action="store_true",
        help="Export the latest checkpoint without training (e.g. while the run goes on in "
        "another process, to evaluate or ship it).",
    )
    parser.add_argument("--seed", type=int, default=0, help="Seed of initialization and shuffle.")
    return parser
