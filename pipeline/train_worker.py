"""The pipeline's Trainer step outside the orchestrator: one process, one worker.

Runs ``run_fn`` on the Transform outputs of a finished run, with the arguments the TFX Trainer
would give it. Each worker of a multi-worker job is one such process with its own ``TF_CONFIG``
(what Vertex AI sets on each replica); on one machine::

    TF_CONFIG='{"cluster": {"worker": ["localhost:12345", "localhost:12346"]},
                "task": {"type": "worker", "index": 0}}' \\
    python -m pipeline.train_worker --pipeline_root work/tfx/livestream-ranking \\
        --output_dir /tmp/run --custom_config '{"distribution": "multi_worker_mirrored"}'

and the same with ``"index": 1``. The chief (worker 0) writes the SavedModel to
``<output_dir>/model/Format-Serving`` and TensorBoard logs to ``<output_dir>/model_run``.
"""

from __future__ import annotations

import glob
import json
import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

from absl import app, flags, logging  # noqa: E402
from tfx import v1 as tfx  # noqa: E402
from tfx.components.trainer import fn_args_utils  # noqa: E402
from tfx.types import artifact_utils, standard_artifacts, standard_component_specs  # noqa: E402
from tfx.utils import path_utils, proto_utils  # noqa: E402

from pipeline import configs  # noqa: E402

TRANSFORM = "Transform"
SPLITS = ("train", "eval")


def latest_transform_outputs(pipeline_root: str) -> dict:
  """The newest ``transformed_examples`` and ``transform_graph`` dirs under a pipeline root."""
  found = {}
  for output in ("transformed_examples", "transform_graph"):
    runs = glob.glob(os.path.join(pipeline_root, TRANSFORM, output, "*"))
    if not runs:
      raise FileNotFoundError(f"no {TRANSFORM} {output} under {pipeline_root}: run the pipeline "
                              "first")
    found[output] = max(runs, key=lambda d: int(os.path.basename(d)))  # execution ids increase
  return found


def fn_args(transformed_examples: str, transform_graph: str, output_dir: str,
            custom_config: dict, train_steps: int | None) -> tfx.components.FnArgs:
  """The FnArgs the TFX Trainer builds from these artifacts (TFX's own helper makes them)."""
  examples = standard_artifacts.Examples()
  examples.uri = transformed_examples
  examples.split_names = artifact_utils.encode_split_names(list(SPLITS))
  graph = standard_artifacts.TransformGraph()
  graph.uri = transform_graph
  exec_properties = {
      standard_component_specs.TRAIN_ARGS_KEY: proto_utils.proto_to_json(
          tfx.proto.TrainArgs(num_steps=train_steps or 0)),
      standard_component_specs.EVAL_ARGS_KEY: proto_utils.proto_to_json(tfx.proto.EvalArgs()),
      standard_component_specs.CUSTOM_CONFIG_KEY: json.dumps(custom_config),
  }
  args = fn_args_utils.get_common_fn_args(
      {standard_component_specs.EXAMPLES_KEY: [examples],
       standard_component_specs.TRANSFORM_GRAPH_KEY: [graph]}, exec_properties)
  args.transform_output = args.transform_graph_path
  args.serving_model_dir = path_utils.serving_model_dir(os.path.join(output_dir, "model"))
  args.model_run_dir = os.path.join(output_dir, "model_run")
  return args


def train(transformed_examples: str, transform_graph: str, output_dir: str, custom_config: dict,
          train_steps: int | None = None, run_fn_path: str = configs.RUN_FN) -> str:
  """Runs ``run_fn`` once; returns the serving model dir (written by the chief only)."""
  module, _, name = run_fn_path.rpartition(".")
  run_fn = getattr(__import__(module, fromlist=[name]), name)
  args = fn_args(transformed_examples, transform_graph, output_dir, custom_config, train_steps)
  run_fn(args)
  return args.serving_model_dir


FLAGS = flags.FLAGS
flags.DEFINE_string("pipeline_root", None, "A finished run's pipeline root (latest Transform).")
flags.DEFINE_string("transformed_examples", None, "Or: a Transform transformed_examples dir.")
flags.DEFINE_string("transform_graph", None, "...and its transform_graph dir.")
flags.DEFINE_string("output_dir", None, "Where the model and TensorBoard logs go.")
flags.DEFINE_string("custom_config", "{}", "The Trainer's custom_config as JSON.")
flags.DEFINE_integer("train_steps", None, "Step budget (default: epochs until early stopping).")


def main(argv):
  del argv
  if FLAGS.transformed_examples and FLAGS.transform_graph:
    dirs = {"transformed_examples": FLAGS.transformed_examples,
            "transform_graph": FLAGS.transform_graph}
  elif FLAGS.pipeline_root:
    dirs = latest_transform_outputs(FLAGS.pipeline_root)
  else:
    raise app.UsageError("give --pipeline_root, or --transformed_examples and --transform_graph")
  if not FLAGS.output_dir:
    raise app.UsageError("--output_dir is required")
  logging.set_verbosity(logging.INFO)
  model_dir = train(dirs["transformed_examples"], dirs["transform_graph"], FLAGS.output_dir,
                    json.loads(FLAGS.custom_config), FLAGS.train_steps)
  print(f"worker done; the chief's model: {model_dir}")


if __name__ == "__main__":
  app.run(main)
