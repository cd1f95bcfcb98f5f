"""Training throughput: our PLE and feedback models next to DeepCTR's PLE and DIN.

Every model trains in one process on the same transformed examples of a pipeline run, with the
same batch size and optimizer; the table reports the median examples/s over interleaved rounds,
its spread, CPU-seconds per 1,000 examples (process time) and the ratio to the DeepCTR reference:
ours_ple / deepctr_ple, ours_feedback / deepctr_din.

DeepCTR gets the same transformed features as feature columns: ids as SparseFeat sharing one
table per id space, sequences as mean-pooled VarLenSparseFeat with their length features, floats
as DenseFeat. PLE: experts (2 shared, 2 per task, 2 levels, units 128-64) and towers (32) match
ours, with the same per-head losses. DIN (DeepCTR's defaults: attention 80-40 with Dice, DNN
256-128-64) attends from the candidate room (host and shop ids) over the positive real-time
sequence, as our feedback model does over the positive and negative ones; DeepCTR's DIN has one
output, so it trains the effective-view head only while ours trains three heads and the triplet
gap (the comparison favours DIN).

    python -m bench.throughput_ple --work work --steps 200 --rounds 5
"""

from __future__ import annotations

import os
from typing import Dict, List

import tensorflow as tf
import tensorflow_transform as tft
from absl import app, flags

from bench.ablation_feedback import latest_transform_dirs
from bench.common import (
    define_run_flags,
    median_and_range,
    pyplot,
    save_figure,
    timed_rounds,
    write_json,
)
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
  length_of = {xf(F.seq_key(p, f)): xf(F.len_key(p)) for p in F.RT_PREFIXES
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


# DIN's queries (the candidate room) and the positive real-time sequence field each attends over.
DIN_HISTORY = {xf(F.HOST_ID): xf(F.seq_key(F.RT_POS, "host_ids")),
               xf(F.HOST_SHOP_ID): xf(F.seq_key(F.RT_POS, "shop_ids"))}
DIN_PREFIX = "hist_"  # DeepCTR's naming: the sequence of query feature q is "hist_" + q


def build_deepctr_din(spec: ModelSpec) -> tf.keras.Model:
  """DeepCTR's DIN on our features; the attended sequences renamed as DIN expects."""
  from deepctr.feature_column import VarLenSparseFeat  # pylint: disable=import-outside-toplevel
  from deepctr.models import DIN  # pylint: disable=import-outside-toplevel
  renamed = {seq: DIN_PREFIX + query for query, seq in DIN_HISTORY.items()}
  cols = []
  for col in deepctr_columns(spec):
    if isinstance(col, VarLenSparseFeat) and col.name in renamed:
      # No length feature: DIN masks the padding through the embedding's mask (id 0).
      col = VarLenSparseFeat(col.sparsefeat._replace(name=renamed[col.name]), maxlen=col.maxlen,
                             combiner=col.combiner)
    cols.append(col)
  return DIN(cols, list(DIN_HISTORY), task="binary")


def _din_batches(ds: tf.data.Dataset, model: tf.keras.Model) -> tf.data.Dataset:
  """DIN's inputs (sequences under their "hist_" names) and the effective-view head only."""
  dtypes = {i.name.split(":")[0]: i.dtype for i in model.inputs}
  def select(feats, labels, weights):
    feats = dict(feats, **{DIN_PREFIX + q: feats[seq] for q, seq in DIN_HISTORY.items()})
    return ({k: tf.cast(feats[k], dt) for k, dt in dtypes.items()},
            labels[F.HEAD_EFFECTIVE_VIEW], weights[F.HEAD_EFFECTIVE_VIEW])
  return ds.map(select)


def _deepctr_batches(ds: tf.data.Dataset, model: tf.keras.Model) -> tf.data.Dataset:
  """Keeps the inputs DeepCTR declared, with its dtypes (dense features as float32)."""
  dtypes = {i.name.split(":")[0]: i.dtype for i in model.inputs}
  def select(feats, labels, weights):
    return ({k: tf.cast(feats[k], dt) for k, dt in dtypes.items()}, labels, weights)
  return ds.map(select)


def _trainer(model: tf.keras.Model, ds: tf.data.Dataset, steps: int, batch_size: int):
  """One measured unit: ``steps`` training steps; returns the examples they saw."""
  def run() -> int:
    model.fit(ds, steps_per_epoch=steps, epochs=1, verbose=0)
    return steps * batch_size
  return run


# Each of ours next to the DeepCTR model it is compared with.
REFERENCE = {"ours_ple": "deepctr_ple", "ours_feedback": "deepctr_din"}


def run(work: str, pipeline_name: str, out_dir: str, steps: int, batch_size: int,
        rounds: int) -> Dict:
  dirs = latest_transform_dirs(work, pipeline_name)
  tft_output = tft.TFTransformOutput(dirs["graph"])
  pattern = os.path.join(dirs["examples"], "Split-train", "*.gz")
  spec = ModelSpec.from_transform_output(tft_output, EMBEDDING_DIM)
  ours = lambda name: trainer.build_model(  # noqa: E731
      spec, trainer.TrainConfig(model_name=name, learning_rate=LEARNING_RATE))
  deepctr_ple, deepctr_din = build_deepctr_ple(spec), build_deepctr_din(spec)
  # The same per-head losses and optimizer as our models' tasks (DeepCTR's are plain Keras).
  deepctr_ple.compile(tf.keras.optimizers.Adam(LEARNING_RATE),
                      loss={h.output: h.loss() for h in tasks.ENGAGEMENT.heads})
  deepctr_din.compile(tf.keras.optimizers.Adam(LEARNING_RATE),
                      loss=tf.keras.losses.BinaryCrossentropy())  # its one head: effective view
  models = {"ours_ple": ours("ple"), "deepctr_ple": deepctr_ple,
            "ours_feedback": ours("feedback"), "deepctr_din": deepctr_din}
  adapt = {"deepctr_ple": _deepctr_batches, "deepctr_din": _din_batches}
  cases = {}
  for name, model in models.items():
    model_tasks = getattr(model, "tasks", tasks.ENGAGEMENT)
    ds = trainer.transformed_dataset(pattern, tft_output, batch_size, model_tasks, shuffle_seed=1)
    ds = adapt[name](ds, model) if name in adapt else ds
    # A fixed set of batches held in memory and cycled: the timing measures the model's training
    # step, not gzip parsing or refilling the shuffle buffer at every fit().
    ds = ds.take(CACHED_BATCHES).cache().repeat()
    model.fit(ds, steps_per_epoch=max(WARMUP_STEPS, CACHED_BATCHES), epochs=1, verbose=0)
    cases[name] = _trainer(model, ds, steps, batch_size)
  print(f"{rounds} interleaved rounds of {steps} steps per model", flush=True)
  measured = timed_rounds(cases, rounds)
  median = {n: m["examples_per_s"]["median"] for n, m in measured.items()}
  out = {"steps": steps, "batch_size": batch_size, "rounds": rounds,
         "params": {n: int(m.count_params()) for n, m in models.items()},
         "measured": measured,
         "ratio_to_reference": {n: {"reference": ref, "examples_per_s": median[n] / median[ref],
                                    # > 1: ours costs more CPU per example
                                    "cpu_s_per_1k": (
                                        measured[n]["cpu_s_per_1k"]["median"]
                                        / measured[ref]["cpu_s_per_1k"]["median"])}
                                for n, ref in REFERENCE.items()}}
  write_json(out, out_dir, "throughput_ple")
  _plot(out, os.path.join(out_dir, "throughput_ple.png"))
  return out


def _plot(out: Dict, path: str) -> None:
  plt = pyplot()
  names = list(out["measured"])
  fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
  for ax, key, label in ((axes[0], "examples_per_s", "training examples / s"),
                         (axes[1], "cpu_s_per_1k", "CPU-seconds / 1,000 examples")):
    med, err = median_and_range(out["measured"][n][key] for n in names)
    ax.bar(names, med, yerr=err, capsize=4, color=["C0", "C1", "C2", "C3"][:len(names)])
    ax.set_ylabel(label)
    ax.tick_params(axis="x", labelrotation=20)
  for n, r in out["ratio_to_reference"].items():
    i = names.index(n)
    axes[0].text(i, out["measured"][n]["examples_per_s"]["median"],
                 f"x{r['examples_per_s']:.2f}", ha="center", va="bottom")
  fig.suptitle(f"batch {out['batch_size']}: median and range of {out['rounds']} interleaved "
               f"rounds x {out['steps']} steps")
  save_figure(fig, path)


def main(argv):
  del argv
  fl = flags.FLAGS
  out = run(fl.work, fl.pipeline_name, fl.out_dir, fl.steps, fl.batch_size, fl.rounds)
  print(f"\n{'model':<15}{'params':>10}{'ex/s median':>13}{'spread':>8}{'CPU-s/1k':>10}"
        f"{'ex/s ÷ ref':>12}{'CPU ÷ ref':>11}")
  for n, m in out["measured"].items():
    r = out["ratio_to_reference"].get(n)
    ratios = f"{r['examples_per_s']:>12.2f}{r['cpu_s_per_1k']:>11.2f}" if r else ""
    print(f"{n:<15}{out['params'][n]:>10,}{m['examples_per_s']['median']:>13,.0f}"
          f"{m['examples_per_s']['spread']:>8.0%}{m['cpu_s_per_1k']['median']:>10.3f}{ratios}")


if __name__ == "__main__":
  define_run_flags()
  flags.DEFINE_integer("steps", 200, "Timed training steps per model and round.")
  flags.DEFINE_integer("batch_size", 256, "Batch size (the same for every model).")
  flags.DEFINE_integer("rounds", 5, "Interleaved rounds; the median counts.")
  app.run(main)
