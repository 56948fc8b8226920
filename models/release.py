"""Shipping a trained model with the package: ``models/pretrained/NAME/``.

    python -m models.release --export RUN/export --name codec \
        --status interim --licence "BSDS500 images: non-commercial research use" \
        [--work-dir ~/lp-work]

Copies the export (SavedModel and model card) and adds the release fields to its card, so
the card a user reads says what the model is, how it was made and under which terms its
training data came.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil

from models.export import SAVED_MODEL_DIR, load_model_card, write_model_card
from models.registry import PRETRAINED_DIR


def without_machine_paths(card: dict, work_dir: str) -> dict:
    """The card with the build machine's working folder written as ``$LP_WORK``: commands stay
    exact and runnable elsewhere, and no machine's folders ship in every archive."""
    if not work_dir:
        return card
    prefix = os.path.abspath(work_dir).rstrip("/")
    return json.loads(json.dumps(card).replace(prefix, "$LP_WORK"))


def release(
    export_dir: str, name: str, status: str, licence: str, notes: str = "", work_dir: str = ""
) -> dict:
    card = without_machine_paths(load_model_card(export_dir), work_dir)
    target = os.path.join(PRETRAINED_DIR, name)
    if os.path.exists(target):
        shutil.rmtree(target)
    shutil.copytree(
        os.path.join(export_dir, SAVED_MODEL_DIR), os.path.join(target, SAVED_MODEL_DIR)
    )
    card["name"] = name
    card["status"] = status
    card["training_data"] = {**card.get("training_data", {}), "licence": licence}
    if notes:
        card["notes"] = notes
    write_model_card(target, card)
    return load_model_card(target)


def main(argv=None):
    parser = argparse.ArgumentParser(description="Ship an exported model with the package.")
    parser.add_argument("--export", required=True, help="An export directory of `train`.")
    parser.add_argument("--name", required=True, help="Name under models/pretrained/.")
    parser.add_argument("--status", default="interim", help="e.g. interim, release")
    parser.add_argument("--licence", required=True, help="Terms of the training data.")
    parser.add_argument("--notes", default="", help="Anything a user should know.")
    parser.add_argument(
        "--work-dir",
        default="",
        help="The folder of the training data and runs, written as $LP_WORK in the card.",
    )
    args = parser.parse_args(argv)
    card = release(args.export, args.name, args.status, args.licence, args.notes, args.work_dir)
    print(json.dumps(card, indent=2, sort_keys=True))


if __name__ == "__main__":
    main()
