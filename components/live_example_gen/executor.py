"""Thin executor: reads the log files, applies ``LogsToExamples``, writes the quarantine."""

from __future__ import annotations

import json
import os
from typing import Any, Dict, List

import apache_beam as beam
import tensorflow as tf
from tfx import types
from tfx.components.example_gen import base_example_gen_executor
from tfx.types import artifact_utils
from tfx.types import standard_component_specs as sc

from components.live_example_gen import beam_transforms as bt
from components.live_example_gen import records as r

QUARANTINE_DIR_KEY = "_quarantine_dir"
COUNTS_FILE = "counts.json"
RECORDS_PREFIX = "records"


def read_counts(quarantine_dir: str) -> Dict[str, int]:
  """The counters written by a run, from ``<quarantine>/counts.json``."""
  with tf.io.gfile.GFile(os.path.join(quarantine_dir, COUNTS_FILE)) as f:
    return json.load(f)


def _write_counts(pairs: List, path: str) -> None:
  counts = dict(pairs)
  counts["accounting_problems"] = bt.check_accounting(counts)
  with tf.io.gfile.GFile(path, "w") as f:
    json.dump(counts, f, indent=2, sort_keys=True)
  if counts["accounting_problems"]:
    raise RuntimeError(f"ExampleGen accounting does not balance: {counts['accounting_problems']}")


@beam.ptransform_fn
def _LiveLogsToExample(pipeline: beam.Pipeline, exec_properties: Dict[str, Any],
                       split_pattern: str) -> beam.PCollection:
  """The BaseExampleGenExecutor hook: returns tf.Examples, writes the quarantine aside."""
  del split_pattern  # the log layout is fixed; every kind is read from input_base
  base = exec_properties[sc.INPUT_BASE_KEY]
  lines = {kind: pipeline | f"Read[{kind}]" >> beam.io.ReadFromText(
      os.path.join(base, f"{kind}.jsonl")) for kind in r.LOG_KINDS}
  out = lines | "LogsToExamples" >> bt.LogsToExamples(
      realtime_len=int(exec_properties["realtime_seq_len"]),
      lifelong_len=int(exec_properties["lifelong_seq_len"]))
  qdir = exec_properties[QUARANTINE_DIR_KEY]
  _ = (out[bt.QUARANTINE] | "BadToJson" >> beam.Map(r.BadRecord.to_json)
       | "WriteQuarantine" >> beam.io.WriteToText(os.path.join(qdir, RECORDS_PREFIX),
                                                  file_name_suffix=".jsonl"))
  _ = (out[bt.COUNTS] | "CollectCounts" >> beam.combiners.ToList()
       | "WriteCounts" >> beam.Map(_write_counts, os.path.join(qdir, COUNTS_FILE)))
  return out[bt.EXAMPLES]  # tf.train.Example: the base executor partitions on session_id


class Executor(base_example_gen_executor.BaseExampleGenExecutor):
  """BaseExampleGenExecutor with the live-log transform and a quarantine output."""

  def GetInputSourceToExamplePTransform(self) -> beam.PTransform:
    return _LiveLogsToExample

  def Do(self, input_dict: Dict[str, List[types.Artifact]],
         output_dict: Dict[str, List[types.Artifact]], exec_properties: Dict[str, Any]) -> None:
    qdir = artifact_utils.get_single_uri(output_dict["quarantine"])
    tf.io.gfile.makedirs(qdir)
    super().Do(input_dict, output_dict, dict(exec_properties, **{QUARANTINE_DIR_KEY: qdir}))
