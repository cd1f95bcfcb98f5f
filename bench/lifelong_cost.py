"""What a longer lifelong history costs in training: examples/s at L = 100, 1k, 10k.

Trains each model a few steps on synthetic transformed batches (every history full, so the
figure is the worst case for that L) and reports examples/s and the ratio to the shortest L, in
one run. Serving p99 at the same lengths comes from ``bench.serving_latency``.

    python -m bench.lifelong_cost --models lifelong,baseline --lifelong_lens 100,1000,10000
"""

from __future__ import annotations

import os
import time
from typing import Dict, List

import numpy as np
import tensorflow as tf
from absl import app, flags

from bench.common import define_output_flags, pyplot, save_figure, write_json
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


def examples_per_second(model_name: str, lifelong_len: int) -> float:
  spec = ModelSpec.without_transform(VOCAB_SIZE, F.REALTIME_SEQ_LEN, lifelong_len)
  model = trainer.build_model(spec, trainer.TrainConfig(model_name=model_name))
  data = (tf.data.Dataset.from_tensors(synthetic_batch(spec, FLAGS.batch_size))
          .map(model.tasks.split).repeat())
  iterator = iter(data)
  for _ in range(FLAGS.warmup_steps):
    model.train_on_batch(*next(iterator))
  start = time.perf_counter()
  for _ in range(FLAGS.steps):
    model.train_on_batch(*next(iterator))
  return FLAGS.steps * FLAGS.batch_size / (time.perf_counter() - start)


def run(models: List[str], lengths: List[int]) -> List[Dict]:
  rows = []
  for model_name in models:
    base = None
    for lifelong_len in lengths:
      rate = examples_per_second(model_name, lifelong_len)
      base = base or rate
      rows.append({"model": model_name, "lifelong_len": lifelong_len,
                   "train_examples_per_s": rate, "slowdown_vs_shortest": base / rate})
      print(f"  {model_name:<10} L={lifelong_len:>6}: {rate:8.0f} ex/s "
            f"({base / rate:5.2f}x the time of L={lengths[0]})", flush=True)
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
  rows = run(FLAGS.models, [int(x) for x in FLAGS.lifelong_lens])
  path = write_json({"batch_size": FLAGS.batch_size, "steps": FLAGS.steps, "rows": rows},
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
  define_output_flags("lifelong_cost")


if __name__ == "__main__":
  define_flags()
  app.run(main)
