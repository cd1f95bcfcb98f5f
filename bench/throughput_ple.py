"""Training throughput: our PLE and feedback models next to DeepCTR's PLE, same features and batch.

All three train in one process on the same transformed examples of a pipeline run, with the same
batch size, optimizer and per-head losses; the table reports examples/s and the ratio to DeepCTR.
DeepCTR's PLE gets the same transformed features as feature columns: ids as SparseFeat sharing
one table per id space, sequences as mean-pooled VarLenSparseFeat with their length features,
floats as DenseFeat; experts (2 shared, 2 per task, 2 levels, units 128-64) and towers (32) match.

    python -m bench.throughput_ple --work work --steps 300 --repeats 3
"""

from __future__ import annotations

import os
import time
from typing import Dict, List

import tensorflow as tf
import tensorflow_transform as tft
from absl import app, flags

from bench.ablation_feedback import latest_transform_dirs
from bench.common import define_run_flags, write_json
from models import encoders, tasks, trainer
from models import features as F
from models import preprocessing as P
from models.spec import ModelSpec

xf = F.transformed_name
EMBEDDING_DIM = 16
LEARNING_RATE = 2e-3
CACHED_BATCHES = 50
WARMUP_STEPS = 20  # untimed steps first: tracing and allocation


def _id_space(raw_key: str) -> str | None:
  """Embedding table (``encoders.table_sizes`` key) of an integer raw feature; None otherwise."""
  for vocab, keys in P.SHARED_VOCABS.items():
    if raw_key in keys:
      return vocab
  if raw_key in P.ITEM_FEATURES:
    return "item"
  fixed = {F.ACTIVITY_LEVEL: "activity", F.HOUR_OF_DAY: "hour", F.SLOT_INDEX: "slot",
           F.seq_key(F.LL, "age_days"): "ll_age"}
  if raw_key in fixed:
    return fixed[raw_key]
  if raw_key.endswith("stay_buckets"):
    return "stay"
  if raw_key.endswith("age_seconds"):
    return "age"
  return None


def deepctr_columns(spec: ModelSpec) -> List:
  """DeepCTR feature columns for the transformed model inputs."""
  from deepctr.feature_column import DenseFeat, SparseFeat, VarLenSparseFeat  # pylint: disable=import-outside-toplevel
  raw_of = {xf(f.name): f.name for f in F.serving_raw_features()}
  length_of = {xf(F.seq_key(p, f)): xf(F.len_key(p)) for p in (F.RT_POS, F.RT_NEG)
               for f in F.RT_FIELDS}
  length_of.update({xf(F.seq_key(F.LL, f)): xf(F.len_key(F.LL)) for f in F.LL_INT_FIELDS})
  length_of[xf(F.SESSION_HOSTS)] = xf(F.SESSION_HOSTS_LEN_KEY)
  for k in (F.DISPLAY_ITEM_IDS, F.DISPLAY_CATEGORY_IDS, F.DISPLAY_BRAND_IDS):
    length_of[xf(k)] = xf(F.DISPLAY_LEN)
  used_as_length = set(length_of.values())
  sizes = encoders.table_sizes(spec)
  cols = []
  for name, width in sorted(spec.feature_shapes.items()):
    emb_name = _id_space(raw_of[name])
    if emb_name is not None:
      sparse = SparseFeat(name, sizes[emb_name], EMBEDDING_DIM, embedding_name=emb_name,
                          dtype="int64")
      if width == 1:
        cols.append(sparse)
      else:
        cols.append(VarLenSparseFeat(sparse, maxlen=width, combiner="mean",
                                     length_name=length_of.get(name)))
    elif name not in used_as_length:
      cols.append(DenseFeat(name, width))
  return cols


def build_deepctr_ple(spec: ModelSpec) -> tf.keras.Model:
  from deepctr.models import PLE  # pylint: disable=import-outside-toplevel
  return PLE(deepctr_columns(spec), shared_expert_num=2, specific_expert_num=2, num_levels=2,
             expert_dnn_hidden_units=(128, 64), tower_dnn_hidden_units=(32,),
             task_types=("binary",) * len(F.HEADS), task_names=tuple(F.HEADS))


def _deepctr_batches(ds: tf.data.Dataset, model: tf.keras.Model) -> tf.data.Dataset:
  """Keeps the inputs DeepCTR declared, with its dtypes (dense features as float32)."""
  dtypes = {i.name.split(":")[0]: i.dtype for i in model.inputs}
  def select(feats, labels, weights):
    return ({k: tf.cast(feats[k], dt) for k, dt in dtypes.items()}, labels, weights)
  return ds.map(select)


def measure(name: str, model: tf.keras.Model, ds: tf.data.Dataset, steps: int,
            batch_size: int) -> float:
  """Training examples/s of ``model`` after a warm-up that traces the graph."""
  model.fit(ds, steps_per_epoch=max(WARMUP_STEPS, CACHED_BATCHES), epochs=1, verbose=0)
  start = time.perf_counter()
  model.fit(ds, steps_per_epoch=steps, epochs=1, verbose=0)
  eps = steps * batch_size / (time.perf_counter() - start)
  print(f"  {name:<14} {eps:>9,.0f} examples/s", flush=True)
  return eps


def run(work: str, pipeline_name: str, out_dir: str, steps: int, batch_size: int,
        repeats: int) -> Dict:
  dirs = latest_transform_dirs(work, pipeline_name)
  tft_output = tft.TFTransformOutput(dirs["graph"])
  pattern = os.path.join(dirs["examples"], "Split-train", "*.gz")
  spec = ModelSpec.from_transform_output(tft_output, EMBEDDING_DIM)
  ours = lambda name: trainer.build_model(  # noqa: E731
      spec, trainer.TrainConfig(model_name=name, learning_rate=LEARNING_RATE))
  deepctr = build_deepctr_ple(spec)
  # The same per-head losses and optimizer as our models' tasks (DeepCTR is a plain Keras model).
  deepctr.compile(tf.keras.optimizers.Adam(LEARNING_RATE),
                  loss={h.output: h.loss() for h in tasks.ENGAGEMENT.heads})
  models = {"ours_ple": ours("ple"), "deepctr_ple": deepctr, "ours_feedback": ours("feedback")}
  data = {}
  for name, model in models.items():
    model_tasks = getattr(model, "tasks", tasks.ENGAGEMENT)
    ds = trainer.transformed_dataset(pattern, tft_output, batch_size, model_tasks, shuffle_seed=1)
    ds = _deepctr_batches(ds, model) if name.startswith("deepctr") else ds
    # A fixed set of batches held in memory and cycled: the timing measures the model's training
    # step, not gzip parsing or refilling the shuffle buffer at every fit().
    data[name] = ds.take(CACHED_BATCHES).cache().repeat()
  runs: Dict[str, List[float]] = {n: [] for n in models}
  for r in range(repeats):  # interleaved, so drift in machine load hits every model alike
    print(f"round {r + 1}/{repeats}", flush=True)
    for name, model in models.items():
      runs[name].append(measure(name, model, data[name], steps, batch_size))
  best = {n: max(v) for n, v in runs.items()}
  out = {"steps": steps, "batch_size": batch_size, "repeats": repeats,
         "params": {n: int(m.count_params()) for n, m in models.items()},
         "examples_per_second": runs, "best_examples_per_second": best,
         "ratio_to_deepctr_ple": {n: best[n] / best["deepctr_ple"] for n in models}}
  write_json(out, out_dir, "throughput_ple")
  _plot(out, os.path.join(out_dir, "throughput_ple.png"))
  return out


def _plot(out: Dict, path: str) -> None:
  import matplotlib  # pylint: disable=import-outside-toplevel
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel
  names = list(out["best_examples_per_second"])
  fig, ax = plt.subplots(figsize=(6, 3.5))
  ax.bar(names, [out["best_examples_per_second"][n] for n in names], color=["C0", "C1", "C2"])
  for i, n in enumerate(names):
    ax.text(i, out["best_examples_per_second"][n], f"x{out['ratio_to_deepctr_ple'][n]:.2f}",
            ha="center", va="bottom")
  ax.set_ylabel("training examples / s")
  ax.set_title(f"batch {out['batch_size']}, best of {out['repeats']} x {out['steps']} steps")
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)


def main(argv):
  del argv
  fl = flags.FLAGS
  out = run(fl.work, fl.pipeline_name, fl.out_dir, fl.steps, fl.batch_size, fl.repeats)
  print(f"\n{'model':<14}{'params':>10}{'ex/s':>10}{'vs DeepCTR':>12}")
  for n, eps in out["best_examples_per_second"].items():
    print(f"{n:<14}{out['params'][n]:>10,}{eps:>10,.0f}{out['ratio_to_deepctr_ple'][n]:>12.2f}")


if __name__ == "__main__":
  define_run_flags()
  flags.DEFINE_integer("steps", 300, "Timed training steps per model and round.")
  flags.DEFINE_integer("batch_size", 256, "Batch size (the same for every model).")
  flags.DEFINE_integer("repeats", 3, "Interleaved rounds; the best round counts.")
  app.run(main)
