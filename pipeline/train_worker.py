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
import socket
import subprocess
import sys
import time
from typing import List

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

from absl import app, flags, logging  # noqa: E402
from tfx import v1 as tfx  # noqa: E402
from tfx.components.trainer import fn_args_utils  # noqa: E402
from tfx.types import artifact_utils, standard_artifacts, standard_component_specs  # noqa: E402
from tfx.utils import path_utils, proto_utils  # noqa: E402

from pipeline import configs  # noqa: E402
from pipeline.run_outputs import TRANSFORM  # noqa: E402

SPLITS = ("train", "eval")


def latest_transform_outputs(pipeline_root: str) -> dict:
  """The ``transformed_examples`` and ``transform_graph`` dirs of the newest Transform run.

  Args:
    pipeline_root: a local pipeline root (``work/tfx/<pipeline name>``).

  Returns:
    ``{"transformed_examples": dir, "transform_graph": dir}``, both of one execution: the
    newest execution id that has both.

  Raises:
    FileNotFoundError: no execution has both outputs.
  """
  ids = []
  for output in ("transformed_examples", "transform_graph"):
    runs = glob.glob(os.path.join(pipeline_root, TRANSFORM, output, "*"))
    ids.append({os.path.basename(d) for d in runs if os.path.basename(d).isdigit()})
  both = ids[0] & ids[1]
  if not both:
    raise FileNotFoundError(f"no {TRANSFORM} run with transformed_examples and transform_graph "
                            f"under {pipeline_root}: run the pipeline first")
  newest = max(both, key=int)  # execution ids increase
  return {output: os.path.join(pipeline_root, TRANSFORM, output, newest)
          for output in ("transformed_examples", "transform_graph")}


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


def local_tf_configs(n_workers: int) -> List[dict]:
  """``TF_CONFIG`` for each of ``n_workers`` workers on this machine (loopback ports free now)."""
  sockets = [socket.socket() for _ in range(n_workers)]
  for s in sockets:
    s.bind(("127.0.0.1", 0))
  cluster = {"worker": [f"localhost:{s.getsockname()[1]}" for s in sockets]}
  for s in sockets:  # the workers bind them moments later
    s.close()
  return [{"cluster": cluster, "task": {"type": "worker", "index": i}} for i in range(n_workers)]


def start_worker(pipeline_root: str, output_dir: str, custom_config: dict, log_path: str,
                 train_steps: int | None = None, tf_config: dict | None = None
                 ) -> subprocess.Popen:
  """Starts ``python -m pipeline.train_worker`` as a child process logging to ``log_path``.

  The log is a file, not a pipe: a worker blocked on a full pipe would stall the others'
  collectives.
  """
  repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  env = dict(os.environ, PYTHONPATH=os.pathsep.join(
      filter(None, [repo, os.environ.get("PYTHONPATH")])))
  env.pop("TF_CONFIG", None)
  if tf_config:
    env["TF_CONFIG"] = json.dumps(tf_config)
  args = [sys.executable, "-m", "pipeline.train_worker", "--pipeline_root", pipeline_root,
          "--output_dir", output_dir, "--custom_config", json.dumps(custom_config)]
  if train_steps:
    args += ["--train_steps", str(train_steps)]
  with open(log_path, "w") as log:
    return subprocess.Popen(args, env=env, stdout=log, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL)


def wait_all(procs: List[subprocess.Popen], timeout_s: float, poll_s: float = 0.5
             ) -> List[int]:
  """Waits for every worker with one deadline; returns their exit codes.

  A worker that fails leaves its peers blocked in a collective, so the first non-zero exit (or
  the deadline) kills the others; every process is reaped either way.

  Args:
    procs: the workers.
    timeout_s: seconds for all of them together.
    poll_s: how often to look (``Popen.wait`` on one would miss another's failure).

  Returns:
    Each worker's exit code (negative: killed by a signal).
  """
  deadline = time.monotonic() + timeout_s
  try:
    while True:
      codes = [p.poll() for p in procs]  # every one, each time (any() would stop at the first)
      if None not in codes or any(codes) or time.monotonic() > deadline:
        break
      try:  # blocks up to poll_s on one worker; a quick failure elsewhere is seen next round
        next(p for p in procs if p.poll() is None).wait(timeout=poll_s)
      except subprocess.TimeoutExpired:
        pass
  finally:
    for p in procs:
      if p.poll() is None:
        p.kill()
      p.wait()
  return [p.returncode for p in procs]


FLAGS = flags.FLAGS


def define_flags() -> None:
  """This program's flags (defined only when it runs as one, so importing it defines none)."""
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
  define_flags()
  app.run(main)
