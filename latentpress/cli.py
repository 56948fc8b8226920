"""The ``latentpress`` command: one subcommand per stage, each forwarding to its pipeline."""

from __future__ import annotations

import importlib
import os
import sys

# subcommand -> (module with main(argv), one-line description)
STAGES = {
    "prepare": ("pipelines.prepare", "cut noisy/clean patch pairs into TFRecords (Beam)"),
    "train": ("pipelines.train", "train the codec or the denoiser and export it"),
    "apply": ("pipelines.apply", "denoise and/or compress a whole corpus (Beam)"),
    "archive": ("pipelines.archive", "add what is new in a corpus to an archive (Beam)"),
    "evaluate": ("pipelines.evaluate", "rate-distortion and denoising report vs classical methods"),
    "compress": ("pipelines.compress", "compress images to code files"),
    "decompress": ("pipelines.decompress", "decompress code files to PNG images"),
}


def usage() -> str:
    lines = ["usage: latentpress STAGE [options]   (latentpress STAGE --help for a stage's flags)"]
    lines += [f"  {name:<12}{description}" for name, (_, description) in STAGES.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return 0
    stage, rest = argv[0], argv[1:]
    if stage not in STAGES:
        print(f"latentpress: unknown stage {stage!r}\n{usage()}", file=sys.stderr)
        return 2
    # TensorFlow's C++ start-up chatter is not for users; set the variable to see it.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    module = importlib.import_module(STAGES[stage][0])
    try:
        return module.main(rest) or 0
    except (ValueError, FileExistsError, FileNotFoundError) as e:
        # Usage problems are one line, not a traceback.
        print(f"latentpress {stage}: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
