"""Two training runs' rate-distortion curves on their eval patches, and the BD-rate between them.

    python -m benchmarks.compare_runs RUN_A[@STEP] RUN_B[@STEP] [--plot ab.png]
    python -m benchmarks.compare_runs RUN --history
    python -m benchmarks.compare_runs codec-high-rate RUN[@STEP]   # against what is shipped
    python -m benchmarks.compare_runs codec-high-rate RUN --history  # ...at every evaluation

How recipes are judged while they train (the A/B of a learning rate, a grown shape, a loss): a
variable-rate codec's run evaluates every level on the same eval patches (``train
--eval-every``), which gives one rate-distortion curve per evaluation; the Bjøntegaard delta of
B's curve against A's (``transforms.rate_distortion``) says how many fewer bits B needs at equal
PSNR, over the whole curve and over its lower and upper halves (a change often moves one end).
Without ``@STEP`` a run's latest evaluation is used.  ``--history`` prints one run's evaluations:
loss, the ends and middle of its curve, the unquantized ceiling and the dead latents; with two
(or a model and a run), B against A at every step, and the pace of the last evaluations (BD-rate
per 1,000 steps, a least-squares line): whether a line still improves or has reached a plateau.

Read from the run's TensorBoard logs (``RUN/logs``, written by ``latentpress train``); a step
evaluated twice (a resumed run) keeps its last value.  A or B may be a shipped model's name
or an export folder instead: its card's ``eval``, the evaluation it was exported with, at its
cumulative steps; it compares only with runs evaluated on the same eval split (the card's
``training_data`` names the data, printed beside it).  A warm-started run's steps count from 0;
"in all" adds the steps of what it began from (``lineage.json``).  Compare runs at equal steps
in all, or at equal CPU time when their step costs differ.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
from collections import defaultdict

import numpy as np

from transforms.rate_distortion import bd_quality, bd_rate

EVAL_PREFIX = "eval/"


def eval_history(run_dir: str) -> dict[int, dict[str, float]]:
    """step -> the eval scalars logged at that step (names without ``eval/``)."""
    import tensorflow as tf
    from tensorflow.core.util import event_pb2

    paths = sorted(glob.glob(os.path.join(run_dir, "logs", "events.out.tfevents.*")))
    if not paths:
        raise FileNotFoundError(f"{run_dir}: no training logs (logs/events.out.tfevents.*)")
    history: dict[int, dict[str, float]] = defaultdict(dict)
    for path in paths:  # in the order written: a later file's value of a step wins
        for record in tf.data.TFRecordDataset(path):
            event = event_pb2.Event.FromString(record.numpy())
            for value in event.summary.value:
                if value.tag.startswith(EVAL_PREFIX):
                    number = tf.make_ndarray(value.tensor) if value.HasField("tensor") else None
                    scalar = float(number) if number is not None else float(value.simple_value)
                    history[int(event.step)][value.tag[len(EVAL_PREFIX) :]] = scalar
    if not history:
        raise ValueError(f"{run_dir}: no evaluations logged yet")
    return dict(sorted(history.items()))


def curve(metrics: dict[str, float]) -> list[tuple[float, float, float]]:
    """(quality, bpp, PSNR) of every level evaluated, by quality."""
    qualities = sorted(
        float(name[len("psnr_q") :]) for name in metrics if name.startswith("psnr_q")
    )
    if not qualities:
        raise ValueError("this evaluation has no per-level curve (not a variable-rate codec)")
    return [(q, metrics[f"bpp_q{q:g}"], metrics[f"psnr_q{q:g}"]) for q in qualities]


def deltas(reference: list, test: list) -> dict[str, float | None]:
    """BD-rate (%) and BD-PSNR (dB) of ``test`` against ``reference``, over the whole curves
    and their lower and upper halves (each half includes the middle level)."""
    a = [(bpp, psnr) for _, bpp, psnr in reference]
    b = [(bpp, psnr) for _, bpp, psnr in test]
    mid_a, mid_b = len(a) // 2, len(b) // 2
    return {
        "bd_rate_pct": bd_rate(a, b),
        "bd_psnr_db": bd_quality(a, b),
        "lower_half_bd_rate_pct": bd_rate(a[: mid_a + 1], b[: mid_b + 1]),
        "upper_half_bd_rate_pct": bd_rate(a[mid_a:], b[mid_b:]),
    }


def steps_before(run_dir: str) -> int:
    """Steps of the runs a warm-started run began from (its ``lineage.json``; 0 if none): a
    grown codec's step 1,000 after 65,500 steps of its source is step 66,500 of the line."""
    path = os.path.join(run_dir, "lineage.json")
    if not os.path.exists(path):
        return 0
    with open(path) as handle:
        return int(json.load(handle).get("steps", 0))


def run_at(text: str) -> tuple[str, int | None]:
    run, at, step = text.rpartition("@")
    return (run, int(step)) if at and step.isdigit() else (text, None)


def model_evaluation(name_or_path: str) -> tuple[int, dict[str, float], str] | None:
    """(cumulative steps, eval, data it was evaluated on) of a shipped or exported model's
    card; None if ``name_or_path`` is not a model but a run."""
    from models import registry

    if os.path.isdir(os.path.join(name_or_path, "logs")):
        return None
    try:
        card = registry.card(name_or_path)
    except FileNotFoundError:
        return None
    if not card.get("eval"):
        raise ValueError(f"{name_or_path}: its model card records no evaluation")
    steps = int(card.get("cumulative_steps") or card.get("steps") or 0)
    return steps, card["eval"], (card.get("training_data") or {}).get("dir", "unknown data")


def evaluation(run_dir: str, step: int | None) -> tuple[int, dict[str, float], bool]:
    """(step, its eval, whether the run's bits are measured under the coding shapes)."""
    model = model_evaluation(run_dir)
    if model is not None:
        if step not in (None, model[0]):
            raise ValueError(f"{run_dir} is a model, evaluated at step {model[0]} only")
        return model[0], model[1], under_shapes([model[1]])
    history = eval_history(run_dir)
    step = max(history) if step is None else step
    if step not in history:
        raise ValueError(f"{run_dir}: no evaluation at step {step} (evaluated: {list(history)})")
    return step, history[step], under_shapes(history.values())


def under_shapes(evaluations) -> bool:
    """Whether a run's or model's bits are measured under the cheapest coding shape (trained
    with --rate-shapes): a run is measured one way throughout, and its evaluations logged
    before 2026-12-08 do not say."""
    return any(metrics.get("rate_shapes", 0.0) for metrics in evaluations)


def same_rate_measure(shapes_a: bool, shapes_b: bool) -> None:
    """Refuse curves whose bits are measured differently: a run trained with --rate-shapes
    evaluates each patch's bits under its cheapest coding shape, others under the Gaussian
    (several percent fewer bits at the top for the same codec)."""
    if shapes_a != shapes_b:
        measure = {True: "the cheapest coding shape", False: "the Gaussian"}
        raise ValueError(
            f"A's bits are measured under {measure[shapes_a]}, B's under {measure[shapes_b]}: "
            "compare a run trained with --rate-shapes with one measured alike (e.g. an export "
            "of the other with --rate-shapes), or on real files (latentpress evaluate "
            "--reference-model)"
        )


def _fmt(value, unit: str) -> str:
    return "n/a (no overlap)" if value is None else f"{value:+.2f}{unit}"


def _summary(metrics: dict[str, float]) -> str:
    points = curve(metrics)
    ends = [points[0], points[len(points) // 2], points[-1]]
    text = "  ".join(f"q{q:g} {bpp:.3f}/{psnr:.2f}" for q, bpp, psnr in ends)
    ceiling = metrics.get("psnr_unquantized")
    text += f"  ceiling {ceiling:.2f}" if ceiling is not None else ""
    text += f"  loss {metrics['loss']:.4f}"
    if "dead_latents" in metrics:
        text += f"  dead latents {int(metrics['dead_latents'])}"
    return text


def plot(curves: dict[str, list], path: str) -> None:
    """The runs' eval curves (bpp, PSNR) in one rate-distortion plot, written to ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(7, 5))
    for label, points in curves.items():
        axes.plot([p[1] for p in points], [p[2] for p in points], marker="o", label=label)
    axes.set_xlabel("bits per pixel (eval patches, the model's estimate)")
    axes.set_ylabel("PSNR dB")
    axes.grid(alpha=0.3)
    axes.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def ab_history(run_a: str, run_b: str) -> dict[int, dict[str, float | None]]:
    """B's deltas against A at every step both runs evaluated (an A/B's course); with A a
    model, at every step B evaluated, against the model's one evaluation (a line's course
    since its release)."""
    model = model_evaluation(run_a)
    history_b = eval_history(run_b)
    if model is not None:
        history_a = {step: model[1] for step in history_b}
    else:
        history_a = eval_history(run_a)
    common = sorted(set(history_a) & set(history_b))
    if not common:
        raise ValueError(f"{run_a} and {run_b} share no evaluated step")
    before = steps_before(run_b)
    result = {}
    same_rate_measure(under_shapes(history_a.values()), under_shapes(history_b.values()))
    for step in common:
        result[step] = deltas(curve(history_a[step]), curve(history_b[step]))
        print(
            f"{step:>8} ({step + before} in all)  B against A: "
            f"BD-rate {_fmt(result[step]['bd_rate_pct'], '%')}; "
            f"lower half {_fmt(result[step]['lower_half_bd_rate_pct'], '%')}, "
            f"upper half {_fmt(result[step]['upper_half_bd_rate_pct'], '%')}; "
            f"loss {history_a[step]['loss']:.4f} / {history_b[step]['loss']:.4f}"
        )
    return result


def pace(course: dict[int, dict[str, float | None]], window: int) -> float | None:
    """BD-rate change per 1,000 steps over the last ``window`` evaluations of a course (a
    least-squares line through them): how fast B is still moving away from A; None with
    fewer than two points."""
    points = [(step, d["bd_rate_pct"]) for step, d in sorted(course.items())]
    points = [(step, value) for step, value in points[-window:] if value is not None]
    if len(points) < 2:
        return None
    steps, values = np.array(points, dtype=float).T
    return float(np.polyfit(steps / 1000.0, values, 1)[0])


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("runs", nargs="+", help="RUN_DIR[@STEP]: A then B (or one with --history)")
    parser.add_argument(
        "--history",
        action="store_true",
        help="One run's evaluations; with two, B against A at every step both evaluated.",
    )
    parser.add_argument("--plot", help="Also draw both curves into this PNG file.")
    parser.add_argument(
        "--pace-window",
        type=int,
        default=10,
        help="With two runs and --history: the pace (BD-rate per 1,000 steps) is fitted over "
        "this many last evaluations (default 10).",
    )
    args = parser.parse_args(argv)
    if len(args.runs) not in ((1, 2) if args.history else (2,)):
        parser.error("give two runs (A and B), or one or two with --history")
    if args.pace_window < 2:
        parser.error("--pace-window: a line needs 2 evaluations or more")
    if args.history and len(args.runs) == 1:
        run = run_at(args.runs[0])[0]
        history, before = eval_history(run), steps_before(run)
        for step, metrics in history.items():
            print(f"{step:>8} ({step + before} in all)  {_summary(metrics)}")
        return {"history": history}
    if args.history:
        course = ab_history(run_at(args.runs[0])[0], run_at(args.runs[1])[0])
        rate = pace(course, args.pace_window)
        if rate is not None:
            last = sorted(course)[-args.pace_window :]
            rate_text = f"{round(rate, 3) + 0.0:+.3f}%"  # no "-0.000%"
            print(f"pace over {last[0]}-{last[-1]}: BD-rate {rate_text} per 1,000 steps")
        return {"ab_history": course, "pace_pct_per_1000_steps": rate}
    (run_a, step_a), (run_b, step_b) = (run_at(text) for text in args.runs)
    step_a, metrics_a, shapes_a = evaluation(run_a, step_a)
    step_b, metrics_b, shapes_b = evaluation(run_b, step_b)
    same_rate_measure(shapes_a, shapes_b)
    result = deltas(curve(metrics_a), curve(metrics_b))
    for name, run, step, metrics in (
        ("A", run_a, step_a, metrics_a),
        ("B", run_b, step_b, metrics_b),
    ):
        model = model_evaluation(run)
        if model is not None:
            print(f"{name} model {run} ({step} steps in all, eval split of {model[2]}):  ", end="")
        else:
            print(f"{name} {run} @ {step} ({step + steps_before(run)} in all):  ", end="")
        print(_summary(metrics))
    print(
        f"B against A: BD-rate {_fmt(result['bd_rate_pct'], '%')}, "
        f"BD-PSNR {_fmt(result['bd_psnr_db'], ' dB')}; "
        f"lower half {_fmt(result['lower_half_bd_rate_pct'], '%')}, "
        f"upper half {_fmt(result['upper_half_bd_rate_pct'], '%')}"
    )
    if args.plot:
        plot(
            {
                f"A {os.path.basename(run_a.rstrip('/'))} @ {step_a}": curve(metrics_a),
                f"B {os.path.basename(run_b.rstrip('/'))} @ {step_b}": curve(metrics_b),
            },
            args.plot,
        )
        print(f"plot: {args.plot}")
    return {"a": {"run": run_a, "step": step_a}, "b": {"run": run_b, "step": step_b}, **result}


if __name__ == "__main__":
    main()
