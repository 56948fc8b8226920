"""Command-line plumbing shared by the pipelines: our flags first, Beam's options after."""

from __future__ import annotations

import argparse
import logging

from apache_beam.options.pipeline_options import PipelineOptions, SetupOptions, StandardOptions


def split_args(
    parser: argparse.ArgumentParser, argv: list[str] | None, save_main_session: bool = True
) -> tuple[argparse.Namespace, PipelineOptions]:
    """Parses the stage's own flags; everything else becomes Beam pipeline options."""
    known, beam_args = parser.parse_known_args(argv)
    options = PipelineOptions(beam_args)
    options.view_as(SetupOptions).save_main_session = save_main_session
    if not options.view_as(StandardOptions).runner:
        options.view_as(StandardOptions).runner = "DirectRunner"
    return known, options


def configure_logging() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    # Our progress lines at INFO, the libraries' chatter only from WARNING.
    logging.getLogger().setLevel(logging.WARNING)
    for name in ("latentpress", "pipelines", "transforms", "models"):
        logging.getLogger(name).setLevel(logging.INFO)
