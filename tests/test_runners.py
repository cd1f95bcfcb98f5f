"""The Kubeflow V2 runner compiles the pipeline offline, with every component."""

import json

import kubeflow_v2_runner

EXPECTED = {"LiveLogExampleGen", "StatisticsGen", "ImportSchemaGen", "ExampleValidator",
            "AnomalyGate", "Transform", "Trainer", "Evaluator", "Pusher"}


def test_kubeflow_v2_compile(tmp_path):
  out = kubeflow_v2_runner.compile_pipeline(str(tmp_path / "p.json"), "gs://b/x",
                                            "gcr.io/p/img:1", "baseline")
  spec = json.load(open(out))["pipelineSpec"]
  assert set(spec["root"]["dag"]["tasks"]) == EXPECTED
  assert spec["pipelineInfo"]["name"] == "livestream-ranking"
  trainer = spec["deploymentSpec"]["executors"]["Trainer_executor"]["container"]
  assert trainer["image"] == "gcr.io/p/img:1"
  # The Transform waits for the anomaly gate, so bad data never reaches training.
  assert "AnomalyGate" in spec["root"]["dag"]["tasks"]["Transform"]["dependentTasks"]


def test_eval_config_per_head_auc_and_blessing_on_overall_slice_only():
  from models import features as F
  from models import tasks
  from pipeline.pipeline import eval_config

  cfg = eval_config(0.6, tasks.ENGAGEMENT.served)
  by_output = {tuple(s.output_names): s for s in cfg.metrics_specs}
  assert set(by_output) == {()} | {(h,) for h in F.HEADS}
  assert by_output[()].metrics[0].class_name == "ExampleCount"
  for head in F.HEADS:
    (auc,) = by_output[(head,)].metrics
    assert auc.class_name == "AUC" and f"auc_{head}" in auc.config
    thresholds = list(auc.per_slice_thresholds)
    if head == F.HEAD_EFFECTIVE_VIEW:
      (t,) = thresholds
      assert t.threshold.value_threshold.lower_bound.value == 0.6
      assert [s.feature_keys for s in t.slicing_specs] == [[]]  # the overall slice only
    else:
      assert thresholds == []
  assert [list(s.feature_keys) for s in cfg.slicing_specs] == [[], [F.ACTIVITY_LEVEL]]


def test_bad_trainer_config_fails_when_the_pipeline_is_built(tmp_path):
  import pytest

  import local_runner
  with pytest.raises(ValueError, match="model_name 'nope' is not one of"):
    local_runner.build(work=str(tmp_path), model_name="nope")
  with pytest.raises(ValueError, match="unknown trainer custom_config keys"):
    kubeflow_v2_runner.pipeline_lib.create_pipeline(
        pipeline_name="p", pipeline_root=str(tmp_path), log_dir=str(tmp_path), schema_path="s",
        serving_model_dir=str(tmp_path), preprocessing_fn="m.f", run_fn="m.r", train_steps=1,
        trainer_config={"epochs": 3}, min_effective_view_auc=0.5)


def test_warm_start_feeds_the_trainer_the_latest_blessed_model(tmp_path):
  import local_runner
  from pipeline.pipeline import LATEST_BLESSED_MODEL_RESOLVER

  def trainer_and_ids(warm_start):
    p = local_runner.build(work=str(tmp_path), model_name="lifelong", warm_start=warm_start)
    (trainer,) = [c for c in p.components if c.id == "Trainer"]
    return trainer, [c.id for c in p.components]

  trainer, ids = trainer_and_ids(True)
  assert ids.index(LATEST_BLESSED_MODEL_RESOLVER) < ids.index("Trainer")
  assert trainer.inputs["base_model"].producer_component_id == LATEST_BLESSED_MODEL_RESOLVER
  trainer, ids = trainer_and_ids(False)
  assert LATEST_BLESSED_MODEL_RESOLVER not in ids and "base_model" not in trainer.inputs
