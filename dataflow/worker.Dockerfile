# Custom SDK worker image for Dataflow: Beam's Python 3.11 SDK (with its /opt/apache/beam/boot
# entrypoint), TensorFlow with CUDA from its pip wheels, and latentpress with its shipped models.
# Build from the repository root:
#   docker build -f dataflow/worker.Dockerfile -t REGION-docker.pkg.dev/PROJECT/REPO/worker:TAG .
# The Beam version must equal the pinned apache-beam (tests/test_dataflow_jobs.py checks it).
FROM apache/beam_python3.11_sdk:2.77.0

WORKDIR /opt/latentpress
COPY setup.py README.md ./
COPY latentpress latentpress
COPY pipelines pipelines
COPY transforms transforms
COPY models models
# CUDA libraries come with TensorFlow's [and-cuda] wheels; Dataflow installs the driver
# (service option worker_accelerator=...;install-nvidia-driver).
RUN pip install --no-cache-dir "tensorflow[and-cuda]==2.21.*" . \
    && python -c "import models.registry as r; assert r.available(), 'no shipped models'"

# Dataflow runs one SDK process per vCPU; each grows its GPU memory as needed instead of
# taking it all (see also apply's --gpu-memory-mb).
ENV TF_FORCE_GPU_ALLOW_GROWTH=true \
    TF_CPP_MIN_LOG_LEVEL=2

ENTRYPOINT ["/opt/apache/beam/boot"]
