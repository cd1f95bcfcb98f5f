"""Compiles the pipeline to a Vertex AI / Kubeflow Pipelines V2 JSON spec (offline; no cluster).

    python kubeflow_v2_runner.py --output pipeline.json --gcs_root gs://bucket/livestream \
        --image REGISTRY/livestream-tfx:TAG --project PROJECT

`tfx pipeline create --engine vertex --pipeline_path kubeflow_v2_runner.py` runs this file with
no arguments, so every flag also takes its default from a ``VERTEX_*`` environment variable
(``ENV_DEFAULTS``). The image, the GCS root and the project have no usable default: a pipeline
compiled with a placeholder would only fail on Vertex, after the image is pushed.
"""

import os
import posixpath

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

from absl import app, flags  # noqa: E402
from tfx import v1 as tfx  # noqa: E402

from pipeline import beam_presets, configs  # noqa: E402
from pipeline import pipeline as pipeline_lib  # noqa: E402
from pipeline.code_version import code_version  # noqa: E402
from schemas.make_schema import BY_CONTENT_DIR, SCHEMA_PATH, content_addressed_name  # noqa: E402

FLAGS = flags.FLAGS
# The Dockerfile's WORKDIR: the image installs this repository at /app, and copies its schema to
# /app/schemas/by_content/<digest>/schema.pbtxt (tests/test_runners.py checks the two agree).
IMAGE_SCHEMA_DIR = "/app/schemas"
# Flag -> the environment variable its default comes from (the TFX CLI passes no arguments).
ENV_DEFAULTS = {"gcs_root": "VERTEX_GCS_ROOT", "image": "VERTEX_IMAGE",
                "project": "VERTEX_PROJECT", "region": "VERTEX_REGION",
                "model_name": "VERTEX_MODEL"}
REQUIRED = ("gcs_root", "image", "project")


def _env(name, default=None):
  return os.environ.get(ENV_DEFAULTS[name], default)


flags.DEFINE_string("output", "livestream_ranking_pipeline.json",
                    "Pipeline spec to write (the TFX CLI writes to its own pipeline directory).")
flags.DEFINE_string("gcs_root", _env("gcs_root"),
                    "Root for logs, artifacts, models, e.g. gs://bucket/livestream.")
flags.DEFINE_string("image", _env("image"),
                    "Container image built from the Dockerfile (this package installed at /app).")
flags.DEFINE_string("model_name", _env("model_name", "baseline"), "Model to train.")
flags.DEFINE_string("project", _env("project"), "Google Cloud project of the Dataflow jobs.")
flags.DEFINE_string("region", _env("region", "us-central1"), "Region of the Dataflow jobs.")


def check_required(values: dict) -> None:
  """Fails naming every required setting that is empty, with its flag and environment variable.

  Args:
    values: flag name -> value (None or "" when unset).

  Raises:
    app.UsageError: one or more of ``REQUIRED`` is unset.
  """
  missing = [f"--{name} (or ${ENV_DEFAULTS[name]})" for name in REQUIRED if not values.get(name)]
  if missing:
    raise app.UsageError(f"kubeflow_v2_runner.py needs {', '.join(missing)}")


def image_schema_path(schema_path: str = SCHEMA_PATH) -> str:
  """Where the image holds the schema ImportSchemaGen reads: a path per content, as the local
  runner's (ImportSchemaGen, and Vertex's cache, key on the path; an image rebuilt with an edited
  schema under the same tag would otherwise reuse the old import)."""
  return posixpath.join(IMAGE_SCHEMA_DIR, BY_CONTENT_DIR, content_addressed_name(schema_path))


def compile_pipeline(output: str, gcs_root: str, image: str, model_name: str,
                     project: str, region: str = "us-central1") -> str:
  """Writes the V2 pipeline JSON to ``output`` and returns its path.

  The Beam components run on Dataflow with the same image as the pipeline's containers, so the
  workers import this package (the ExampleGen's transforms, the preprocessing_fn).

  Args:
    output: the JSON file to write.
    gcs_root: root of the pipeline root, logs, Dataflow temp files and pushed models.
    image: the image every component's container and every Dataflow worker runs.
    model_name: the model the Trainer trains (a key of models.trainer.MODELS).
    project: Google Cloud project of the Dataflow jobs.
    region: region of the Dataflow jobs.

  Returns:
    ``output``.
  """
  pipeline = pipeline_lib.create_pipeline(
      pipeline_name=configs.PIPELINE_NAME,
      pipeline_root=f"{gcs_root}/tfx/{configs.PIPELINE_NAME}",
      log_dir=f"{gcs_root}/logs", schema_path=image_schema_path(), schema_source=SCHEMA_PATH,
      serving_model_dir=f"{gcs_root}/serving/{configs.PIPELINE_NAME}",
      preprocessing_fn=configs.PREPROCESSING_FN, run_fn=configs.RUN_FN,
      train_steps=configs.TRAIN_STEPS,
      trainer_config={"model_name": model_name},
      min_effective_view_auc=configs.MIN_EFFECTIVE_VIEW_AUC, max_auc_drop=configs.MAX_AUC_DROP,
      code_version=code_version(),
      beam_pipeline_args=beam_presets.beam_args(
          beam_presets.DATAFLOW, project=project, region=region,
          temp_location=f"{gcs_root}/tmp", sdk_container_image=image))
  runner = tfx.orchestration.experimental.KubeflowV2DagRunner(
      config=tfx.orchestration.experimental.KubeflowV2DagRunnerConfig(default_image=image),
      output_filename=output)
  runner.run(pipeline)
  return output


def main(argv):
  del argv
  check_required({name: FLAGS[name].value for name in REQUIRED})
  print(compile_pipeline(FLAGS.output, FLAGS.gcs_root, FLAGS.image, FLAGS.model_name,
                         FLAGS.project, FLAGS.region))


if __name__ == "__main__":
  app.run(main)
