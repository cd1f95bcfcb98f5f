"""Beam engines on this machine: the ExampleGen, StatisticsGen and Transform under three runners.

Runners (``pipeline/beam_presets.py``): the DirectRunner ``in_memory`` (one process) and
``multi_processing`` (``--num_workers`` worker processes), and Beam's ``DaskRunner`` (``dask``) on
a local ``dask.distributed`` cluster of ``--num_workers`` single-threaded worker processes started
here. Phases, each one Beam pipeline per runner and round:

- ``examplegen``: the LiveLogExampleGen's own graph (``Executor.GenerateExamplesByBeam``: logs ->
  ``LogsToExamples``, quarantine and counts) and TFX's ``WriteSplit`` per split; its examples are
  checked equal (by impression id, as parsed tf.Examples) to the untimed reference run's.
- ``read_parse_dedupe``: everything of that graph upstream of its first side input (read, parse,
  dedupe of the reference tables), built from the same functions with the tagged outputs routed
  as plain (tag, value) pairs: the part of the ExampleGen the DaskRunner of Beam 2.59 can run
  (``bench.beam_graphs.DASK_LIMITS``). Its output lines are checked equal to the reference run's.
- ``statistics``: TFDV's ``GenerateStatistics`` per split over the reference examples (as the
  StatisticsGen does); checked: each split's example count.
- ``transform``: ``tft_beam.AnalyzeAndTransformDataset`` with ``models.preprocessing`` on the train
  split and ``TransformDataset`` on eval, read through TFXIO with ``schemas/schema.pbtxt``, encoded
  and written as the Transform component does; checked: transformed example count.

Every (runner, phase) runs once per round, runners interleaved (the order rotates each round);
a failing run is recorded (round, error line) and the bench goes on. Reported per (phase,
runner): median and min-max of wall seconds, items/s and CPU-seconds per 1,000 items, CPU cores
used (CPU / wall), failures and how many outputs equalled the reference. CPU time is this process
plus its child processes (``CpuMeter``): the multi-processing runner's SDK workers, and for the
DaskRunner the cluster's worker processes (excluded from the other runners' rounds).

    python -m bench.beam_scaling --rounds 5 --out_dir bench/results

``--scale small`` (default; ~100k log lines, ~11k examples) generates the logs once under
``--work_dir`` (reused while the simulator's code and settings are unchanged); ``--logs`` reads
existing ones.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import logging as std_logging
import os
import re
import resource
import shutil
import sys
import tempfile
import time
import traceback
from typing import Any, Callable, Dict, Iterable, List, Mapping, Sequence, Tuple

import apache_beam as beam
import tensorflow as tf
from absl import app, flags, logging

from bench import beam_graphs as bg
from bench.common import (
    define_output_flags,
    median_and_range,
    pyplot,
    save_figure,
    spread_summary,
    write_json,
)
from components.live_example_gen import beam_transforms as bt
from components.live_example_gen import executor as ex
from data_gen.world import SCALES
from models import features as F
from pipeline import beam_presets as bp

FLAGS = flags.FLAGS

RUNNERS = (bp.IN_MEMORY, bp.MULTI_PROCESSING, bp.DASK)
REFERENCE_RUNNER = bp.IN_MEMORY
EXAMPLEGEN, STAGE, STATISTICS, TRANSFORM = ("examplegen", "read_parse_dedupe", "statistics",
                                            "transform")
PHASES = (EXAMPLEGEN, STAGE, STATISTICS, TRANSFORM)
UNITS = {EXAMPLEGEN: "examples", STAGE: "lines", STATISTICS: "examples", TRANSFORM: "examples"}


# --- Round records and their summary ---------------------------------------------------------------
@dataclasses.dataclass
class RoundResult:
  """One (phase, runner, round): its times, how many items it processed and its check.

  ``ok`` means the pipeline ran to the end without an error; ``check`` (None when the run failed)
  compares its output with the reference run's and has ``equal``.
  """
  phase: str
  runner: str
  round: int
  ok: bool
  wall_s: float
  cpu_s: float
  items: int | None = None
  error: str | None = None
  check: Dict[str, Any] | None = None


def summarize(values: Sequence[float]) -> Dict[str, Any]:
  """``bench.common.spread_summary`` of ``values`` (median, min, max, spread, n); ``{"n": 0}``
  when there are none (every round failed)."""
  values = list(values)
  return spread_summary(values) if values else {"n": 0}


_EXCEPTION_LINE = re.compile(r"^([A-Za-z_][\w.]*(Error|Exception|Exit|Interrupt|Warning)\b)"
                             r"(:\s.*)?$")


def error_line(error: BaseException | str, limit: int = 400) -> str:
  """The one line that says why a run failed, with where it was raised when Beam does not say.

  Beam's runners wrap a worker's error in their own (multi-processing: the whole remote traceback
  in the message), so the root cause is the last ``SomeError: message`` line of the text. The
  DirectRunner names the step (``[while running 'step']``); otherwise (the DaskRunner's errors)
  the exception's innermost frame says where.

  Args:
    error: the exception, or its text.
    limit: the most characters kept.
  """
  text = (f"{type(error).__name__}: {error}" if isinstance(error, BaseException) else str(error))
  lines = [line.strip() for line in text.splitlines() if line.strip()]
  causes = [line for line in lines if _EXCEPTION_LINE.match(line)]
  line = causes[-1] if causes else (lines[0] if lines else "unknown error")
  if ("[while running" not in line and isinstance(error, BaseException)
      and error.__traceback__ is not None):
    frame = traceback.extract_tb(error.__traceback__)[-1]
    where = (frame.filename.split("site-packages/")[-1] if "site-packages/" in frame.filename
             else os.path.basename(frame.filename))
    line += f" (at {where}:{frame.lineno} in {frame.name})"
  return line if len(line) <= limit else line[:limit - 3] + "..."


class CpuMeter:
  """CPU seconds (user + system) used so far by this process and its child processes.

  With psutil: this process, its reaped children (``RUSAGE_CHILDREN``) and every live
  descendant (with its own reaped children), so long-lived workers count too; a child that ends
  between two readings moves from the live sum to the reaped one, so a difference of two readings
  is the CPU used in between. Without psutil: ``getrusage`` of this process and its reaped
  children only (a live worker's CPU is missing until it exits).
  """

  def __init__(self, use_psutil: bool = True):
    try:
      import psutil  # pylint: disable=import-outside-toplevel
    except ImportError:
      psutil = None
    self._psutil = psutil if use_psutil else None
    self.method = ("psutil: this process + its live descendants + reaped children (user+system)"
                   if self._psutil else
                   "getrusage: this process + reaped children only (RUSAGE_SELF + RUSAGE_CHILDREN)")

  def descendants(self) -> List[int]:
    """Pids of this process's live descendants (empty without psutil)."""
    if not self._psutil:
      return []
    return [p.pid for p in self._psutil.Process().children(recursive=True)]

  def seconds(self, exclude: Iterable[int] = ()) -> float:
    """CPU seconds so far; processes in ``exclude`` (and their descendants) left out."""
    if not self._psutil:
      me = resource.getrusage(resource.RUSAGE_SELF)
      kids = resource.getrusage(resource.RUSAGE_CHILDREN)
      return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime
    ps = self._psutil
    skip = set(exclude)
    for pid in list(skip):
      try:
        skip.update(c.pid for c in ps.Process(pid).children(recursive=True))
      except ps.NoSuchProcess:
        pass
    total = 0.0
    me = ps.Process()
    for proc in [me] + me.children(recursive=True):
      if proc.pid in skip:
        continue
      try:
        t = proc.cpu_times()
      except ps.NoSuchProcess:  # ended while we read: its time is in its parent's reaped sum
        continue
      total += t.user + t.system + t.children_user + t.children_system
    return total


def measure(phase: str, runner: str, round_index: int, run: Callable[[], None],
            check: Callable[[], Tuple[int, Dict[str, Any] | None]], meter: CpuMeter,
            exclude: Iterable[int] = ()) -> RoundResult:
  """Times ``run`` (wall and CPU), then ``check``s its output; an error becomes a failed round.

  Args:
    phase: the phase's name.
    runner: the runner preset's name.
    round_index: which round.
    run: builds and runs the pipeline.
    check: after a successful run: (items processed, comparison with the reference or None).
    meter: the CPU meter.
    exclude: pids whose CPU is not this run's (another runner's idle workers).
  """
  exclude = list(exclude)
  cpu0, t0 = meter.seconds(exclude), time.perf_counter()
  try:
    run()
  except Exception as e:  # pylint: disable=broad-except  # a runner's failure is a result
    return RoundResult(phase, runner, round_index, False, time.perf_counter() - t0,
                       meter.seconds(exclude) - cpu0, error=error_line(e))
  wall, cpu = time.perf_counter() - t0, meter.seconds(exclude) - cpu0
  try:
    items, comparison = check()
  except Exception as e:  # pylint: disable=broad-except
    return RoundResult(phase, runner, round_index, False, wall, cpu,
                       error="reading its output: " + error_line(e))
  return RoundResult(phase, runner, round_index, True, wall, cpu, items, check=comparison)


def aggregate(results: Sequence[RoundResult]) -> List[Dict[str, Any]]:
  """Per (phase, runner), in first-seen order: rounds, failures, and summaries of the ok rounds."""
  groups: Dict[Tuple[str, str], List[RoundResult]] = collections.OrderedDict()
  for res in results:
    groups.setdefault((res.phase, res.runner), []).append(res)
  rows = []
  for (phase, runner), group in groups.items():
    ok = [g for g in group if g.ok]
    timed = [g for g in ok if g.items]
    checked = [g for g in ok if g.check is not None]
    rows.append({
        "phase": phase, "runner": runner, "unit": UNITS.get(phase, "items"),
        "rounds": len(group), "ok": len(ok),
        "failures": [{"round": g.round, "error": g.error} for g in group if not g.ok],
        "items": summarize([g.items for g in timed]),
        "wall_s": summarize([g.wall_s for g in ok]),
        "items_per_s": summarize([g.items / g.wall_s for g in timed if g.wall_s > 0]),
        "cpu_s_per_1k": summarize([g.cpu_s / g.items * 1000 for g in timed]),
        "cores": summarize([g.cpu_s / g.wall_s for g in ok if g.wall_s > 0]),
        "checked": len(checked),
        "equal": sum(1 for g in checked if g.check.get("equal")),
    })
  return rows


def _fmt(summary: Dict[str, Any], digits: int = 1, spread: bool = True) -> str:
  if not summary["n"]:
    return "-"
  text = f"{summary['median']:.{digits}f}"
  if spread and summary["n"] > 1:
    text += f" ({summary['min']:.{digits}f}-{summary['max']:.{digits}f})"
  return text


def format_table(rows: Sequence[Dict[str, Any]]) -> str:
  """The result table: medians with (min-max) of the ok rounds, then every distinct failure."""
  head = (f"{'phase':<18} {'runner':<17} {'ok':>5} {'wall s':>19} {'items/s':>22} "
          f"{'CPU-s/1k items':>19} {'cores':>5} {'equal':>6}")
  lines = [head, "-" * len(head)]
  for row in rows:
    equal = f"{row['equal']}/{row['checked']}" if row["checked"] else "-"
    lines.append(
        f"{row['phase']:<18} {row['runner']:<17} {row['ok']:>2}/{row['rounds']:<2} "
        f"{_fmt(row['wall_s']):>19} {_fmt(row['items_per_s'], 0):>22} "
        f"{_fmt(row['cpu_s_per_1k'], 2):>19} {_fmt(row['cores'], 2, spread=False):>5} "
        f"{equal:>6}")
  failed = [row for row in rows if row["failures"]]
  if failed:
    lines.append("failures (phase / runner: rounds: error):")
    for row in failed:
      by_error: Dict[str, List[int]] = collections.OrderedDict()
      for f in row["failures"]:
        by_error.setdefault(f["error"], []).append(f["round"])
      for error, rounds in by_error.items():
        lines.append(f"  {row['phase']} / {row['runner']}: rounds {rounds}: {error}")
  return "\n".join(lines)


# --- Comparing outputs -----------------------------------------------------------------------------
def _example_key(serialized: bytes, key_feature: str) -> Tuple[Any, tf.train.Example]:
  example = tf.train.Example.FromString(serialized)
  feature = example.features.feature[key_feature]
  values = list(feature.int64_list.value or feature.bytes_list.value or feature.float_list.value)
  return (values[0] if len(values) == 1 else tuple(values)), example


def _same_examples(a: Sequence[tf.train.Example], b: Sequence[tf.train.Example]) -> bool:
  """Whether two equally long lists hold the same examples, in any order."""
  rest = list(b)
  for x in a:
    match = next((i for i, y in enumerate(rest) if x == y), None)
    if match is None:
      return False
    rest.pop(match)
  return True


def compare_examples(reference: Mapping[str, Sequence[bytes]], got: Mapping[str, Sequence[bytes]],
                     key_feature: str = F.IMPRESSION_ID, show: int = 5) -> Dict[str, Any]:
  """Compares two runs' serialized tf.Examples per split, by key and as parsed protos.

  Serialized bytes need not match (a proto map's serialization order is not fixed), so unless a
  split's bytes are the same multiset, examples are matched by ``key_feature`` and compared
  parsed. An example in another split counts as missing in one split and extra in the other.

  Returns:
    ``equal`` and, per split, the counts of reference and got examples and of keys: ``missing``
    (only in the reference), ``extra`` (only in got), ``duplicated`` (in both, a different number
    of times) and ``differing`` (in both, different examples); ``differences``: the first
    ``show`` of those keys.
  """
  out: Dict[str, Any] = {"equal": True, "splits": {}, "differences": []}
  for split in sorted(set(reference) | set(got)):
    if sorted(reference.get(split, ())) == sorted(got.get(split, ())):  # same bytes: no parsing
      n = len(reference.get(split, ()))
      out["splits"][split] = {"reference": n, "got": n, "missing": 0, "extra": 0,
                              "duplicated": 0, "differing": 0}
      continue
    ref = collections.defaultdict(list)
    for s in reference.get(split, ()):
      key, example = _example_key(s, key_feature)
      ref[key].append(example)
    new = collections.defaultdict(list)
    for s in got.get(split, ()):
      key, example = _example_key(s, key_feature)
      new[key].append(example)
    missing = sorted(set(ref) - set(new), key=repr)
    extra = sorted(set(new) - set(ref), key=repr)
    both = set(ref) & set(new)
    duplicated = sorted((k for k in both if len(ref[k]) != len(new[k])), key=repr)
    differing = sorted((k for k in both if len(ref[k]) == len(new[k])
                        and not _same_examples(ref[k], new[k])), key=repr)
    out["splits"][split] = {"reference": sum(map(len, ref.values())),
                            "got": sum(map(len, new.values())), "missing": len(missing),
                            "extra": len(extra), "duplicated": len(duplicated),
                            "differing": len(differing)}
    for what, keys in (("missing", missing), ("extra", extra), ("duplicated", duplicated),
                       ("differing", differing)):
      if keys:
        out["equal"] = False
        room = show - len(out["differences"])
        out["differences"] += [f"{split}: {what} {key_feature}={k}" for k in keys[:max(room, 0)]]
  return out


def compare_lines(reference: Sequence[str], got: Sequence[str], show: int = 5) -> Dict[str, Any]:
  """Compares two runs' output lines as multisets (order free, duplicates counted)."""
  ref, new = collections.Counter(reference), collections.Counter(got)
  missing, extra = ref - new, new - ref
  return {"equal": not missing and not extra, "reference": sum(ref.values()),
          "got": sum(new.values()), "missing": sum(missing.values()),
          "extra": sum(extra.values()),
          "differences": ([f"missing: {line[:200]}" for line in sorted(missing)[:show]]
                          + [f"extra: {line[:200]}" for line in sorted(extra)[:show]])[:show]}


# --- The bench -------------------------------------------------------------------------------------
@dataclasses.dataclass
class Reference:
  """The untimed in-memory run every timed run is checked against."""
  examples_dir: str
  examples: Dict[str, List[bytes]]
  stage_lines: List[str]

  @property
  def counts(self) -> Dict[str, int]:
    return {split: len(v) for split, v in self.examples.items()}


class DaskCluster:
  """A local dask.distributed cluster: ``n`` single-threaded worker processes (and a nanny each)."""

  def __init__(self, n_workers: int, meter: CpuMeter):
    from dask import distributed  # pylint: disable=import-outside-toplevel
    for name in ("distributed", "distributed.scheduler", "distributed.worker", "distributed.nanny",
                 "distributed.core"):
      std_logging.getLogger(name).setLevel(std_logging.WARNING)
    before = set(meter.descendants())
    self.cluster = distributed.LocalCluster(n_workers=n_workers, threads_per_worker=1,
                                            processes=True, dashboard_address=None,
                                            silence_logs=std_logging.WARNING)
    self.pids = sorted(set(meter.descendants()) - before)
    self.address = self.cluster.scheduler_address

  def settle(self, meter: CpuMeter, quiet_cpu_s: float = 0.05, window_s: float = 0.5,
             timeout_s: float = 300.0) -> float:
    """Waits until the workers are idle (a failed job's running tasks cannot be cancelled).

    Returns the seconds waited.
    """
    t0 = time.perf_counter()
    everyone_else = [p for p in meter.descendants() if p not in self.pids]
    while time.perf_counter() - t0 < timeout_s:
      before = meter.seconds(exclude=everyone_else)
      time.sleep(window_s)  # the bench's own pacing: sample the workers' CPU over a window
      if meter.seconds(exclude=everyone_else) - before < quiet_cpu_s:
        break
    return time.perf_counter() - t0

  def close(self) -> None:
    self.cluster.close()


def ensure_logs(logs: str, scale: str, seed: int, work_dir: str) -> str:
  """``logs`` if given, else logs of ``scale`` generated (or reused) under ``work_dir``."""
  if logs:
    return logs
  from data_gen import simulator  # pylint: disable=import-outside-toplevel
  out = os.path.join(work_dir, f"logs_{scale}_seed{seed}")
  cfg = simulator.load_config(scale, seed)
  why_not = simulator.reusable_logs(out, cfg, 0.0)
  if why_not is None:
    print(f"[beam_scaling] reusing the logs in {out}", flush=True)
  else:
    print(f"[beam_scaling] generating {scale} logs in {out} ({why_not})", flush=True)
    simulator.generate_logs(cfg, out, 0.0)
  return out


def log_line_counts(logs: str) -> Dict[str, int]:
  out = {}
  for kind, path in ex.log_paths(logs).items():
    with tf.io.gfile.GFile(path, "rb") as f:
      out[kind] = sum(1 for _ in f)
  return out


class Bench:
  """Runs the phases under the runners, round by round, against one reference run."""

  def __init__(self, logs: str, work_dir: str, schema_path: str, num_workers: int,
               meter: CpuMeter, dask: DaskCluster | None, dask_timeout_s: float):
    self.logs, self.work_dir, self.schema_path = logs, work_dir, schema_path
    self.meter, self.dask, self.dask_timeout_s = meter, dask, dask_timeout_s
    self.args = {bp.IN_MEMORY: bp.beam_args(bp.IN_MEMORY),
                 bp.MULTI_PROCESSING: bp.beam_args(
                     bp.MULTI_PROCESSING, **{bp.NUM_WORKERS: str(num_workers)})}
    if dask is not None:
      self.args[bp.DASK] = bp.beam_args(bp.DASK, **{bp.DASK_CLIENT_ADDRESS: dask.address})
    self.reference: Reference | None = None

  def _context(self, phase: str, out_dir: str):
    if phase != TRANSFORM:
      return contextlib.nullcontext()
    import tensorflow_transform.beam as tft_beam  # pylint: disable=import-outside-toplevel
    return tft_beam.Context(temp_dir=os.path.join(out_dir, "tft_tmp"))

  def _build(self, phase: str, pipeline: beam.Pipeline, out_dir: str) -> None:
    if phase == EXAMPLEGEN:
      bg.examplegen_graph(pipeline, self.logs, out_dir)
    elif phase == STAGE:
      bg.stage_graph(pipeline, self.logs, out_dir)
    elif phase == STATISTICS:
      bg.statistics_graph(pipeline, self.reference.examples_dir, out_dir)
    elif phase == TRANSFORM:
      bg.transform_graph(pipeline, self.reference.examples_dir, out_dir, self.schema_path)
    else:
      raise ValueError(f"unknown phase {phase!r}; expected one of {PHASES}")

  def _run(self, runner: str, phase: str, out_dir: str) -> None:
    pipeline = bg.make_pipeline(self.args[runner])
    with self._context(phase, out_dir):
      self._build(phase, pipeline, out_dir)
      bg.run_pipeline(pipeline, self.dask_timeout_s if runner == bp.DASK else None)

  def _check(self, phase: str, out_dir: str) -> Tuple[int, Dict[str, Any] | None]:
    ref = self.reference
    if phase == EXAMPLEGEN:
      got = bg.read_examples(os.path.join(out_dir, "examples"))
      return sum(map(len, got.values())), compare_examples(ref.examples, got)
    if phase == STAGE:
      got = bg.read_lines(out_dir)
      return len(got), compare_lines(ref.stage_lines, got)
    if phase == STATISTICS:
      counts = bg.read_statistics_counts(out_dir)
    else:
      counts = {split: bg.count_records(os.path.join(
          out_dir, "transformed", bg.SPLIT_DIR.format(split), "*.gz")) for split in bt.SPLIT_NAMES}
    # Statistics and Transform read the reference examples: items are those, checked by count.
    return sum(ref.counts.values()), {"equal": counts == ref.counts, "counts": counts}

  def make_reference(self) -> None:
    """The untimed in-memory ExampleGen and stage runs (also the other phases' input)."""
    out = os.path.join(self.work_dir, "reference")
    shutil.rmtree(out, ignore_errors=True)
    self.reference = Reference(os.path.join(out, EXAMPLEGEN, "examples"), {}, [])
    for phase in (EXAMPLEGEN, STAGE):
      self._run(REFERENCE_RUNNER, phase, os.path.join(out, phase))
    self.reference.examples = bg.read_examples(self.reference.examples_dir)
    self.reference.stage_lines = bg.read_lines(os.path.join(out, STAGE))

  def dask_census(self, phases: Sequence[str]) -> Dict[str, Dict[str, Any]]:
    """phase -> what in its graph the DaskRunner cannot run (graphs built, not run)."""
    out = {}
    for phase in phases:
      with tempfile.TemporaryDirectory(dir=self.work_dir) as tmp, self._context(phase, tmp):
        pipeline = beam.Pipeline()
        self._build(phase, pipeline, tmp)
        out[phase] = bg.dask_census(pipeline)
    return out

  def run_one(self, phase: str, runner: str, round_index: int) -> RoundResult:
    """One timed and checked run; a DaskRunner run is followed by waiting for idle workers."""
    out_dir = tempfile.mkdtemp(prefix=f"{phase}_{runner}_r{round_index}_", dir=self.work_dir)
    exclude = self.dask.pids if self.dask is not None and runner != bp.DASK else []
    try:
      return measure(phase, runner, round_index, lambda: self._run(runner, phase, out_dir),
                     lambda: self._check(phase, out_dir), self.meter, exclude)
    finally:
      shutil.rmtree(out_dir, ignore_errors=True)
      if runner == bp.DASK and self.dask is not None:
        self.dask.settle(self.meter)


def round_order(runners: Sequence[str], round_index: int) -> List[str]:
  """The runners in round ``round_index``'s order: rotated by one each round."""
  k = round_index % len(runners)
  return list(runners[k:]) + list(runners[:k])


def _versions() -> Dict[str, str]:
  out = {"apache_beam": beam.__version__, "python": sys.version.split()[0]}
  for name in ("dask", "distributed", "tfx", "tensorflow_transform",
               "tensorflow_data_validation"):
    try:
      out[name] = __import__(name).__version__
    except ImportError:
      out[name] = "not installed"
  return out


def plot(rows: Sequence[Dict[str, Any]], path: str, title: str) -> None:
  """items/s and CPU-seconds per 1,000 items per phase and runner (median, min-max bars)."""
  plt = pyplot()
  phases = list(dict.fromkeys(row["phase"] for row in rows))
  runners = list(dict.fromkeys(row["runner"] for row in rows))
  by = {(row["phase"], row["runner"]): row for row in rows}
  fig, axes = plt.subplots(1, 2, figsize=(13, 4.8))
  width = 0.8 / max(len(runners), 1)
  for ax, key, label in ((axes[0], "items_per_s", "items/s (examples; stage: lines)"),
                         (axes[1], "cpu_s_per_1k", "CPU-seconds per 1,000 items")):
    for j, runner in enumerate(runners):
      xs, measured = [], []
      for i, phase in enumerate(phases):
        row = by.get((phase, runner))
        if row is None:
          continue
        x = i + (j - (len(runners) - 1) / 2) * width
        if row[key]["n"]:
          xs.append(x)
          measured.append(row[key])
        if row["failures"]:  # at the foot of the axes (x in data, y in axes units)
          ax.text(x, 0.01, f"{len(row['failures'])}/{row['rounds']}\nfailed", ha="center",
                  va="bottom", fontsize=7, color="crimson", transform=ax.get_xaxis_transform())
      meds, err = median_and_range(measured)
      ax.bar(xs, meds, width, yerr=err, capsize=3, label=runner)
    ax.set_xticks(range(len(phases)))
    ax.set_xticklabels(phases, fontsize=8)
    ax.set_yscale("log")
    ax.set_ylabel(label)
  axes[0].legend(fontsize=8)
  fig.suptitle(title, fontsize=9)
  save_figure(fig, path)


def main(argv):
  del argv
  runners = [x for x in FLAGS.runners if x]
  phases = [x for x in FLAGS.phases if x]
  for name, chosen, known in (("runner", runners, RUNNERS), ("phase", phases, PHASES)):
    unknown = sorted(set(chosen) - set(known))
    if unknown:
      raise app.UsageError(f"unknown {name}(s) {unknown}; expected some of {list(known)}")
  if FLAGS.rounds < 1:
    raise app.UsageError("--rounds must be >= 1")
  if bp.DASK in runners:
    try:
      import distributed  # noqa: F401  # pylint: disable=import-outside-toplevel,unused-import
    except ImportError as e:
      raise app.UsageError(f"the dask runner needs the bench extra (pip install -c "
                           f"constraints.txt -e '.[bench]'), or leave it out of --runners: {e}") from e
  logging.set_verbosity(logging.WARNING)  # the console gets this bench's lines, not Beam's INFO
  # Inherited by the SDK worker processes, which otherwise print google-api's Python 3.10 notices.
  os.environ.setdefault("PYTHONWARNINGS", "ignore::FutureWarning")
  os.makedirs(FLAGS.work_dir, exist_ok=True)
  logs = ensure_logs(FLAGS.logs, FLAGS.scale, FLAGS.seed, FLAGS.work_dir)
  lines = log_line_counts(logs)
  meter = CpuMeter()
  load_before = os.getloadavg()
  dask = DaskCluster(FLAGS.num_workers, meter) if bp.DASK in runners else None
  try:
    bench = Bench(logs, FLAGS.work_dir, FLAGS.schema, FLAGS.num_workers, meter, dask,
                  FLAGS.dask_timeout)
    t0 = time.perf_counter()
    print(f"[beam_scaling] reference run ({REFERENCE_RUNNER}, untimed) on {logs}: "
          f"{sum(lines.values())} log lines", flush=True)
    bench.make_reference()
    print(f"[beam_scaling] reference: {bench.reference.counts} examples, "
          f"{len(bench.reference.stage_lines)} stage lines, {time.perf_counter() - t0:.0f} s",
          flush=True)
    census = bench.dask_census(phases) if dask is not None else {}
    for phase, found in census.items():
      print(f"[beam_scaling] DaskRunner cannot run in {phase}: "
            f"{ {kind: v['count'] for kind, v in found.items()} or 'nothing found'}", flush=True)
    results: List[RoundResult] = []
    for k in range(FLAGS.rounds):
      for runner in round_order(runners, k):
        for phase in phases:
          res = bench.run_one(phase, runner, k)
          results.append(res)
          status = ("ok" if res.ok and (res.check is None or res.check.get("equal"))
                    else "NOT EQUAL" if res.ok else f"FAILED: {res.error}")
          rate = f"{res.items / res.wall_s:8.0f} {UNITS[phase]}/s" if res.ok and res.items else ""
          print(f"[beam_scaling] round {k} {runner:<16} {phase:<17} {res.wall_s:6.1f} s "
                f"{res.cpu_s:6.1f} CPU-s {rate} {status}", flush=True)
  finally:
    if dask is not None:
      dask.close()
  rows = sorted(aggregate(results),
                key=lambda row: (phases.index(row["phase"]), runners.index(row["runner"])))
  print(format_table(rows))
  load_after = os.getloadavg()
  report = {
      "settings": {"logs": logs, "scale": None if FLAGS.logs else FLAGS.scale,
                   "seed": FLAGS.seed, "log_lines": lines,
                   "reference_examples": bench.reference.counts,
                   "reference_stage_lines": len(bench.reference.stage_lines),
                   "rounds": FLAGS.rounds, "runners": runners, "phases": phases,
                   "num_workers": FLAGS.num_workers, "runner_args": bench.args,
                   "cpu_method": meter.method, "cpus": os.cpu_count(),
                   "loadavg_before": load_before, "loadavg_after": load_after,
                   "versions": _versions()},
      "rows": rows,
      "rounds": [dataclasses.asdict(res) for res in results],
      "dask_limits": bg.DASK_LIMITS,
      "dask_census": census,
  }
  path = write_json(report, FLAGS.out_dir, FLAGS.name)
  plot(rows, os.path.join(FLAGS.out_dir, f"{FLAGS.name}.png"),
       f"{FLAGS.scale + ' scale' if not FLAGS.logs else logs}: {sum(lines.values())} lines, "
       f"{sum(bench.reference.counts.values())} examples; {FLAGS.rounds} rounds, "
       f"{FLAGS.num_workers} workers, {os.cpu_count()} CPUs; median, min-max")
  print(f"[beam_scaling] wrote {path} and {FLAGS.name}.png")


def define_flags() -> None:
  """This benchmark's command-line flags (defined only when it runs as a program)."""
  flags.DEFINE_string("logs", "", "Existing log directory; empty: generate --scale logs.")
  flags.DEFINE_enum("scale", "small", list(SCALES), "data_gen scale to generate when --logs is "
                    "empty (small: ~100k lines, ~11k examples).")
  flags.DEFINE_integer("seed", 7, "Simulator seed for generated logs.")
  flags.DEFINE_string("work_dir", os.path.join(tempfile.gettempdir(), "beam_scaling"),
                      "Generated logs, the reference run and each round's (deleted) outputs.")
  flags.DEFINE_string("schema", "schemas/schema.pbtxt", "Raw-example schema for the Transform.")
  flags.DEFINE_integer("rounds", 5, "Interleaved rounds (each runs every runner and phase once).")
  flags.DEFINE_list("runners", list(RUNNERS), "Runner presets to compare.")
  flags.DEFINE_list("phases", list(PHASES), "Phases to run.")
  flags.DEFINE_integer("num_workers", 2, "Worker processes of multi_processing and of the dask "
                       "cluster.")
  flags.DEFINE_float("dask_timeout", 900.0, "Seconds before a DaskRunner job counts as failed.")
  define_output_flags("beam_scaling")


if __name__ == "__main__":
  define_flags()
  app.run(main)
