"""Shipping a model: its card keeps exact commands but no build machine's folders."""

from __future__ import annotations

from models.release import without_machine_paths


def test_the_working_folder_becomes_a_placeholder_in_every_field(tmp_path):
    work = tmp_path / "lp-work"
    card = {
        "command": f"latentpress train --data {work}/cbsd432 --model-dir {work}/runs/codec",
        "commands": [f"latentpress train --init-from {work}/runs/old/export"],
        "training_data": {"dir": f"{work}/cbsd432", "inputs": ["/data/CBSD432/*.jpg"]},
        "steps": 10,
    }
    shipped = without_machine_paths(card, f"{work}/")
    assert shipped["command"] == (
        "latentpress train --data $LP_WORK/cbsd432 --model-dir $LP_WORK/runs/codec"
    )
    assert shipped["commands"] == ["latentpress train --init-from $LP_WORK/runs/old/export"]
    assert shipped["training_data"] == {
        "dir": "$LP_WORK/cbsd432",
        "inputs": ["/data/CBSD432/*.jpg"],  # not under the working folder: kept
    }
    assert shipped["steps"] == 10
    assert without_machine_paths(card, "") == card
