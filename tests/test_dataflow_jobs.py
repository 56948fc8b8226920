"""Dataflow jobs built offline: steps, container, GPU option, staged package.

``--dry_run`` builds the full pipeline proto; ``--template_location=LOCAL.json`` writes the job
request Dataflow would receive (worker pools, service options).  Both stage to a bucket, which
the storage emulator provides, so nothing leaves the machine.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from apache_beam.portability.api import beam_runner_api_pb2

from pipelines import apply, decompress, prepare
from tests.local_gcs import PROJECT, list_paths, local_gcs

IMAGE = "us-docker.pkg.dev/latentpress-test-project/latentpress/worker:test"
GPU = "worker_accelerator=type:nvidia-l4;count:1;install-nvidia-driver"


@pytest.fixture(scope="module")
def bucket():
    # Job building lists and stages to gs://; the emulator keeps that on loopback.
    with local_gcs() as name:
        yield name


def dataflow_args(bucket: str, *extra: str, dry_run: bool = True) -> list[str]:
    return [
        "--runner=DataflowRunner",
        *(["--dry_run=True"] if dry_run else []),
        "--no_auth",
        "--sdk_location=container",
        f"--project={PROJECT}",
        "--region=us-central1",
        f"--temp_location=gs://{bucket}/tmp",
        f"--staging_location=gs://{bucket}/staging",
        f"--sdk_container_image={IMAGE}",
        *extra,
    ]


def step_names(result) -> set[str]:
    return {t.unique_name for t in result.job.proto_pipeline.components.transforms.values()}


def container_images(result) -> set[str]:
    return {
        beam_runner_api_pb2.DockerPayload.FromString(env.payload).container_image
        for env in result.job.proto_pipeline.components.environments.values()
        if env.urn == "beam:env:docker:v1"
    }


GPU_WORKERS = [
    "--machine_type=g2-standard-4",
    f"--dataflow_service_options={GPU}",
    "--max_num_workers=4",
    "--autoscaling_algorithm=THROUGHPUT_BASED",
]


def test_apply_job_has_its_steps_and_container(bucket):
    result = apply.run(
        [f"--input=gs://{bucket}/photos/**", f"--output=gs://{bucket}/applied"]
        + dataflow_args(bucket, *GPU_WORKERS)
    )
    steps = step_names(result)
    for step in ("ReadImages", "CheckRelativePaths", "RunModels", "WriteOutputs", "Summarize"):
        assert step in steps, step
    assert container_images(result) == {IMAGE}


def test_apply_job_request_asks_for_gpu_workers(bucket, tmp_path):
    template = tmp_path / "apply.json"
    apply.run(
        [f"--input=gs://{bucket}/photos/**", f"--output=gs://{bucket}/applied"]
        + dataflow_args(bucket, *GPU_WORKERS, f"--template_location={template}", dry_run=False)
    )
    environment = json.loads(template.read_text())["environment"]
    assert environment["serviceOptions"] == [GPU]
    (pool,) = environment["workerPools"]
    assert pool["machineType"] == "g2-standard-4"
    assert pool["autoscalingSettings"]["maxNumWorkers"] == 4
    assert [c["containerImage"] for c in pool["sdkHarnessContainerImages"]] == [IMAGE]


def test_prepare_and_decompress_jobs_build_offline(bucket, tmp_path):
    # tf.Transform creates its scratch directory while the graph is built, through
    # TensorFlow's own gs:// client, which only real GCS answers: keep it local here.
    result = prepare.run(
        [
            f"--input=gs://{bucket}/photos/**",
            f"--output=gs://{bucket}/prepared",
            f"--transform-temp-dir={tmp_path}",
        ]
        + dataflow_args(bucket)
    )
    steps = step_names(result)
    assert {"ReadImages", "AddNoise", "WriteTrainShards", "AnalyzeCleanPatches"} <= steps
    result = decompress.run(
        [f"--input=gs://{bucket}/applied/codes/**", f"--output=gs://{bucket}/decoded"]
        + dataflow_args(bucket)
    )
    assert "Decompress" in step_names(result)


def test_setup_file_is_built_and_staged_for_the_workers(bucket, tmp_path):
    template = tmp_path / "apply.json"
    apply.run(
        [f"--input=gs://{bucket}/photos/**", f"--output=gs://{bucket}/applied2"]
        + dataflow_args(
            bucket, "--setup_file=./setup.py", f"--template_location={template}", dry_run=False
        )
    )
    (pool,) = json.loads(template.read_text())["environment"]["workerPools"]
    packages = {package["name"]: package["location"] for package in pool["packages"]}
    assert "workflow.tar.gz" in packages
    staged = list_paths(f"gs://{bucket}/staging/**")
    assert any(path.endswith("workflow.tar.gz") for path in staged), staged


def test_worker_image_uses_the_pinned_beam_sdk_and_its_boot_entrypoint():
    import apache_beam

    dockerfile = (
        Path(__file__).resolve().parents[1] / "dataflow" / "worker.Dockerfile"
    ).read_text()
    assert f"FROM apache/beam_python3.11_sdk:{apache_beam.__version__}" in dockerfile
    assert 'ENTRYPOINT ["/opt/apache/beam/boot"]' in dockerfile
    assert '"tensorflow[and-cuda]==2.21.*"' in dockerfile
