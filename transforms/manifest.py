"""The manifest schema: one JSON line per input of an apply run (or per image an archive
run processed; see ``transforms.archive``).

Files: ``DIR/manifest-*.jsonl``; totals in ``DIR/summary.json`` (``SummarizeManifest``:
counts, bytes, mean bpp and PSNR, and ``targets_missed``, the images whose rate target no
quality met).  Fields of a record:

  source_path          the input file as matched
  key                  its path relative to the matched root (its relative output path)
  content_sha256       SHA-256 of the input's bytes
  width, height        decoded size in pixels (0 when decoding failed)
  status               "ok" or "failed"
  reason, detail       why it failed (dead-letter reason and message); "" when ok
  mode                 "compress", "denoise" or "both"
  code_path            written code file, or ""      (DIR/codes/<key>.lpc)
  clean_path           written cleaned PNG, or ""    (DIR/clean/<key>, .png added unless
                                                     the key ends with it; mode both writes
                                                     one only with --keep-cleaned)
  code_of              what the code file encodes: "input", or "cleaned" (mode both: the
                       denoised image, which the code decodes to); "" without a code
  bytes_in             size of the input file
  code_bytes           size of the code file (0 without one)
  clean_bytes          size of the cleaned PNG (0 without one)
  bpp                  8 * code_bytes / (width * height), header included
  psnr_db              PSNR of the decoded code file against what was encoded
  psnr_reference       "input" (compress) or "clean" (both: the denoised image is encoded)
  quality              quality (0-100) a variable-rate codec encoded at, else null
  codec_setting        how the run set that rate: q<quality>, psnr<dB>, bpp<bpp>; "" if one-rate;
                       "-refine<N>" added when latents were refined (--refine-steps N)
  code_format          the code file's format version (models/codefile.py), 0 without a code;
                       absent from records before 2026-12-07 (format 3 or older, or 4 that day)
  target_met           with --target-psnr/--target-bpp: whether the quality met it, else null
  model_fingerprint    codec weights' fingerprint, or ""
  denoiser_fingerprint denoiser weights' fingerprint, or ""
  run_id               the archive run that wrote the record ("" for apply runs)
  exif_bytes, xmp_bytes, icc_bytes
                       sizes of the EXIF, XMP and ICC profile the outputs carry (0: none)
  icc_description      the carried profile's description (e.g. "Display P3"), or ""
  alpha                whether the outputs carry the source's alpha plane (lossless)
  frame                "<n>/<count>" for a frame of a multi-frame source, else ""
  bit_depth            bits per sample of the source (16-bit is coded at 8)
  metadata             "kept", or "stripped" (--strip-metadata)
  notes                what was left out or changed, "; "-separated ("" when nothing)

Summary: matched = written + failed, always, counting images: a source of N frames counts N
(``frames_beyond_first`` says how many images were second or later frames; their file's
bytes_in is counted once, with its first frame).
(``transforms.metadata`` owns what the carried fields mean.)
"""

from __future__ import annotations

import apache_beam as beam

from models import codefile
from models.codefile import SUFFIX as CODE_FILE_SUFFIX
from transforms import records

OK = "ok"
FAILED = "failed"
MANIFEST_PREFIX = "manifest"
CODES_DIR = "codes"
CLEAN_DIR = "clean"
CODE_SUFFIX = CODE_FILE_SUFFIX  # the code-file format (models/codefile.py) owns it
CLEAN_SUFFIX = ".png"


def output_name(name: str, suffix: str) -> str:
    """The one output-naming rule of every stage: the input's name, extension kept (so
    ``a.jpg`` and ``a.png`` stay apart), with the output's suffix appended unless it already
    ends with it; a code file's own suffix goes first.  ``a.png`` -> ``a.png.lpc`` ->
    ``a.png``; ``b.jpg`` -> ``b.jpg.lpc`` -> ``b.jpg.png``."""
    if name.endswith(CODE_SUFFIX) and suffix != CODE_SUFFIX:
        name = name[: -len(CODE_SUFFIX)]
    return name if name.lower().endswith(suffix) else name + suffix


def output_names(paths: list[str], suffix: str) -> list[str]:
    """``output_name`` of each input's file name; two inputs that would write one name are an
    error, not an overwrite."""
    names = [output_name(path.replace("\\", "/").rsplit("/", 1)[-1], suffix) for path in paths]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ValueError(f"several inputs would write {', '.join(duplicates)}; rename them")
    return names


FIELDS = (
    "source_path",
    "key",
    "content_sha256",
    "width",
    "height",
    "status",
    "reason",
    "detail",
    "mode",
    "code_path",
    "clean_path",
    "bytes_in",
    "code_bytes",
    "clean_bytes",
    "bpp",
    "psnr_db",
    "psnr_reference",
    "code_of",
    "quality",
    "codec_setting",
    "code_format",
    "target_met",
    "model_fingerprint",
    "denoiser_fingerprint",
    "run_id",
    "exif_bytes",
    "xmp_bytes",
    "icc_bytes",
    "icc_description",
    "alpha",
    "frame",
    "bit_depth",
    "metadata",
    "notes",
)


def record(**values) -> dict:
    """A complete record: every field present, unknown fields refused."""
    unknown = set(values) - set(FIELDS)
    if unknown:
        raise KeyError(f"not manifest fields: {sorted(unknown)}")
    defaults = {field: "" for field in FIELDS}
    defaults.update(width=0, height=0, bytes_in=0, code_bytes=0, code_format=0, clean_bytes=0)
    defaults.update(bpp=0.0, psnr_db=0.0, quality=None, target_met=None)
    defaults.update(exif_bytes=0, xmp_bytes=0, icc_bytes=0, alpha=False, bit_depth=0)
    return {**defaults, **values}


def failed(source_path: str, key: str, mode: str, reason: str, detail: str, **values) -> dict:
    return record(
        source_path=source_path,
        key=key,
        mode=mode,
        status=FAILED,
        reason=reason,
        detail=detail,
        **values,
    )


def is_failed(record: dict) -> bool:
    return record["status"] == FAILED


def _totals(r: dict) -> dict:
    ok = r["status"] == OK
    coded = ok and r["code_bytes"] > 0
    # a second or later frame of a file: its bytes were counted with the first frame
    later_frame = bool(r.get("frame")) and not r["frame"].startswith("1/")
    return {
        "matched": 1,
        "written": int(ok),
        "failed": int(not ok),
        "failed_by_reason": {} if ok else {r["reason"]: 1},
        "pixels": r["width"] * r["height"] if ok else 0,
        "coded_pixels": r["width"] * r["height"] if coded else 0,
        "coded_images": int(coded),
        "psnr_sum": r["psnr_db"] if coded else 0.0,
        "bytes_in": r["bytes_in"] if ok and not later_frame else 0,
        "code_bytes": r["code_bytes"] if ok else 0,
        "clean_bytes": r["clean_bytes"] if ok else 0,
        "frames_beyond_first": int(later_frame),
        # coded at the nearest end of the codec's range: --target-psnr/--target-bpp unreachable
        "targets_missed": int(ok and r.get("target_met") is False),
    }


def _merge(a: dict, b: dict) -> dict:
    merged = {
        key: a.get(key, 0) + b.get(key, 0) for key in set(a) | set(b) if key != "failed_by_reason"
    }
    reasons = dict(a.get("failed_by_reason", {}))
    for reason, count in b.get("failed_by_reason", {}).items():
        reasons[reason] = reasons.get(reason, 0) + count
    merged["failed_by_reason"] = reasons
    return merged


def _finish(totals: dict) -> dict:
    out = {key: totals.get(key, 0) for key in _totals(record(status=OK))}
    out["failed_by_reason"] = dict(sorted(totals.get("failed_by_reason", {}).items()))
    coded_pixels, coded_images = out.pop("coded_pixels"), out.pop("coded_images")
    psnr_sum = out.pop("psnr_sum")
    out["mean_bpp"] = round(codefile.bits_per_pixel(out["code_bytes"], coded_pixels), 4)
    out["mean_psnr_db"] = round(psnr_sum / coded_images, 3) if coded_images else 0.0
    return out


class SummarizeManifest(beam.CombineFn):
    """Totals over a run's manifest records; partial totals merge, no worker holds every record."""

    def create_accumulator(self):
        return {}

    def add_input(self, accumulator, element):
        return _merge(accumulator, _totals(element))

    def merge_accumulators(self, accumulators):
        merged: dict = {}
        for accumulator in accumulators:
            merged = _merge(merged, accumulator)
        return merged

    def extract_output(self, accumulator):
        return _finish(accumulator)


class DeadLettersOfFailed(beam.PTransform):
    """Manifest records -> the dead letter (``records.dead_letter``) of each failed one."""

    def __init__(self, stage: str):
        super().__init__()
        self._stage = stage

    def expand(self, manifest_records):
        stage = self._stage
        return (
            manifest_records
            | "FailedOnly" >> beam.Filter(is_failed)
            | "ToDeadLetter"
            >> beam.Map(
                lambda r: records.dead_letter(r["source_path"], stage, r["reason"], r["detail"])
            )
        )
