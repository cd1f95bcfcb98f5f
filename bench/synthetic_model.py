"""A servable ranking model without a pipeline run: synthetic raw rows, a real Transform, export.

The serving benchmarks and tests need exported models at sequence lengths no pipeline run
produced (a lifelong history of 10,000 purchases); this builds the same SavedModel the Trainer
exports (both signatures, the in-graph request checks) from a handful of rows. The weights are
untrained: good for cost, meaningless for quality.
"""

from __future__ import annotations

import functools
import os
import subprocess
import sys
import tempfile
from typing import Dict, List, Sequence, Tuple

import numpy as np
import tensorflow as tf
import tensorflow_transform as tft
import tensorflow_transform.beam as tft_beam
from tensorflow_transform.tf_metadata import dataset_metadata, metadata_io

from models import features as F
from models import preprocessing as P
from models import trainer
from models.spec import ModelSpec
from models.warmup import ID_RANGE, synthetic_row, to_example  # noqa: F401 (re-exported)
from schemas.make_schema import build_schema
from serving import client


def export_model(rows: Sequence[Dict[str, list]], realtime_len: int, lifelong_len: int,
                 export_dir: str, model_name: str = "baseline", embedding_dim: int = 16,
                 work_dir: str | None = None) -> str:
  """Analyzes ``rows`` with ``preprocessing_fn``, builds ``model_name`` on that Transform output
  and exports it (the Trainer's signatures) to ``export_dir``; returns ``export_dir``."""
  work_dir = work_dir or tempfile.mkdtemp(prefix="synthetic_transform_")
  tft_dir = os.path.join(work_dir, "transform")
  raw_metadata = dataset_metadata.DatasetMetadata(build_schema(realtime_len, lifelong_len))
  with tft_beam.Context(temp_dir=os.path.join(work_dir, "tft_tmp")):
    transform_fn = (list(rows), raw_metadata) | tft_beam.AnalyzeDataset(functools.partial(
        P.preprocessing_fn, custom_config={P.LIFELONG_SEQ_LEN_CONFIG: lifelong_len}))
    _ = transform_fn | tft_beam.WriteTransformFn(tft_dir)
  metadata_io.write_metadata(raw_metadata,
                             os.path.join(tft_dir, tft.TFTransformOutput.RAW_METADATA_DIR))
  tft_output = tft.TFTransformOutput(tft_dir)
  spec = ModelSpec.from_transform_output(tft_output, embedding_dim=embedding_dim)
  cfg = trainer.TrainConfig(model_name=model_name)
  model = trainer.build_model(spec, cfg)
  trainer.export_serving_model(model, tft_output, export_dir,
                               trainer.rank_search(cfg, model.tasks.served_outputs))
  return export_dir


def ranking_request(n_candidates: int, realtime_len: int, lifelong_len: int, seed: int = 0
                    ) -> Tuple[tf.train.Example, List[tf.train.Example]]:
  """One user's full example and ``n_candidates`` distinct rooms' examples (room-side features
  only, :data:`models.features.HOST_SIDE_FEATURES`)."""
  context = to_example(synthetic_row(seed, realtime_len, lifelong_len),
                       F.serving_raw_features(realtime_len, lifelong_len))
  room_template = synthetic_row(seed + 1, 1, 1)
  rooms = []
  for i in range(n_candidates):
    rng = np.random.default_rng(seed + 10 + i)
    room = dict(room_template)
    room[F.HOST_ID] = [int(rng.integers(1, ID_RANGE + 1))]
    room[F.HOST_CATEGORY_IDS] = rng.integers(1, ID_RANGE + 1, F.HOST_MAX_CATEGORIES).tolist()
    room[F.DISPLAY_CATEGORY_IDS] = rng.integers(1, ID_RANGE + 1, F.DISPLAY_TOP_N).tolist()
    for key in F.HOST_STAT_KEYS:
      room[key] = [float(rng.uniform(0, 100))]
    full, ex = to_example(room, F.serving_raw_features(1, 1)), tf.train.Example()
    for key in F.HOST_SIDE_FEATURES:
      ex.features.feature[key].CopyFrom(full.features.feature[key])
    rooms.append(ex)
  return context, rooms


class ServerProcess:
  """``serving.model_server`` in a child process on a free loopback port (a context manager)."""

  def __init__(self, model_name: str, base_path: str, log_path: str, *extra_args: str,
               version_processes: bool = True):
    self.model_name = model_name
    mode = "--version_processes" if version_processes else "--no-version_processes"
    self._log = open(log_path, "w")  # pylint: disable=consider-using-with
    self._proc = subprocess.Popen(
        [sys.executable, "-u", "-m", "serving.model_server", "--model_name", model_name,
         "--model_base_path", base_path, "--port", "0", mode, *extra_args],
        stdout=subprocess.PIPE, stderr=self._log, text=True)
    line = self._proc.stdout.readline()  # "serving <name> versions [...] on <host>:<port>"
    if not line.startswith("serving "):
      self.close()
      raise RuntimeError(f"model server did not start (see {log_path}): {line!r}")
    self.target = line.split()[-1]
    client.wait_until_available(self.target, model_name, timeout=120)

  @property
  def pid(self) -> int:
    return self._proc.pid

  def close(self) -> None:
    if self._proc.poll() is None:
      self._proc.terminate()
      self._proc.wait(timeout=60)
    self._log.close()

  def __enter__(self) -> ServerProcess:
    return self

  def __exit__(self, *exc) -> None:
    self.close()
