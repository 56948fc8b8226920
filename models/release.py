"""Shipping a trained model with the package: ``models/pretrained/NAME/``.

    python -m models.release --export RUN/export --name codec \
        --status interim --licence "BSDS500 images: non-commercial research use" \
        [--work-dir ~/lp-work] [--evaluation EVAL_DIR]

Copies the export (SavedModel, a codec's exact entropy model, model card) and adds the
release fields to its card, so the card a user reads says what the model is, how it was made,
how it measured (``measured``: the curve or PSNRs of a ``latentpress evaluate`` output folder of
this very model) and under which terms its training data came.

A codec that replaces another stays in the package as ``NAME-FINGERPRINT``: code files name
the codec that wrote them, and the decoder finds it among the shipped models by that
fingerprint, so every file written by an earlier release still decodes.  It stays as a
decode-only copy (``decode_only`` on its card): its decoding signatures, the weights they
read and its exact entropy model, about half of the export; it no longer encodes.  A codec
whose decoder is the one it replaces (its encoder alone retrained) decodes those files itself: its
card lists their fingerprint, and no copy is kept.  (A denoiser writes no
files that need it later: the one it replaces goes.)
"""

from __future__ import annotations

import argparse
import json
import os
import shutil

from models.export import (
    MODEL_CARD,
    SAVED_MODEL_DIR,
    decoder_fingerprint,
    load_model_card,
    write_model_card,
)
from models.registry import PRETRAINED_DIR


def without_machine_paths(card: dict, work_dir: str) -> dict:
    """The card with the build machine's working folder written as ``$LP_WORK``: commands stay
    exact and runnable elsewhere, and no machine's folders ship in every archive."""
    if not work_dir:
        return card
    prefix = os.path.abspath(work_dir).rstrip("/")
    return json.loads(json.dumps(card).replace(prefix, "$LP_WORK"))


def measured(results: dict, card: dict) -> dict:
    """What an evaluate run (its results.json) measured of the model of ``card``: the codec's
    rate-distortion points and BD-rates, or the denoiser's PSNR per noise level.  An
    evaluation of another model is an error, not a wrong figure on the card."""
    config = results["config"]
    summary = {"images": config["images"], "image_count": config["image_count"]}
    if card["task"] == "codec":
        if card["fingerprint"] not in config["models"].values():
            raise ValueError(f"the evaluation did not measure codec {card['fingerprint']}")
        summary["curve"] = [
            {
                "quality": point["setting"].rsplit("@", 1)[-1],
                **{k: round(point[k], 4) for k in ("bpp", "psnr_db", "ms_ssim")},
            }
            for point in results["curves"]["latentpress"]
        ]
        summary["bd_rate_psnr_pct"] = {
            pair.split(" vs ")[1]: round(value["bd_rate_psnr_pct"], 1)
            for pair, value in results["bjontegaard"].items()
            if pair.startswith("latentpress vs ")
        }
    else:
        if config.get("denoiser_fingerprint", card["fingerprint"]) != card["fingerprint"]:
            raise ValueError(f"the evaluation did not measure denoiser {card['fingerprint']}")
        if config.get("pairs"):  # real camera noise: photographs with their clean references
            summary["noise"] = "real, noisy/clean pairs"
            summary["pairs"] = config["pairs"]
        else:
            summary["noise"] = "float" if config["float_noise"] else "gaussian, rounded to 8 bits"
        summary["psnr_db"] = {
            sigma: round(methods["latentpress"]["psnr_db"], 2)
            for sigma, methods in results["denoising"].items()
        }
        # what the input and the classical baselines measured in the same run, for scale
        summary["others_psnr_db"] = {
            sigma: {
                method: round(values["psnr_db"], 2)
                for method, values in methods.items()
                if method != "latentpress"
            }
            for sigma, methods in results["denoising"].items()
        }
    return summary


def decoder_of(model_dir: str) -> str:
    """The decoder fingerprint of an exported codec (computed from its weights when its card,
    exported before 2026-12-06, does not record it)."""
    card = load_model_card(model_dir)
    if card.get("decoder_fingerprint"):
        return card["decoder_fingerprint"]
    from models.growth import exported_codec

    return decoder_fingerprint(exported_codec(model_dir))


def replace_codec(target: str, card: dict) -> dict:
    """Makes way in ``target`` for codec ``card`` and returns its card.  The files of the
    codec shipped there must keep decoding: if ``card``'s decoder is the same (only the
    encoder was retrained), the new codec decodes them itself and its card lists their
    fingerprint (``decodes_files_of``); otherwise the old codec moves to
    ``TARGET-FINGERPRINT``, decode-only, where the decoder finds it by the fingerprint the
    files name."""
    old = load_model_card(target)
    if old.get("task") != "codec" or old.get("fingerprint") == card.get("fingerprint"):
        shutil.rmtree(target)
        return card
    same_exact = old.get("exact_identity") == card.get("exact_identity")
    if same_exact and decoder_of(target) == card.get("decoder_fingerprint"):
        earlier = [*old.get("decodes_files_of", []), old["fingerprint"]]
        shutil.rmtree(target)
        return {**card, "decodes_files_of": earlier}
    kept = f"{target}-{old['fingerprint']}"
    if os.path.exists(kept):
        shutil.rmtree(kept)
    os.rename(target, kept)
    old["name"] = os.path.basename(kept)
    old["status"] = f"replaced by {card.get('fingerprint')}: kept to decode the files it wrote"
    write_model_card(kept, old)
    keep_decoder_only(kept)
    return card


def keep_decoder_only(model_dir: str) -> dict:
    """Re-exports the codec in ``model_dir`` in place as a decode-only copy (its decoding
    signatures and their weights, its exact entropy model unchanged) and returns its card.
    The decoded pixels are the full export's: the same weights run the same graph."""
    from models.export import export_decoder, fingerprint
    from models.growth import exported_codec

    card = load_model_card(model_dir)
    if card.get("task") != "codec":
        raise ValueError(f"{model_dir} is not a codec")
    if card.get("decode_only"):
        return card
    model = exported_codec(model_dir)
    if fingerprint(model) != card["fingerprint"]:
        raise ValueError(f"{model_dir}: its weights are not those of its model card")
    # its decoder can no longer be loaded into a full codec: the card keeps its fingerprint
    card = {**card, "decoder_fingerprint": decoder_fingerprint(model)}
    scratch = f"{model_dir}.decoder"
    if os.path.exists(scratch):
        shutil.rmtree(scratch)
    export_decoder(model, scratch)
    shutil.rmtree(os.path.join(model_dir, SAVED_MODEL_DIR))
    os.rename(os.path.join(scratch, SAVED_MODEL_DIR), os.path.join(model_dir, SAVED_MODEL_DIR))
    shutil.rmtree(scratch)
    card["decode_only"] = True
    write_model_card(model_dir, card)
    return card


def release(
    export_dir: str,
    name: str,
    status: str,
    licence: str,
    notes: str = "",
    work_dir: str = "",
    evaluations: tuple[str, ...] = (),
) -> dict:
    """Copies the export under models/pretrained/NAME; ``measured`` on its card lists what
    each evaluation folder measured (e.g. a denoiser on 8-bit and on float noise)."""
    card = without_machine_paths(load_model_card(export_dir), work_dir)
    if card.get("task") == "codec":
        card["decoder_fingerprint"] = decoder_of(export_dir)
    if evaluations:
        card["measured"] = []
        for evaluation in evaluations:
            with open(os.path.join(evaluation, "results.json")) as handle:
                card["measured"].append(measured(json.load(handle), card))
    target = os.path.join(PRETRAINED_DIR, name)
    if os.path.exists(target):
        card = replace_codec(target, card)
    # everything the export holds (the SavedModel, a codec's exact entropy model); the card
    # is written below
    shutil.copytree(export_dir, target, ignore=shutil.ignore_patterns(MODEL_CARD))
    card["name"] = name
    card["status"] = status
    card["training_data"] = {**card.get("training_data", {}), "licence": licence}
    if notes:
        card["notes"] = notes
    write_model_card(target, card)
    return load_model_card(target)


def main(argv=None):
    parser = argparse.ArgumentParser(description="Ship an exported model with the package.")
    parser.add_argument("--export", help="An export directory of `train`.")
    parser.add_argument("--name", help="Name under models/pretrained/.")
    parser.add_argument("--status", default="interim", help="e.g. interim, release")
    parser.add_argument("--licence", help="Terms of the training data.")
    parser.add_argument("--notes", default="", help="Anything a user should know.")
    parser.add_argument(
        "--work-dir",
        default="",
        help="The folder of the training data and runs, written as $LP_WORK in the card.",
    )
    parser.add_argument(
        "--evaluation",
        action="append",
        default=[],
        help="A `latentpress evaluate` output folder of this model: its figures go on the card "
        "(repeatable).",
    )
    parser.add_argument(
        "--decode-only",
        metavar="MODEL_DIR",
        help="Instead of shipping: turn a kept copy of a replaced codec into a decode-only copy "
        "in place (what a release does to the codec it replaces).",
    )
    args = parser.parse_args(argv)
    if args.decode_only:
        print(json.dumps(keep_decoder_only(args.decode_only), indent=2, sort_keys=True))
        return
    if not (args.export and args.name and args.licence):
        parser.error("--export, --name and --licence are required to ship a model")
    card = release(
        args.export,
        args.name,
        args.status,
        args.licence,
        args.notes,
        args.work_dir,
        tuple(args.evaluation),
    )
    print(json.dumps(card, indent=2, sort_keys=True))


if __name__ == "__main__":
    main()
