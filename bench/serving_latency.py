"""Serving latency over gRPC: one user x N candidate rooms, both ranking signatures side by side.

For each model and lifelong length L, exports the Trainer's SavedModel (synthetic Transform,
untrained weights: cost, not quality; :mod:`bench.synthetic_model`), starts
``serving.model_server`` in a child process and times Predict calls through the official stubs
from this process, one at a time: ``serving_default`` (one full tf.Example per room) and
``rank_with_context`` (the user once + the rooms' features) take turns in blocks, round by round
(:func:`time_cell`), so both see the same machine state. Reports p50/p90/p99, request bytes
and the context/default ratio; a request over the server's byte limit is reported as such, not sent.

    python -m bench.serving_latency --models baseline --lifelong_lens 100,1000,10000 \
        --candidates 20,200,1000 --requests 100
    python -m bench.serving_latency --models stcrank --lifelong_lens 1000 --candidates 200
"""

from __future__ import annotations

import os
import tempfile
import time
from typing import Dict, List

import grpc
import numpy as np
from absl import app, flags
from tensorflow_serving.apis import prediction_service_pb2_grpc

from bench import synthetic_model
from bench.common import (
  define_output_flags,
  process_cpu_seconds,
  pyplot,
  save_figure,
  spread_summary,
  write_json,
)
from models import features as F
from models import signatures as S
from models import trainer
from serving import client
from serving.model_server import MAX_REQUEST_BYTES

FLAGS = flags.FLAGS

MODEL_NAME = "ranker"
SIGNATURES = (S.SERVING_SIGNATURE, S.CONTEXT_SIGNATURE, S.RANK_SIGNATURE)  # in table order
PERCENTILES = (50, 90, 99)


def model_signatures(model: str) -> List[str]:
  """The ranking signatures the Trainer exports for ``model`` (``rank`` needs the outputs its
  look-ahead reads)."""
  cfg = trainer.TrainConfig(model_name=model)
  has_rank = trainer.rank_search(cfg, trainer.model_tasks(cfg).served_outputs) is not None
  return [s for s in SIGNATURES if s != S.RANK_SIGNATURE or has_rank]


def _requests(n: int, lifelong_len: int, signatures: List[str]) -> Dict[str, object]:
  context, rooms = synthetic_model.ranking_request(n, F.REALTIME_SEQ_LEN, lifelong_len)
  elwc = client.example_list_with_context(context, rooms)
  requests = {S.SERVING_SIGNATURE: client.predict_request(
                  MODEL_NAME, {S.EXAMPLES_INPUT: client.candidate_requests(context, rooms)}),
              S.CONTEXT_SIGNATURE: client.context_request(MODEL_NAME, elwc),
              S.RANK_SIGNATURE: client.context_request(MODEL_NAME, elwc, S.RANK_SIGNATURE)}
  return {sig: requests[sig] for sig in signatures}


def time_cell(stub, requests: Dict[str, object], n_requests: int, warmup: int, rounds: int,
              server_pid: int, candidates: int) -> Dict[str, Dict]:
  """Per-signature latency (ms) and the server's CPU time per 1,000 candidates.

  After ``warmup`` requests of each signature, alternately, every round sends a block of
  ``n_requests / rounds`` requests of each signature in turn (rounds interleave the signatures;
  a block is long enough to read the server's CPU time for it). Latency percentiles are over all
  timed requests; the median and spread over rounds are reported for p50 and for CPU.
  """
  sendable = {sig: req for sig, req in requests.items()
              if req.ByteSize() <= MAX_REQUEST_BYTES}
  for _ in range(warmup):
    for req in sendable.values():
      stub.Predict(req, timeout=120)
  per_round = max(1, n_requests // rounds)
  times: Dict[str, List[List[float]]] = {sig: [] for sig in sendable}
  cpu: Dict[str, List[float]] = {sig: [] for sig in sendable}
  for _ in range(rounds):
    for sig, req in sendable.items():
      block, cpu0 = [], process_cpu_seconds(server_pid)
      for _ in range(per_round):
        start = time.perf_counter()
        stub.Predict(req, timeout=120)
        block.append((time.perf_counter() - start) * 1e3)
      cpu[sig].append(1e3 * (process_cpu_seconds(server_pid) - cpu0) / (per_round * candidates))
      times[sig].append(block)
  out = {}
  for sig, req in requests.items():
    row = {"request_bytes": req.ByteSize()}
    if sig in times:
      every = [t for block in times[sig] for t in block]
      row.update({f"p{p}_ms": float(np.percentile(every, p)) for p in PERCENTILES})
      row["mean_ms"] = float(np.mean(every))
      row["round_p50_ms"] = spread_summary(np.percentile(b, 50) for b in times[sig])
      row["server_cpu_s_per_1k_candidates"] = spread_summary(cpu[sig])
    else:
      row["skipped"] = f"request is {req.ByteSize()} bytes, over the {MAX_REQUEST_BYTES} limit"
    out[sig] = row
  return out


def run(models: List[str], lifelong_lens: List[int], candidates: List[int], n_requests: int,
        warmup: int, work_dir: str, rounds: int, version_processes: bool = True) -> List[Dict]:
  rows = []
  for model in models:
    for lifelong_len in lifelong_lens:
      base = os.path.join(work_dir, f"{model}_L{lifelong_len}")
      started = time.perf_counter()
      synthetic_model.export_model(
          [synthetic_model.synthetic_row(s, F.REALTIME_SEQ_LEN, lifelong_len) for s in range(4)],
          F.REALTIME_SEQ_LEN, lifelong_len, os.path.join(base, "1"), model_name=model,
          work_dir=os.path.join(work_dir, f"tft_{model}_L{lifelong_len}"))
      print(f"[serving_latency] exported {model} at L={lifelong_len} "
            f"({time.perf_counter() - started:.0f} s); serving", flush=True)
      signatures = model_signatures(model)
      with synthetic_model.ServerProcess(MODEL_NAME, base,
                                         os.path.join(work_dir, f"server_{model}_L{lifelong_len}.log"),
                                         version_processes=version_processes) as server:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(
            grpc.insecure_channel(server.target, options=[
                ("grpc.max_send_message_length", MAX_REQUEST_BYTES)]))
        for n in candidates:
          cell = time_cell(stub, _requests(n, lifelong_len, signatures), n_requests, warmup,
                           rounds, server.pid, n)
          row = {"model": model, "lifelong_len": lifelong_len, "candidates": n, **cell}
          default = cell[S.SERVING_SIGNATURE]
          for sig in signatures[1:]:
            if "p99_ms" in default and "p99_ms" in cell[sig]:
              row[_ratio_key(sig)] = cell[sig]["p99_ms"] / default["p99_ms"]
          rows.append(row)
          print("  " + format_row(row), flush=True)
  return rows


def _ratio_key(signature: str) -> str:
  return f"p99_ratio_{signature}_to_default"


def _cell(stats: Dict | None) -> str:
  if stats is None:
    return f"{'not exported':>38}"
  if "skipped" in stats:
    return f"{'over limit':>38}"
  return (f"{stats['p50_ms']:6.1f} {stats['p90_ms']:6.1f} {stats['p99_ms']:7.1f} "
          f"{stats['server_cpu_s_per_1k_candidates']['median']:8.3f} "
          f"{stats['request_bytes'] / 1e6:7.3f}")


def format_row(row: Dict) -> str:
  ratios = [row.get(_ratio_key(sig)) for sig in SIGNATURES[1:]]
  return (f"{row['model']:<10} {row['lifelong_len']:>6} {row['candidates']:>5} | "
          + " | ".join(_cell(row.get(sig)) for sig in SIGNATURES) + " | "
          + " ".join("  -  " if r is None else f"{r:5.2f}" for r in ratios))


def format_table(rows: List[Dict]) -> str:
  header = (f"{'model':<10} {'L':>6} {'N':>5} | "
            + " | ".join(f"{sig + ' p50/p90/p99 ms, CPU, MB':<38}" for sig in SIGNATURES)
            + " | p99 / default: " + ", ".join(SIGNATURES[1:]))
  note = "(CPU: the server's CPU-seconds per 1,000 candidates, median over rounds)"
  return "\n".join([header, note, "-" * len(header)] + [format_row(r) for r in rows])


def plot(rows: List[Dict], path: str) -> None:
  """p99 against N, one panel per model, a line per (signature, L)."""
  plt = pyplot()
  models = sorted({r["model"] for r in rows})
  fig, axes = plt.subplots(1, len(models), figsize=(6 * len(models), 4.5), squeeze=False)
  for ax, model in zip(axes[0], models):
    for sig, style in zip(SIGNATURES, ("--", "-", ":")):
      for lifelong_len in sorted({r["lifelong_len"] for r in rows}):
        cells = [r for r in rows if r["model"] == model and r["lifelong_len"] == lifelong_len
                 and "p99_ms" in r.get(sig, {})]
        if cells:
          ax.plot([r["candidates"] for r in cells], [r[sig]["p99_ms"] for r in cells], style,
                  marker="o", label=f"{sig} L={lifelong_len}")
    ax.set(xscale="log", yscale="log", xlabel="candidate rooms per request",
           ylabel="p99 latency (ms)", title=f"{model}: gRPC Predict, 1 user x N rooms")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)
  save_figure(fig, path)


def main(argv):
  del argv
  work_dir = tempfile.mkdtemp(prefix="serving_latency_")
  print(f"[serving_latency] models and server logs under {work_dir}", flush=True)
  rows = run(FLAGS.models, [int(x) for x in FLAGS.lifelong_lens],
             [int(x) for x in FLAGS.candidates], FLAGS.requests, FLAGS.warmup, work_dir,
             FLAGS.rounds, FLAGS.version_processes)
  print(format_table(rows))
  path = write_json({"requests_per_cell": FLAGS.requests, "rounds": FLAGS.rounds,
                     "version_processes": FLAGS.version_processes, "rows": rows},
                    FLAGS.out_dir,
                    FLAGS.name)
  plot(rows, os.path.join(FLAGS.out_dir, f"{FLAGS.name}.png"))
  print(f"[serving_latency] wrote {path} and {FLAGS.name}.png")


def define_flags() -> None:
  """This benchmark's command-line flags (defined only when it runs as a program)."""
  flags.DEFINE_list("models", ["baseline", "lifelong"], "Trainer model names to serve.")
  flags.DEFINE_list("lifelong_lens", ["100", "1000", "10000"], "Lifelong history lengths L.")
  flags.DEFINE_list("candidates", ["20", "200", "1000"], "Candidate rooms per request (N).")
  flags.DEFINE_integer("requests", 100, "Timed requests per (model, L, N, signature).")
  flags.DEFINE_integer("warmup", 5, "Untimed requests before timing each cell.")
  flags.DEFINE_integer("rounds", 5, "Rounds per cell, the signatures' blocks interleaved.")
  flags.DEFINE_bool("version_processes", True,
                    "Serve from a worker process behind the gRPC front (the server's default); "
                    "--noversion_processes serves in the server's process.")
  define_output_flags("serving_latency")


if __name__ == "__main__":
  define_flags()
  app.run(main)
