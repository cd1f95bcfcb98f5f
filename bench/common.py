"""Small pieces every benchmark shares: where a run's data is, and how results are written."""

from __future__ import annotations

import json
import os
import time
from typing import Dict, List, Sequence

import numpy as np
from absl import flags

from pipeline.configs import PIPELINE_NAME


def define_output_flags(name: str | None = None, out_dir: str = "bench/results") -> None:
  """--out_dir (where the JSON and PNG go) and, given a default ``name``, --name (their file name)."""
  flags.DEFINE_string("out_dir", out_dir, "Where the JSON and PNG go.")
  if name is not None:
    flags.DEFINE_string("name", name, "Result file name (JSON and PNG, without extension).")


def define_run_flags(name: str | None = None, out_dir: str = "bench/results") -> None:
  """--work, --pipeline_name (which pipeline run to read) and :func:`define_output_flags`."""
  flags.DEFINE_string("work", "work", "Work directory of a pipeline run (make demo's WORK).")
  flags.DEFINE_string("pipeline_name", PIPELINE_NAME, "Pipeline name.")
  define_output_flags(name, out_dir)


def write_json(obj, out_dir: str, name: str) -> str:
  """Writes ``obj`` to ``<out_dir>/<name>.json`` (creating the directory); returns the path."""
  os.makedirs(out_dir, exist_ok=True)
  path = os.path.join(out_dir, f"{name}.json")
  with open(path, "w") as f:
    json.dump(obj, f, indent=2)
  return path


def write_json_and_plot(obj, out_dir: str, name: str, plot) -> tuple:
  """:func:`write_json`, then ``plot(obj, path)`` to the PNG beside it; returns both paths."""
  path = write_json(obj, out_dir, name)
  return path, plot(obj, os.path.splitext(path)[0] + ".png")


def pyplot():
  """matplotlib.pyplot on the file-only Agg backend (benchmarks run without a display)."""
  import matplotlib  # pylint: disable=import-outside-toplevel
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel
  return plt


def grouped_bars(ax, groups: Sequence[str], series: Dict[str, Sequence[float]],
                 errors: Dict[str, Sequence[float]] | None = None,
                 horizontal: bool = False) -> np.ndarray:
  """One bar per series side by side in each group, labelled for a legend; ticks on the groups.

  Args:
    ax: a matplotlib Axes.
    groups: the tick labels, one per group.
    series: legend label -> one value per group.
    errors: legend label -> one error bar per group (optional, per series).
    horizontal: bars along x (``barh``), groups down the y axis.

  Returns:
    [G] the groups' centres on the axis (where the ticks are).
  """
  errors = errors or {}
  for label, values in list(series.items()) + list(errors.items()):
    if len(values) != len(groups):
      raise ValueError(f"series {label!r} has {len(values)} values for {len(groups)} groups")
  size = 0.8 / max(len(series), 1)
  centres = np.arange(len(groups), dtype=float)
  for i, (label, values) in enumerate(series.items()):
    at = centres + (i - (len(series) - 1) / 2) * size
    err = {("xerr" if horizontal else "yerr"): errors[label], "capsize": 2} if label in errors else {}
    (ax.barh if horizontal else ax.bar)(at, values, size, label=label, **err)
  (ax.set_yticks if horizontal else ax.set_xticks)(centres, groups)
  return centres


def save_figure(fig, path: str) -> str:
  """Lays out, writes (PNG, 120 dpi) and closes ``fig``; returns ``path``."""
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  pyplot().close(fig)
  return path


def spread_summary(values) -> dict:
  """Median, min, max and relative spread ((max - min) / median) of one case's rounds."""
  v = np.asarray(list(values), dtype=float)
  if v.size == 0:
    raise ValueError("spread_summary needs at least one value")
  median = float(np.median(v))
  return {"median": median, "min": float(v.min()), "max": float(v.max()),
          "spread": float((v.max() - v.min()) / median) if median else float("nan"),
          "n": int(v.size)}


def median_and_range(summaries):
  """Bar heights and asymmetric error bars (median, min-max) of :func:`spread_summary` dicts.

  Returns:
    ``(medians, [below, above])``, as ``Axes.bar(..., yerr=[below, above])`` takes them.
  """
  summaries = list(summaries)
  medians = [s["median"] for s in summaries]
  return medians, [[s["median"] - s["min"] for s in summaries],
                   [s["max"] - s["median"] for s in summaries]]


def timed_rounds(cases, rounds: int, progress: bool = True) -> dict:
  """Runs every case once per round, cases interleaved, timing wall and CPU seconds.

  Interleaving puts drift in machine load (throttling, other jobs) on every case alike; the
  median over rounds and its spread say how much a figure can be trusted. CPU time is this
  process's (``time.process_time``: all its threads), so it also counts work that wall time
  hides behind parallel threads.

  Args:
    cases: name -> a callable running one measured unit and returning how many examples it
      processed.
    rounds: how many rounds (>= 1).
    progress: print one line per case and round.

  Returns:
    name -> {"examples": per-round counts, "wall_s": [...], "cpu_s": [...],
    "examples_per_s": summary, "cpu_s_per_1k": summary} (summaries from :func:`spread_summary`).
  """
  if rounds < 1:
    raise ValueError(f"timed_rounds rounds must be >= 1, got {rounds}")
  raw = {name: {"examples": [], "wall_s": [], "cpu_s": []} for name in cases}
  for r in range(rounds):
    for name, run in cases.items():
      wall0, cpu0 = time.perf_counter(), time.process_time()
      n = run()
      wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
      raw[name]["examples"].append(int(n))
      raw[name]["wall_s"].append(wall)
      raw[name]["cpu_s"].append(cpu)
      if progress:
        print(f"  round {r + 1}/{rounds}  {name:<16} {n / wall:>10,.0f} ex/s  "
              f"{1e3 * cpu / n:>7.3f} CPU-s/1k ex", flush=True)
  for rec in raw.values():
    rec["examples_per_s"] = spread_summary(n / w for n, w in zip(rec["examples"], rec["wall_s"]))
    rec["cpu_s_per_1k"] = spread_summary(1e3 * c / n for n, c in zip(rec["examples"], rec["cpu_s"]))
  return raw


def _stat_fields(pid: int) -> List[str]:
  with open(f"/proc/{pid}/stat") as f:
    # The fields after the command name (which may hold spaces, inside parentheses).
    return f.read().rsplit(")", 1)[1].split()


def _process_stats() -> Dict[int, List[str]]:
  stats = {}
  for entry in os.listdir("/proc"):
    if entry.isdigit():
      try:
        stats[int(entry)] = _stat_fields(int(entry))
      except (FileNotFoundError, ProcessLookupError):
        continue
  return stats


def _descendants(pid: int, stats: Dict[int, List[str]]) -> List[int]:
  """The live processes under ``pid`` at any depth (ppid is the 2nd field after the name)."""
  parents, found = {pid}, []
  while True:
    children = [p for p, f in stats.items() if int(f[1]) in parents and p not in parents]
    if not children:
      return found
    parents.update(children)
    found += children


def process_cpu_seconds(pid: int) -> float:
  """User + system CPU seconds a process and its child processes have used so far (Linux).

  A server with its versions in worker processes spends most of its CPU there: the live
  descendants' time is added, and the children that ended and were waited for are in the
  process's own cutime/cstime.
  """
  def own(fields: List[str]) -> int:  # utime, stime: the 12th and 13th fields, in clock ticks
    return int(fields[11]) + int(fields[12])

  fields = _stat_fields(pid)
  ticks = own(fields) + int(fields[13]) + int(fields[14])  # + cutime, cstime
  stats = _process_stats()
  ticks += sum(own(stats[p]) for p in _descendants(pid, stats))
  return ticks / os.sysconf("SC_CLK_TCK")


def _smaps_kb(pid: int, fields: List[str]) -> Dict[str, int]:
  """``fields`` (e.g. Pss, Rss) of a process's memory in kB, from one read of its smaps_rollup."""
  found = {}
  with open(f"/proc/{pid}/smaps_rollup") as f:
    for line in f:
      name, _, value = line.partition(":")
      if name in fields:
        found[name] = int(value.split()[0])
  missing = [name for name in fields if name not in found]
  if missing:
    raise ValueError(f"/proc/{pid}/smaps_rollup has no {missing} line")
  return found


def process_tree_memory_mb(pid: int) -> Dict[str, float]:
  """The memory of a process and its live descendants (Linux), in MB.

  ``pss_mb`` is the proportional set size summed over the processes: a page shared by n of them
  (TensorFlow's library code in every worker) counts 1/n in each, so the sum is what the tree
  holds. ``rss_mb`` sums the resident sets (shared pages counted in each). ``processes`` is how
  many were read.
  """
  pss = rss = 0
  pids = [pid] + _descendants(pid, _process_stats())
  read = 0
  for p in pids:
    try:
      kb = _smaps_kb(p, ["Pss", "Rss"])
    except (FileNotFoundError, ProcessLookupError):  # it ended meanwhile
      continue
    pss, rss, read = pss + kb["Pss"], rss + kb["Rss"], read + 1
  return {"pss_mb": pss / 1024, "rss_mb": rss / 1024, "processes": read}
