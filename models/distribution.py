"""The Trainer's ``tf.distribute`` strategy, chosen by name in its ``custom_config``.

- ``default``: no distribution (one device; TensorFlow's default strategy).
- ``mirrored``: synchronous replicas on this machine's devices (GPUs, or the CPU).
- ``multi_worker_mirrored``: synchronous replicas across the workers ``TF_CONFIG`` names (what
  Vertex AI and Kubernetes set for each replica of a training job); gradients are all-reduced
  every step, so N workers train the same model one worker would, on the same global batches.

In a multi-worker run every worker runs the whole ``run_fn``; only the chief's SavedModel and
TensorBoard logs are kept (the others write into a scratch directory: saving runs collective ops,
so every worker must take part).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from typing import Iterator, Tuple

import tensorflow as tf

DEFAULT = "default"
MIRRORED = "mirrored"
MULTI_WORKER_MIRRORED = "multi_worker_mirrored"
STRATEGIES: Tuple[str, ...] = (DEFAULT, MIRRORED, MULTI_WORKER_MIRRORED)
TF_CONFIG = "TF_CONFIG"


def check_strategy_name(name: str) -> None:
  if name not in STRATEGIES:
    raise ValueError(f"trainer distribution {name!r} is not one of {list(STRATEGIES)}")


def cluster_from_env() -> dict:
  """The ``TF_CONFIG`` of this process, checked to name a cluster and this worker's task."""
  raw = os.environ.get(TF_CONFIG)
  if not raw:
    raise ValueError(f"distribution {MULTI_WORKER_MIRRORED!r} needs {TF_CONFIG} naming the "
                     "cluster and this task, e.g. {\"cluster\": {\"worker\": [\"host:port\", ...]},"
                     " \"task\": {\"type\": \"worker\", \"index\": 0}}")
  try:
    config = json.loads(raw)
  except json.JSONDecodeError as e:
    raise ValueError(f"{TF_CONFIG} is not JSON ({e}): {raw!r}") from e
  task = config.get("task") or {}
  workers = (config.get("cluster") or {}).get(task.get("type", ""), [])
  if not isinstance(task.get("index"), int) or not 0 <= task["index"] < len(workers):
    raise ValueError(f"{TF_CONFIG} task {task!r} is not one of the cluster's "
                     f"{config.get('cluster')!r}")
  return config


def make_strategy(name: str) -> tf.distribute.Strategy:
  """The named strategy (see the module docstring)."""
  check_strategy_name(name)
  if name == MIRRORED:
    return tf.distribute.MirroredStrategy()
  if name == MULTI_WORKER_MIRRORED:
    cluster_from_env()
    return tf.distribute.MultiWorkerMirroredStrategy()
  return tf.distribute.get_strategy()


def is_chief(strategy: tf.distribute.Strategy) -> bool:
  """True unless this process is a non-chief worker of a multi-worker strategy."""
  # The strategy's own answer to "does this worker write checkpoints": the chief task if the
  # cluster has one, else worker 0; always True without a cluster.
  return bool(strategy.extended.should_checkpoint)


@contextlib.contextmanager
def output_dir(path: str, strategy: tf.distribute.Strategy) -> Iterator[str]:
  """``path`` on the chief; on another worker a scratch directory, removed afterwards."""
  if is_chief(strategy):
    yield path
    return
  scratch = tempfile.mkdtemp(prefix="worker_output_")
  try:
    yield scratch
  finally:
    shutil.rmtree(scratch, ignore_errors=True)


def distribute_by_data(ds: tf.data.Dataset) -> tf.data.Dataset:
  """Shards a dataset across workers by element, not by file.

  The Trainer reads a split from a few gzip files (fewer than workers at small scale), so
  file-level sharding would leave workers without data; by element, every worker reads the same
  shuffled stream and keeps its share of each global batch.
  """
  options = tf.data.Options()
  options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
  return ds.with_options(options)
