"""Dataflow jobs built offline: steps, container, GPU option, staged package.

``--dry_run`` builds the full pipeline proto; ``--template_location=LOCAL.json`` writes the job
request Dataflow would receive (worker pools, service options).  Both stage to a bucket, which
the storage emulator provides, so nothing leaves the machine.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from apache_beam.portability.api import beam_runner_api_pb2

from models import registry
from pipelines import apply, archive, decompress, prepare
from pipelines.options import split_args
from tests.local_gcs import PROJECT, list_paths, local_gcs

ROOT = Path(__file__).resolve().parents[1]
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
    """Every step's name, and the names of the composites it is nested in."""
    transforms = result.job.proto_pipeline.components.transforms.values()
    return {name for t in transforms for name in t.unique_name.split("/")}


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
    for step in ("ReadImages", "CheckRelativePaths", "RunModels", "WriteOutputs", "RunRecords"):
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
    assert {"ReadImages", "AddNoise", "WriteTrainShards", "Analyze"} <= steps
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


def test_archive_job_builds_offline_and_keeps_its_models_in_the_archive(bucket):
    result = archive.run(
        [f"--input=gs://{bucket}/photos/**", f"--archive=gs://{bucket}/archive"]
        + dataflow_args(bucket, *GPU_WORKERS)
    )
    steps = step_names(result)
    for step in (
        "ReadHoldings",
        "HashInputs",
        "JoinWithArchive",
        "TriageByContent",
        "RunModels",
        "WriteOutputs",
        "AppendToManifest",
        "RunRecords",
    ):
        assert step in steps, step
    assert container_images(result) == {IMAGE}
    stored = list_paths(f"gs://{bucket}/archive/models/**")
    for name in (registry.DEFAULT_CODEC, registry.DEFAULT_DENOISER):
        fingerprint = registry.card(name)["fingerprint"]
        assert f"gs://{bucket}/archive/models/{fingerprint}/model_card.json" in stored


FLEX_EXAMPLE = {
    "input": "gs://my-bucket/photos/**",
    "archive": "gs://my-bucket/archive",
    "mode": "compress",
    "quality": "high",
    "model": "codec",
    "refine_steps": "20",
    "denoiser": "denoiser",
    "reprocess_older_models": "true",
    "keep_runs": "7",
    "gpu_memory_mb": "4096",
}
FLEX_INVALID = {
    "input": "photos/**",  # workers cannot read the launcher's disk
    "archive": "gs://my-bucket/arch*",
    "mode": "zip",
    "quality": "best",
    "refine_steps": "-1",
    "reprocess_older_models": "maybe",
    "keep_runs": "0",
    "gpu_memory_mb": "-1",
}


def test_flex_template_parameters_are_validated_archive_flags():
    metadata = json.loads((ROOT / "dataflow" / "archive_template" / "metadata.json").read_text())
    parameters = {p["name"]: p for p in metadata["parameters"]}
    assert set(parameters) == set(FLEX_EXAMPLE)
    assert not parameters["input"].get("isOptional") and not parameters["archive"].get("isOptional")
    for name, value in FLEX_EXAMPLE.items():
        assert all(re.fullmatch(r, value) for r in parameters[name]["regexes"]), name
    for name, value in FLEX_INVALID.items():
        assert not all(re.fullmatch(r, value) for r in parameters[name]["regexes"]), name
    quality = parameters["quality"]["regexes"]
    assert all(all(re.fullmatch(r, q) for r in quality) for q in ("0", "37.5", "100"))
    assert not any(all(re.fullmatch(r, q) for r in quality) for q in ("101", "-3", "1e2"))
    # The launcher passes each parameter as --name=value, as here.
    given = {k: v for k, v in FLEX_EXAMPLE.items() if k != "model"}
    args, _ = split_args(archive.build_parser(), [f"--{k}={v}" for k, v in given.items()])
    assert args.input == [FLEX_EXAMPLE["input"]] and args.archive == FLEX_EXAMPLE["archive"]
    assert (args.mode, args.reprocess_older_models, args.keep_runs) == ("compress", True, 7)
    assert args.quality == "high" and args.model is None and args.refine_steps == 20
    assert args.gpu_memory_mb == 4096


def test_flex_launcher_runs_the_archive_file_it_names():
    dockerfile = (ROOT / "dataflow" / "launcher.Dockerfile").read_text()
    assert "FROM gcr.io/dataflow-templates-base/python311-template-launcher-base" in dockerfile
    py_file = re.search(r"FLEX_TEMPLATE_PYTHON_PY_FILE=/template/(\S+)", dockerfile).group(1)
    setup_file = re.search(r"FLEX_TEMPLATE_PYTHON_SETUP_FILE=/template/(\S+)", dockerfile).group(1)
    assert (ROOT / setup_file).is_file()
    # The launcher runs the file as a script, from elsewhere, with the project installed.
    shown = subprocess.run(
        [sys.executable, str(ROOT / py_file), "--help"],
        cwd="/",
        capture_output=True,
        text=True,
        check=True,
    )
    assert "--archive" in shown.stdout and "--reprocess-older-models" in shown.stdout
