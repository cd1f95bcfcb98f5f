"""create_pipeline: the live-stream ranking pipeline as a pure function of its settings."""

from __future__ import annotations

from typing import Dict, List, Sequence

import tensorflow_model_analysis as tfma
from tfx import v1 as tfx

from components.anomaly_gate import AnomalyGate
from components.live_example_gen.component import LiveLogExampleGen
from models import features as F
from models import preprocessing as P
from models.signatures import SERVING_SIGNATURE
from models.tasks import Head
from models.trainer import TrainConfig, model_tasks
from pipeline.run_outputs import EXAMPLE_GEN, TRANSFORM
from schemas.make_schema import check_schema_lengths

LATEST_BLESSED_MODEL_RESOLVER = "latest_blessed_model_resolver"


# Model names in the Evaluator's config: the Trainer's new model and the latest blessed one.
CANDIDATE, BASELINE = "candidate", "baseline"


def eval_config(min_effective_view_auc: float, served_heads: Sequence[Head],
                max_auc_drop: float = 0.01) -> tfma.EvalConfig:
  """Per-head AUC, overall and by user activity level; blessing against the last blessed model.

  Blessed when the effective-view AUC is at least ``min_effective_view_auc`` and no head's AUC is
  more than ``max_auc_drop`` below the baseline's (the latest blessed model, from the resolver),
  both on the whole eval set, not on small slices. Without a blessed model yet (the first run)
  TFX's Evaluator drops the baseline and the change thresholds.

  Args:
    min_effective_view_auc: the absolute floor.
    served_heads: the model's served heads (the serving signature's outputs).
    max_auc_drop: how much worse than the baseline a head may be, in AUC.
  """
  heads = [h.output for h in served_heads]
  if F.HEAD_EFFECTIVE_VIEW not in heads:
    raise ValueError(f"the model serves {heads}; blessing needs {F.HEAD_EFFECTIVE_VIEW!r}")
  if not 0.0 <= max_auc_drop < 1.0:
    raise ValueError(f"max_auc_drop must be in [0, 1), got {max_auc_drop}")
  overall = [tfma.SlicingSpec()]
  metrics_specs = [tfma.MetricsSpec(metrics=[tfma.MetricConfig(class_name="ExampleCount")])]
  for head in heads:
    threshold = tfma.MetricThreshold(change_threshold=tfma.GenericChangeThreshold(
        direction=tfma.MetricDirection.HIGHER_IS_BETTER, absolute={"value": -max_auc_drop}))
    if head == F.HEAD_EFFECTIVE_VIEW:
      threshold.value_threshold.CopyFrom(tfma.GenericValueThreshold(
          lower_bound={"value": min_effective_view_auc}))
    auc = tfma.MetricConfig(
        class_name="AUC", config=f'"name": "auc_{head}"',
        per_slice_thresholds=[tfma.PerSliceMetricThreshold(slicing_specs=overall,
                                                           threshold=threshold)])
    metrics_specs.append(tfma.MetricsSpec(metrics=[auc], output_names=[head]))
  model_specs = [
      # The serving signature parses and transforms the raw examples itself; labels and the
      # slicing feature are raw. (A preprocessing function ran Transform's graph a second time
      # per batch: 12 s of a 63 s evaluation at the default scale.)
      tfma.ModelSpec(name=name, is_baseline=name == BASELINE, signature_name=SERVING_SIGNATURE,
                     label_keys={h: F.TRANSFORMED_LABELS[h] for h in heads})
      for name in (CANDIDATE, BASELINE)]
  return tfma.EvalConfig(
      model_specs=model_specs, metrics_specs=metrics_specs,
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
    enable_cache: bool = True,
    code_version: str = "",
    max_auc_drop: float = 0.01,
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

  With ``enable_cache`` a run reuses what an earlier run made from the same inputs and settings
  (a killed run resumes after its last finished component; a new model name re-runs only the
  Trainer onwards); new log files change the ExampleGen's input fingerprint, and ``code_version``
  (``pipeline/code_version.py``) goes into the ExampleGen's, Transform's and Trainer's settings so
  changed code is not served from the cache. The Evaluator blesses against the latest blessed
  model (``eval_config``'s ``max_auc_drop``).
  """
  # Fail now, not ~400 s later inside the Trainer: unknown keys, unknown model, bad values,
  # lengths out of range or not the schema's.
  served_heads = model_tasks(TrainConfig.from_custom_config(trainer_config)).served
  F.check_sequence_lengths(realtime_seq_len, lifelong_seq_len)
  check_schema_lengths(schema_source or schema_path, realtime_seq_len, lifelong_seq_len)
  config = eval_config(min_effective_view_auc, served_heads, max_auc_drop)
  example_gen = LiveLogExampleGen(input_base=log_dir, realtime_seq_len=realtime_seq_len,
                                  lifelong_seq_len=lifelong_seq_len, eval_days=eval_days,
                                  code_version=code_version or None).with_id(EXAMPLE_GEN)
  statistics_gen = tfx.components.StatisticsGen(examples=example_gen.outputs["examples"])
  schema_gen = tfx.components.ImportSchemaGen(schema_file=schema_path)
  example_validator = tfx.components.ExampleValidator(
      statistics=statistics_gen.outputs["statistics"], schema=schema_gen.outputs["schema"])
  anomaly_gate = AnomalyGate(anomalies=example_validator.outputs["anomalies"])
  transform = tfx.components.Transform(
      examples=example_gen.outputs["examples"], schema=schema_gen.outputs["schema"],
      preprocessing_fn=preprocessing_fn,
      custom_config={P.LIFELONG_SEQ_LEN_CONFIG: lifelong_seq_len,
                     P.CODE_VERSION_CONFIG: code_version},
      # StatisticsGen and ExampleValidator already check the raw examples against the schema;
      # Transform's own pre- and post-transform statistics would compute them again (and over
      # every padded lifelong value): BUILD_NOTES "Demo time".
      disable_statistics=True).with_id(TRANSFORM)
  transform.add_upstream_node(anomaly_gate)
  latest_blessed = tfx.dsl.Resolver(
      strategy_class=tfx.dsl.experimental.LatestBlessedModelStrategy,
      model=tfx.dsl.Channel(type=tfx.types.standard_artifacts.Model),
      model_blessing=tfx.dsl.Channel(type=tfx.types.standard_artifacts.ModelBlessing),
  ).with_id(LATEST_BLESSED_MODEL_RESOLVER)
  trainer = tfx.components.Trainer(
      run_fn=run_fn, examples=transform.outputs["transformed_examples"],
      transform_graph=transform.outputs["transform_graph"], schema=schema_gen.outputs["schema"],
      base_model=latest_blessed.outputs["model"] if warm_start else None,
      # Every epoch evaluates the whole eval split (early stopping), so no eval_args step count.
      train_args=tfx.proto.TrainArgs(num_steps=train_steps),
      custom_config=dict(trainer_config, code_version=code_version))
  evaluator = tfx.components.Evaluator(
      examples=example_gen.outputs["examples"], model=trainer.outputs["model"],
      baseline_model=latest_blessed.outputs["model"], eval_config=config)
  pusher = tfx.components.Pusher(
      model=trainer.outputs["model"], model_blessing=evaluator.outputs["blessing"],
      push_destination=tfx.proto.PushDestination(
          filesystem=tfx.proto.PushDestination.Filesystem(base_directory=serving_model_dir)))
  return tfx.dsl.Pipeline(
      pipeline_name=pipeline_name, pipeline_root=pipeline_root,
      components=[example_gen, statistics_gen, schema_gen, example_validator, anomaly_gate,
                  transform, latest_blessed, trainer, evaluator, pusher],
      enable_cache=enable_cache, metadata_connection_config=metadata_connection_config,
      beam_pipeline_args=beam_pipeline_args)
