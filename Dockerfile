# The image every step of the Vertex pipeline runs: the TFX component containers and the Dataflow
# workers of the Beam components (LiveLogExampleGen, StatisticsGen, Transform, Evaluator).
#   make image IMAGE=REGISTRY/livestream-tfx:TAG      (or: tfx pipeline create ... --build_image)
#
# Base: the image the TFX team publishes for the pinned tfx (constraints.txt: tfx==1.16.0). It is
# Python 3.10 with TFX 1.16 and its TF/Beam stack already installed, so the pinned install below
# changes little, and its ENTRYPOINT is the Beam SDK worker boot (/opt/apache/beam/boot) of the
# Beam release TFX 1.16 is tested with (2.59.0, our pin): what Dataflow needs to start workers
# from a custom container. python:3.10-slim would need TFX's stack built up and that boot copied in.
FROM gcr.io/tfx-oss-public/tfx:1.16.0

# Keras 2 (tf_keras): tensorflow-recommenders and TFT/TFMA 1.16 need it, set before TensorFlow is
# imported in every process (executor containers and Dataflow workers alike).
ENV TF_USE_LEGACY_KERAS=1
# schemas/ is not a package (setup.py); /app on the path keeps it and the runner scripts importable
# whatever the working directory. The packages under /app are the same files as the installed ones.
ENV PYTHONPATH=/app

# kubeflow_v2_runner.image_schema_path() is where the schema is copied below, at a path named by
# its content (ImportSchemaGen caches by path; schemas/make_schema.py): the two move together
# (tests/test_runners.py runs the copy and checks it).
WORKDIR /app
COPY . /app
RUN d=schemas/by_content/$(sha256sum schemas/schema.pbtxt | cut -c1-16) \
    && mkdir -p "$d" && cp schemas/schema.pbtxt "$d/"

# Not editable: the packages land in site-packages, so the Trainer's and Transform's module paths
# (models.trainer.run_fn, models.preprocessing.preprocessing_fn) import as installed code; the
# check imports them from / without /app on the path, so a module left out of the package fails
# the build, not a pipeline run. Pins: constraints.txt, the venv's (setup.py reads it too).
RUN python -m pip install --no-cache-dir -c constraints.txt . \
    && cd / && env -u PYTHONPATH python -c "import models.trainer, models.preprocessing"

# No ENTRYPOINT: Vertex runs each component with an explicit command, and Dataflow starts its
# workers through the base image's Beam boot entrypoint.
