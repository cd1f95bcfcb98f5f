"""The reachable ceiling (data_gen/reachable.py) and the report metrics that use it."""

import json
import math

import numpy as np
import pytest

from bench import metrics
from bench import reachable_bounds as rb
from data_gen import behaviour as bh
from data_gen import reachable as rc
from data_gen import simulator
from data_gen.world import World

TINY = simulator.load_config("tiny", seed=11)


# --- (a) the estimator, by hand ----------------------------------------------------------------------
def test_category_posterior_mean_of_purchases_in_one_category():
  n_cats, n_buys, k = 5, 7, 3
  purchases = [{"user_id": 1, "category_id": k, "brand_id": 1} for _ in range(n_buys)]
  cat_counts, _ = rc.purchase_counts(purchases, n_users=1, n_categories=n_cats, n_brands=2)
  pref = rc.posterior_category_pref(cat_counts)[1]
  denom = 0.25 * n_cats + n_buys
  expected = [0.0] + [0.25 / denom] * n_cats
  expected[k] = (0.25 + n_buys) / denom
  np.testing.assert_allclose(pref, expected, rtol=1e-12)
  assert pref.sum() == pytest.approx(1.0)


def test_brand_posterior_is_category_times_within_category_share():
  # Category 1 has brands 1 and 2, category 2 has brand 3; the user bought brand 1 three times.
  brand_category = np.array([0, 1, 1, 2])
  purchases = [{"user_id": 1, "category_id": 1, "brand_id": 1}] * 3
  cat_counts, brand_counts = rc.purchase_counts(purchases, 1, 2, 3)
  cat = rc.posterior_category_pref(cat_counts)
  brand = rc.posterior_brand_pref(cat, brand_counts, brand_category)[1]
  p1, p2 = 3.25 / 3.5, 0.25 / 3.5  # (.25 + n_c) / (.25 * 2 + 3)
  raw = np.array([p1 * 2 * 3.3 / 3.6, p1 * 2 * 0.3 / 3.6, p2 * 1 * 0.3 / 0.3])
  np.testing.assert_allclose(brand, np.concatenate([[0.0], raw / raw.sum()]), rtol=1e-12)
  # Without purchases both estimates are the exact prior means: uniform.
  empty = np.zeros((1, 4))
  np.testing.assert_allclose(
      rc.posterior_brand_pref(rc.posterior_category_pref(np.zeros((1, 3))), empty,
                              brand_category)[0, 1:], [1 / 3] * 3)


def test_truth_takes_traits_and_appetite_source_as_overrides():
  world = World(TINY)
  beh = bh.Behaviour(world)
  state = beh.new_state()
  host = int(world.live_hosts(world.stints[0][1] + 1)[0][0])
  t = world.stints[0][1] + 1
  state.appetite[world.host_categories[host][0]] = 1.0
  default = beh.truth(3, state, host, t, hot=False, slot=2)
  assert beh.truth(3, state, host, t, False, 2, traits=beh.user_traits(3)) == default
  no_app = beh.truth(3, state, host, t, False, 2, appetite=bh.APPETITE_NONE)
  assert no_app.p_effective_view < default.p_effective_view  # appetite raises the view chance
  state.appetite[:] = 0.0
  assert beh.truth(3, state, host, t, False, 2) == no_app
  other = beh.truth(3, state, host, t, False, 2, traits=beh.user_traits(4))
  assert other != no_app


def test_trigger_only_appetite_is_the_sessions_trigger_bump_decayed_per_slot():
  world = World(TINY)
  beh = bh.Behaviour(world)
  state = beh.new_state()
  t = world.stints[0][1] + 1
  # A room that displays products, so that the satiation moves its item clicks.
  host = next(int(h) for h in world.live_hosts(t)[0] if world.displayed_items(int(h), t + 31))
  cat = int(world.host_categories[host][0])
  state.appetite[cat] = 2.0  # carried over from an earlier session: not the trigger's
  beh.start_session(state, t, trigger_category=cat)
  assert state.trigger_appetite[cat] == bh.TRIGGER_APPETITE_BUMP
  assert state.appetite[cat] == 2.0 + bh.TRIGGER_APPETITE_BUMP  # start_session at last_ts = 0
  # An effective view of the same room moves the full appetite but not the trigger's part.
  outcome = bh.Outcome(stay_seconds=30.0, effective_view=True, like=False, comment=False,
                       share=False, follow=False, item_click=False, add_to_cart=False,
                       purchase=False, gmv=0.0, purchased_item=0, swipe_down=True,
                       action_offsets={})
  beh.update_state(state, host, outcome, t + 30.0)
  decay = bh.APPETITE_DECAY_PER_SLOT
  np.testing.assert_allclose(state.trigger_appetite[cat], bh.TRIGGER_APPETITE_BUMP * decay)
  cats = world.host_cat_matrix[host]
  expected_full = (2.0 + bh.TRIGGER_APPETITE_BUMP) * decay * cats[cat] + 0.5 * cats @ cats
  np.testing.assert_allclose(state.appetite @ cats, expected_full)
  # A purchase earlier sated the user on the room's first category.
  state.satiation[cat] = 1.0
  # The truth with the trigger-only appetite is the truth of a state that holds just that part
  # and no satiation (the purchases are feedback events too).
  trig = beh.truth(3, state, host, t + 31, False, 1, appetite=bh.APPETITE_TRIGGER_ONLY)
  only_trigger = beh.new_state()
  only_trigger.appetite = state.trigger_appetite.copy()
  only_trigger.shown_category_counts = state.shown_category_counts.copy()
  assert trig == beh.truth(3, only_trigger, host, t + 31, False, 1)
  full = beh.truth(3, state, host, t + 31, False, 1)
  not_sated = beh.new_state()
  not_sated.appetite = state.appetite.copy()
  not_sated.shown_category_counts = state.shown_category_counts.copy()
  unsated = beh.truth(3, not_sated, host, t + 31, False, 1)
  # The satiation lowers the item clicks given a view by the trap's strength, nothing else.
  assert world.config.trap.satiation > 0
  assert unsated.p_effective_view == full.p_effective_view
  np.testing.assert_allclose(
      np.log(full.p_click_given_view / (1 - full.p_click_given_view)),
      np.log(unsated.p_click_given_view / (1 - unsated.p_click_given_view))
      - world.config.trap.satiation * 1.0)
  none = beh.truth(3, state, host, t + 31, False, 1, appetite=bh.APPETITE_NONE)
  assert none.p_effective_view < trig.p_effective_view < full.p_effective_view
  with pytest.raises(ValueError, match="'stale'"):
    beh.truth(3, state, host, t + 31, False, 1, appetite="stale")


def test_estimator_from_world_matches_the_written_purchases(tmp_path):
  world = World(TINY)
  simulator.generate_logs(TINY, str(tmp_path), progress=False)
  written = [json.loads(x) for x in open(tmp_path / "purchases.jsonl")]
  a, b = rc.ReachableEstimator(world), rc.ReachableEstimator(world, written)
  np.testing.assert_array_equal(a.cat_pref, b.cat_pref)
  np.testing.assert_array_equal(a.brand_pref, b.brand_pref)
  np.testing.assert_allclose(a.cat_pref[1:].sum(1), 1.0)
  np.testing.assert_allclose(a.brand_pref[1:].sum(1), 1.0)


# --- (b) on a generated tiny world --------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_logs(tmp_path_factory):
  out = tmp_path_factory.mktemp("reach_logs")
  simulator.generate_logs(TINY, str(out), progress=False)
  return out


def test_every_reachable_field_is_written_and_a_probability(tiny_logs):
  truth = simulator.read_ground_truth(str(tiny_logs))
  assert len(truth) > 500
  assert len(rc.REACHABLE_FIELDS) == 15 and "p_buy_reachable_neither" in rc.REACHABLE_FIELDS
  for rec in truth.values():
    assert set(simulator.GROUND_TRUTH_FIELDS) <= set(rec)
    for k in rc.REACHABLE_FIELDS:
      assert 0.0 <= rec[k] <= 1.0, (k, rec)


def test_auc_ordering_oracle_reachable_neither(tiny_logs):
  out = rb.compute_bounds(str(tiny_logs))
  view = out["heads"]["effective_view"]["all"]
  assert view["n"] == out["n_impressions"]
  assert view["oracle_auc"] >= view["reachable_auc"] - 0.01
  assert view["reachable_auc"] > view["reachable_neither_auc"]
  buy = out["heads"]["buy"]["all"]
  assert 0 < buy["n"] < out["n_impressions"]  # masked to rooms that display products


# --- (c) the report metrics ---------------------------------------------------------------------------
def test_auc_by_hand():
  # Positives .35 and .8 against negatives .1 and .4: 3 of 4 pairs ordered.
  assert metrics.auc(np.array([0, 0, 1, 1]), np.array([0.1, 0.4, 0.35, 0.8])) == 0.75
  assert metrics.auc(np.array([0, 1]), np.array([0.5, 0.5])) == 0.5  # a tie is half credit
  assert math.isnan(metrics.auc(np.array([1, 1]), np.array([0.1, 0.2])))
  assert math.isnan(metrics.auc(np.array([], int), np.array([])))


def test_paired_auc_difference_by_hand():
  labels = np.array([0, 0, 1, 1])
  a = np.array([0.1, 0.4, 0.35, 0.8])  # AUC .75 (above)
  b = np.array([0.9, 0.1, 0.2, 0.3])  # positives beat one negative of two: .5
  # One group: every resample draws it once per draw, so every resample is the whole set.
  got = metrics.paired_auc_difference(labels, a, b, np.zeros(4), resamples=20)
  assert got["difference"] == pytest.approx(0.25)
  assert got["lo"] == pytest.approx(0.25) and got["hi"] == pytest.approx(0.25)
  assert got["share_above_zero"] == 1.0
  same = metrics.paired_auc_difference(labels, a, a.copy(), np.arange(4) % 2, resamples=50)
  assert same["difference"] == 0 and same["lo"] == same["hi"] == 0
  assert same["share_above_zero"] == 0
  with pytest.raises(ValueError, match="resamples must be >= 1, got 0"):
    metrics.paired_auc_difference(labels, a, b, np.zeros(4), resamples=0)


def test_paired_auc_difference_separates_a_better_scorer_by_users():
  rng = np.random.default_rng(0)
  users = np.repeat(np.arange(100), 10)
  labels = rng.random(1000) < 0.3
  better = labels + rng.normal(0, 1.0, 1000)  # informative
  worse = labels + rng.normal(0, 3.0, 1000)  # less so
  got = metrics.paired_auc_difference(labels, better, worse, users, resamples=200)
  assert got["difference"] > 0.1
  assert 0 < got["lo"] < got["difference"] < got["hi"]
  assert got["share_above_zero"] == 1.0


def test_gauc_by_hand():
  labels = np.array([0, 0, 1, 1, 0, 1, 1])
  scores = np.array([0.1, 0.4, 0.35, 0.8, 0.9, 0.2, 0.3])
  groups = np.array([1, 1, 1, 1, 2, 2, 3])  # user 3 has one class only: left out
  # user 1: .75 over 4 impressions; user 2: 0 over 2.
  assert metrics.gauc(labels, scores, groups) == pytest.approx((0.75 * 4 + 0.0 * 2) / 6)
  assert math.isnan(metrics.gauc(labels[6:], scores[6:], groups[6:]))


def test_grouped_rank_auc_equals_scikit_learns_per_group_with_ties_and_rejects_nan():
  from sklearn.metrics import roc_auc_score

  rng = np.random.default_rng(5)
  labels = rng.random(3000) < 0.3
  scores = np.round(rng.random(3000) + 0.3 * labels, 1)  # coarse: many ties
  groups = rng.integers(0, 40, 3000)
  assert metrics.auc(labels, scores) == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)
  by_group = [(roc_auc_score(labels[groups == g], scores[groups == g]), (groups == g).sum())
              for g in np.unique(groups)]
  want = sum(a * n for a, n in by_group) / sum(n for _, n in by_group)
  assert metrics.gauc(labels, scores, groups) == pytest.approx(want, abs=1e-12)
  aucs, sizes = metrics.grouped_auc(labels, scores, groups)
  assert aucs[0] == pytest.approx(by_group[0][0], abs=1e-12) and sizes.sum() == 3000
  with pytest.raises(ValueError, match="scores must be finite; 1 of 2 are not"):
    metrics.gauc(np.array([0, 1]), np.array([0.5, np.nan]), np.array([1, 1]))


def test_lift_captured():
  assert metrics.lift_captured(0.70, 0.75, 0.60) == pytest.approx(2 / 3)
  assert metrics.lift_captured(0.60, 0.75, 0.60) == 0.0
  assert metrics.lift_captured(0.55, 0.75, 0.60) == pytest.approx(-1 / 3)
  assert math.isnan(metrics.lift_captured(0.70, 0.60, 0.60))  # nothing to capture
  assert math.isnan(metrics.lift_captured(float("nan"), 0.75, 0.60))


def test_build_report_puts_the_ceilings_next_to_the_model():
  tf = pytest.importorskip("tensorflow")
  from bench import quality_report as qr  # pylint: disable=import-outside-toplevel
  from models import features as F  # pylint: disable=import-outside-toplevel

  rng = np.random.default_rng(0)
  n = 400
  y = rng.random(n) < 0.4
  levels = np.array(F.ACTIVITY_LEVELS)[rng.integers(0, 3, n)]
  examples = []
  for i in range(n):
    ints = {F.IMPRESSION_ID: i + 1, F.USER_ID: 1 + i % 20, F.DISPLAY_LEN: i % 3}
    ints.update({label: int(y[i]) for label in F.HEADS.values()})
    feats = {k: tf.train.Feature(int64_list=tf.train.Int64List(value=[v])) for k, v in ints.items()}
    feats[F.ACTIVITY_LEVEL] = tf.train.Feature(
        bytes_list=tf.train.BytesList(value=[levels[i].encode()]))
    examples.append(tf.train.Example(features=tf.train.Features(feature=feats)))
  # Scores and ceilings with decreasing noise around the label.
  noisy = lambda sd: np.clip(0.5 * y + rng.normal(0, sd, n), 0, 1)  # noqa: E731
  scores = {h: noisy(0.6) for h in F.HEADS}
  cols = {}
  for f in qr.ORACLE_FIELD.values():
    cols[f] = noisy(0.3)
    cols.update({rc.field_name(f, v): noisy(0.4 if v == rc.REACHABLE else 0.9)
                 for v in rc.VARIANTS})
  truth = {i + 1: {k: float(c[i]) for k, c in cols.items()} for i in range(n)}
  report = qr.build_report(examples, scores, truth)
  row = report["heads"][F.HEAD_EFFECTIVE_VIEW]["all"]
  assert row["n"] == n
  assert row["oracle_auc"] > row["reachable_auc"] > row["auc"] > row["reachable_neither_auc"]
  assert row["lift_captured"] == pytest.approx(metrics.lift_captured(
      row["auc"], row["reachable_auc"], row["reachable_neither_auc"]))
  assert report["heads"][F.HEAD_BUY]["all"]["n"] == sum(i % 3 > 0 for i in range(n))
  assert "reach" in qr.format_table(report)
  # Ground truth from before the reachable fields: the ceilings are NaN, the rest still works.
  old = {i: {f: rec[f] for f in qr.ORACLE_FIELD.values()} for i, rec in truth.items()}
  row = qr.build_report(examples, scores, old)["heads"][F.HEAD_EFFECTIVE_VIEW]["all"]
  assert math.isnan(row["reachable_auc"]) and math.isnan(row["lift_captured"])
  assert row["oracle_auc"] > 0.6


def test_mechanism_lift_is_paired_by_seed_and_measured_against_its_bound():
  pytest.importorskip("tensorflow")
  from bench import ablation_feedback as ab  # pylint: disable=import-outside-toplevel
  from bench import quality_report as qr  # pylint: disable=import-outside-toplevel
  from models import features as F  # pylint: disable=import-outside-toplevel

  def variant(aucs_by_seed):
    runs = {seed: {"report": {"heads": {h: {sl: {"auc": auc} for sl in qr.SLICES}
                                        for h in F.HEADS}}} for seed, auc in aucs_by_seed.items()}
    ceilings = {f"{rc.REACHABLE}_auc": 0.75, f"{rc.NO_RT_SEQUENCES}_auc": 0.73,
                f"{rc.NO_APPETITE}_auc": 0.70, f"{rc.NO_LIFELONG}_auc": 0.74}
    return {"runs": runs, "summary": {h: {sl: ceilings for sl in qr.SLICES} for h in F.HEADS}}

  # Lifts per seed 0.012, 0.010, 0.014 (seed 9 ran for the model only and is not paired).
  results = {"feedback": variant({"1": 0.742, "2": 0.741, "3": 0.745, "9": 0.9}),
             "feedback_no_realtime": variant({"1": 0.730, "2": 0.731, "3": 0.731})}
  out = ab.mechanism_lifts(results)
  assert set(out) == {"realtime_sequences", "realtime_vs_all_appetite"}  # lifelong did not run
  seq = out["realtime_sequences"]
  assert seq["seeds"] == ["1", "2", "3"]
  cell = seq["heads"][F.HEAD_EFFECTIVE_VIEW]["all"]
  assert cell["lift_mean"] == pytest.approx(0.012)
  assert cell["lift_sd"] == pytest.approx(0.002)
  assert cell["bound"] == pytest.approx(0.02)
  assert cell["share_of_bound"] == pytest.approx(0.6)
  assert cell["clears_bar"]
  loose = out["realtime_vs_all_appetite"]["heads"][F.HEAD_EFFECTIVE_VIEW]["all"]
  assert loose["bound"] == pytest.approx(0.05) and loose["share_of_bound"] == pytest.approx(0.24)
  assert not loose["clears_bar"]
  # A lift within 2 sd does not clear the bar however large its share.
  results["feedback"]["runs"]["3"]["report"]["heads"][F.HEAD_BUY]["all"]["auc"] = 0.760
  noisy = ab.mechanism_lifts(results)["realtime_sequences"]["heads"][F.HEAD_BUY]["all"]
  assert noisy["share_of_bound"] > 0.5 and not noisy["clears_bar"]
  with pytest.raises(ValueError, match="share no training seed"):
    ab.mechanism_lifts({"feedback": variant({"1": 0.7}), "feedback_no_realtime": variant({"2": 0.7})})


def test_seed_ensemble_averages_each_heads_scores():
  pytest.importorskip("tensorflow")
  from bench import ablation_feedback as ab  # pylint: disable=import-outside-toplevel
  out = ab.seed_ensemble([{"view": np.array([0.2, 0.8])}, {"view": np.array([0.4, 0.6])}])
  np.testing.assert_allclose(out["view"], [0.3, 0.7])
