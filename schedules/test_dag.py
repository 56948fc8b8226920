"""The DAG imports in Airflow's own environment and schedules what we expect.

Run with `make dag-test` (it builds schedules/.venv); not part of the pipeline's test suite,
which does not install Airflow.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
DAGS = HERE / "dags"
METADATA = HERE.parent / "dataflow" / "archive_template" / "metadata.json"


def load(monkeypatch, **environment):
    from airflow.dag_processing.dagbag import DagBag

    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    bag = DagBag(dag_folder=str(DAGS))
    assert bag.import_errors == {}
    return bag.dags["latentpress_nightly_archive"]  # get_dag would ask the metadata DB


def test_nightly_schedule_without_catch_up_and_with_retries(monkeypatch):
    dag = load(monkeypatch, LATENTPRESS_RUNNER="direct")
    assert dag.timetable.expression == "0 2 * * *"
    assert dag.catchup is False and dag.max_active_runs == 1
    assert dag.task_ids == ["archive"]
    task = dag.get_task("archive")
    assert task.retries == 2


def test_direct_runner_task_runs_the_archive_module(monkeypatch):
    dag = load(
        monkeypatch,
        LATENTPRESS_RUNNER="direct",
        LATENTPRESS_INPUT="/data/photos/**",
        LATENTPRESS_ARCHIVE="/data/archive",
    )
    task = dag.get_task("archive")
    assert type(task).__name__ == "BeamRunPythonPipelineOperator"
    assert task.runner == "DirectRunner"
    assert [*task.py_options, task.py_file] == ["-m", "pipelines.archive"]
    assert task.pipeline_options["input"] == "/data/photos/**"
    assert task.pipeline_options["archive"] == "/data/archive"


@pytest.mark.skipif(not METADATA.exists(), reason="template metadata not found")
def test_dataflow_task_launches_the_flex_template_with_its_parameters(monkeypatch):
    dag = load(
        monkeypatch,
        LATENTPRESS_RUNNER="dataflow",
        LATENTPRESS_INPUT="gs://b/photos/**",
        LATENTPRESS_ARCHIVE="gs://b/archive",
        LATENTPRESS_TEMPLATE="gs://b/templates/archive.json",
    )
    task = dag.get_task("archive")
    assert type(task).__name__ == "DataflowStartFlexTemplateOperator"
    launch = task.body["launchParameter"]
    assert launch["containerSpecGcsPath"] == "gs://b/templates/archive.json"
    declared = {p["name"] for p in json.loads(METADATA.read_text())["parameters"]}
    ours = set(launch["parameters"]) - {"sdk_container_image"}  # a Beam option, always allowed
    assert ours <= declared
    assert launch["parameters"]["archive"] == "gs://b/archive"
    assert os.environ["LATENTPRESS_RUNNER"] == "dataflow"


@pytest.mark.skipif(
    not os.environ.get("LATENTPRESS_PYTHON"), reason="LATENTPRESS_PYTHON (the project's venv) unset"
)
def test_direct_runner_task_archives_a_real_image(monkeypatch, tmp_path):
    """The task as Airflow executes it: latentpress's own interpreter runs the archive job."""
    import shutil
    import subprocess

    python = os.environ["LATENTPRESS_PYTHON"]
    sample = subprocess.run(
        [python, "-c", "from latentpress.samples import sample_paths; print(sample_paths()[2])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    (tmp_path / "corpus").mkdir()
    shutil.copy(sample, tmp_path / "corpus")
    dag = load(
        monkeypatch,
        LATENTPRESS_RUNNER="direct",
        LATENTPRESS_INPUT=f"{tmp_path}/corpus/*",
        LATENTPRESS_ARCHIVE=f"{tmp_path}/archive",
        LATENTPRESS_WORKERS="1",
    )
    dag.get_task("archive").execute(context={})
    (summary_path,) = (tmp_path / "archive" / "runs").glob("*/summary.json")
    summary = json.loads(summary_path.read_text())
    assert (summary["matched"], summary["processed"], summary["failed"]) == (1, 1, 0)
    assert len(list((tmp_path / "archive" / "codes").glob("*/*/*.lpc"))) == 1
