"""The Kubeflow V2 runner compiles the pipeline offline, with every component."""

import json

import kubeflow_v2_runner

EXPECTED = {"LiveLogExampleGen", "StatisticsGen", "ImportSchemaGen", "ExampleValidator",
            "AnomalyGate", "Transform", "Trainer", "Evaluator", "Pusher",
            # The latest blessed model (the Evaluator's baseline) compiles to two resolver tasks.
            "latest_blessed_model_resolver-model-blessing-resolver",
            "latest_blessed_model_resolver-model-resolver"}


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
  # Beam components run on Dataflow, with the pipeline's image on the workers.
  args = spec["deploymentSpec"]["executors"]["Transform_executor"]["container"]["args"]
  assert {"--runner=DataflowRunner", "--project=your-project", "--region=us-central1",
          "--temp_location=gs://b/x/tmp", "--sdk_container_image=gcr.io/p/img:1"} <= set(args)


def test_beam_presets_fill_options_and_name_what_is_missing():
  import pytest

  from pipeline import beam_presets as bp

  assert bp.beam_args(bp.IN_MEMORY) == ["--direct_running_mode=in_memory",
                                        "--direct_num_workers=1"]
  assert bp.beam_args(bp.MULTI_PROCESSING, direct_num_workers="2") == [
      "--direct_running_mode=multi_processing", "--direct_num_workers=2"]
  assert bp.beam_args(bp.DASK, dask_client_address="127.0.0.1:8786") == [
      "--runner=apache_beam.runners.dask.dask_runner.DaskRunner",
      "--dask_client_address=127.0.0.1:8786"]
  assert bp.beam_args(bp.FLINK, flink_master="host:8081")[-2:] == [
      "--environment_type=LOOPBACK", "--flink_master=host:8081"]
  with pytest.raises(ValueError, match=r"'dataflow' needs --region, --temp_location"):
    bp.beam_args(bp.DATAFLOW, project="p")
  with pytest.raises(ValueError, match=r"'spark' needs --spark_master_url"):
    bp.beam_args(bp.SPARK, spark_master_url="")
  with pytest.raises(ValueError, match=r"unknown Beam preset 'dataflw'"):
    bp.beam_args("dataflw")
  with pytest.raises(ValueError, match=r"'in_memory' does not take option\(s\) \['project'\]"):
    bp.beam_args(bp.IN_MEMORY, project="p")
  with pytest.raises(ValueError, match=r"direct_num_workers must be a whole number >= 1, got '0'"):
    bp.beam_args(bp.MULTI_PROCESSING, direct_num_workers="0")


def test_local_runner_takes_a_beam_preset_and_checks_it_when_built(tmp_path):
  import pytest

  import local_runner

  p = local_runner.build(work=str(tmp_path), beam_preset="multi_processing",
                         beam_options="direct_num_workers=3")
  assert p.beam_pipeline_args == ["--direct_running_mode=multi_processing",
                                  "--direct_num_workers=3"]
  with pytest.raises(ValueError, match="'dask' needs --dask_client_address"):
    local_runner.build(work=str(tmp_path), beam_preset="dask")
  with pytest.raises(ValueError, match="DEMO_BEAM_OPTIONS item 'workers' is not name=value"):
    local_runner.build(work=str(tmp_path), beam_options="workers")


def test_eval_config_blesses_against_the_baseline_on_every_head_overall_slice_only():
  import pytest
  import tensorflow_model_analysis as tfma

  from models import features as F
  from models import tasks
  from pipeline.pipeline import BASELINE, CANDIDATE, eval_config

  cfg = eval_config(0.6, tasks.ENGAGEMENT.served, max_auc_drop=0.02)
  assert [(m.name, m.is_baseline) for m in cfg.model_specs] == [(CANDIDATE, False),
                                                                (BASELINE, True)]
  by_output = {tuple(s.output_names): s for s in cfg.metrics_specs}
  assert set(by_output) == {()} | {(h,) for h in F.HEADS}
  assert by_output[()].metrics[0].class_name == "ExampleCount"
  for head in F.HEADS:
    (auc,) = by_output[(head,)].metrics
    assert auc.class_name == "AUC" and f"auc_{head}" in auc.config
    (t,) = auc.per_slice_thresholds
    assert [s.feature_keys for s in t.slicing_specs] == [[]]  # the overall slice only
    change = t.threshold.change_threshold
    assert change.absolute.value == -0.02
    assert change.direction == tfma.MetricDirection.HIGHER_IS_BETTER
    has_floor = t.threshold.HasField("value_threshold")
    assert has_floor == (head == F.HEAD_EFFECTIVE_VIEW)
    if has_floor:
      assert t.threshold.value_threshold.lower_bound.value == 0.6
  assert [list(s.feature_keys) for s in cfg.slicing_specs] == [[], [F.ACTIVITY_LEVEL]]
  with pytest.raises(ValueError, match="max_auc_drop must be in \\[0, 1\\), got -0.1"):
    eval_config(0.6, tasks.ENGAGEMENT.served, max_auc_drop=-0.1)


def test_code_version_changes_with_the_code(tmp_path):
  from pipeline.code_version import code_version

  (tmp_path / "models").mkdir()
  (tmp_path / "models" / "a.py").write_text("x = 1\n")
  first = code_version(str(tmp_path), ["models"])
  assert first == code_version(str(tmp_path), ["models"]) and len(first) == 16
  (tmp_path / "models" / "a.py").write_text("x = 2\n")
  assert code_version(str(tmp_path), ["models"]) != first


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


def test_sequence_lengths_are_checked_against_the_schema_when_the_pipeline_is_built(tmp_path):
  import pytest

  import local_runner
  from models import features as F
  from models import preprocessing as P
  from schemas import make_schema

  with pytest.raises(ValueError, match=r"lifelong_seq_len must be in \[1, 10000\], got 20000"):
    local_runner.build(work=str(tmp_path), lifelong_seq_len=20000)
  # The checked-in schema is for the default lengths: another length names the command to fix it.
  with pytest.raises(ValueError, match="--lifelong_len 1000"):
    local_runner.build(work=str(tmp_path), lifelong_seq_len=1000)
  schema_path = str(tmp_path / "schema.pbtxt")
  from google.protobuf import text_format
  with open(schema_path, "w") as f:
    f.write(text_format.MessageToString(make_schema.build_schema(F.REALTIME_SEQ_LEN, 1000)))
  p = local_runner.build(work=str(tmp_path), lifelong_seq_len=1000, schema_path=schema_path)
  by_id = {c.id: c for c in p.components}
  assert by_id["LiveLogExampleGen"].exec_properties["lifelong_seq_len"] == 1000
  transform_config = json.loads(by_id["Transform"].exec_properties["custom_config"])
  assert transform_config[P.LIFELONG_SEQ_LEN_CONFIG] == 1000


def test_the_latest_blessed_model_is_the_evaluators_baseline_and_the_warm_start(tmp_path):
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
  assert "base_model" not in trainer.inputs
  p = local_runner.build(work=str(tmp_path))
  (evaluator,) = [c for c in p.components if c.id == "Evaluator"]
  assert (evaluator.inputs["baseline_model"].producer_component_id
          == LATEST_BLESSED_MODEL_RESOLVER)
  assert p.enable_cache


def test_checked_in_schema_is_the_generated_one_with_variable_length_lifelong_features():
  from google.protobuf import text_format
  from tensorflow_metadata.proto.v0 import schema_pb2

  from models import features as F
  from schemas import make_schema

  with open(make_schema.SCHEMA_PATH) as f:
    checked_in = text_format.Parse(f.read(), schema_pb2.Schema())
  assert checked_in == make_schema.build_schema(), "regenerate: python -m schemas.make_schema"
  by_name = {feat.name: feat for feat in checked_in.feature}
  ll_items = by_name[F.seq_key(F.LL, "item_ids")]
  assert not ll_items.HasField("shape")
  assert (ll_items.value_count.min, ll_items.value_count.max) == (0, F.LIFELONG_SEQ_LEN)
  assert [d.size for d in by_name[F.seq_key(F.RT_POS, "host_ids")].shape.dim] == [
      F.REALTIME_SEQ_LEN]
  assert make_schema.sequence_lengths(checked_in) == {
      "realtime_seq_len": F.REALTIME_SEQ_LEN, "lifelong_seq_len": F.LIFELONG_SEQ_LEN}
