"""Training with N workers (MultiWorkerMirroredStrategy on loopback) next to one worker.

Each round runs the Trainer's ``run_fn`` once with one worker and once with ``--workers`` worker
processes (``pipeline.train_worker``), on the Transform outputs of a finished run, with the same
global batch and step budget. Every worker logs its training clock (``trainer.TrainingClock``:
training steps only, not start-up, tracing, evaluation or export); the bench reports examples/s
from the chief's wall time and CPU-seconds per 1,000 examples summed over the workers, as the
median and spread over rounds.

    python -m bench.distributed_training --work /work/w7f --train_steps 100 --rounds 5
"""

from __future__ import annotations

import os
import re
import tempfile
import time
from typing import Dict, List

from absl import app, flags

from bench.common import (
    define_run_flags,
    median_and_range,
    pyplot,
    save_figure,
    spread_summary,
    write_json,
)
from models import distribution
from models.trainer import TrainingClock
from pipeline import train_worker

FLAGS = flags.FLAGS
# The clock's log line, its %-fields as groups.
CLOCK_LINE = re.compile(re.escape(TrainingClock.LOG_FORMAT)
                        .replace("%d", r"(\d+)").replace("%\\.3f", r"([\d.]+)"))


def parse_clock(log_text: str) -> Dict[str, float]:
  """The last training-clock line of a worker's log: steps, batch, wall and CPU seconds."""
  found = CLOCK_LINE.findall(log_text)
  if not found:
    raise ValueError("no training clock line in the worker's log (did training run?)")
  steps, batch, wall, cpu = found[-1]
  return {"steps": int(steps), "batch_size": int(batch), "wall_s": float(wall),
          "cpu_s": float(cpu)}


def summarize_run(clocks: List[Dict[str, float]]) -> Dict[str, float]:
  """One run's figures from its workers' clocks (the first is the chief).

  Every worker runs every global step on its share of the batch, so the examples are the
  chief's steps × the global batch; CPU is summed over the workers.
  """
  chief = clocks[0]
  examples = chief["steps"] * chief["batch_size"]
  if examples <= 0:
    raise ValueError(f"the chief timed no training step: {chief}")
  return {"examples": examples, "wall_s": chief["wall_s"],
          "examples_per_s": examples / chief["wall_s"],
          "cpu_s_per_1k": 1e3 * sum(c["cpu_s"] for c in clocks) / examples}


def run_once(pipeline_root: str, n_workers: int, model: str, train_steps: int, out: str,
             timeout_s: float) -> Dict[str, float]:
  """One training run with ``n_workers`` processes; returns :func:`summarize_run`'s figures."""
  config = {"model_name": model, "max_epochs": 1}
  if n_workers > 1:
    config["distribution"] = distribution.MULTI_WORKER_MIRRORED
    tf_configs = train_worker.local_tf_configs(n_workers)
  else:
    tf_configs = [None]
  logs = [os.path.join(out, f"worker{i}.log") for i in range(n_workers)]
  start = time.perf_counter()
  procs = [train_worker.start_worker(pipeline_root, os.path.join(out, f"worker{i}"), config,
                                     logs[i], train_steps=train_steps, tf_config=tf_config)
           for i, tf_config in enumerate(tf_configs)]
  codes = train_worker.wait_all(procs, timeout_s)
  texts = [open(p).read() for p in logs]
  if any(codes):
    raise RuntimeError(f"{n_workers}-worker run failed (exit codes {codes}); logs: {logs}")
  summary = summarize_run([parse_clock(t) for t in texts])
  summary["process_wall_s"] = time.perf_counter() - start  # start-up and export included
  return summary


def run(work: str, pipeline_name: str, workers: int, model: str, train_steps: int,
        rounds: int, timeout_s: float) -> Dict:
  pipeline_root = os.path.join(work, "tfx", pipeline_name)
  train_worker.latest_transform_outputs(pipeline_root)  # fail now if there is no run
  scratch = tempfile.mkdtemp(prefix="distributed_training_")
  print(f"[distributed_training] worker logs under {scratch}", flush=True)
  cases = {"1 worker": 1, f"{workers} workers": workers}
  runs: Dict[str, List[Dict]] = {name: [] for name in cases}
  for r in range(rounds):  # interleaved: drift in machine load hits both alike
    for name, n in cases.items():
      out = os.path.join(scratch, f"round{r}_{n}")
      os.makedirs(out)
      got = run_once(pipeline_root, n, model, train_steps, out, timeout_s)
      runs[name].append(got)
      print(f"  round {r + 1}/{rounds}  {name:<10} {got['examples_per_s']:>8,.0f} ex/s  "
            f"{got['cpu_s_per_1k']:.3f} CPU-s/1k ex  ({got['process_wall_s']:.0f} s in all)",
            flush=True)
  summary = {name: {"examples_per_s": spread_summary(x["examples_per_s"] for x in rs),
                    "cpu_s_per_1k": spread_summary(x["cpu_s_per_1k"] for x in rs),
                    "process_wall_s": spread_summary(x["process_wall_s"] for x in rs)}
             for name, rs in runs.items()}
  one, many = summary["1 worker"], summary[f"{workers} workers"]
  return {"model": model, "train_steps": train_steps, "rounds": rounds, "workers": workers,
          "cores": os.cpu_count(), "runs": runs, "summary": summary,
          "speedup": many["examples_per_s"]["median"] / one["examples_per_s"]["median"],
          "cpu_ratio": many["cpu_s_per_1k"]["median"] / one["cpu_s_per_1k"]["median"]}


def plot(out: Dict, path: str) -> None:
  plt = pyplot()
  names = list(out["summary"])
  fig, axes = plt.subplots(1, 2, figsize=(9, 3.6))
  for ax, key, label in ((axes[0], "examples_per_s", "training examples / s"),
                         (axes[1], "cpu_s_per_1k", "CPU-seconds / 1,000 examples (all workers)")):
    med, err = median_and_range(out["summary"][n][key] for n in names)
    ax.bar(names, med, yerr=err, capsize=4, color=["C0", "C1"])
    ax.set_ylabel(label)
  fig.suptitle(f"{out['model']}: {out['workers']} workers vs 1 on {out['cores']} cores, "
               f"median and range of {out['rounds']} rounds x {out['train_steps']} steps")
  save_figure(fig, path)


def main(argv):
  del argv
  out = run(FLAGS.work, FLAGS.pipeline_name, FLAGS.workers, FLAGS.model, FLAGS.train_steps,
            FLAGS.rounds, FLAGS.timeout)
  print(f"\n{'run':<12}{'ex/s median':>13}{'spread':>8}{'CPU-s/1k':>10}{'s in all':>10}")
  for name, s in out["summary"].items():
    print(f"{name:<12}{s['examples_per_s']['median']:>13,.0f}{s['examples_per_s']['spread']:>8.0%}"
          f"{s['cpu_s_per_1k']['median']:>10.3f}{s['process_wall_s']['median']:>10.0f}")
  print(f"speed-up {out['speedup']:.2f}x, CPU per example {out['cpu_ratio']:.2f}x")
  path = write_json(out, FLAGS.out_dir, FLAGS.name)
  plot(out, os.path.join(FLAGS.out_dir, f"{FLAGS.name}.png"))
  print(f"[distributed_training] wrote {path} and {FLAGS.name}.png")


if __name__ == "__main__":
  define_run_flags("distributed_training")
  flags.DEFINE_integer("workers", 2, "Workers of the distributed run.")
  flags.DEFINE_string("model", "baseline", "Trainer model name.")
  flags.DEFINE_integer("train_steps", 100, "Global training steps per run.")
  flags.DEFINE_integer("rounds", 5, "Interleaved rounds; the median counts.")
  flags.DEFINE_float("timeout", 900, "Seconds a run may take before its workers are killed.")
  app.run(main)
