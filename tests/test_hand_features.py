"""Hand features of the baseline bench on one hand-built row, against hand-computed values."""

import numpy as np
import pytest
import tensorflow as tf

from bench import hand_features as hf
from bench import mechanism_caps as mc
from bench import quality_report as qr
from bench.ablation_feedback import MECHANISMS
from data_gen import reachable as rc
from models import features as F
from models.spec import ModelSpec

RT_LEN, LL_LEN = 4, 5


def _row(**values):
  """One example's raw columns: zeros (b"new" for bytes) except ``values``."""
  cols = {}
  for spec in F.raw_features(RT_LEN, LL_LEN):
    fill = b"new" if spec.dtype == "bytes" else 0
    cols[spec.name] = np.full((1, spec.length), fill, object if spec.dtype == "bytes" else float)
  for name, v in values.items():
    arr = cols[name]
    arr[0, :len(v)] = v
  return cols


def test_features_follow_the_simulator_equations():
  hour4 = 4 * 3600.0
  row = _row(**{
      F.HOST_CATEGORY_IDS: [5, 7, 0], F.TRIGGER_CATEGORY_ID: [7], F.SLOT_INDEX: [2],
      # Two positive positions: the first shares category 5 (4 h ago), the second shares 5 and 7.
      F.len_key(F.RT_POS): [2],
      F.seq_key(F.RT_POS, "category_ids"): [5, 0, 0, 7, 5, 1],
      F.seq_key(F.RT_POS, "age_seconds"): [hour4, 0.0],
      # Impressions since each (hand values: any impressions count, in either sequence or none).
      F.seq_key(F.RT_POS, F.RT_IMPRESSIONS_SINCE): [1, 3],
      # The second liked, the first bought in; the flags at the third position are padding.
      F.seq_key(F.RT_POS, F.RT_LIKED): [0, 1, 1], F.seq_key(F.RT_POS, F.RT_PURCHASED): [1, 0, 1],
      # One negative position beyond its length: must not count.
      F.len_key(F.RT_NEG): [0], F.seq_key(F.RT_NEG, "category_ids"): [5, 7, 0],
      F.SESSION_CATEGORY_IDS: [5, 9, 0, 7, 0, 0],
      F.len_key(F.LL): [3], F.seq_key(F.LL, "category_ids"): [5, 5, 9],
      F.DISPLAY_LEN: [2], F.DISPLAY_PRICES: [np.e - 1, np.e ** 3 - 1],
  })
  x, names = hf.build_features(row, n_categories=10)
  got = dict(zip(names, x[0]))
  assert got["rt_pos_hits"] == 3
  assert got["rt_pos_hits_time_decayed"] == pytest.approx(1 * 0.5 + 2 * 1.0)
  assert got["rt_pos_hits_position_decayed"] == pytest.approx(1 + 2 * 0.85)
  assert got["rt_pos_hits_decayed"] == pytest.approx(0.5 + 2 * 0.85)
  since_decayed = 1 * 0.5 * 0.85 + 2 * 1.0 * 0.85 ** 3
  assert got["rt_pos_hits_since_decayed"] == pytest.approx(since_decayed)
  liked_decayed = 2 * 1.0 * 0.85 ** 3
  assert got["rt_pos_liked_hits_since_decayed"] == pytest.approx(liked_decayed)
  signed = 0.5 * since_decayed + 0.3 * liked_decayed
  assert got["rt_pos_signed"] == pytest.approx(signed)
  # The bought-in room shares 1 category, 4 h ago (half-life 24 h), 1 impression since (x0.9).
  assert got["rt_pos_satiation"] == pytest.approx(1 * 0.5 ** (4 / 24) * 0.9)
  assert got["rt_neg_hits"] == 0 and got["rt_neg_signed"] == 0
  assert got["trigger_hit"] == 1
  assert got["trigger_hit_decayed"] == pytest.approx(0.8 * 0.85 ** 2)
  assert got["appetite_estimate"] == pytest.approx(signed + 0.8 * 0.85 ** 2)
  assert got["fatigue"] == 2
  assert got["ll_room_category_share"] == pytest.approx(2 / 3)
  # Dirichlet(.25) posterior over 10 categories: (.25 + 2) / (2.5 + 3) for 5, .25 / 5.5 for 7.
  assert got["ll_posterior_preference"] == pytest.approx(2.5 / 5.5)
  assert got["display_log_price"] == pytest.approx(2.0)
  assert got["activity_new"] == 1 and got["activity_high"] == 0


def test_no_history_gives_zero_shares_and_the_prior():
  x, names = hf.build_features(_row(**{F.HOST_CATEGORY_IDS: [3, 0, 0]}), n_categories=4)
  got = dict(zip(names, x[0]))
  assert got["ll_room_category_share"] == 0 and got["ll_display_brand_share"] == 0
  assert got["ll_posterior_preference"] == pytest.approx(1 / 4)  # uniform prior mean
  assert np.isfinite(x).all()


def test_every_feature_group_names_columns_that_exist():
  _, names = hf.build_features(_row(**{F.HOST_CATEGORY_IDS: [3, 0, 0]}), n_categories=4)
  for group, member in hf.FEATURE_GROUPS.items():
    columns = [n for n in names if member(n)]
    assert bool(columns) == (group != hf.ROOM_ID), group
  assert {n for n in names if hf.FEATURE_GROUPS["realtime_overlaps"](n)} >= {
      "rt_pos_hits", "rt_neg_hits_time_decayed", "appetite_estimate"}


def _trigger_world(n=200):
  """Rows whose labels are exactly the trigger-category hit, from 20 users."""
  rng = np.random.default_rng(0)
  rows = []
  for i in range(n):
    hit = i % 2
    rows.append(_row(**{F.HOST_CATEGORY_IDS: [5, 0, 0], F.TRIGGER_CATEGORY_ID: [5 if hit else 6],
                        F.USER_ID: [i % 20], F.DISPLAY_LEN: [1], F.IMPRESSION_ID: [i],
                        F.HOUR_OF_DAY: [int(rng.integers(24))],
                        **{label: [hit] for label in F.HEADS.values()}}))
  cols = {k: np.concatenate([r[k] for r in rows]) for k in rows[0]}
  cols[F.ACTIVITY_LEVEL] = cols[F.ACTIVITY_LEVEL].astype(bytes)
  return cols


def test_stacking_probe_finds_what_a_blind_model_misses():
  test = _trigger_world()
  x, names = hf.build_features(test, n_categories=10)
  blind = {head: np.full(len(test[F.USER_ID]), 0.3) for head in F.HEADS}
  probe = hf.stacking_probe(test, x, names, blind, folds=5)
  for head, row in probe.items():
    assert row["logit_only"] == pytest.approx(0.5), head  # a constant score ranks nothing
    assert row["with_all_features"] == pytest.approx(1.0), head
    assert row["gain_by_group"]["trigger"] == pytest.approx(0.5), head
    assert abs(row["gain_by_group"]["fatigue"]) < 1e-9, head  # no fatigue column varies
  # A model that already scores the hit leaves the features nothing to add.
  knows = {head: 0.2 + 0.6 * test[label][:, 0] for head, label in F.HEADS.items()}
  for head, row in hf.stacking_probe(test, x, names, knows, folds=5).items():
    assert row["logit_only"] == pytest.approx(1.0) and row["gain"] == pytest.approx(0.0), head


def test_model_feature_columns_are_the_encoders_matches_and_the_room_numbers():
  spec = ModelSpec.without_transform(12, realtime_len=RT_LEN, lifelong_len=LL_LEN)
  rng = np.random.default_rng(0)
  batch = {name: (rng.normal(size=(16, spec.feature_shapes[name])).astype(np.float32)
                  if inp.dtype == tf.float32 else
                  rng.integers(0, 3, size=(16, spec.feature_shapes[name])).astype(np.int64))
           for name, inp in spec.inputs().items()}
  cols = hf.model_feature_columns({k: tf.constant(v) for k, v in batch.items()})
  assert cols.shape[0] == 16 and np.isfinite(cols).all()
  # The first column is the trigger-category hit, through a fresh (identity) normalisation.
  room = batch[F.transformed_name(F.HOST_CATEGORY_IDS)]
  trigger = batch[F.transformed_name(F.TRIGGER_CATEGORY_ID)]
  hits = ((room == trigger) & (room > 0)).sum(1)
  assert hits.min() == 0 and hits.max() > 0  # the batch has both
  scale = cols[hits > 0, 0][0] / hits[hits > 0][0]
  assert scale == pytest.approx(1.0, abs=1e-3)
  np.testing.assert_allclose(cols[:, 0], hits * scale, rtol=1e-6)
  # The last columns are the room's statistics and flash sale, as transformed.
  room_numbers = [batch[F.transformed_name(k)] for k in (*F.HOST_STAT_KEYS, F.HOST_FLASH_SALE)]
  np.testing.assert_allclose(cols[:, -len(room_numbers):], np.concatenate(room_numbers, 1))


def _signal_world(n=120):
  """Rows no hand feature tells apart (one room, no history), labelled y = 1 on every third row,
  from 20 users; and a ground truth whose reachable ceiling knows y and whose ceiling without the
  lifelong signal does not (0.5 everywhere)."""
  rows, truth = [], {}
  for i in range(n):
    y = int(i % 3 == 0)
    rows.append(_row(**{F.HOST_CATEGORY_IDS: [5, 0, 0], F.HOST_ID: [1], F.USER_ID: [i % 20],
                        F.DISPLAY_LEN: [1], F.IMPRESSION_ID: [i],
                        **{label: [y] for label in F.HEADS.values()}}))
    truth[i] = {}
    for field in rc.HEAD_FIELDS:
      for variant in rc.VARIANTS:
        truth[i][rc.field_name(field, variant)] = (
            0.5 if variant == rc.NO_LIFELONG else 0.2 + 0.6 * y)
  cols = {k: np.concatenate([r[k] for r in rows]) for k in rows[0]}
  cols[F.ACTIVITY_LEVEL] = cols[F.ACTIVITY_LEVEL].astype(bytes)
  return cols, truth


def test_exact_terms_are_the_ceilings_logit_difference():
  truth = {7: {rc.field_name(f, v): p for f in rc.HEAD_FIELDS
               for v, p in ((rc.REACHABLE, 0.5), (rc.NO_LIFELONG, 0.25))}}
  got = mc.exact_terms(truth, np.array([7]), rc.NO_LIFELONG)
  np.testing.assert_allclose(got, [[np.log(3.0)] * len(rc.HEAD_FIELDS)])


def test_mechanism_caps_credit_the_exact_signal_and_not_the_blind_features():
  cols, truth = _signal_world()
  design = hf.Design.build(cols, cols)
  masks = mc.slice_masks(cols)
  full = mc.slice_aucs(cols, hf.regression_scores(design.x_train, design.x_test, cols, cols), masks)
  lifelong = [m for m in MECHANISMS if m.without == rc.NO_LIFELONG]
  ablation = {"mechanisms": {lifelong[0].name: {"seeds": ["1", "2"], "heads": {
      h: {sl: {"share_of_bound": 0.3} for sl in qr.SLICES} for h in F.HEADS}}},
      "variants": {lifelong[0].reference: {"summary": {
          h: {sl: {"auc_mean": 0.6} for sl in qr.SLICES} for h in F.HEADS}}}}
  caps = mc.mechanism_caps(cols, cols, design, truth, full, ablation, mechanisms=lifelong)
  for head in F.HEADS:
    row = caps[lifelong[0].name]["heads"][head]["all"]
    assert row["bound"] == pytest.approx(0.5), head  # the ceiling ranks perfectly, without: 0.5
    assert row["hand"] == pytest.approx(0.5) and row["hand_share"] == pytest.approx(0.0), head
    assert row["exact"] == pytest.approx(1.0) and row["exact_share"] == pytest.approx(1.0), head
    assert row["ceiling_share"] == pytest.approx((1.0 - 0.6) / 0.5), head
    assert row["measured_share"] == 0.3
    assert np.isnan(caps[lifelong[0].name]["heads"][head]["high"]["bound"])  # an empty slice
  # A blind reference stacked with the exact term earns the whole bound; a model that already
  # ranks by y leaves the term nothing.
  y = {h: cols[label][:, 0].astype(float) for h, label in F.HEADS.items()}
  scores = {lifelong[0].reference: {h: np.full(len(v), 0.3) for h, v in y.items()},
            lifelong[0].model: {h: 0.2 + 0.6 * v for h, v in y.items()}}
  mc.stacked_caps(caps, cols, truth, ablation, lambda variant, seed: scores[variant],
                  mechanisms=lifelong)
  for head in F.HEADS:
    row = caps[lifelong[0].name]["heads"][head]["all"]
    assert row["reference_stacked_share"] == pytest.approx(1.0), head
    assert row["reference_stacked_share_sd"] == pytest.approx(0.0), head
    assert row["model_stacked_gain"] == pytest.approx(0.0), head
  assert any("lifelong_extraction" in line for line in mc.table_lines(caps))
