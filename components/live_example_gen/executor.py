"""Thin executor: reads the log files, applies ``LogsToExamples``, writes splits and the quarantine."""

from __future__ import annotations

import json
import os
from typing import Any, Dict, List

import apache_beam as beam
import tensorflow as tf
from absl import logging
from apache_beam.options.pipeline_options import DirectOptions, PipelineOptions, StandardOptions
from tfx import types
from tfx.components.example_gen import base_example_gen_executor
from tfx.types import artifact_utils
from tfx.types import standard_component_specs as sc

from components.live_example_gen import beam_transforms as bt
from components.live_example_gen import records as r
from data_gen import log_format as lf

QUARANTINE_DIR_KEY = "_quarantine_dir"
REALTIME_SEQ_LEN_KEY = "realtime_seq_len"
LIFELONG_SEQ_LEN_KEY = "lifelong_seq_len"
EVAL_DAYS_KEY = "eval_days"
# JSON of {"events": [start, end], "purchases": [start, end]}; empty: read the logs' summary.json.
TIME_WINDOW_KEY = "time_window_json"
COUNTS_FILE = "counts.json"
RECORDS_PREFIX = "records"


def read_counts(quarantine_dir: str) -> Dict[str, Any]:
  """The counters written by a run, from ``<quarantine>/counts.json``."""
  with tf.io.gfile.GFile(os.path.join(quarantine_dir, COUNTS_FILE)) as f:
    return json.load(f)


def read_quarantine(quarantine_dir: str) -> List[r.BadRecord]:
  """Every quarantined record a run wrote."""
  out = []
  for path in sorted(tf.io.gfile.glob(os.path.join(quarantine_dir, f"{RECORDS_PREFIX}*"))):
    with tf.io.gfile.GFile(path) as f:
      out += [r.BadRecord.from_json(x) for x in f.read().splitlines() if x]
  return out


def _write_counts(pairs: List, path: str) -> None:
  counts = dict(pairs)
  counts["accounting_problems"] = bt.check_accounting(counts)
  with tf.io.gfile.GFile(path, "w") as f:
    json.dump(counts, f, indent=2, sort_keys=True)
  logging.info("%s", bt.summary_line(counts))
  print(bt.summary_line(counts), flush=True)  # the stage's one console line
  if counts["accounting_problems"]:
    raise RuntimeError(f"ExampleGen accounting does not balance: {counts['accounting_problems']}")


def time_windows(exec_properties: Dict[str, Any]) -> Dict[str, lf.Window]:
  """The configured time window, else the one the logs declare in their summary.json."""
  configured = exec_properties.get(TIME_WINDOW_KEY)
  if configured:
    return lf.parse_time_window(json.loads(configured), TIME_WINDOW_KEY)
  base = exec_properties[sc.INPUT_BASE_KEY]
  path = os.path.join(base, lf.SUMMARY_FILE)
  if not tf.io.gfile.exists(path):
    raise FileNotFoundError(f"{path} not found: the logs must declare their time window there "
                            f"({lf.TIME_WINDOW!r}), or set the component's {TIME_WINDOW_KEY}")
  with tf.io.gfile.GFile(path) as f:
    return lf.parse_time_window(json.load(f).get(lf.TIME_WINDOW), path)


def log_paths(input_base: str) -> Dict[str, str]:
  """kind -> ``<input_base>/<kind>.jsonl``; every kind must be present."""
  paths = {k: os.path.join(input_base, k + lf.LOG_SUFFIX) for k in r.LOG_KINDS}
  missing = [p for p in paths.values() if not tf.io.gfile.exists(p)]
  if missing:
    raise FileNotFoundError(f"log files missing under {input_base}: {missing}")
  return paths


def _read(path_and_kind):
  path, kind = path_and_kind
  return r.read_log_file(kind, path, open_fn=tf.io.gfile.GFile)


def spreads_work(options: PipelineOptions) -> bool:
  """Whether the pipeline has more than one worker to spread a file's lines over.

  Each log file is read whole by one worker; a Reshuffle after the read lets the others parse.
  With the DirectRunner's single in-memory worker it would only copy every line (691k at the
  default scale) through a shuffle.
  """
  runner = options.view_as(StandardOptions).runner
  direct = options.view_as(DirectOptions)
  single_direct = (runner in (None, "DirectRunner", "direct") and direct.direct_num_workers == 1
                   and direct.direct_running_mode in ("in_memory", None))
  return not single_direct


def read_logs(pipeline: beam.Pipeline, paths: Dict[str, str]) -> Dict[str, beam.PCollection]:
  """kind -> PCollection of ``records.RawLine`` (or the reader's ``BadRecord``), one per line."""
  spread = spreads_work(pipeline.options)
  lines = {}
  for kind, path in paths.items():
    pcoll = (pipeline
             | f"Files[{kind}]" >> beam.Create([(path, kind)])
             | f"Read[{kind}]" >> beam.FlatMap(_read))
    lines[kind] = pcoll | f"Spread[{kind}]" >> beam.Reshuffle() if spread else pcoll
  return lines


class Executor(base_example_gen_executor.BaseExampleGenExecutor):
  """ExampleGen over the live logs: a forward-in-time split and a quarantine output."""

  def GetInputSourceToExamplePTransform(self) -> beam.PTransform:
    raise NotImplementedError("LiveLogExampleGen splits in GenerateExamplesByBeam")

  def GenerateExamplesByBeam(self, pipeline: beam.Pipeline,
                             exec_properties: Dict[str, Any]) -> Dict[str, beam.PCollection]:
    """Logs -> {"train": examples, "eval": examples}; quarantine and counts written aside."""
    lines = read_logs(pipeline, log_paths(exec_properties[sc.INPUT_BASE_KEY]))
    out = lines | "LogsToExamples" >> bt.LogsToExamples(
        windows=time_windows(exec_properties),
        realtime_len=int(exec_properties[REALTIME_SEQ_LEN_KEY]),
        lifelong_len=int(exec_properties[LIFELONG_SEQ_LEN_KEY]),
        eval_days=int(exec_properties[EVAL_DAYS_KEY]))
    qdir = exec_properties[QUARANTINE_DIR_KEY]
    _ = (out[bt.QUARANTINE] | "BadToJson" >> beam.Map(r.BadRecord.to_json)
         | "WriteQuarantine" >> beam.io.WriteToText(os.path.join(qdir, RECORDS_PREFIX),
                                                    file_name_suffix=".jsonl"))
    _ = (out[bt.COUNTS] | "CollectCounts" >> beam.combiners.ToList()
         | "WriteCounts" >> beam.Map(_write_counts, os.path.join(qdir, COUNTS_FILE)))
    return {split: bt.examples_of_split(out[bt.EXAMPLES], split) for split in bt.SPLIT_NAMES}

  def Do(self, input_dict: Dict[str, List[types.Artifact]],
         output_dict: Dict[str, List[types.Artifact]], exec_properties: Dict[str, Any]) -> None:
    qdir = artifact_utils.get_single_uri(output_dict["quarantine"])
    tf.io.gfile.makedirs(qdir)
    super().Do(input_dict, output_dict, dict(exec_properties, **{QUARANTINE_DIR_KEY: qdir}))
