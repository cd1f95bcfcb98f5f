"""LocalDagRunner entry: what `tfx pipeline create --engine local --pipeline_path local_runner.py`
reads. Owns the paths (under $DEMO_WORK, default ./work); the pipeline itself knows none."""

import os
import shutil
import tempfile

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

from absl import logging  # noqa: E402
from tfx import v1 as tfx  # noqa: E402

from models import features as F  # noqa: E402
from pipeline import beam_presets, configs, run_outputs  # noqa: E402
from pipeline import pipeline as pipeline_lib  # noqa: E402
from pipeline.code_version import code_version  # noqa: E402
from schemas.make_schema import SCHEMA_PATH, content_addressed_name  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
WORK = os.environ.get("DEMO_WORK", os.path.join(HERE, "work"))
MODEL = os.environ.get("DEMO_MODEL", "baseline")
# 1: the Trainer starts shared layers from the latest blessed model (see create_pipeline).
WARM_START = os.environ.get("DEMO_WARM_START", "0") == "1"
# A longer lifelong history needs a schema generated for it (`make demo LIFELONG_LEN=N` does both).
LIFELONG_SEQ_LEN = int(os.environ.get("DEMO_LIFELONG_SEQ_LEN", F.LIFELONG_SEQ_LEN))
SCHEMA = os.environ.get("DEMO_SCHEMA", SCHEMA_PATH)
# Beam runner preset and its options ("name=value,name=value"), e.g. DEMO_BEAM=multi_processing
# DEMO_BEAM_OPTIONS=direct_num_workers=2.
BEAM_PRESET = os.environ.get("DEMO_BEAM", configs.LOCAL_BEAM_PRESET)
BEAM_OPTIONS = os.environ.get("DEMO_BEAM_OPTIONS", "")


def parse_options(text: str) -> dict:
  """``"a=1,b=2"`` -> ``{"a": "1", "b": "2"}``; an item without ``=`` is an error naming it."""
  out = {}
  for item in filter(None, (x.strip() for x in text.split(","))):
    name, sep, value = item.partition("=")
    if not sep or not name:
      raise ValueError(f"DEMO_BEAM_OPTIONS item {item!r} is not name=value")
    out[name] = value
  return out


def paths(work: str, pipeline_name: str = configs.PIPELINE_NAME) -> dict:
  """Every location a local run uses, derived from one work directory."""
  return {
      "log_dir": os.path.join(work, "logs"),
      "pipeline_root": os.path.join(work, "tfx", pipeline_name),
      "metadata": run_outputs.metadata_path(work, pipeline_name),
      "serving_dir": os.path.join(work, "serving"),
  }


def versioned_schema(schema_path: str, work: str) -> str:
  """A copy of ``schema_path`` under ``work`` at a path named by its content (ImportSchemaGen
  caches by path: ``schemas.make_schema.content_addressed_name``), so it is imported again exactly
  when it changed."""
  copy = os.path.join(work, "tfx", "schemas", content_addressed_name(schema_path))
  if not os.path.exists(copy):
    os.makedirs(os.path.dirname(copy), exist_ok=True)
    handle, partial = tempfile.mkstemp(dir=os.path.dirname(copy))
    os.close(handle)
    shutil.copyfile(schema_path, partial)
    os.replace(partial, copy)  # a reader (or a second build) never sees a half-written copy
  return copy


def build(work: str = WORK, model_name: str = MODEL, train_steps: int = configs.TRAIN_STEPS,
          min_auc: float = configs.MIN_EFFECTIVE_VIEW_AUC,
          warm_start: bool = WARM_START, lifelong_seq_len: int = LIFELONG_SEQ_LEN,
          schema_path: str = SCHEMA, beam_preset: str = BEAM_PRESET,
          beam_options: str = BEAM_OPTIONS) -> tfx.dsl.Pipeline:
  p = paths(work)
  return pipeline_lib.create_pipeline(
      pipeline_name=configs.PIPELINE_NAME, pipeline_root=p["pipeline_root"],
      log_dir=p["log_dir"], schema_path=versioned_schema(schema_path, work),
      schema_source=schema_path, lifelong_seq_len=lifelong_seq_len,
      serving_model_dir=os.path.join(p["serving_dir"], configs.PIPELINE_NAME),
      preprocessing_fn=configs.PREPROCESSING_FN, run_fn=configs.RUN_FN,
      train_steps=train_steps,
      trainer_config={"model_name": model_name}, min_effective_view_auc=min_auc,
      warm_start=warm_start, max_auc_drop=configs.MAX_AUC_DROP, code_version=code_version(),
      metadata_connection_config=tfx.orchestration.metadata.sqlite_metadata_connection_config(
          p["metadata"]),
      beam_pipeline_args=beam_presets.pipeline_beam_args(beam_preset,
                                                          **parse_options(beam_options)))


if __name__ == "__main__":
  logging.set_verbosity(logging.INFO)
  tfx.orchestration.LocalDagRunner().run(build())
