"""The end of ``latentpress evaluate``: measured points -> mean curves, Bjøntegaard deltas,
speeds, denoising tables -> ``results.json``, ``rd_psnr.png``, ``rd_msssim.png``,
``grid.png`` and ``report.md``.
"""

from __future__ import annotations

import io
import json
from collections import defaultdict

import numpy as np

from transforms import rate_distortion, records
from transforms.patches import noise_seed

# The vocabulary of evaluated points (results.json), shared with the evaluate stage.
OURS = "latentpress"
# The curve of another learned codec measured beside ours (evaluate --reference-model).
REFERENCE = "reference"
NOISY = "noisy"  # the "method" that does nothing: the noisy input itself


# The "sigma" of a real noisy/clean pair's points (evaluate --pairs).
REAL_NOISE = "real"


def our_setting(model: str, quality: float | None) -> str:
    """An evaluated point of ours: ``model`` or ``model@quality`` (variable-rate codecs)."""
    return model if quality is None else f"{model}@{quality:g}"


def split_setting(setting: str) -> tuple[str, float | None]:
    model, at, quality = setting.rpartition("@")
    return (model, float(quality)) if at else (setting, None)


def image_name(path: str) -> str:
    return path.rsplit("/", 1)[-1]


CURVE_FIELDS = ("bpp", "psnr_db", "ms_ssim", "ms_ssim_db", "encode_ms_per_mp", "decode_ms_per_mp")


def _mean(values) -> float:
    return float(np.mean(values)) if values else float("nan")


def mean_curves(points: list[dict]) -> dict[str, list[dict]]:
    """codec -> its settings' per-dataset means, sorted by rate."""
    grouped = defaultdict(list)
    for p in points:
        if p["kind"] == "codec" and "error" not in p:
            p = {**p, "ms_ssim_db": rate_distortion.ms_ssim_db(p["ms_ssim"])}
            grouped[(p["codec"], p["setting"])].append(p)
    curves = defaultdict(list)
    for (codec, setting), group in grouped.items():
        point = {"setting": setting, "images": len(group)}
        point.update({f: _mean([p[f] for p in group]) for f in CURVE_FIELDS})
        curves[codec].append(point)
    return {codec: sorted(curve, key=lambda p: p["bpp"]) for codec, curve in curves.items()}


def bjontegaard(curves: dict[str, list[dict]]) -> dict[str, dict]:
    """Deltas of our curve against every other one (the classical codecs and a reference
    codec), and of each other curve against JPEG."""
    deltas = {}
    for test in curves:
        for anchor in curves:
            if test == anchor or (test != OURS and anchor != "jpeg"):
                continue
            psnr_a = [(p["bpp"], p["psnr_db"]) for p in curves[anchor]]
            psnr_t = [(p["bpp"], p["psnr_db"]) for p in curves[test]]
            ssim_a = [(p["bpp"], p["ms_ssim_db"]) for p in curves[anchor]]
            ssim_t = [(p["bpp"], p["ms_ssim_db"]) for p in curves[test]]
            delta = {
                "bd_rate_psnr_pct": rate_distortion.bd_rate(psnr_a, psnr_t),
                "bd_psnr_db": rate_distortion.bd_quality(psnr_a, psnr_t),
                "bd_rate_msssim_pct": rate_distortion.bd_rate(ssim_a, ssim_t),
                "bd_msssim_db": rate_distortion.bd_quality(ssim_a, ssim_t),
            }
            why = {
                "psnr": rate_distortion.why_no_delta(psnr_a, psnr_t),
                "ms_ssim": rate_distortion.why_no_delta(ssim_a, ssim_t),
            }
            if any(why.values()):  # a null figure always comes with its reason
                delta["not_available"] = {k: v for k, v in why.items() if v}
            deltas[f"{test} vs {anchor}"] = delta
    return deltas


def rates_at_their_points(curves: dict[str, list[dict]]) -> dict[str, list[dict]]:
    """For each point of every other curve, the bits our curve needs at its PSNR: the
    BD-rate's average taken apart by quality, so a report shows where it is won and lost
    (our_bpp None: beyond the quality range of our curve)."""
    ours = [(p["bpp"], p["psnr_db"]) for p in curves.get(OURS, [])]
    table = {}
    for codec, curve in curves.items():
        if codec == OURS:
            continue
        rows = []
        for p in curve:
            our_bpp = rate_distortion.rate_at(ours, p["psnr_db"])
            change = None if our_bpp is None else 100.0 * (our_bpp / p["bpp"] - 1.0)
            rows.append(
                {
                    "setting": p["setting"],
                    "psnr_db": p["psnr_db"],
                    "bpp": p["bpp"],
                    "our_bpp": our_bpp,
                    "rate_change_pct": change,
                }
            )
        table[codec] = rows
    return table


def _noise_label(sigma) -> str:
    return sigma if sigma == REAL_NOISE else f"{sigma:g}"


def denoising_table(points: list[dict]) -> dict[str, dict[str, dict]]:
    grouped = defaultdict(list)
    for p in points:
        if p["kind"] == "denoise" and "error" not in p:
            grouped[(_noise_label(p["sigma"]), p["method"])].append(p)
    table: dict[str, dict] = defaultdict(dict)
    for (sigma, method), group in sorted(grouped.items()):
        table[sigma][method] = {
            "psnr_db": _mean([p["psnr_db"] for p in group]),
            "ssim": _mean([p["ssim"] for p in group]),
            "seconds_per_image": _mean([p["seconds"] for p in group]),
            "images": len(group),
        }
    return dict(table)


def _plot(curves, field: str, label: str, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(7, 5))
    for codec, curve in sorted(curves.items(), key=lambda item: item[0] != OURS):
        style = (
            {"linewidth": 2.5, "marker": "o", "color": "black"}
            if codec == OURS
            else {"marker": "."}
        )
        axes.plot([p["bpp"] for p in curve], [p[field] for p in curve], label=codec, **style)
    axes.set_xlabel("bits per pixel")
    axes.set_ylabel(label)
    # the classical sweeps run on to ~8 bpp; the axis stops at 3 unless a learned curve
    # (ours, the reference) goes further, so every point of ours is on the plot
    highest = max(p["bpp"] for c in curves.values() for p in c)
    learned = max((p["bpp"] for name in (OURS, REFERENCE) for p in curves.get(name, [])), default=0)
    axes.set_xlim(0, max(2.0, min(highest, max(3.0, 1.05 * learned))))
    axes.grid(alpha=0.3)
    axes.legend()
    figure.tight_layout()
    _save_figure(figure, path)
    plt.close(figure)


def _save_figure(figure, path: str) -> None:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110)
    records.write_atomically(path, buffer.getvalue())


def _grid(sample_path: str, curves, config: dict, path: str) -> None:
    """Original, noisy, denoised, ours at the lowest and highest rate, JPEG at ~our low size."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from apache_beam.io.filesystems import FileSystems

    from models.compressor import Compressor
    from models.inference import Denoiser
    from transforms import denoise_baselines
    from transforms.decode import decode_image

    with FileSystems.open(sample_path) as handle:
        clean = decode_image(handle.read())
    panels = [("original", clean)]
    if config.get("sample_noisy"):  # a real noisy photograph and its reference
        with FileSystems.open(config["sample_noisy"]) as handle:
            noisy = decode_image(handle.read())
        label = "noisy (real)"
    else:
        sigma = config["sigmas"][len(config["sigmas"]) // 2] if config["sigmas"] else 25.0
        seed = noise_seed(image_name(sample_path), sigma)
        noisy = denoise_baselines.add_noise(clean, sigma, seed)
        label = f"noisy σ={sigma:g}"
    denoised = Denoiser(config["denoiser"], ensemble=config.get("denoise_ensemble", 1)).denoise(
        noisy
    )
    panels.append((f"{label}, {rate_distortion.psnr(clean, noisy):.2f} dB", noisy))
    panels.append((f"denoised, {rate_distortion.psnr(clean, denoised):.2f} dB", denoised))
    ours = curves.get(OURS, [])
    low_bytes = None
    for label, point in (("low", ours[0] if ours else None), ("high", ours[-1] if ours else None)):
        if point is None:
            continue
        model, quality = split_setting(point["setting"])
        compressor = Compressor(model)
        data = compressor.compress(clean, quality=quality)
        decoded = compressor.decompress(data)
        low_bytes = low_bytes or len(data)
        bpp = rate_distortion.bits_per_pixel(len(data), clean)
        psnr = rate_distortion.psnr(clean, decoded)
        panels.append((f"latentpress {label}: {bpp:.3f} bpp, {psnr:.2f} dB", decoded))
    if low_bytes:
        # The JPEG quality whose file is closest to (not above, if possible) our low-rate size.
        candidates = [(q, rate_distortion.encode(clean, "jpeg", q)) for q in range(1, 96)]
        fitting = [c for c in candidates if len(c[1]) <= low_bytes] or candidates[:1]
        quality, data = max(fitting, key=lambda c: len(c[1]))
        decoded = rate_distortion.decode(data)
        bpp = rate_distortion.bits_per_pixel(len(data), clean)
        panels.append(
            (
                f"JPEG q{quality}: {bpp:.3f} bpp, {rate_distortion.psnr(clean, decoded):.2f} dB",
                decoded,
            )
        )
    columns = 3
    rows = (len(panels) + columns - 1) // columns
    figure, axes = plt.subplots(rows, columns, figsize=(5 * columns, 3.6 * rows))
    for axis in np.ravel(axes):
        axis.axis("off")
    for axis, (title, image) in zip(np.ravel(axes), panels, strict=False):
        axis.imshow(image)
        axis.set_title(title, fontsize=9)
    figure.suptitle(image_name(sample_path))
    figure.tight_layout()
    _save_figure(figure, path)
    plt.close(figure)


def _fmt(value, digits=2, suffix="") -> str:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return "n/a"
    return f"{value:+.{digits}f}{suffix}" if suffix in ("%", " dB") else f"{value:.{digits}f}"


def _markdown(results: dict) -> str:
    """The report of what was measured: no rate-distortion section for ``--no-codec``, no
    denoising section for ``--no-denoise``."""
    config = results["config"]
    inputs = ", ".join(config["images"]) or "noisy/clean pairs"
    header = [f"{config['image_count']} images ({inputs})"]
    if results["curves"]:
        header.append("codecs: " + ", ".join(f"`{m}` ({fp})" for m, fp in config["models"].items()))
        if config.get("refine_steps"):
            header[-1] += f", latents refined ({config['refine_steps']} steps, `--refine-steps`)"
        if config.get("crop_offset"):
            offset = config["crop_offset"]
            header.append(
                f"each image without its first {offset} rows and columns (`--crop-offset`)"
            )
        for model, fingerprint in config.get("reference_model", {}).items():
            header.append(f"{REFERENCE}: `{model}` ({fingerprint})")
    if results["denoising"]:
        ensemble = config.get("denoise_ensemble", 1)
        views = f" (mean of {ensemble} turned/mirrored views)" if ensemble > 1 else ""
        header.append(f"denoiser `{config['denoiser']}`{views}")
    lines = ["# latentpress evaluation", "", "; ".join(header) + "."]
    if results["curves"]:
        lines += _rate_distortion_lines(results)
    if results["denoising"]:
        lines += _denoising_lines(results)
    lines += ["## Example", "", "![before and after](grid.png)", ""]
    if results["failed"]:
        lines += [f"{len(results['failed'])} tasks failed; see results.json `failed`.", ""]
    return "\n".join(lines)


def _rate_distortion_lines(results: dict) -> list[str]:
    lines = [
        "",
        "## Rate-distortion",
        "",
        "![PSNR](rd_psnr.png) ![MS-SSIM](rd_msssim.png)",
        "",
        "Bjøntegaard deltas (PCHIP over the overlapping range of the per-dataset mean curves; "
        "negative rate = fewer bits at equal quality):",
        "",
        "| curves | BD-rate (PSNR) | BD-PSNR | BD-rate (MS-SSIM) | BD-MS-SSIM |",
        "|---|---|---|---|---|",
    ]
    for name, d in results["bjontegaard"].items():
        lines.append(
            f"| {name} | {_fmt(d['bd_rate_psnr_pct'], 1, '%')} | {_fmt(d['bd_psnr_db'], 2, ' dB')}"
            f" | {_fmt(d['bd_rate_msssim_pct'], 1, '%')} | {_fmt(d['bd_msssim_db'], 2, ' dB')} |"
        )
    missing = {
        n: d["not_available"] for n, d in results["bjontegaard"].items() if "not_available" in d
    }
    if missing:
        lines.append("")
    for name, why in missing.items():
        lines.append(f"n/a for {name}: " + "; ".join(f"{k}: {v}" for k, v in why.items()))
    lines += _rates_at_their_points_lines(results.get("rates_at_their_points", {}))
    lines += [
        "",
        "Our points and speed of every codec (mean over images; encode/decode ms per megapixel "
        "on this machine, all codecs measured in the same run):",
        "",
        "| codec | setting | bpp | PSNR dB | MS-SSIM | encode ms/MP | decode ms/MP |",
        "|---|---|---|---|---|---|---|",
    ]
    for codec in (OURS, REFERENCE):
        for p in results["curves"].get(codec, []):
            lines.append(
                f"| {codec} | {p['setting']} | {p['bpp']:.3f} | {p['psnr_db']:.2f} | "
                f"{p['ms_ssim']:.4f} | {p['encode_ms_per_mp']:.0f} | "
                f"{p['decode_ms_per_mp']:.0f} |"
            )
    for codec, speed in results["speed"].items():
        if codec not in (OURS, REFERENCE):
            lines.append(
                f"| {codec} | all | | | | {speed['encode_ms_per_mp']:.0f} | "
                f"{speed['decode_ms_per_mp']:.0f} |"
            )
    return lines


def _rates_at_their_points_lines(table: dict[str, list[dict]]) -> list[str]:
    if not table:
        return []
    lines = [
        "",
        "Where the BD-rate is won and lost: our bits at the PSNR of each setting of the other "
        'curves (read off our curve as the BD-rate reads it; "beyond": outside our range):',
        "",
        "| codec | setting | PSNR dB | its bpp | our bpp | our bits |",
        "|---|---|---|---|---|---|",
    ]
    for codec, rows in table.items():
        for row in rows:
            ours, change = row["our_bpp"], row["rate_change_pct"]
            lines.append(
                f"| {codec} | {row['setting']} | {row['psnr_db']:.2f} | {row['bpp']:.3f} | "
                + ("beyond | |" if ours is None else f"{ours:.3f} | {change:+.1f}% |")
            )
    return lines


def _denoising_lines(results: dict) -> list[str]:
    config = results["config"]
    rounding = "float, unrounded" if config.get("float_noise") else "rounded to 8 bits"
    if config.get("pairs"):
        noisy, clean = config["pairs"]
        kind = f"real noise: {noisy} against {clean}; baselines get σ estimated per image"
    else:
        kind = f"AWGN, seeded, {rounding}"
    lines = ["", f"## Denoising ({kind})", ""]
    for sigma, methods in results["denoising"].items():
        lines += [
            "Real noise:" if sigma == REAL_NOISE else f"σ = {sigma}:",
            "",
            "| method | PSNR dB | SSIM | s/image |",
            "|---|---|---|---|",
        ]
        for method, m in sorted(methods.items(), key=lambda item: -item[1]["psnr_db"]):
            lines.append(
                f"| {method} | {m['psnr_db']:.2f} | {m['ssim']:.4f} | "
                f"{m['seconds_per_image']:.2f} |"
            )
        lines.append("")
    return lines


def write_report(points: list[dict], out: str, config: dict, sample_path: str | None) -> str:
    curves = mean_curves(points)
    speed = {}
    for codec, curve in curves.items():
        speed[codec] = {
            "encode_ms_per_mp": _mean([p["encode_ms_per_mp"] for p in curve]),
            "decode_ms_per_mp": _mean([p["decode_ms_per_mp"] for p in curve]),
        }
    results = {
        "config": config,
        "curves": curves,
        "bjontegaard": bjontegaard(curves),
        "rates_at_their_points": rates_at_their_points(curves),
        "speed": speed,
        "denoising": denoising_table(points),
        "failed": [p for p in points if "error" in p],
        "points": points,
    }
    records.write_json(records.join(out, "results.json"), results)
    if curves:
        _plot(curves, "psnr_db", "PSNR (dB, RGB)", records.join(out, "rd_psnr.png"))
        _plot(curves, "ms_ssim_db", "MS-SSIM (dB)", records.join(out, "rd_msssim.png"))
    if sample_path:
        _grid(sample_path, curves, config, records.join(out, "grid.png"))
    records.write_atomically(records.join(out, "report.md"), _markdown(results).encode())
    headline = {
        k: v["bd_rate_psnr_pct"]
        if v["bd_rate_psnr_pct"] is not None
        else f"n/a: {v['not_available']['psnr']}"
        for k, v in results["bjontegaard"].items()
        if OURS in k
    }
    return f"report {records.join(out, 'report.md')}; BD-rate (PSNR) {json.dumps(headline)}"
