"""The LiveLogExampleGen component: FileBasedExampleGen's spec plus a quarantine output."""

from __future__ import annotations

from tfx import types
from tfx.components.example_gen import driver
from tfx.dsl.components.base import base_beam_component, executor_spec
from tfx.proto import example_gen_pb2
from tfx.types import artifact, component_spec, standard_artifacts
from tfx.types import standard_component_specs as sc

from components.live_example_gen import executor
from models import features as F

QUARANTINE_KEY = "quarantine"
REALTIME_SEQ_LEN_KEY = "realtime_seq_len"
LIFELONG_SEQ_LEN_KEY = "lifelong_seq_len"


class QuarantinedRecords(artifact.Artifact):
  """Log records the ExampleGen rejected, with reasons, plus counts.json (in = out + quarantined)."""
  TYPE_NAME = "livestream.QuarantinedRecords"  # namespaced, as KFP V2 schema titles require


class LiveLogExampleGenSpec(types.ComponentSpec):
  PARAMETERS = dict(
      sc.FileBasedExampleGenSpec.PARAMETERS,
      **{REALTIME_SEQ_LEN_KEY: component_spec.ExecutionParameter(type=int),
         LIFELONG_SEQ_LEN_KEY: component_spec.ExecutionParameter(type=int)})
  INPUTS = {}
  OUTPUTS = {
      sc.EXAMPLES_KEY: component_spec.ChannelParameter(type=standard_artifacts.Examples),
      QUARANTINE_KEY: component_spec.ChannelParameter(type=QuarantinedRecords),
  }


class LiveLogExampleGen(base_beam_component.BaseBeamComponent):
  """Joins live-stream event logs into one point-in-time tf.Example per impression.

  Reads the JSONL logs written by ``data_gen`` under ``input_base``; splits train/eval by a hash of
  the session id so one session never spans both splits.
  """

  SPEC_CLASS = LiveLogExampleGenSpec
  EXECUTOR_SPEC = executor_spec.BeamExecutorSpec(executor.Executor)
  DRIVER_CLASS = driver.FileBasedDriver

  def __init__(self, input_base: str, realtime_seq_len: int = F.REALTIME_SEQ_LEN,
               lifelong_seq_len: int = F.LIFELONG_SEQ_LEN,
               output_config: example_gen_pb2.Output | None = None):
    if realtime_seq_len < 1 or lifelong_seq_len < 1:
      raise ValueError(f"sequence lengths must be >= 1, got realtime_seq_len={realtime_seq_len}, "
                       f"lifelong_seq_len={lifelong_seq_len}")
    input_config = example_gen_pb2.Input(splits=[
        example_gen_pb2.Input.Split(name="logs", pattern="*.jsonl")])
    output_config = output_config or example_gen_pb2.Output(
        split_config=example_gen_pb2.SplitConfig(
            splits=[example_gen_pb2.SplitConfig.Split(name="train", hash_buckets=4),
                    example_gen_pb2.SplitConfig.Split(name="eval", hash_buckets=1)],
            partition_feature_name=F.SESSION_ID))
    spec = LiveLogExampleGenSpec(
        input_base=input_base, input_config=input_config, output_config=output_config,
        output_data_format=example_gen_pb2.FORMAT_TF_EXAMPLE,
        output_file_format=example_gen_pb2.FORMAT_TFRECORDS_GZIP,
        realtime_seq_len=realtime_seq_len, lifelong_seq_len=lifelong_seq_len,
        examples=types.Channel(type=standard_artifacts.Examples),
        quarantine=types.Channel(type=QuarantinedRecords))
    super().__init__(spec=spec)
