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
  decayed by time with the simulator's 4 h half-life, by position with its x0.85 per slot, and by
  the x0.85 per impression since the event, which is the simulator's rule), a signed decayed sum
  (+.5 per positive, +.3 more if liked, -.7 per negative hit, decayed per impression since), the
  trigger-category hit, and the satiation of the rooms the user bought in (x0.9 per impression
  since, halved every 24 h);
- session fatigue (shown categories that repeat the room's), slot, hour, activity level;
- the room: id (one-hot for the regression, categorical for the trees), window statistics, flash
  sale, displayed products and prices.

With ``--group_drops`` the regression is re-fit without each feature group (``FEATURE_GROUPS``,
the room one-hot included); with ``--stacking`` a regression on the pushed model's logit plus the
features, cross-validated on the test split by user, shows what the features add to the model.
With ``--model_features`` the regression is fitted on the model's own numeric inputs instead (its
encoders' match features and the room's numbers, through the pushed model's Transform graph), and
re-fitted with each hand feature added: what the model's inputs lack in a linear form. With
``--bootstrap N`` the pushed model's test AUC minus the regression's, per head, comes with a 95%
interval over N resamples of the test split's users (the sample's noise, paired).

    python -m bench.hand_features --work /work/w7f --name hand_features_seed7
    python -m bench.hand_features --work /work/w7h --group_drops --stacking --name hand_probes_seed7
    python -m bench.hand_features --work /work/w9 --model_features --name hand_model_features_seed7
    python -m bench.hand_features --work /work/w9 --bootstrap 500 --name hand_features_seed7
"""

from __future__ import annotations

import dataclasses
import glob
import json
import os
from typing import Callable, Dict, List, Tuple

import numpy as np
import tensorflow as tf
from absl import app, flags, logging
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GroupKFold
from sklearn.preprocessing import StandardScaler

from bench import quality_report as qr
from bench.common import define_run_flags, grouped_bars, pyplot, save_figure, write_json
from bench.metrics import auc, paired_auc_difference
from bench.quality_report import ORACLE_FIELD, truth_column
from data_gen import behaviour as bh
from data_gen import reachable as rc
from data_gen.simulator import read_ground_truth
from models import encoders
from models import features as F
from models import signatures as S
from serving.examples_io import latest_examples_dir, read_examples

# The world's category preference prior, the one the reachable ceiling's posterior uses.
DIRICHLET_PRIOR = rc.CATEGORY_PRIOR


def split_batches(split_dir: str, batch_size: int) -> tf.data.Dataset:
  """A split's serialized examples in batches, its files in name order: every reader of a split
  here goes through this, so their rows line up."""
  files = sorted(glob.glob(os.path.join(split_dir, "*.gz")))
  if not files:
    raise FileNotFoundError(f"no examples under {split_dir}")
  return tf.data.TFRecordDataset(files, compression_type="GZIP").batch(batch_size)


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
  parts: Dict[str, List[np.ndarray]] = {s.name: [] for s in specs}
  for batch in split_batches(split_dir, batch_size):
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
  for prefix, bump in ((F.RT_POS, bh.VIEW_APPETITE_BUMP), (F.RT_NEG, bh.QUICK_SWIPE_APPETITE_BUMP)):
    n = c[F.len_key(prefix)][:, 0]
    cats = c[F.seq_key(prefix, "category_ids")]
    length = cats.shape[1] // F.HOST_MAX_CATEGORIES
    hits = _overlap(cats.reshape(len(n), length, F.HOST_MAX_CATEGORIES), room)  # [B, L]
    valid = np.arange(length)[None, :] < n[:, None]
    hits *= valid
    age = c[F.seq_key(prefix, "age_seconds")].astype(np.float64)
    by_time = 0.5 ** (age / bh.APPETITE_HALF_LIFE_SECONDS)
    by_position = bh.APPETITE_DECAY_PER_SLOT ** np.arange(length)[None, :]
    # The simulator decays the appetite per impression, any impression: the events' distance.
    since = c[F.seq_key(prefix, F.RT_IMPRESSIONS_SINCE)].astype(np.float64)
    by_impressions = bh.APPETITE_DECAY_PER_SLOT ** since
    cols[f"{prefix}_hits"] = hits.sum(1)
    cols[f"{prefix}_hits_time_decayed"] = (hits * by_time).sum(1)
    cols[f"{prefix}_hits_position_decayed"] = (hits * by_position).sum(1)
    cols[f"{prefix}_hits_decayed"] = (hits * by_time * by_position).sum(1)
    cols[f"{prefix}_hits_since_decayed"] = (hits * by_time * by_impressions).sum(1)
    cols[f"{prefix}_signed"] = bump * cols[f"{prefix}_hits_since_decayed"]
    if prefix == F.RT_POS:
      # A like moves the appetite further; a purchase sates (the simulator's satiation: x0.9 per
      # impression since, halved every 24 h).
      liked = c[F.seq_key(prefix, F.RT_LIKED)] * valid
      cols[f"{prefix}_liked_hits_since_decayed"] = (hits * liked * by_time * by_impressions).sum(1)
      cols[f"{prefix}_signed"] += (bh.LIKE_APPETITE_BUMP
                                   * cols[f"{prefix}_liked_hits_since_decayed"])
      purchased = c[F.seq_key(prefix, F.RT_PURCHASED)] * valid
      cols[f"{prefix}_satiation"] = (
          hits * purchased * 0.5 ** (age / bh.SATIATION_HALF_LIFE_SECONDS)
          * bh.SATIATION_DECAY_PER_SLOT ** since).sum(1)
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


ROOM_ID = "room_id"
# Feature groups the regression is re-fit without (``--group_drops``), by column name; ROOM_ID
# is the regression's one-hot of the room, which is not a column of build_features.
FEATURE_GROUPS: Dict[str, Callable[[str], bool]] = {
    "realtime_overlaps": lambda n: n.startswith(F.RT_PREFIXES) or n == "appetite_estimate",
    "realtime_time_decay": lambda n: (n.endswith(("_time_decayed", "_hits_decayed",
                                                  "_since_decayed", "_signed"))
                                      or n == "appetite_estimate"),
    "realtime_position_decay": lambda n: n.endswith("_position_decayed"),
    "trigger": lambda n: n.startswith("trigger_") or n == "ll_posterior_x_trigger",
    "fatigue": lambda n: n == "fatigue",
    "lifelong": lambda n: n.startswith("ll_"),
    "room_statistics": lambda n: n in F.HOST_STAT_KEYS or n in ("flash_sale", "display_len",
                                                                "display_log_price"),
    ROOM_ID: lambda n: False,
}
LOGISTIC_C = 1.0


def head_rows(cols: Dict[str, np.ndarray], head: str) -> np.ndarray:
  """The rows a head is trained and scored on: buy only where the room displays products."""
  n = len(cols[F.DISPLAY_LEN])
  return cols[F.DISPLAY_LEN][:, 0] > 0 if head == F.HEAD_BUY else np.ones(n, bool)


def regression_scores(x_train: np.ndarray, x_test: np.ndarray, train: Dict[str, np.ndarray],
                       test: Dict[str, np.ndarray], with_room_id: bool = True
                       ) -> Dict[str, np.ndarray]:
  """{head: test scores} of a logistic regression on standardised columns (+ the room one-hot)."""
  scaler = StandardScaler().fit(x_train)
  lr_train, lr_test = scaler.transform(x_train), scaler.transform(x_test)
  if with_room_id:
    rooms = np.unique(train[F.HOST_ID][:, 0])
    lr_train = np.hstack([lr_train, _one_hot(train[F.HOST_ID][:, 0], rooms)])
    lr_test = np.hstack([lr_test, _one_hot(test[F.HOST_ID][:, 0], rooms)])
  out = {}
  for head, label in F.HEADS.items():
    rows = head_rows(train, head)
    lr = LogisticRegression(C=LOGISTIC_C, max_iter=2000).fit(lr_train[rows], train[label][rows, 0])
    out[head] = lr.predict_proba(lr_test)[:, 1]
  return out


@dataclasses.dataclass(frozen=True)
class Design:
  """The hand features of both splits, built once with one category count; column names."""
  x_train: np.ndarray
  x_test: np.ndarray
  names: List[str]

  @classmethod
  def build(cls, train: Dict[str, np.ndarray], test: Dict[str, np.ndarray]) -> Design:
    n_categories = int(max(train[F.HOST_CATEGORY_IDS].max(), test[F.HOST_CATEGORY_IDS].max()))
    x_train, names = build_features(train, n_categories)
    return cls(x_train, build_features(test, n_categories)[0], names)


def fit_and_score(train: Dict[str, np.ndarray], test: Dict[str, np.ndarray], design: Design,
                  seed: int = 0) -> Dict[str, Dict[str, np.ndarray]]:
  """{model: {head: test scores}} for the logistic regression and the trees."""
  x_train, x_test = design.x_train, design.x_test
  rooms = np.unique(train[F.HOST_ID][:, 0])
  room_index = {r: i for i, r in enumerate(rooms)}
  code = lambda ids: np.array([room_index.get(r, -1) for r in ids], float)  # noqa: E731
  gbt_train = np.hstack([x_train, code(train[F.HOST_ID][:, 0])[:, None]])
  gbt_test = np.hstack([x_test, code(test[F.HOST_ID][:, 0])[:, None]])
  categorical = np.zeros(gbt_train.shape[1], bool)
  categorical[-1] = True
  out: Dict[str, Dict[str, np.ndarray]] = {
      "logistic_regression": regression_scores(x_train, x_test, train, test), "gbt": {}}
  for head, label in F.HEADS.items():
    rows = head_rows(train, head)
    gbt = HistGradientBoostingClassifier(max_iter=300, learning_rate=0.05,
                                         categorical_features=categorical,
                                         early_stopping=True, validation_fraction=0.1,
                                         random_state=seed).fit(gbt_train[rows],
                                                                train[label][rows, 0])
    out["gbt"][head] = gbt.predict_proba(gbt_test)[:, 1]
  return out


def _test_auc(test: Dict[str, np.ndarray], scores: Dict[str, np.ndarray]) -> Dict[str, float]:
  aucs = {}
  for head, label in F.HEADS.items():
    rows = head_rows(test, head)
    aucs[head] = auc(test[label][rows, 0], scores[head][rows])
  return aucs


def group_drops(train: Dict[str, np.ndarray], test: Dict[str, np.ndarray], design: Design,
                full_scores: Dict[str, np.ndarray]) -> Dict[str, dict]:
  """The regression re-fit without each feature group: per group the columns dropped and, per
  head, the test AUC and its change from the full regression (``full_scores``, its test scores)."""
  x_train, x_test, names = design.x_train, design.x_test, design.names
  full = _test_auc(test, full_scores)
  out = {"all": {"columns": [], "heads": {h: {"auc": a, "delta": 0.0} for h, a in full.items()}}}
  for group, member in FEATURE_GROUPS.items():
    keep = np.array([not member(n) for n in names])
    got = _test_auc(test, regression_scores(x_train[:, keep], x_test[:, keep], train, test,
                                             with_room_id=group != ROOM_ID))
    out[group] = {"columns": [n for n, k in zip(names, keep) if not k] or [ROOM_ID],
                  "heads": {h: {"auc": a, "delta": a - full[h]} for h, a in got.items()}}
    logging.info("regression without %s: %s", group,
                 " / ".join(f"{a:.4f}" for a in got.values()))
  return out


def logit(p: np.ndarray) -> np.ndarray:
  p = np.clip(p.astype(np.float64), 1e-6, 1 - 1e-6)
  return np.log(p / (1 - p))


def out_of_fold_scores(design: np.ndarray, y: np.ndarray, groups: np.ndarray,
                       folds: int) -> np.ndarray:
  """[N] a logistic regression's out-of-fold logits, with folds grouped by ``groups``."""
  pred = np.zeros(len(y))
  for fit_rows, score_rows in GroupKFold(folds).split(design, y, groups):
    lr = LogisticRegression(C=LOGISTIC_C, max_iter=2000).fit(design[fit_rows], y[fit_rows])
    pred[score_rows] = lr.decision_function(design[score_rows])
  return pred


def out_of_fold_auc(design: np.ndarray, y: np.ndarray, groups: np.ndarray, folds: int) -> float:
  """AUC of a logistic regression's out-of-fold scores, with folds grouped by ``groups``."""
  return auc(y, out_of_fold_scores(design, y, groups, folds))


def stacking_probe(test: Dict[str, np.ndarray], x_test: np.ndarray, names: List[str],
                   model_scores: Dict[str, np.ndarray], folds: int = 5) -> Dict[str, dict]:
  """What the hand features add to a model's score, on the test split alone.

  Per head, out-of-fold AUC of a logistic regression on the model's logit, and on the logit with
  all standardised hand features or with one group's; folds are grouped by user, so no user's
  impressions are both fitted and scored. A gain near zero: the model already carries what the
  features carry.

  Args:
    x_test, names: the test split's hand features (``Design.x_test``) and their column names.
  """
  x = StandardScaler().fit_transform(x_test)
  users = test[F.USER_ID][:, 0]
  out = {}
  for head, label in F.HEADS.items():
    rows = head_rows(test, head)
    y, groups = test[label][rows, 0], users[rows]
    model_logit = logit(model_scores[head][rows])[:, None]
    out_of_fold = lambda design: out_of_fold_auc(design, y, groups, folds)  # noqa: E731,B023
    base = out_of_fold(model_logit)
    row = {"logit_only": base,
           "with_all_features": out_of_fold(np.hstack([model_logit, x[rows]]))}
    row["gain"] = row["with_all_features"] - base
    row["gain_by_group"] = {}
    for group, member in FEATURE_GROUPS.items():
      cols = np.array([member(n) for n in names])
      if cols.any():
        row["gain_by_group"][group] = out_of_fold(np.hstack([model_logit, x[rows][:, cols]])) - base
    out[head] = row
  return out


def model_feature_columns(x: Dict[str, tf.Tensor]) -> np.ndarray:
  """[B, D] the model's numeric inputs for one transformed batch: every match feature its encoders
  compute (``context_match``, ``realtime_match``, ``lifelong_match``; fresh layers, so at their
  initial decays and with an identity normalisation), the room's statistics and its flash sale."""
  parts = encoders.context_match(x) + encoders.realtime_match(x) + encoders.lifelong_match(x)
  parts += [x[F.transformed_name(k)] for k in (*F.HOST_STAT_KEYS, F.HOST_FLASH_SALE)]
  rows = int(parts[0].shape[0])
  return np.concatenate([tf.reshape(tf.cast(p, tf.float32), [rows, -1]).numpy() for p in parts],
                        axis=1)


def model_features(transform, split_dir: str, batch_size: int = 4096) -> np.ndarray:
  """``model_feature_columns`` of every example of a split, in ``read_columns``' row order.

  Args:
    transform: a SavedModel's Transform signature (serialized examples -> transformed features).
  """
  return np.concatenate([model_feature_columns(transform(**{S.EXAMPLES_INPUT: batch}))
                         for batch in split_batches(split_dir, batch_size)])


def model_features_probe(train: Dict[str, np.ndarray], test: Dict[str, np.ndarray],
                         design: Design, g_train: np.ndarray, g_test: np.ndarray) -> dict:
  """The regression (room one-hot included) on the model's inputs, alone and with each hand
  feature added: per head the test AUC, and per hand feature the AUC change it brings (largest
  summed change first).

  Args:
    g_train, g_test: ``model_features`` of the two splits; columns constant on train are dropped.
  """
  keep = g_train.std(axis=0) > 0
  g_train, g_test = g_train[:, keep], g_test[:, keep]
  base = _test_auc(test, regression_scores(g_train, g_test, train, test))
  gains = {}
  for i, name in enumerate(design.names):
    got = _test_auc(test, regression_scores(np.hstack([g_train, design.x_train[:, i:i + 1]]),
                                             np.hstack([g_test, design.x_test[:, i:i + 1]]),
                                             train, test))
    gains[name] = {h: got[h] - base[h] for h in got}
    logging.info("model inputs + %s: %s", name, " / ".join(f"{g:+.4f}" for g in gains[name].values()))
  ranked = sorted(gains, key=lambda n: -sum(gains[n].values()))
  return {"columns": int(keep.sum()), "auc": base,
          "hand_feature_gain": {n: gains[n] for n in ranked}}


def model_minus_regression(test: Dict[str, np.ndarray], model_scores: Dict[str, np.ndarray],
                           regression_scores: Dict[str, np.ndarray],
                           resamples: int) -> Dict[str, dict]:
  """Per head, the model's test AUC minus the regression's, paired, with a bootstrap over the
  test split's users (:func:`bench.metrics.paired_auc_difference`)."""
  out = {}
  for head, label in F.HEADS.items():
    rows = head_rows(test, head)
    out[head] = paired_auc_difference(test[label][rows, 0], model_scores[head][rows],
                                      regression_scores[head][rows], test[F.USER_ID][rows, 0],
                                      resamples)
  return out


def report(test: Dict[str, np.ndarray], scores: Dict[str, Dict[str, np.ndarray]],
           truth: Dict[int, dict], model_report: dict | None) -> dict:
  """Test AUC per head: each baseline, the pipeline's model (if reported), reachable, oracle."""
  ids = test[F.IMPRESSION_ID][:, 0]
  out = {"n_test": int(len(ids)), "heads": {}}
  for head, label in F.HEADS.items():
    rows = head_rows(test, head)
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
  grouped_bars(ax, heads, {name: [result["heads"][h][name] for h in heads] for name in names})
  ax.set_ylim(0.5, 0.8)
  ax.set_ylabel("test AUC (eval split)")
  ax.set_title("Hand-feature baselines vs the model, reachable and oracle")
  ax.legend(fontsize=8)
  save_figure(fig, path)


def plot_probes(result: dict, path: str) -> None:
  """One panel per probe run: each group's AUC change when dropped from the regression; what each
  group adds to the model's logit (stacking gain); what each hand feature adds to a regression on
  the model's own inputs."""
  plt = pyplot()
  panels = [(key, title) for key, title in (
      ("group_drops", "regression AUC change without the group"),
      ("stacking", "AUC gain over the model's logit (stacking)"),
      ("model_features", "AUC gain of a hand feature over the model's inputs (top 12)"))
      if key in result]
  fig, axes = plt.subplots(1, len(panels), figsize=(7 * len(panels), 4.5), squeeze=False)
  heads = list(F.HEADS)
  for ax, (key, title) in zip(axes[0], panels):
    if key == "group_drops":
      groups = [g for g in result[key] if g != "all"]
      values = {h: [result[key][g]["heads"][h]["delta"] for g in groups] for h in heads}
    elif key == "model_features":
      gains = result[key]["hand_feature_gain"]  # largest first
      groups = list(gains)[:12]
      values = {h: [gains[g][h] for g in groups] for h in heads}
    else:
      groups = ["all"] + list(next(iter(result[key].values()))["gain_by_group"])
      values = {h: [result[key][h]["gain"]] + list(result[key][h]["gain_by_group"].values())
                for h in heads}
    grouped_bars(ax, groups, {head: values[head] for head in heads}, horizontal=True)
    ax.axvline(0, color="black", lw=0.8)
    ax.set_title(title, fontsize=10)
    ax.grid(axis="x", alpha=0.3)
  axes[0][0].legend(fontsize=8)
  save_figure(fig, path)


def main(argv):
  del argv
  fl = flags.FLAGS
  train_dir = latest_examples_dir(fl.work, fl.pipeline_name, "train")
  test_dir = latest_examples_dir(fl.work, fl.pipeline_name, "eval")
  train, test = read_columns(train_dir), read_columns(test_dir)
  print(f"examples: train {len(train[F.IMPRESSION_ID])}, test {len(test[F.IMPRESSION_ID])}")
  design = Design.build(train, test)
  scores = fit_and_score(train, test, design)
  quality = os.path.join(fl.work, "reports", "quality.json")
  model_report = None
  if os.path.exists(quality):  # the demo's quality report of the pushed model, if there is one
    with open(quality) as f:
      model_report = json.load(f)
  result = report(test, scores, read_ground_truth(os.path.join(fl.work, "logs")), model_report)
  names = list(next(iter(result["heads"].values())))
  print(f"{'head':<16}" + "".join(f"{n:>21}" for n in names))
  for head, row in result["heads"].items():
    print(f"{head:<16}" + "".join(f"{row[n]:>21.4f}" for n in names))
  if fl.group_drops:
    result["group_drops"] = group_drops(train, test, design,
                                          scores["logistic_regression"])
    print(f"\nregression without a group (AUC change): {' / '.join(F.HEADS)}")
    for group, row in result["group_drops"].items():
      print(f"{group:<26}" + "".join(f"{c['auc']:>9.4f} ({c['delta']:+.4f})"
                                     for c in row["heads"].values()))
  model_scores = None
  if fl.stacking or fl.bootstrap:
    model_dir = fl.model_dir or qr.pushed_model_dir(fl.work, fl.pipeline_name)
    examples = read_examples(test_dir, limit=10**9)
    ids = np.array([e.features.feature[F.IMPRESSION_ID].int64_list.value[0] for e in examples])
    if not np.array_equal(ids, test[F.IMPRESSION_ID][:, 0]):
      raise ValueError(f"{test_dir}: examples read in two orders")
    model_scores = qr.score_examples(model_dir, examples)
    result["scored_model"] = model_dir
  if fl.bootstrap:
    result["model_minus_regression"] = model_minus_regression(
        test, model_scores, scores["logistic_regression"], fl.bootstrap)
    print(f"\nmodel ({model_dir}) minus the regression, 95% interval over {fl.bootstrap} "
          "resamples of the eval split's users:")
    for head, row in result["model_minus_regression"].items():
      print(f"{head:<16}{row['difference']:+.4f}  [{row['lo']:+.4f}, {row['hi']:+.4f}]  "
            f"model ahead in {row['share_above_zero']:.0%} of resamples")
  if fl.stacking:
    result["stacking"] = stacking_probe(test, design.x_test, design.names, model_scores)
    print(f"\nstacking on {model_dir} (out-of-fold AUC by user folds): logit only -> + features")
    for head, row in result["stacking"].items():
      print(f"{head:<16}{row['logit_only']:.4f} -> {row['with_all_features']:.4f} "
            f"({row['gain']:+.4f}); by group " + ", ".join(
                f"{g} {v:+.4f}" for g, v in row["gain_by_group"].items()))
  if fl.model_features:
    model_dir = fl.model_dir or qr.pushed_model_dir(fl.work, fl.pipeline_name)
    loaded = tf.saved_model.load(model_dir)  # held while its signature runs
    transform = loaded.signatures[S.TRANSFORM_SIGNATURE]
    probe = model_features_probe(train, test, design, model_features(transform, train_dir),
                                 model_features(transform, test_dir))
    result["model_features"] = dict(probe, model_dir=model_dir)
    print(f"\nregression on the model's {probe['columns']} inputs ({model_dir}): "
          + " / ".join(f"{a:.4f}" for a in probe["auc"].values()))
    for name, gain in list(probe["hand_feature_gain"].items())[:10]:
      print(f"  + {name:<30}" + " / ".join(f"{g:+.4f}" for g in gain.values()))
  path = write_json(result, fl.out_dir, fl.name)
  plot(result, os.path.join(fl.out_dir, f"{fl.name}.png"))
  if fl.group_drops or fl.stacking or fl.model_features:
    plot_probes(result, os.path.join(fl.out_dir, f"{fl.name}_probes.png"))
  print(f"wrote {path} and .png")


if __name__ == "__main__":
  define_run_flags("hand_features")
  flags.DEFINE_bool("group_drops", False, "Also re-fit the regression without each feature group.")
  flags.DEFINE_bool("stacking", False, "Also probe what the features add to the model's logit.")
  flags.DEFINE_bool("model_features", False,
                    "Also fit the regression on the model's own inputs, with each hand feature added.")
  flags.DEFINE_integer("bootstrap", 0,
                       "Also compare the model with the regression: this many resamples of the "
                       "test split's users (0: off).")
  flags.DEFINE_string("model_dir", None,
                      "SavedModel for --stacking, --bootstrap and --model_features (default: the "
                      "pushed one).")
  app.run(main)
