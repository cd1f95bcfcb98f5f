"""Reading the ExampleGen's output splits (for the demo request and the quality report)."""

from __future__ import annotations

import glob
import os

import tensorflow as tf


def latest_examples_dir(work: str, pipeline_name: str, split: str = "eval") -> str:
  runs = sorted(glob.glob(os.path.join(work, "tfx", pipeline_name, "LiveLogExampleGen",
                                       "examples", "*", f"Split-{split}")),
                key=os.path.getmtime)
  if not runs:
    raise FileNotFoundError(f"no ExampleGen {split} split under {work}/tfx/{pipeline_name}")
  return runs[-1]


def read_examples(split_dir: str, limit: int = 50_000):
  files = sorted(glob.glob(os.path.join(split_dir, "*.gz")))
  ds = tf.data.TFRecordDataset(files, compression_type="GZIP").take(limit)
  return [tf.train.Example.FromString(x.numpy()) for x in ds]
