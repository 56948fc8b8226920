"""Finding a model by name or path: the one way every stage resolves ``--model``/``--denoiser``.

A name is a folder under ``models/pretrained/`` (installed with the package), holding an
exported model (``saved_model/`` and ``model_card.json``).  ``codec`` and ``denoiser`` are the
defaults; ``codec-high-rate`` is the codec for archive quality (rates above the default's top,
up to ~38 dB); releases before 0.2 had ``codec-low`` and ``codec-high`` for ``--quality
low|high``.  Later releases add names but keep these.  Anything else is taken as a path to an
exported model directory.
"""

from __future__ import annotations

import os

from models.export import MODEL_CARD, SAVED_MODEL_DIR, load_model_card

PRETRAINED_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "pretrained")
DEFAULT_CODEC = "codec"
DEFAULT_DENOISER = "denoiser"
HIGH_RATE_CODEC = "codec-high-rate"  # archive quality, where the default codec stops
# Named points on a variable-rate codec's quality scale (0-100).
NAMED_QUALITIES = {"low": 25.0, "medium": 50.0, "high": 75.0}
# Releases with one-rate codecs shipped one per named quality.
ONE_RATE_QUALITIES = {"low": "codec-low", "medium": DEFAULT_CODEC, "high": "codec-high"}


def available() -> list[str]:
    if not os.path.isdir(PRETRAINED_DIR):
        return []
    return sorted(
        name
        for name in os.listdir(PRETRAINED_DIR)
        if os.path.exists(os.path.join(PRETRAINED_DIR, name, MODEL_CARD))
    )


def resolve(name_or_path: str) -> str:
    """Directory of the exported model ``name_or_path``; raises FileNotFoundError if none."""
    candidates = [name_or_path, os.path.join(PRETRAINED_DIR, name_or_path)]
    for candidate in candidates:
        if os.path.isdir(os.path.join(candidate, SAVED_MODEL_DIR)) and os.path.exists(
            os.path.join(candidate, MODEL_CARD)
        ):
            return os.path.abspath(candidate)
    raise FileNotFoundError(
        f"no exported model at {name_or_path!r} and no shipped model of that name "
        f"(shipped: {', '.join(available()) or 'none'})"
    )


def card(name_or_path: str, task: str | None = None) -> dict:
    """The model card; with ``task`` ("codec"/"denoiser"), a model of another kind is a
    ValueError naming both, not an AttributeError deep inside the first call."""
    model_card = load_model_card(resolve(name_or_path))
    if task and model_card.get("task", task) != task:
        raise ValueError(f"{name_or_path!r} is a {model_card['task']} model, not a {task}")
    return model_card


def is_variable_rate(name_or_path: str) -> bool:
    """Whether the codec takes a quality (its card lists several rate levels)."""
    from models.codec import CodecConfig

    return CodecConfig.from_card(card(name_or_path)).variable_rate


def codec_setting(quality: float | None, target: dict | None = None, refine_steps: int = 0) -> str:
    """How a run set a variable-rate codec's rate: ``q<quality>``, ``psnr<dB>`` or
    ``bpp<bpp>`` (a target that chooses the quality per image); "" for a one-rate codec.
    Refined latents (``--refine-steps N``) are other codes of the same codec: ``-refineN``."""
    if target:
        ((name, value),) = target.items()
        setting = f"{name.removeprefix('target_')}{value:g}"
    else:
        setting = "" if quality is None else f"q{quality:g}"
    if refine_steps:
        setting = f"{setting}-refine{refine_steps}" if setting else f"refine{refine_steps}"
    return setting


def codec_identity(fingerprint: str, setting: str) -> str:
    """What names a codec's outputs in an archive: another setting is another set of codes."""
    return f"{fingerprint}-{setting}" if setting else fingerprint


def parse_quality(text: str | float) -> float:
    """``low|medium|high`` or a number in [0, 100] -> the quality number."""
    if isinstance(text, str) and text in NAMED_QUALITIES:
        return NAMED_QUALITIES[text]
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    from models.codefile import QUALITY_MAX, QUALITY_MIN

    if not QUALITY_MIN <= value <= QUALITY_MAX:
        raise ValueError(f"--quality {text}: expected low, medium, high or a number 0-100")
    return value


def shipped_with_fingerprint(fingerprint: str) -> str | None:
    """The name of the shipped model with these weights, or whose card says it decodes the
    files of the codec with them (the same decoder), if any (code files name theirs)."""
    for name in available():
        if fingerprint in decodes_files_of(card(name)):
            return name
    return None


def decodes_files_of(model_card: dict) -> set[str]:
    """The fingerprints of the codecs whose code files this codec decodes: its own, and those
    of earlier releases with the same decoder (``models.release``)."""
    return {model_card.get("fingerprint"), *model_card.get("decodes_files_of", [])}
