"""Bounded load with a version swap and a rollback: errors by code, p99 per window, who answered.

Serves the Trainer's SavedModel (synthetic Transform, untrained weights;
:mod:`bench.synthetic_model`) from ``serving.model_server`` in a child process, then runs
``--clients`` client threads for ``--seconds``, each sending the same ``rank_with_context``
request (1 user x ``--candidates`` rooms) back to back through the official stubs. A third of the
way in, version 2 appears in the model directory (a copy of version 1, moved in atomically); two
thirds of the way in it is deleted, so the server must roll back to version 1. Every response's
version is recorded, so the report says when each change started answering.

    python -m bench.load --clients 8 --seconds 60 --candidates 200
"""

from __future__ import annotations

import collections
import dataclasses
import os
import shutil
import tempfile
import threading
import time
from typing import Dict, List

import grpc
import numpy as np
from absl import app, flags
from tensorflow_serving.apis import prediction_service_pb2_grpc

from bench import synthetic_model
from bench.common import (
  define_output_flags,
  process_tree_memory_mb,
  pyplot,
  save_figure,
  write_json,
)
from models import features as F
from serving import client, model_server

FLAGS = flags.FLAGS

MODEL_NAME = "ranker"


@dataclasses.dataclass(frozen=True)
class Outcome:
  start: float  # seconds since the run started
  latency_ms: float
  code: str  # "OK" or the gRPC status name
  version: int  # 0 when the request failed


def _client_loop(target: str, request, stop: threading.Event, t0: float,
                 out: List[Outcome]) -> None:
  stub = prediction_service_pb2_grpc.PredictionServiceStub(grpc.insecure_channel(target))
  while not stop.is_set():
    start = time.perf_counter()
    try:
      resp = stub.Predict(request, timeout=30)
      code, version = "OK", resp.model_spec.version.value
    except grpc.RpcError as e:
      code, version = e.code().name, 0
    out.append(Outcome(start - t0, (time.perf_counter() - start) * 1e3, code, version))


def _first_answer(outcomes: List[Outcome], version: int, after: float) -> float | None:
  """Seconds from ``after`` to the first request sent after it that ``version`` answered."""
  starts = [o.start for o in outcomes if o.start >= after and o.version == version]
  return min(starts) - after if starts else None


@dataclasses.dataclass(frozen=True)
class MemorySample:
  at: float  # seconds since the run started
  pss_mb: float  # the server and its worker processes (bench.common.process_tree_memory_mb)
  processes: int


def _memory_loop(pid: int, stop: threading.Event, t0: float, every: float,
                 out: List[MemorySample]) -> None:
  while not stop.is_set():
    memory = process_tree_memory_mb(pid)
    out.append(MemorySample(time.perf_counter() - t0, memory["pss_mb"], memory["processes"]))
    stop.wait(every)  # the sampling schedule


def summarize(outcomes: List[Outcome], swap_at: float, rollback_at: float, seconds: float,
              window: float, memory: List[MemorySample] = ()) -> Dict:
  """Errors by code, per-window p99, versions and memory, and how fast each change answered."""
  outcomes = sorted(outcomes, key=lambda o: o.start)
  windows = []
  for lo in np.arange(0.0, seconds, window):
    cell = [o for o in outcomes if lo <= o.start < lo + window]
    ok = [o.latency_ms for o in cell if o.code == "OK"]
    held = [m for m in memory if lo <= m.at < lo + window]
    windows.append({
        "pss_mb_max": max((m.pss_mb for m in held), default=None),
        "processes_max": max((m.processes for m in held), default=None),
        "start_s": float(lo), "requests": len(cell),
        "p50_ms": float(np.percentile(ok, 50)) if ok else None,
        "p99_ms": float(np.percentile(ok, 99)) if ok else None,
        "versions": dict(collections.Counter(str(o.version) for o in cell if o.code == "OK")),
        "errors": sum(o.code != "OK" for o in cell)})
  steady = [o.latency_ms for o in outcomes if o.code == "OK" and o.start < swap_at]
  # "During a change": from the change until the new version answers, plus one window.
  swap_answer = _first_answer(outcomes, 2, swap_at)
  # Version 1 answering while version 2 is still loading is no rollback: it counts from the
  # first version-1 answer after the last version-2 one.
  removed_answers = [o.start for o in outcomes if o.version == 2 and o.start >= rollback_at]
  last_v2 = max(removed_answers, default=rollback_at)
  after_v2 = _first_answer(outcomes, 1, last_v2)
  rollback_answer = None if after_v2 is None else last_v2 - rollback_at + after_v2
  during = [o.latency_ms for o in outcomes if o.code == "OK" and any(
      at <= o.start < at + (answered or 0.0) + window
      for at, answered in ((swap_at, swap_answer), (rollback_at, rollback_answer)))]
  # The strictest reading: only the requests sent while version 2 was loading.
  loading_end = swap_at + (swap_answer if swap_answer is not None else seconds)
  loading = [o.latency_ms for o in outcomes if o.code == "OK" and swap_at <= o.start < loading_end]
  steady_p99 = float(np.percentile(steady, 99)) if steady else None
  during_p99 = float(np.percentile(during, 99)) if during else None
  loading_p99 = float(np.percentile(loading, 99)) if loading else None
  return {
      "requests": len(outcomes),
      "errors_by_code": dict(collections.Counter(o.code for o in outcomes if o.code != "OK")),
      "swap_at_s": swap_at, "rollback_at_s": rollback_at,
      "swap_answered_after_s": swap_answer, "rollback_answered_after_s": rollback_answer,
      "version_2_after_rollback": len(removed_answers),  # answered after its removal
      "steady_p99_ms": steady_p99, "change_p99_ms": during_p99,
      "change_to_steady_p99": during_p99 / steady_p99 if steady_p99 and during_p99 else None,
      "loading_p99_ms": loading_p99,
      "loading_to_steady_p99": loading_p99 / steady_p99 if steady_p99 and loading_p99 else None,
      "memory": _memory_summary(memory, swap_at),
      "windows": windows,
  }


def _memory_summary(memory: List[MemorySample], swap_at: float) -> Dict:
  """The server's memory (PSS of it and its workers) before the push, at its peak, at the end."""
  if not memory:
    return {}
  before = [m for m in memory if m.at < swap_at] or memory[:1]
  peak = max(memory, key=lambda m: m.pss_mb)
  return {"steady_pss_mb": max(m.pss_mb for m in before),
          "steady_processes": max(m.processes for m in before),
          "peak_pss_mb": peak.pss_mb, "peak_at_s": peak.at,
          "peak_processes": max(m.processes for m in memory),
          "end_pss_mb": memory[-1].pss_mb, "end_processes": memory[-1].processes,
          "samples": len(memory)}


def run(work_dir: str) -> Dict:
  base = os.path.join(work_dir, "models")
  rows = [synthetic_model.synthetic_row(s, F.REALTIME_SEQ_LEN, FLAGS.lifelong_len)
          for s in range(4)]
  synthetic_model.export_model(rows, F.REALTIME_SEQ_LEN, FLAGS.lifelong_len,
                               os.path.join(base, "1"), model_name=FLAGS.model,
                               work_dir=os.path.join(work_dir, "tft"))
  context, rooms = synthetic_model.ranking_request(FLAGS.candidates, F.REALTIME_SEQ_LEN,
                                                   FLAGS.lifelong_len)
  request = client.context_request(MODEL_NAME, client.example_list_with_context(context, rooms))
  with synthetic_model.ServerProcess(MODEL_NAME, base, os.path.join(work_dir, "server.log"),
                                     "--poll_seconds", str(FLAGS.poll_seconds),
                                     "--load_nice", str(FLAGS.load_nice),
                                     version_processes=FLAGS.version_processes) as server:
    print(f"[load] serving {FLAGS.model} (L={FLAGS.lifelong_len}, version_processes="
          f"{FLAGS.version_processes}) at {server.target}; "
          f"{FLAGS.clients} clients x {FLAGS.seconds} s, 1 x {FLAGS.candidates} rooms", flush=True)
    outcomes: List[Outcome] = []  # list.append is atomic under the GIL
    memory: List[MemorySample] = []
    stop = threading.Event()
    t0 = time.perf_counter()
    threads = [threading.Thread(target=_client_loop,
                                args=(server.target, request, stop, t0, outcomes))
               for _ in range(FLAGS.clients)]
    threads.append(threading.Thread(target=_memory_loop, args=(
        server.pid, stop, t0, FLAGS.memory_every_seconds, memory)))
    for t in threads:
      t.start()
    swap_at, rollback_at = FLAGS.seconds / 3, 2 * FLAGS.seconds / 3
    _sleep_until(t0 + swap_at)
    staging = os.path.join(work_dir, "staging_2")
    shutil.copytree(os.path.join(base, "1"), staging)
    os.rename(staging, os.path.join(base, "2"))  # appears whole, never half-written
    print(f"[load] {time.perf_counter() - t0:5.1f} s: version 2 pushed", flush=True)
    _sleep_until(t0 + rollback_at)
    shutil.move(os.path.join(base, "2"), os.path.join(work_dir, "removed_2"))
    print(f"[load] {time.perf_counter() - t0:5.1f} s: version 2 removed (rollback)", flush=True)
    _sleep_until(t0 + FLAGS.seconds)
    stop.set()
    for t in threads:
      t.join()
  return summarize(list(outcomes), swap_at, rollback_at, FLAGS.seconds, FLAGS.window_seconds,
                   list(memory))


def _sleep_until(deadline: float) -> None:
  # The benchmark's own schedule (not test synchronisation): wait for a point in the run.
  time.sleep(max(0.0, deadline - time.perf_counter()))


def _num(value: float | None, unit: str, digits: int = 1) -> str:
  return "-" if value is None else f"{value:.{digits}f}{unit}"


def format_report(report: Dict) -> str:
  lines = [f"{'window':>8} {'requests':>8} {'p50 ms':>7} {'p99 ms':>7} {'errors':>6} "
           f"{'PSS MB':>7} {'procs':>5}  versions"]
  for w in report["windows"]:
    fmt = lambda v: f"{v:7.1f}" if v is not None else f"{'-':>7}"  # noqa: E731
    procs = w.get("processes_max")
    lines.append(f"{w['start_s']:6.0f} s {w['requests']:>8} {fmt(w['p50_ms'])} "
                 f"{fmt(w['p99_ms'])} {w['errors']:>6} {fmt(w.get('pss_mb_max'))} "
                 f"{procs if procs is not None else '-':>5}  {w['versions']}")
  lines.append(f"requests {report['requests']}, errors {report['errors_by_code'] or 0}; "
               f"version 2 answered {report['swap_answered_after_s']} s after the push, "
               f"version 1 {report['rollback_answered_after_s']} s after the rollback; "
               f"p99 steady {_num(report['steady_p99_ms'], ' ms')}, during changes "
               f"{_num(report['change_p99_ms'], ' ms')} "
               f"({_num(report['change_to_steady_p99'], 'x', 2)}), while version 2 loaded "
               f"{_num(report['loading_p99_ms'], ' ms')} "
               f"({_num(report['loading_to_steady_p99'], 'x', 2)})")
  memory = report.get("memory")
  if memory:
    lines.append(f"memory (PSS, server and workers): {memory['steady_pss_mb']:.0f} MB in "
                 f"{memory['steady_processes']} processes before the push, peak "
                 f"{memory['peak_pss_mb']:.0f} MB at {memory['peak_at_s']:.0f} s (up to "
                 f"{memory['peak_processes']} processes), {memory['end_pss_mb']:.0f} MB in "
                 f"{memory['end_processes']} at the end")
  return "\n".join(lines)


def plot(outcomes_report: Dict, path: str) -> None:
  plt = pyplot()
  windows = outcomes_report["windows"]
  fig, ax = plt.subplots(figsize=(8, 4.5))
  starts = [w["start_s"] for w in windows]
  ax.step(starts, [w["p99_ms"] or 0 for w in windows], where="post", label="p99")
  ax.step(starts, [w["p50_ms"] or 0 for w in windows], where="post", label="p50")
  for at, what in ((outcomes_report["swap_at_s"], "v2 pushed"),
                   (outcomes_report["rollback_at_s"], "v2 removed")):
    ax.axvline(at, color="grey", linestyle="--")
    ax.text(at, ax.get_ylim()[1] * 0.95, f" {what}", fontsize=8, va="top")
  ax.set(xlabel="seconds into the run", ylabel="latency (ms)",
         title=f"{outcomes_report['clients']} clients, 1 x {outcomes_report['candidates']} "
               f"rooms: errors "
               f"{sum(outcomes_report['errors_by_code'].values())}")
  held = [w.get("pss_mb_max") for w in windows]
  if any(v is not None for v in held):
    memory_ax = ax.twinx()
    memory_ax.step(starts, [v or 0 for v in held], where="post", color="tab:green",
                   label="PSS MB (server + workers)")
    memory_ax.set(ylabel="memory (MB, PSS)", ylim=(0, max(v or 0 for v in held) * 1.2))
    memory_ax.legend(loc="lower right")
  ax.legend(loc="upper left")
  save_figure(fig, path)


def main(argv):
  del argv
  work_dir = tempfile.mkdtemp(prefix="load_")
  print(f"[load] models and server log under {work_dir}", flush=True)
  report = run(work_dir)
  report.update(clients=FLAGS.clients, seconds=FLAGS.seconds, candidates=FLAGS.candidates,
                lifelong_len=FLAGS.lifelong_len, model=FLAGS.model,
                version_processes=FLAGS.version_processes, load_nice=FLAGS.load_nice,
                poll_seconds=FLAGS.poll_seconds)
  print(format_report(report))
  path = write_json(report, FLAGS.out_dir, FLAGS.name)
  plot(report, os.path.join(FLAGS.out_dir, f"{FLAGS.name}.png"))
  print(f"[load] wrote {path} and {FLAGS.name}.png")


def define_flags() -> None:
  """This benchmark's command-line flags (defined only when it runs as a program)."""
  flags.DEFINE_integer("clients", 8, "Concurrent client threads.")
  flags.DEFINE_integer("seconds", 60, "Length of the load run.")
  flags.DEFINE_integer("candidates", 200, "Candidate rooms per request.")
  flags.DEFINE_integer("lifelong_len", F.LIFELONG_SEQ_LEN, "Lifelong history length L.")
  flags.DEFINE_string("model", "baseline", "Trainer model name to serve.")
  flags.DEFINE_float("window_seconds", 10.0, "Width of the latency windows.")
  flags.DEFINE_float("memory_every_seconds", 1.0,
                     "How often the server's memory (PSS of it and its workers) is read.")
  flags.DEFINE_float("poll_seconds", model_server.POLL_SECONDS,
                     "The server's version-polling interval.")
  flags.DEFINE_integer("load_nice", model_server.LOAD_NICE,
                       "How far the served version's threads yield to a loading one.")
  flags.DEFINE_bool("version_processes", True,
                    "Serve each version from a worker process (the server's default); "
                    "--noversion_processes loads versions in the server's process.")
  define_output_flags("load")


if __name__ == "__main__":
  define_flags()
  app.run(main)
