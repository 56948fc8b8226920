"""Airflow DAG: the latentpress archive job, every night.

The job is incremental (it skips what the archive holds), so one run catches up any number of
missed nights: no catch-up runs, at most one run at a time, and retries that simply re-run it
(a re-run after a failure finishes the work without duplicates).

Configuration, from the environment of the Airflow scheduler and workers:
  LATENTPRESS_RUNNER     direct (default): BeamRunPythonPipelineOperator on this machine;
                         dataflow: DataflowStartFlexTemplateOperator with the built template
  LATENTPRESS_INPUT      the corpus pattern, e.g. gs://my-bucket/photos/**
  LATENTPRESS_ARCHIVE    the archive folder, e.g. gs://my-bucket/archive
  LATENTPRESS_PYTHON     direct: the Python of the environment latentpress is installed in
  LATENTPRESS_WORKERS    direct: worker processes (default 2)
  LATENTPRESS_TEMPLATE   dataflow: gs:// path of the template spec (`gcloud dataflow
                         flex-template build`, see the README)
  LATENTPRESS_WORKER_IMAGE, GCP_PROJECT, GCP_REGION, LATENTPRESS_TEMP   dataflow settings
"""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta

from airflow.sdk import DAG

DAG_ID = "latentpress_nightly_archive"
SCHEDULE = "0 2 * * *"  # 02:00 UTC, after the day's uploads
RUNNER = os.environ.get("LATENTPRESS_RUNNER", "direct")
INPUT = os.environ.get("LATENTPRESS_INPUT", "/srv/photos/**")
ARCHIVE = os.environ.get("LATENTPRESS_ARCHIVE", "/srv/latentpress-archive")

default_args = {
    "owner": "latentpress",
    "retries": 2,
    "retry_delay": timedelta(minutes=15),
    "retry_exponential_backoff": True,
    "execution_timeout": timedelta(hours=12),
}


def archive_task():
    if RUNNER == "dataflow":
        from airflow.providers.google.cloud.operators.dataflow import (
            DataflowStartFlexTemplateOperator,
        )

        project = os.environ.get("GCP_PROJECT", "my-project")
        return DataflowStartFlexTemplateOperator(
            task_id="archive",
            project_id=project,
            location=os.environ.get("GCP_REGION", "us-central1"),
            body={
                "launchParameter": {
                    "jobName": "latentpress-archive-{{ ds_nodash }}",
                    "containerSpecGcsPath": os.environ.get(
                        "LATENTPRESS_TEMPLATE", "gs://my-bucket/templates/archive.json"
                    ),
                    "parameters": {
                        "input": INPUT,
                        "archive": ARCHIVE,
                        "sdk_container_image": os.environ.get(
                            "LATENTPRESS_WORKER_IMAGE",
                            f"us-docker.pkg.dev/{project}/latentpress/worker:latest",
                        ),
                    },
                    "environment": {
                        "tempLocation": os.environ.get("LATENTPRESS_TEMP", f"{ARCHIVE}/tmp"),
                        "maxWorkers": 10,
                    },
                }
            },
            wait_until_finished=True,
        )
    from airflow.providers.apache.beam.operators.beam import BeamRunPythonPipelineOperator

    return BeamRunPythonPipelineOperator(
        task_id="archive",
        runner="DirectRunner",
        py_interpreter=os.environ.get("LATENTPRESS_PYTHON", "python3"),
        py_options=["-m"],
        py_file="pipelines.archive",
        pipeline_options={
            "input": INPUT,
            "archive": ARCHIVE,
            "direct_num_workers": int(os.environ.get("LATENTPRESS_WORKERS", "2")),
            "direct_running_mode": "multi_processing",
            "inference_threads": 1,
        },
    )


with DAG(
    dag_id=DAG_ID,
    description="Denoise and compress what is new in the corpus into the archive.",
    schedule=SCHEDULE,
    start_date=datetime(2026, 11, 1, tzinfo=UTC),
    catchup=False,
    max_active_runs=1,
    default_args=default_args,
    tags=["latentpress"],
):
    archive_task()
