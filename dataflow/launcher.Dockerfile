# Flex Template launcher for the nightly archive job (`latentpress archive`).
# The launcher only builds and submits the Dataflow job; the workers run worker.Dockerfile's
# image (pass it as the sdk_container_image parameter). Build from the repository root:
#   gcloud builds submit --tag REGION-docker.pkg.dev/PROJECT/latentpress/archive-launcher \
#       --file dataflow/launcher.Dockerfile .   (or: docker build -f dataflow/launcher.Dockerfile .)
FROM gcr.io/dataflow-templates-base/python311-template-launcher-base

WORKDIR /template
COPY . /template
# The project and its pinned Beam/TensorFlow: the launcher imports the pipeline to build it.
RUN pip install --no-cache-dir /template

ENV FLEX_TEMPLATE_PYTHON_PY_FILE=/template/pipelines/archive.py
ENV FLEX_TEMPLATE_PYTHON_SETUP_FILE=/template/setup.py
