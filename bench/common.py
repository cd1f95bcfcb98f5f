"""Small pieces every benchmark shares: where a run's data is, and how results are written."""

from __future__ import annotations

import json
import os

from absl import flags


def define_output_flags(name: str | None = None, out_dir: str = "bench/results") -> None:
  """--out_dir (where the JSON and PNG go) and, given a default ``name``, --name (their file name)."""
  flags.DEFINE_string("out_dir", out_dir, "Where the JSON and PNG go.")
  if name is not None:
    flags.DEFINE_string("name", name, "Result file name (JSON and PNG, without extension).")


def define_run_flags(name: str | None = None, out_dir: str = "bench/results") -> None:
  """--work, --pipeline_name (which pipeline run to read) and :func:`define_output_flags`."""
  flags.DEFINE_string("work", "work", "Work directory of a pipeline run (make demo's WORK).")
  flags.DEFINE_string("pipeline_name", "livestream-ranking", "Pipeline name.")
  define_output_flags(name, out_dir)


def write_json(obj, out_dir: str, name: str) -> str:
  """Writes ``obj`` to ``<out_dir>/<name>.json`` (creating the directory); returns the path."""
  os.makedirs(out_dir, exist_ok=True)
  path = os.path.join(out_dir, f"{name}.json")
  with open(path, "w") as f:
    json.dump(obj, f, indent=2)
  return path


def pyplot():
  """matplotlib.pyplot on the file-only Agg backend (benchmarks run without a display)."""
  import matplotlib  # pylint: disable=import-outside-toplevel
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel
  return plt


def save_figure(fig, path: str) -> str:
  """Lays out, writes (PNG, 120 dpi) and closes ``fig``; returns ``path``."""
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  pyplot().close(fig)
  return path
