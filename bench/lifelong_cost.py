"""What a longer lifelong history costs in training: examples/s at L = 100, 1k, 10k.

Trains each model a few steps on synthetic transformed batches (every history full, so the
figure is the worst case for that L) and reports the median examples/s over interleaved rounds
(every (model, L) once per round), its spread, CPU-seconds per 1,000 examples and the ratio to
the shortest L, in one run. Serving p99 at the same lengths comes from ``bench.serving_latency``.

    python -m bench.lifelong_cost --models lifelong,baseline --lifelong_lens 100,1000,10000
"""

from __future__ import annotations

import os
from typing import Dict, List

import numpy as np
import tensorflow as tf
from absl import app, flags

from bench.common import define_output_flags, pyplot, save_figure, timed_rounds, write_json
from models import features as F
from models import trainer
from models.spec import ModelSpec

FLAGS = flags.FLAGS

VOCAB_SIZE = 200
ID_HIGH = 4  # ids in [1, ID_HIGH): inside every embedding table


def synthetic_batch(spec: ModelSpec, batch_size: int, seed: int = 0) -> Dict[str, np.ndarray]:
  """A transformed batch with every sequence full, labels and the buy mask."""
  rng = np.random.default_rng(seed)
  batch = {}
  for name, shape in spec.feature_shapes.items():
    if spec.feature_dtypes[name] == tf.float32:
      batch[name] = rng.normal(size=(batch_size, shape)).astype(np.float32)
    else:
      batch[name] = rng.integers(1, ID_HIGH, size=(batch_size, shape)).astype(np.int64)
  full = {F.RT_POS: "host_ids", F.RT_NEG: "host_ids", F.LL: "item_ids"}
  for prefix, field in full.items():
    batch[F.transformed_name(F.len_key(prefix))][:] = spec.feature_shapes[
        F.transformed_name(F.seq_key(prefix, field))]
  for head in F.HEADS:
    batch[head] = rng.integers(0, 2, size=(batch_size, 1)).astype(np.int64)
  batch[F.BUY_MASK] = np.ones((batch_size, 1), np.float32)
  return batch


def training_case(model_name: str, lifelong_len: int):
  """Builds and warms up one model at one L; returns the measured unit (``steps`` steps)."""
  spec = ModelSpec.without_transform(VOCAB_SIZE, F.REALTIME_SEQ_LEN, lifelong_len)
  model = trainer.build_model(spec, trainer.TrainConfig(model_name=model_name))
  data = (tf.data.Dataset.from_tensors(synthetic_batch(spec, FLAGS.batch_size))
          .map(model.tasks.split).repeat())
  iterator = iter(data)
  for _ in range(FLAGS.warmup_steps):
    model.train_on_batch(*next(iterator))

  def run() -> int:
    for _ in range(FLAGS.steps):
      model.train_on_batch(*next(iterator))
    return FLAGS.steps * FLAGS.batch_size
  return run


def run(models: List[str], lengths: List[int], rounds: int) -> List[Dict]:
  cases = {(m, n): training_case(m, n) for m in models for n in lengths}
  measured = timed_rounds({f"{m} L={n}": case for (m, n), case in cases.items()}, rounds)
  rows = []
  for model_name in models:
    base = None
    for lifelong_len in lengths:
      cell = measured[f"{model_name} L={lifelong_len}"]
      rate = cell["examples_per_s"]["median"]
      base = base or rate
      rows.append({"model": model_name, "lifelong_len": lifelong_len,
                   "train_examples_per_s": rate, "spread": cell["examples_per_s"]["spread"],
                   "cpu_s_per_1k": cell["cpu_s_per_1k"]["median"],
                   "slowdown_vs_shortest": base / rate, "rounds": cell})
      print(f"  {model_name:<10} L={lifelong_len:>6}: {rate:8.0f} ex/s median "
            f"(spread {cell['examples_per_s']['spread']:.0%}, "
            f"{cell['cpu_s_per_1k']['median']:.2f} CPU-s/1k; "
            f"{base / rate:5.2f}x the time of L={lengths[0]})", flush=True)
  return rows


def plot(rows: List[Dict], path: str) -> None:
  plt = pyplot()
  fig, ax = plt.subplots(figsize=(6, 4.5))
  for model_name in sorted({r["model"] for r in rows}):
    cells = [r for r in rows if r["model"] == model_name]
    ax.plot([r["lifelong_len"] for r in cells], [r["train_examples_per_s"] for r in cells],
            marker="o", label=model_name)
  ax.set(xscale="log", yscale="log", xlabel="lifelong history length L",
         ylabel="training examples/s", title="Training cost of the lifelong history")
  ax.grid(True, which="both", alpha=0.3)
  ax.legend()
  save_figure(fig, path)


def main(argv):
  del argv
  tf.keras.utils.set_random_seed(0)
  rows = run(FLAGS.models, [int(x) for x in FLAGS.lifelong_lens], FLAGS.rounds)
  path = write_json({"batch_size": FLAGS.batch_size, "steps": FLAGS.steps,
                     "rounds": FLAGS.rounds, "rows": rows},
                    FLAGS.out_dir, FLAGS.name)
  plot(rows, os.path.join(FLAGS.out_dir, f"{FLAGS.name}.png"))
  print(f"[lifelong_cost] wrote {path} and {FLAGS.name}.png")


def define_flags() -> None:
  """This benchmark's command-line flags (defined only when it runs as a program)."""
  flags.DEFINE_list("models", ["lifelong", "baseline"], "Trainer model names.")
  flags.DEFINE_list("lifelong_lens", ["100", "1000", "10000"], "Lifelong history lengths L.")
  flags.DEFINE_integer("batch_size", 128, "Examples per training step.")
  flags.DEFINE_integer("steps", 10, "Timed training steps per (model, L).")
  flags.DEFINE_integer("warmup_steps", 3, "Untimed steps first (tracing, allocation).")
  flags.DEFINE_integer("rounds", 5, "Interleaved rounds; the median counts.")
  define_output_flags("lifelong_cost")


if __name__ == "__main__":
  define_flags()
  app.run(main)
