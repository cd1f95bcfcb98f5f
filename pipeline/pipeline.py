"""create_pipeline: the live-stream ranking pipeline as a pure function of its settings."""

from __future__ import annotations

from typing import Dict, List, Sequence

import tensorflow_model_analysis as tfma
from tfx import v1 as tfx

from components.anomaly_gate import AnomalyGate
from components.live_example_gen.component import LiveLogExampleGen
from models import features as F
from models import preprocessing as P
from models.signatures import SERVING_SIGNATURE, TRANSFORM_SIGNATURE
from models.tasks import Head
from models.trainer import TrainConfig, model_tasks
from schemas.make_schema import check_schema_lengths

LATEST_BLESSED_MODEL_RESOLVER = "latest_blessed_model_resolver"


def eval_config(min_effective_view_auc: float, served_heads: Sequence[Head]) -> tfma.EvalConfig:
  """Per-head AUC, overall and by user activity level; blessing on the effective-view AUC.

  Args:
    min_effective_view_auc: the blessing threshold.
    served_heads: the model's served heads (the serving signature's outputs).
  """
  heads = [h.output for h in served_heads]
  if F.HEAD_EFFECTIVE_VIEW not in heads:
    raise ValueError(f"the model serves {heads}; blessing needs {F.HEAD_EFFECTIVE_VIEW!r}")
  overall = [tfma.SlicingSpec()]
  metrics_specs = [tfma.MetricsSpec(metrics=[tfma.MetricConfig(class_name="ExampleCount")])]
  for head in heads:
    thresholds = []
    if head == F.HEAD_EFFECTIVE_VIEW:  # bless on the whole eval set, not on small slices
      thresholds = [tfma.PerSliceMetricThreshold(
          slicing_specs=overall,
          threshold=tfma.MetricThreshold(value_threshold=tfma.GenericValueThreshold(
              lower_bound={"value": min_effective_view_auc})))]
    auc = tfma.MetricConfig(class_name="AUC", per_slice_thresholds=thresholds,
                            config=f'"name": "auc_{head}"')
    metrics_specs.append(tfma.MetricsSpec(metrics=[auc], output_names=[head]))
  return tfma.EvalConfig(
      model_specs=[tfma.ModelSpec(signature_name=SERVING_SIGNATURE,
                                  label_keys={h: F.HEADS[h] for h in heads},
                                  preprocessing_function_names=[TRANSFORM_SIGNATURE])],
      metrics_specs=metrics_specs,
      slicing_specs=overall + [tfma.SlicingSpec(feature_keys=[F.ACTIVITY_LEVEL])])


def create_pipeline(
    pipeline_name: str,
    pipeline_root: str,
    log_dir: str,
    schema_path: str,
    serving_model_dir: str,
    preprocessing_fn: str,
    run_fn: str,
    train_steps: int,
    trainer_config: Dict,
    min_effective_view_auc: float,
    realtime_seq_len: int = F.REALTIME_SEQ_LEN,
    lifelong_seq_len: int = F.LIFELONG_SEQ_LEN,
    eval_days: int = 1,
    warm_start: bool = False,
    metadata_connection_config=None,
    beam_pipeline_args: List[str] | None = None,
    schema_source: str | None = None,
) -> tfx.dsl.Pipeline:
  """Logs -> examples -> stats/schema/validation -> Transform -> Trainer -> Evaluator -> Pusher.

  The eval split (Evaluator, early stopping, quality report) is the last ``eval_days`` days of
  the logs; training sees only earlier sessions. With ``warm_start`` the Trainer gets the latest
  blessed model as its ``base_model`` (a resolver): layers the two share start from it (the
  lifelong attention, with Mixout toward it; ``models/trainer.py::warm_start``).

  The sequence lengths are one setting each: the ExampleGen keeps at most that many, the schema
  must declare them (checked here), Transform pads the lifelong purchases to ``lifelong_seq_len``
  and the Trainer's model reads that length from the Transform output. ``schema_source`` is the
  local file ``schema_path`` is a copy of, when ``schema_path`` only exists where the pipeline
  runs (inside a container image); the lengths are checked against it.
  """
  # Fail now, not ~400 s later inside the Trainer: unknown keys, unknown model, bad values,
  # lengths out of range or not the schema's.
  served_heads = model_tasks(TrainConfig.from_custom_config(trainer_config)).served
  F.check_sequence_lengths(realtime_seq_len, lifelong_seq_len)
  check_schema_lengths(schema_source or schema_path, realtime_seq_len, lifelong_seq_len)
  example_gen = LiveLogExampleGen(input_base=log_dir, realtime_seq_len=realtime_seq_len,
                                  lifelong_seq_len=lifelong_seq_len, eval_days=eval_days)
  statistics_gen = tfx.components.StatisticsGen(examples=example_gen.outputs["examples"])
  schema_gen = tfx.components.ImportSchemaGen(schema_file=schema_path)
  example_validator = tfx.components.ExampleValidator(
      statistics=statistics_gen.outputs["statistics"], schema=schema_gen.outputs["schema"])
  anomaly_gate = AnomalyGate(anomalies=example_validator.outputs["anomalies"])
  transform = tfx.components.Transform(
      examples=example_gen.outputs["examples"], schema=schema_gen.outputs["schema"],
      preprocessing_fn=preprocessing_fn,
      custom_config={P.LIFELONG_SEQ_LEN_CONFIG: lifelong_seq_len},
      # StatisticsGen and ExampleValidator already check the raw examples against the schema;
      # Transform's own pre- and post-transform statistics would compute them again (and over
      # every padded lifelong value): BUILD_NOTES "Demo time".
      disable_statistics=True)
  transform.add_upstream_node(anomaly_gate)
  base_model = None
  if warm_start:
    latest_blessed = tfx.dsl.Resolver(
        strategy_class=tfx.dsl.experimental.LatestBlessedModelStrategy,
        model=tfx.dsl.Channel(type=tfx.types.standard_artifacts.Model),
        model_blessing=tfx.dsl.Channel(type=tfx.types.standard_artifacts.ModelBlessing),
    ).with_id(LATEST_BLESSED_MODEL_RESOLVER)
    base_model = latest_blessed.outputs["model"]
  trainer = tfx.components.Trainer(
      run_fn=run_fn, examples=transform.outputs["transformed_examples"],
      transform_graph=transform.outputs["transform_graph"], schema=schema_gen.outputs["schema"],
      base_model=base_model,
      # Every epoch evaluates the whole eval split (early stopping), so no eval_args step count.
      train_args=tfx.proto.TrainArgs(num_steps=train_steps), custom_config=trainer_config)
  evaluator = tfx.components.Evaluator(
      examples=example_gen.outputs["examples"], model=trainer.outputs["model"],
      eval_config=eval_config(min_effective_view_auc, served_heads))
  pusher = tfx.components.Pusher(
      model=trainer.outputs["model"], model_blessing=evaluator.outputs["blessing"],
      push_destination=tfx.proto.PushDestination(
          filesystem=tfx.proto.PushDestination.Filesystem(base_directory=serving_model_dir)))
  return tfx.dsl.Pipeline(
      pipeline_name=pipeline_name, pipeline_root=pipeline_root,
      components=[example_gen, statistics_gen, schema_gen, example_validator, anomaly_gate,
                  transform] + ([latest_blessed] if warm_start else []) + [
                      trainer, evaluator, pusher],
      enable_cache=False, metadata_connection_config=metadata_connection_config,
      beam_pipeline_args=beam_pipeline_args)
