"""The Kubeflow V2 runner compiles the pipeline offline, with every component, for the image the
Dockerfile builds; the local runner takes its Beam preset; the pipeline is checked when built."""

import ast
import fnmatch
import json
import os
import posixpath
import shlex
import shutil
import subprocess
import sys

import pytest

import kubeflow_v2_runner
from pipeline import configs

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXPECTED = {"LiveLogExampleGen", "StatisticsGen", "ImportSchemaGen", "ExampleValidator",
            "AnomalyGate", "Transform", "Trainer", "Evaluator", "Pusher",
            # The latest blessed model (the Evaluator's baseline) compiles to two resolver tasks.
            "latest_blessed_model_resolver-model-blessing-resolver",
            "latest_blessed_model_resolver-model-resolver"}
RESOLVERS = {t for t in EXPECTED if "resolver" in t}
# The components whose executors run Beam pipelines (on Dataflow, in the same image).
BEAM_COMPONENTS = {"LiveLogExampleGen", "StatisticsGen", "Transform", "Evaluator"}


def _containers_by_task(spec):
  """Task id -> its executor's container (tasks without one, the resolvers, are left out)."""
  executors = spec["deploymentSpec"]["executors"]
  out = {}
  for task_id, task in spec["root"]["dag"]["tasks"].items():
    label = spec["components"][task["componentRef"]["name"]]["executorLabel"]
    if "container" in executors[label]:
      out[task_id] = executors[label]["container"]
  return out


def _assert_compiled_for(spec, image, gcs_root, project, region):
  """Every component runs ``image``; the Beam ones on Dataflow with it on the workers."""
  assert set(spec["root"]["dag"]["tasks"]) == EXPECTED
  containers = _containers_by_task(spec)
  assert set(containers) == EXPECTED - RESOLVERS
  assert {task: c["image"] for task, c in containers.items()} == {
      task: image for task in containers}
  beam_args = {"--runner=DataflowRunner", f"--project={project}", f"--region={region}",
               f"--temp_location={gcs_root}/tmp", f"--sdk_container_image={image}"}
  for task in BEAM_COMPONENTS:
    # The executor's own arguments are "--name value" pairs; the Beam ones are "--name=value".
    assert {a for a in containers[task]["args"] if a.startswith("--") and "=" in a} == (
        beam_args), task


def test_kubeflow_v2_compile(tmp_path):
  out = kubeflow_v2_runner.compile_pipeline(str(tmp_path / "p.json"), "gs://b/x",
                                            "gcr.io/p/img:1", "baseline",
                                            project="proj-x", region="europe-west4")
  compiled = json.load(open(out))
  spec = compiled["pipelineSpec"]
  assert spec["pipelineInfo"]["name"] == "livestream-ranking"
  assert compiled["runtimeConfig"]["gcsOutputDirectory"] == "gs://b/x/tfx/livestream-ranking"
  _assert_compiled_for(spec, "gcr.io/p/img:1", "gs://b/x", "proj-x", "europe-west4")
  # The Transform waits for the anomaly gate, so bad data never reaches training.
  assert "AnomalyGate" in spec["root"]["dag"]["tasks"]["Transform"]["dependentTasks"]
  # The schema is imported from the image's copy at a path per content.
  assert kubeflow_v2_runner.image_schema_path() in json.dumps(
      spec["root"]["dag"]["tasks"]["ImportSchemaGen"])


def test_vertex_runner_names_every_missing_setting():
  from absl import app

  with pytest.raises(app.UsageError, match=r"needs --gcs_root \(or \$VERTEX_GCS_ROOT\), "
                                           r"--project \(or \$VERTEX_PROJECT\)$"):
    kubeflow_v2_runner.check_required({"gcs_root": "", "image": "gcr.io/p/i:1", "project": None})
  kubeflow_v2_runner.check_required({"gcs_root": "gs://b", "image": "gcr.io/p/i:1",
                                     "project": "p"})


def test_tfx_cli_creates_the_vertex_pipeline_from_the_environment(tmp_path):
  # What README "Run on Vertex AI" runs: the CLI calls the runner with no arguments. The venv's
  # bin leads PATH because the CLI looks for kfp with `pip freeze`.
  bin_dir = os.path.dirname(sys.executable)
  env = dict(os.environ, PATH=bin_dir + os.pathsep + os.environ.get("PATH", ""),
             TF_USE_LEGACY_KERAS="1", VERTEX_HOME=str(tmp_path / "home"),
             VERTEX_IMAGE="gcr.io/p/img:2", VERTEX_GCS_ROOT="gs://b/y",
             VERTEX_PROJECT="proj-y", VERTEX_REGION="asia-east1")
  done = subprocess.run([os.path.join(bin_dir, "tfx"), "pipeline", "create", "--engine", "vertex",
                         "--pipeline_path", os.path.join(ROOT, "kubeflow_v2_runner.py")],
                        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
  assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
  assert 'Pipeline "livestream-ranking" created successfully.' in done.stdout
  with open(tmp_path / "home" / "livestream-ranking" / "pipeline.json") as f:
    spec = json.load(f)["pipelineSpec"]
  _assert_compiled_for(spec, "gcr.io/p/img:2", "gs://b/y", "proj-y", "asia-east1")


def _dockerfile(path):
  """The Dockerfile's instructions as (KEYWORD, arguments): comments dropped, lines joined."""
  out, current = [], ""
  with open(path) as f:
    for line in f:
      text = line.strip()
      if not text or text.startswith("#"):
        continue
      if text.endswith("\\"):
        current += text[:-1] + " "
        continue
      keyword, _, rest = (current + text).partition(" ")
      out.append((keyword.upper(), rest.strip()))
      current = ""
  return out


def _dockerignored(path, patterns):
  """Whether Docker leaves ``path`` (or a directory above it) out of the build context."""
  parts = path.split("/")
  prefixes = ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]
  return any(fnmatch.fnmatch(prefix, p) or fnmatch.fnmatch(prefix, p.removeprefix("**/"))
             for prefix in prefixes for p in patterns)


def test_the_image_installs_this_package_where_the_runner_looks(tmp_path):
  instructions = _dockerfile(os.path.join(ROOT, "Dockerfile"))
  by_keyword = {}
  for keyword, args in instructions:
    by_keyword.setdefault(keyword, []).append(args)
  with open(os.path.join(ROOT, "constraints.txt")) as f:
    pins = dict(line.strip().split("==", 1) for line in f if "==" in line and line[0] != "#")
  # The TFX team's image for the pinned tfx: the venv's TFX and the image's are the same release.
  assert by_keyword["FROM"] == [f"gcr.io/tfx-oss-public/tfx:{pins['tfx']}"]
  (workdir,) = by_keyword["WORKDIR"]
  from schemas.make_schema import SCHEMA_PATH
  relative = os.path.relpath(SCHEMA_PATH, ROOT).replace(os.sep, "/")
  # The runner's image path of the schema is where the image's copy step puts this checkout's
  # schema under the WORKDIR: run that step on a copy of it, as the build runs it.
  (copy_step,) = [a for a in by_keyword["RUN"] if "sha256sum" in a]
  image_path = kubeflow_v2_runner.image_schema_path()
  assert posixpath.dirname(image_path) != posixpath.dirname(posixpath.join(workdir, relative))
  os.makedirs(tmp_path / os.path.dirname(relative))
  shutil.copyfile(SCHEMA_PATH, tmp_path / relative)
  subprocess.run(["bash", "-c", copy_step], cwd=tmp_path, check=True)
  with open(tmp_path / posixpath.relpath(image_path, workdir)) as f, open(SCHEMA_PATH) as g:
    assert f.read() == g.read()
  # ...and the build context (the checkout) is what is copied there.
  copies = [shlex.split(a) for a in by_keyword["COPY"]]
  assert any(c[:-1] == ["."] and posixpath.normpath(posixpath.join(workdir, c[-1])) == workdir
             for c in copies), (copies, workdir)
  # Installed (not editable) with the venv's pins.
  (install,) = [shlex.split(a) for a in by_keyword["RUN"] if "pip install" in a]
  install = install[:install.index("&&")] if "&&" in install else install
  assert install[install.index("-c") + 1] == "constraints.txt" and install[-1] == "."
  assert not {"-e", "--editable"} & set(install)
  env = {}
  for args in by_keyword["ENV"]:
    env.update(item.split("=", 1) for item in shlex.split(args))
  assert env["TF_USE_LEGACY_KERAS"] == "1"
  assert workdir in env["PYTHONPATH"].split(":")
  # Dataflow starts workers through the base image's Beam boot entrypoint: keep it.
  assert "ENTRYPOINT" not in by_keyword and "CMD" not in by_keyword
  with open(os.path.join(ROOT, ".dockerignore")) as f:
    ignored = [x.strip() for x in f if x.strip() and not x.startswith("#")]
  for local_state in (".venv/bin/python", ".git/HEAD", "work/logs", "models/__pycache__/x.pyc",
                      "livestream_tfx.egg-info/PKG-INFO"):
    assert _dockerignored(local_state, ignored), local_state
  for needed in (relative, "setup.py", "constraints.txt", "models/trainer.py",
                 "models/preprocessing.py"):
    assert not _dockerignored(needed, ignored), needed


def test_the_trainer_and_transform_module_paths_are_in_the_installed_package():
  from setuptools import find_packages

  # setup.py's own find_packages(...) arguments, read without running setup().
  with open(os.path.join(ROOT, "setup.py")) as f:
    (call,) = [n for n in ast.walk(ast.parse(f.read()))
               if isinstance(n, ast.Call) and getattr(n.func, "id", None) == "find_packages"]
  packages = set(find_packages(where=ROOT, **{k.arg: ast.literal_eval(k.value)
                                               for k in call.keywords}))
  for path in (configs.RUN_FN, configs.PREPROCESSING_FN):
    module, _, function = path.rpartition(".")
    assert module.rpartition(".")[0] in packages, path
    with open(os.path.join(ROOT, *module.split(".")) + ".py") as f:
      defined = {n.name for n in ast.parse(f.read()).body if isinstance(n, ast.FunctionDef)}
    assert function in defined, path


def test_make_image_and_vertex_name_what_is_missing(tmp_path):
  make = [shutil.which("make"), "-s", "-C", ROOT]
  # Empty command-line values override any in the environment.
  done = subprocess.run(make + ["vertex", "GCS_ROOT=", "IMAGE=gcr.io/p/i:1", "PROJECT=p"],
                        capture_output=True, text=True)
  assert done.returncode != 0 and "make vertex: set GCS_ROOT" in done.stdout
  done = subprocess.run(make + ["image", "IMAGE=gcr.io/p/i:1"], capture_output=True, text=True,
                        env=dict(os.environ, PATH=str(tmp_path)))  # no docker on this PATH
  assert done.returncode != 0 and "make image: docker is not on PATH" in done.stdout


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
  with pytest.raises(ValueError, match="'dask' cannot run this pipeline: Beam 2.59's DaskRunner"):
    local_runner.build(work=str(tmp_path), beam_preset="dask",
                       beam_options="dask_client_address=127.0.0.1:8786")
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


def test_local_runner_imports_the_schema_from_a_path_per_content(tmp_path):
  # ImportSchemaGen caches by path: an edited schema must get a new one, an unchanged the same.
  import local_runner

  schema = tmp_path / "schema.pbtxt"
  schema.write_text('feature { name: "a" }\n')
  first = local_runner.versioned_schema(str(schema), str(tmp_path / "work"))
  assert first.startswith(str(tmp_path / "work")) and first != str(schema)
  assert open(first).read() == schema.read_text()
  assert local_runner.versioned_schema(str(schema), str(tmp_path / "work")) == first
  schema.write_text('feature { name: "b" }\n')
  second = local_runner.versioned_schema(str(schema), str(tmp_path / "work"))
  assert second != first and open(second).read() == schema.read_text()
  assert open(first).read() == 'feature { name: "a" }\n'  # the old copy is left as it was
  built = local_runner.build(work=str(tmp_path / "work"))
  gen = next(c for c in built.components if c.id == "ImportSchemaGen")
  assert os.path.dirname(os.path.dirname(gen.exec_properties["schema_file"])) == str(
      tmp_path / "work" / "tfx" / "schemas")


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
