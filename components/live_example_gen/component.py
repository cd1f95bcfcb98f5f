"""The LiveLogExampleGen component: FileBasedExampleGen's spec plus a quarantine output."""

from __future__ import annotations

import json

from tfx import types
from tfx.components.example_gen import driver
from tfx.dsl.components.base import base_beam_component, executor_spec
from tfx.proto import example_gen_pb2
from tfx.types import artifact, component_spec, standard_artifacts
from tfx.types import standard_component_specs as sc

from components.live_example_gen import beam_transforms as bt
from components.live_example_gen import executor
from data_gen import log_format as lf
from models import features as F

QUARANTINE_KEY = "quarantine"
REALTIME_SEQ_LEN_KEY = executor.REALTIME_SEQ_LEN_KEY
LIFELONG_SEQ_LEN_KEY = executor.LIFELONG_SEQ_LEN_KEY
EVAL_DAYS_KEY = executor.EVAL_DAYS_KEY
TIME_WINDOW_KEY = executor.TIME_WINDOW_KEY
# Not read by the executor: a fingerprint of the code, so a change invalidates cached examples.
CODE_VERSION_KEY = "code_version"
DEFAULT_EVAL_DAYS = 1


class QuarantinedRecords(artifact.Artifact):
  """Log records the ExampleGen rejected, with reasons, plus counts.json (in = out + quarantined)."""
  TYPE_NAME = "livestream.QuarantinedRecords"  # namespaced, as KFP V2 schema titles require


class LiveLogExampleGenSpec(types.ComponentSpec):
  PARAMETERS = dict(
      sc.FileBasedExampleGenSpec.PARAMETERS,
      **{REALTIME_SEQ_LEN_KEY: component_spec.ExecutionParameter(type=int),
         LIFELONG_SEQ_LEN_KEY: component_spec.ExecutionParameter(type=int),
         EVAL_DAYS_KEY: component_spec.ExecutionParameter(type=int),
         TIME_WINDOW_KEY: component_spec.ExecutionParameter(type=str, optional=True),
         CODE_VERSION_KEY: component_spec.ExecutionParameter(type=str, optional=True)})
  INPUTS = {}
  OUTPUTS = {
      sc.EXAMPLES_KEY: component_spec.ChannelParameter(type=standard_artifacts.Examples),
      QUARANTINE_KEY: component_spec.ChannelParameter(type=QuarantinedRecords),
  }


class LiveLogExampleGen(base_beam_component.BaseBeamComponent):
  """Joins live-stream event logs into one point-in-time tf.Example per impression.

  Reads the JSONL logs written by ``data_gen`` under ``input_base``. Splits forward in time:
  sessions that start in the last ``eval_days`` days of the logs are the eval split, earlier ones
  train (a session is never cut), and training examples' real-time sequences never hold eval
  impressions. Timestamps are checked against the window the logs declare in ``summary.json``,
  or ``time_window`` when given. ``code_version`` (any string, e.g. a source fingerprint) is
  only part of the cache key: with caching on, examples made by other code are not reused.
  """

  SPEC_CLASS = LiveLogExampleGenSpec
  EXECUTOR_SPEC = executor_spec.BeamExecutorSpec(executor.Executor)
  DRIVER_CLASS = driver.FileBasedDriver

  def __init__(self, input_base: str, realtime_seq_len: int = F.REALTIME_SEQ_LEN,
               lifelong_seq_len: int = F.LIFELONG_SEQ_LEN, eval_days: int = DEFAULT_EVAL_DAYS,
               time_window: dict | None = None, code_version: str | None = None):
    F.check_sequence_lengths(realtime_seq_len, lifelong_seq_len)
    if eval_days < 1:
      raise ValueError(f"eval_days must be >= 1, got {eval_days}")
    if time_window is not None:
      lf.parse_time_window(time_window)  # fail when the pipeline is built, not in the run
    input_config = example_gen_pb2.Input(splits=[
        example_gen_pb2.Input.Split(name="logs", pattern="*" + lf.LOG_SUFFIX)])
    # Names the splits only: the executor assigns sessions by time, not by hash buckets.
    output_config = example_gen_pb2.Output(split_config=example_gen_pb2.SplitConfig(
        splits=[example_gen_pb2.SplitConfig.Split(name=name, hash_buckets=1)
                for name in bt.SPLIT_NAMES]))
    spec = LiveLogExampleGenSpec(
        input_base=input_base, input_config=input_config, output_config=output_config,
        output_data_format=example_gen_pb2.FORMAT_TF_EXAMPLE,
        output_file_format=example_gen_pb2.FORMAT_TFRECORDS_GZIP,
        realtime_seq_len=realtime_seq_len, lifelong_seq_len=lifelong_seq_len,
        eval_days=eval_days, time_window_json=json.dumps(time_window) if time_window else None,
        code_version=code_version,
        examples=types.Channel(type=standard_artifacts.Examples),
        quarantine=types.Channel(type=QuarantinedRecords))
    super().__init__(spec=spec)
