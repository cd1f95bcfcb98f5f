"""Reading the ExampleGen's output splits (for the demo request and the quality report)."""

from __future__ import annotations

import glob
import os

import tensorflow as tf

from pipeline import run_outputs


def latest_examples_dir(work: str, pipeline_name: str, split: str = "eval") -> str:
  """The ``split`` directory of the examples the ExampleGen's newest finished run made.

  Raises:
    FileNotFoundError: no finished ExampleGen run under ``work``, or it has no such split.
  """
  examples = run_outputs.latest_output_dir(work, pipeline_name, run_outputs.EXAMPLE_GEN,
                                           "examples")
  split_dir = os.path.join(examples, f"Split-{split}")
  if not os.path.isdir(split_dir):
    raise FileNotFoundError(f"the newest ExampleGen examples ({examples}) have no split {split!r}")
  return split_dir


def read_examples(split_dir: str, limit: int = 50_000):
  files = sorted(glob.glob(os.path.join(split_dir, "*.gz")))
  ds = tf.data.TFRecordDataset(files, compression_type="GZIP").take(limit)
  return [tf.train.Example.FromString(x.numpy()) for x in ds]
