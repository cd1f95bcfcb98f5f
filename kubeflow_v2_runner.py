"""Compiles the pipeline to a Vertex AI / Kubeflow Pipelines V2 JSON spec (offline; no cluster).

    python kubeflow_v2_runner.py --output pipeline.json --gcs_root gs://bucket/livestream
"""

import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

from absl import app, flags  # noqa: E402
from tfx import v1 as tfx  # noqa: E402

from pipeline import beam_presets, configs  # noqa: E402
from pipeline import pipeline as pipeline_lib  # noqa: E402
from pipeline.code_version import code_version  # noqa: E402
from schemas.make_schema import SCHEMA_PATH  # noqa: E402

FLAGS = flags.FLAGS
# The image installs this repository at /app (its schema is this checkout's schemas/schema.pbtxt).
IMAGE_SCHEMA_PATH = "/app/schemas/schema.pbtxt"
flags.DEFINE_string("output", "livestream_ranking_pipeline.json", "Pipeline spec to write.")
flags.DEFINE_string("gcs_root", "gs://your-bucket/livestream", "Root for logs, artifacts, models.")
flags.DEFINE_string("image", "gcr.io/your-project/livestream-tfx:latest",
                    "Container image with this package installed.")
flags.DEFINE_string("model_name", "baseline", "Model to train.")
flags.DEFINE_string("project", "your-project", "Google Cloud project of the Dataflow jobs.")
flags.DEFINE_string("region", "us-central1", "Region of the Dataflow jobs.")


def compile_pipeline(output: str, gcs_root: str, image: str, model_name: str,
                     project: str = "your-project", region: str = "us-central1") -> str:
  """Writes the V2 pipeline JSON to ``output`` and returns its path.

  The Beam components run on Dataflow with the same image as the pipeline's containers, so the
  workers import this package (the ExampleGen's transforms, the preprocessing_fn).
  """
  pipeline = pipeline_lib.create_pipeline(
      pipeline_name=configs.PIPELINE_NAME,
      pipeline_root=f"{gcs_root}/tfx/{configs.PIPELINE_NAME}",
      log_dir=f"{gcs_root}/logs", schema_path=IMAGE_SCHEMA_PATH, schema_source=SCHEMA_PATH,
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
  print(compile_pipeline(FLAGS.output, FLAGS.gcs_root, FLAGS.image, FLAGS.model_name,
                         FLAGS.project, FLAGS.region))


if __name__ == "__main__":
  app.run(main)
