"""Hand-feature baselines: logistic regression and gradient-boosted trees on ~50 features built
from the raw examples, next to the pipeline's model, the reachable and the oracle AUC.

Issue 9 measured such a logistic regression at 0.752 / 0.752 / 0.702 (view / interact / buy) on an
earlier split and asked the demo's model to be at least as good. This bench rebuilds it on the
pipeline's own forward-in-time split (train = the ExampleGen's train split, test = its eval split),
from what any model sees: the raw tf.Examples. The features follow the simulator's equations
(``data_gen/README.md``) without its hidden traits:

- lifelong: share and count of purchases in the room's categories, the Dirichlet(.25) posterior
  mean preference for them, displayed brands and the room's shop among the purchases;
- real-time: category overlaps of the positive and negative sequences with the room (counts,
  decayed by time with the simulator's 4 h half-life, by position with its x0.85 per slot), a signed
  decayed sum (+.5 per positive, -.7 per negative hit) and the trigger-category hit;
- session fatigue (shown categories that repeat the room's), slot, hour, activity level;
- the room: id (one-hot for the regression, categorical for the trees), window statistics, flash
  sale, displayed products and prices.

    python -m bench.hand_features --work /work/w7f --name hand_features_seed7
"""

from __future__ import annotations

import glob
import json
import os
from typing import Dict, List, Tuple

import numpy as np
import tensorflow as tf
from absl import app, flags
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

from bench.common import define_run_flags, pyplot, save_figure, write_json
from bench.metrics import auc
from bench.quality_report import ORACLE_FIELD, truth_column
from data_gen import behaviour as bh
from data_gen import reachable as rc
from data_gen.simulator import read_ground_truth
from models import features as F
from serving.examples_io import latest_examples_dir

# The simulator's appetite moves (data_gen/README.md "Real-time state and sessions").
POSITIVE_BUMP, NEGATIVE_BUMP = 0.5, -0.7
DIRICHLET_PRIOR = 0.25


def read_columns(split_dir: str, batch_size: int = 4096) -> Dict[str, np.ndarray]:
  """Every raw feature of a split's examples as a dense array (lifelong fields 0-padded).

  The examples must have the default sequence lengths (``F.raw_features()``).
  """
  specs = F.raw_features()
  parse_spec = {s.name: (tf.io.VarLenFeature(tf.int64 if s.dtype == "int" else tf.float32)
                         if s.variable_length else
                         tf.io.FixedLenFeature([s.length], {"int": tf.int64, "float": tf.float32,
                                                            "bytes": tf.string}[s.dtype]))
                for s in specs}
  files = sorted(glob.glob(os.path.join(split_dir, "*.gz")))
  if not files:
    raise FileNotFoundError(f"no examples under {split_dir}")
  parts: Dict[str, List[np.ndarray]] = {s.name: [] for s in specs}
  for batch in tf.data.TFRecordDataset(files, compression_type="GZIP").batch(batch_size):
    parsed = tf.io.parse_example(batch, parse_spec)
    for s in specs:
      x = parsed[s.name]
      if isinstance(x, tf.SparseTensor):
        x = tf.sparse.to_dense(tf.sparse.reset_shape(x, [x.dense_shape[0], s.length]))
      parts[s.name].append(x.numpy())
  return {k: np.concatenate(v) for k, v in parts.items()}


def _hits(keys: np.ndarray, query: np.ndarray) -> np.ndarray:
  """keys [B, *S] vs query ids [B, Q] -> [B, *S, Q]: equal and not padding (0)."""
  query = query.reshape((len(query),) + (1,) * (keys.ndim - 1) + (-1,))
  return (keys[..., None] == query) & (keys[..., None] > 0)


def _overlap(cats: np.ndarray, room: np.ndarray) -> np.ndarray:
  """Categories shared with the room per position: cats [B, L, K] vs room [B, R] -> [B, L]."""
  return _hits(cats, room).sum(axis=(2, 3)).astype(np.float64)


def build_features(c: Dict[str, np.ndarray], n_categories: int) -> Tuple[np.ndarray, List[str]]:
  """[N, D] numeric features and their names (the room id is added separately)."""
  room = c[F.HOST_CATEGORY_IDS]  # [B, 3]
  cols: Dict[str, np.ndarray] = {}
  for prefix, bump in ((F.RT_POS, POSITIVE_BUMP), (F.RT_NEG, NEGATIVE_BUMP)):
    n = c[F.len_key(prefix)][:, 0]
    cats = c[F.seq_key(prefix, "category_ids")]
    length = cats.shape[1] // F.HOST_MAX_CATEGORIES
    hits = _overlap(cats.reshape(len(n), length, F.HOST_MAX_CATEGORIES), room)  # [B, L]
    valid = np.arange(length)[None, :] < n[:, None]
    hits *= valid
    age = c[F.seq_key(prefix, "age_seconds")].astype(np.float64)
    by_time = 0.5 ** (age / bh.APPETITE_HALF_LIFE_SECONDS)
    by_position = bh.APPETITE_DECAY_PER_SLOT ** np.arange(length)[None, :]
    cols[f"{prefix}_hits"] = hits.sum(1)
    cols[f"{prefix}_hits_time_decayed"] = (hits * by_time).sum(1)
    cols[f"{prefix}_hits_position_decayed"] = (hits * by_position).sum(1)
    cols[f"{prefix}_hits_decayed"] = (hits * by_time * by_position).sum(1)
    cols[f"{prefix}_signed"] = bump * cols[f"{prefix}_hits_decayed"]
    cols[f"{prefix}_any_hit"] = (hits.sum(1) > 0).astype(float)
    cols[f"{prefix}_log_len"] = np.log1p(n)
  trigger_hit = (c[F.TRIGGER_CATEGORY_ID] == room).any(1).astype(float)
  slot = c[F.SLOT_INDEX][:, 0].astype(float)
  cols["trigger_hit"] = trigger_hit
  cols["trigger_hit_decayed"] = (trigger_hit * bh.TRIGGER_APPETITE_BUMP
                                 * bh.APPETITE_DECAY_PER_SLOT ** slot)
  cols["appetite_estimate"] = (cols[f"{F.RT_POS}_signed"] + cols[f"{F.RT_NEG}_signed"]
                               + cols["trigger_hit_decayed"])
  session = c[F.SESSION_CATEGORY_IDS].reshape(len(slot), -1, F.HOST_MAX_CATEGORIES)
  cols["fatigue"] = _overlap(session, room).sum(1)
  cols["slot"] = slot
  hour = c[F.HOUR_OF_DAY][:, 0] * 2 * np.pi / 24
  cols["hour_sin"], cols["hour_cos"] = np.sin(hour), np.cos(hour)
  for level in F.ACTIVITY_LEVELS:
    cols[f"activity_{level}"] = (c[F.ACTIVITY_LEVEL][:, 0] == level.encode()).astype(float)
  # Lifelong purchases.
  ll_n = c[F.len_key(F.LL)][:, 0].astype(float)
  ll_cats = c[F.seq_key(F.LL, "category_ids")]
  in_room = _hits(ll_cats, room).sum(1)  # [B, 3]
  room_valid = room > 0
  n_in_room = (in_room * room_valid).sum(1).astype(float)
  cols["ll_log_len"] = np.log1p(ll_n)
  cols["ll_room_category_count"] = np.log1p(n_in_room)
  cols["ll_room_category_share"] = np.where(ll_n > 0, n_in_room / np.maximum(ll_n, 1), 0.0)
  posterior = (DIRICHLET_PRIOR + in_room) / (DIRICHLET_PRIOR * n_categories + ll_n[:, None])
  cols["ll_posterior_preference"] = (posterior * room_valid).sum(1)
  brand_hits = _hits(c[F.seq_key(F.LL, "brand_ids")], c[F.DISPLAY_BRAND_IDS]).sum(1)  # [B, N]
  cols["ll_display_brand_count"] = np.log1p(brand_hits.sum(1))
  cols["ll_display_brand_share"] = np.where(ll_n > 0, brand_hits.sum(1) / np.maximum(ll_n, 1), 0)
  cols["ll_shop_count"] = np.log1p(_hits(c[F.seq_key(F.LL, "shop_ids")],
                                         c[F.HOST_SHOP_ID]).sum(axis=(1, 2)))
  cols["ll_posterior_x_trigger"] = cols["ll_posterior_preference"] * trigger_hit
  # The room.
  for key in F.HOST_STAT_KEYS:
    cols[key] = np.log1p(c[key][:, 0])
  cols["flash_sale"] = c[F.HOST_FLASH_SALE][:, 0].astype(float)
  n_display = c[F.DISPLAY_LEN][:, 0].astype(float)
  cols["display_len"] = n_display
  prices = np.log1p(c[F.DISPLAY_PRICES])
  shown = np.arange(prices.shape[1])[None, :] < n_display[:, None]
  cols["display_log_price"] = np.where(n_display > 0, (prices * shown).sum(1)
                                       / np.maximum(n_display, 1), 0.0)
  names = list(cols)
  return np.stack([cols[k] for k in names], axis=1), names


def _one_hot(ids: np.ndarray, vocab: np.ndarray) -> np.ndarray:
  return (ids[:, None] == vocab[None, :]).astype(np.float64)


def fit_and_score(train: Dict[str, np.ndarray], test: Dict[str, np.ndarray],
                  seed: int = 0) -> Dict[str, Dict[str, np.ndarray]]:
  """{model: {head: test scores}} for the logistic regression and the trees."""
  n_categories = int(max(train[F.HOST_CATEGORY_IDS].max(), test[F.HOST_CATEGORY_IDS].max()))
  x_train, _ = build_features(train, n_categories)
  x_test, _ = build_features(test, n_categories)
  rooms = np.unique(train[F.HOST_ID][:, 0])
  scaler = StandardScaler().fit(x_train)
  lr_train = np.hstack([scaler.transform(x_train), _one_hot(train[F.HOST_ID][:, 0], rooms)])
  lr_test = np.hstack([scaler.transform(x_test), _one_hot(test[F.HOST_ID][:, 0], rooms)])
  room_index = {r: i for i, r in enumerate(rooms)}
  code = lambda ids: np.array([room_index.get(r, -1) for r in ids], float)  # noqa: E731
  gbt_train = np.hstack([x_train, code(train[F.HOST_ID][:, 0])[:, None]])
  gbt_test = np.hstack([x_test, code(test[F.HOST_ID][:, 0])[:, None]])
  categorical = np.zeros(gbt_train.shape[1], bool)
  categorical[-1] = True
  out: Dict[str, Dict[str, np.ndarray]] = {"logistic_regression": {}, "gbt": {}}
  for head, label in F.HEADS.items():
    y = train[label][:, 0]
    rows = train[F.DISPLAY_LEN][:, 0] > 0 if head == F.HEAD_BUY else np.ones(len(y), bool)
    lr = LogisticRegression(C=1.0, max_iter=2000).fit(lr_train[rows], y[rows])
    out["logistic_regression"][head] = lr.predict_proba(lr_test)[:, 1]
    gbt = HistGradientBoostingClassifier(max_iter=300, learning_rate=0.05,
                                         categorical_features=categorical,
                                         early_stopping=True, validation_fraction=0.1,
                                         random_state=seed).fit(gbt_train[rows], y[rows])
    out["gbt"][head] = gbt.predict_proba(gbt_test)[:, 1]
  return out


def report(test: Dict[str, np.ndarray], scores: Dict[str, Dict[str, np.ndarray]],
           truth: Dict[int, dict], model_report: dict | None) -> dict:
  """Test AUC per head: each baseline, the pipeline's model (if reported), reachable, oracle."""
  ids = test[F.IMPRESSION_ID][:, 0]
  buy_rows = test[F.DISPLAY_LEN][:, 0] > 0
  out = {"n_test": int(len(ids)), "heads": {}}
  for head, label in F.HEADS.items():
    rows = buy_rows if head == F.HEAD_BUY else np.ones(len(ids), bool)
    y = test[label][rows, 0]
    row = {name: auc(y, s[head][rows]) for name, s in scores.items()}
    field = ORACLE_FIELD[head]
    for name, column in (("oracle", field), ("reachable", rc.field_name(field, rc.REACHABLE))):
      row[name] = auc(y, truth_column(truth, ids[rows], column))
    if model_report is not None:
      row["model"] = model_report["heads"][head]["all"]["auc"]
    out["heads"][head] = row
  return out


def plot(result: dict, path: str) -> None:
  plt = pyplot()
  heads = list(result["heads"])
  names = list(next(iter(result["heads"].values())))
  fig, ax = plt.subplots(figsize=(8, 4))
  width = 0.8 / len(names)
  for i, name in enumerate(names):
    ax.bar(np.arange(len(heads)) + i * width, [result["heads"][h][name] for h in heads], width,
           label=name)
  ax.set_xticks(np.arange(len(heads)) + 0.4 - width / 2, heads)
  ax.set_ylim(0.5, 0.8)
  ax.set_ylabel("test AUC (eval split)")
  ax.set_title("Hand-feature baselines vs the model, reachable and oracle")
  ax.legend(fontsize=8)
  save_figure(fig, path)


def main(argv):
  del argv
  fl = flags.FLAGS
  train = read_columns(latest_examples_dir(fl.work, fl.pipeline_name, "train"))
  test = read_columns(latest_examples_dir(fl.work, fl.pipeline_name, "eval"))
  print(f"examples: train {len(train[F.IMPRESSION_ID])}, test {len(test[F.IMPRESSION_ID])}")
  scores = fit_and_score(train, test)
  quality = os.path.join(fl.work, "reports", "quality.json")
  model_report = None
  if os.path.exists(quality):  # the demo's quality report of the pushed model, if there is one
    with open(quality) as f:
      model_report = json.load(f)
  result = report(test, scores, read_ground_truth(os.path.join(fl.work, "logs")), model_report)
  path = write_json(result, fl.out_dir, fl.name)
  plot(result, os.path.join(fl.out_dir, f"{fl.name}.png"))
  names = list(next(iter(result["heads"].values())))
  print(f"{'head':<16}" + "".join(f"{n:>21}" for n in names))
  for head, row in result["heads"].items():
    print(f"{head:<16}" + "".join(f"{row[n]:>21.4f}" for n in names))
  print(f"wrote {path}")


if __name__ == "__main__":
  define_run_flags("hand_features")
  app.run(main)
