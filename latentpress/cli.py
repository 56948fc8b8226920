"""The ``latentpress`` command: one subcommand per stage, each forwarding to its pipeline."""

from __future__ import annotations

import contextlib
import importlib
import os
import sys
import tempfile

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
    lines = ["usage: latentpress STAGE [options] [--verbose]   (latentpress STAGE --help)"]
    lines += [f"  {name:<12}{description}" for name, (_, description) in STAGES.items()]
    return "\n".join(lines)


@contextlib.contextmanager
def _quiet_native_startup(verbose: bool):
    """Keeps TensorFlow's C++ start-up lines (absl, cudart, oneDNN, cuInit) off the terminal.

    They are written straight to file descriptor 2 before absl's logging is set up, so
    TF_CPP_MIN_LOG_LEVEL cannot stop them: descriptor 2 points at a temporary file while
    TensorFlow imports and looks for devices, and that file is replayed if the import fails
    (a real error is never hidden) or with ``--verbose``.
    """
    if verbose:
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            yield
        except BaseException:
            os.dup2(saved, 2)
            captured.seek(0)
            sys.stderr.write(captured.read().decode(errors="replace"))
            raise
        finally:
            os.dup2(saved, 2)
            os.close(saved)


def _start_tensorflow() -> None:
    import tensorflow as tf

    tf.config.list_physical_devices()  # the device query prints the cuInit line


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return 0
    if argv[0] == "--version":
        from latentpress import __version__

        print(f"latentpress {__version__}")
        return 0
    stage, rest = argv[0], argv[1:]
    if stage not in STAGES:
        print(f"latentpress: unknown stage {stage!r}\n{usage()}", file=sys.stderr)
        return 2
    # TensorFlow's chatter is not for users; --verbose (or the variable) shows it.
    verbose = "--verbose" in rest
    rest = [a for a in rest if a != "--verbose"]
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "0" if verbose else "2")
    with _quiet_native_startup(verbose):
        _start_tensorflow()
    module = importlib.import_module(STAGES[stage][0])
    try:
        return module.main(rest) or 0
    except (ValueError, FileExistsError, FileNotFoundError) as e:
        # Usage problems are one line, not a traceback.
        print(f"latentpress {stage}: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # an unwritable folder, a path under a regular file, a full disk
        where = f"{e.filename}: " if e.filename else ""
        print(f"latentpress {stage}: {where}{e.strerror or e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
