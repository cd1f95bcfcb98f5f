"""The greedy trap in the world (``world.TrapConfig``), the look-ahead search, paired closed loops."""

import dataclasses
import itertools
import math

import numpy as np
import pytest

from data_gen import behaviour as bh
from data_gen import lookahead as la
from data_gen import retention, simulator
from data_gen.world import RetentionConfig, TrapConfig, World, WorldConfig

CFG = simulator.load_config("tiny", seed=11)
NO_TRAP = TrapConfig().scaled(0.0)  # each mechanism is tested on its own, the others off


@pytest.fixture(scope="module")
def world():
  return World(CFG)


def _selling_room_and_time(world):
  """A room with displayed products (so it can sell), a time it displays them, and its category."""
  d = next(d for d in world.displays if d["item_ids"] and not world.host_is_entertainer[d["host_id"]])
  host = d["host_id"]
  return host, d["ts"] + 1.0, int(world.host_categories[host][0])


# --- The look-ahead search on hand-built slots -------------------------------------------------------
# A high-conversion room that usually ends the session, and a slightly lower one that keeps the user
# swiping: showing the second first is worth more (0.1 + 0.9 * 0.2 = 0.28 against
# 0.2 + 0.5 * 0.1 = 0.25).
TRAP_REWARDS, TRAP_SWIPES = np.array([0.2, 0.1]), np.array([0.5, 0.9])


def test_order_value_is_reward_discounted_by_the_chance_of_reaching_the_slot():
  assert la.order_value(TRAP_REWARDS, TRAP_SWIPES, np.array([0, 1])) == pytest.approx(0.25)
  assert la.order_value(TRAP_REWARDS, TRAP_SWIPES, np.array([1, 0])) == pytest.approx(0.28)
  assert la.order_value([0.3, 0.2, 0.1], [0.5, 0.4, 1.0], np.array([0, 1, 2])) == pytest.approx(
      0.3 + 0.5 * 0.2 + 0.5 * 0.4 * 0.1)


def test_greedy_and_lookahead_differ_on_the_trap_and_agree_at_horizon_one():
  assert la.best_order(TRAP_REWARDS, TRAP_SWIPES, horizon=1).tolist() == [0]
  assert la.best_order(TRAP_REWARDS, TRAP_SWIPES, horizon=2).tolist() == [1, 0]
  # When every room keeps the user equally, looking ahead changes nothing.
  rewards = np.array([0.05, 0.3, 0.2, 0.1])
  assert la.best_order(rewards, np.full(4, 0.7), horizon=3).tolist() == [1, 2, 3]
  assert la.best_order(rewards, np.full(4, 0.7), horizon=1).tolist() == [1]


def test_first_stage_keeps_only_the_top_m_by_reward():
  # Room 2 would be the best first slot (it never ends the session) but is not in the top 2.
  rewards, swipes = np.array([0.3, 0.2, 0.19]), np.array([0.1, 0.1, 1.0])
  assert la.best_order(rewards, swipes, horizon=2, top_m=3).tolist() == [2, 0]
  assert la.best_order(rewards, swipes, horizon=2, top_m=2).tolist() == [0, 1]


def test_wide_beam_search_finds_the_best_order_of_brute_force():
  rng = np.random.default_rng(0)
  for _ in range(20):
    rewards, swipes = rng.random(6) * 0.3, rng.random(6)
    order = la.best_order(rewards, swipes, horizon=3, beam_width=36, top_m=6)
    best = max(la.order_value(rewards, swipes, np.array(p))
               for p in itertools.permutations(range(6), 3))
    assert len(set(order.tolist())) == 3
    assert la.order_value(rewards, swipes, order) == pytest.approx(best)


def test_short_candidate_lists_and_scores():
  assert la.best_order(np.array([0.4]), np.array([0.2]), horizon=3).tolist() == [0]
  scores = la.order_scores(4, np.array([2, 0]))
  assert int(np.argmax(scores)) == 2 and scores[0] > scores[1] == scores[3]


@pytest.mark.parametrize("kwargs, message", [
    (dict(horizon=0), "horizon must be >= 1; got 0"),
    (dict(beam_width=0), "beam_width must be >= 1; got 0"),
    (dict(top_m=-1), "top_m must be >= 1; got -1"),
])
def test_search_settings_are_checked(kwargs, message):
  with pytest.raises(ValueError, match=message):
    la.best_order(TRAP_REWARDS, TRAP_SWIPES, **kwargs)


def test_bad_probabilities_and_reward_names_are_rejected():
  with pytest.raises(ValueError, match="one length"):
    la.best_order(np.array([0.1, 0.2]), np.array([0.5]))
  with pytest.raises(ValueError, match="swipes must be probabilities"):
    la.best_order(np.array([0.1, 0.2]), np.array([0.5, 1.5]))
  with pytest.raises(ValueError, match=r"\['p_bye'\], not Truth fields"):
    la.oracle_lookahead_policy({"p_bye": 1.0})


# --- The trap's mechanisms in the response equations -------------------------------------------------
def test_purchase_exit_is_the_purchase_offset_over_a_view(world):
  host, t, _ = _selling_room_and_time(world)
  state = bh.Behaviour(world).new_state()
  for exit_strength in (0.0, 2.9):
    beh = bh.Behaviour(world, dataclasses.replace(NO_TRAP, purchase_exit=exit_strength))
    leave = beh.truth(1, state, host, t, hot=False, slot=0).p_leave
    view_logit = math.log(leave["view"] / (1 - leave["view"]))
    assert leave["purchase"] == pytest.approx(bh.sigmoid(view_logit + exit_strength))


def test_satiation_after_a_purchase_lowers_clicks_in_its_categories(world):
  host, t, _ = _selling_room_and_time(world)
  beh = bh.Behaviour(world, dataclasses.replace(NO_TRAP, satiation=1.5))
  state = beh.new_state()
  before = beh.truth(1, state, host, t, hot=False, slot=0)
  bought = bh.Outcome(stay_seconds=60.0, effective_view=True, like=False, comment=False,
                      share=False, follow=False, item_click=True, add_to_cart=True, purchase=True,
                      gmv=10.0, purchased_item=1, swipe_down=True, action_offsets={})
  beh.update_state(state, host, bought, t + 60.0)
  cats = world.host_cat_matrix[host]
  np.testing.assert_allclose(state.satiation, cats)
  after = beh.truth(1, state, host, t + 61.0, hot=False, slot=1)
  # P(click | view) loses 1.5 * (satiation . cats) on its logit.
  logit = lambda p: math.log(p / (1 - p))  # noqa: E731
  assert logit(after.p_click_given_view) == pytest.approx(
      logit(before.p_click_given_view) - 1.5 * float(cats @ cats))
  # Without the mechanism the same state changes nothing; it fades per slot and between sessions.
  untouched = bh.Behaviour(world, NO_TRAP).truth(1, state, host, t + 61.0,
                                                                  hot=False, slot=1)
  assert untouched.p_click_given_view == pytest.approx(before.p_click_given_view)
  beh.update_state(state, host, dataclasses.replace(bought, purchase=False), t + 120.0)
  np.testing.assert_allclose(state.satiation, cats * bh.SATIATION_DECAY_PER_SLOT)
  beh.start_session(state, t + 120.0 + bh.SATIATION_HALF_LIFE_SECONDS, trigger_category=1)
  np.testing.assert_allclose(state.satiation, cats * bh.SATIATION_DECAY_PER_SLOT / 2)


def test_sales_pressure_pushes_out_after_selling_rooms_and_resets_per_session(world):
  host, t, _ = _selling_room_and_time(world)
  sell = float(world.host_sell[host])
  beh = bh.Behaviour(world, dataclasses.replace(NO_TRAP, purchase_exit=2.9, sales_pressure=1.0))
  state = beh.new_state()
  skipped = bh.Outcome(stay_seconds=5.0, effective_view=False, like=False, comment=False,
                       share=False, follow=False, item_click=False, add_to_cart=False,
                       purchase=False, gmv=0.0, purchased_item=0, swipe_down=True,
                       action_offsets={})
  leave0 = beh.truth(1, state, host, t, hot=False, slot=0).p_leave["view"]
  assert leave0 == pytest.approx(bh.sigmoid(bh.LEAVE_BASE + bh.LEAVE_OFFSETS["view"] + sell))
  beh.update_state(state, host, skipped, t + 5.0)
  beh.update_state(state, host, skipped, t + 10.0)
  pressure = sell * (1 + bh.SALES_PRESSURE_DECAY_PER_SLOT)
  assert state.sales_pressure == pytest.approx(pressure)
  fatigue = 2 * float(world.host_cat_matrix[host] @ world.host_cat_matrix[host])
  leave2 = beh.truth(1, state, host, t + 11.0, hot=False, slot=2).p_leave["view"]
  assert leave2 == pytest.approx(bh.sigmoid(bh.LEAVE_BASE + 0.18 * fatigue + 0.04 * 2
                                            + sell * (1 + pressure) + bh.LEAVE_OFFSETS["view"]))
  beh.start_session(state, t + 3600.0, trigger_category=1)
  assert state.sales_pressure == 0.0


def test_hard_selling_rooms_convert_more_and_push_out_more():
  # Every selling room hard-sells here; the draw has its own stream, so nothing else moves.
  world = World(dataclasses.replace(CFG, hard_sell_share=1.0))
  plain = World(dataclasses.replace(CFG, hard_sell_share=0.0))
  np.testing.assert_array_equal(world.host_quality, plain.host_quality)
  np.testing.assert_array_equal(world.user_cat_pref, plain.user_cat_pref)
  assert world.displays == plain.displays
  assert not plain.host_hard_sell.any()
  assert np.all(world.host_hard_sell[1:][~world.host_is_entertainer[1:]] >= 0.6)
  assert not world.host_hard_sell[world.host_is_entertainer].any()
  host, t, _ = _selling_room_and_time(world)
  hard = float(world.host_hard_sell[host])
  state = bh.Behaviour(world).new_state()
  off = bh.Behaviour(world, NO_TRAP).truth(1, state, host, t, hot=False, slot=0)
  on = bh.Behaviour(world, dataclasses.replace(NO_TRAP, hard_sell_lift=1.5, hard_sell_exit=3.0)
                    ).truth(1, state, host, t, hot=False, slot=0)
  logit = lambda p: math.log(p / (1 - p))  # noqa: E731
  assert logit(on.p_click_given_view) == pytest.approx(logit(off.p_click_given_view) + 1.5 * hard)
  for outcome in ("quick", "no_view", "view", "purchase"):
    assert logit(on.p_leave[outcome]) == pytest.approx(logit(off.p_leave[outcome]) + 3.0 * hard)
  assert on.p_buy > off.p_buy and on.p_swipe_down < off.p_swipe_down
  # A room that does not hard-sell is untouched by either strength.
  calm = bh.Behaviour(plain, dataclasses.replace(NO_TRAP, hard_sell_lift=1.5, hard_sell_exit=3.0))
  assert calm.truth(1, state, host, t, hot=False, slot=0) == bh.Behaviour(plain, NO_TRAP).truth(
      1, state, host, t, hot=False, slot=0)
  with pytest.raises(ValueError, match="hard_sell_share must be in \\[0, 1\\]; got 1.5"):
    World(dataclasses.replace(CFG, hard_sell_share=1.5))


def test_trap_config_is_checked_scaled_and_round_trips():
  with pytest.raises(ValueError, match="TrapConfig.satiation must be >= 0; got -1"):
    TrapConfig(satiation=-1.0)
  trap = TrapConfig(1.0, 2.0, 3.0, 4.0, 5.0)
  assert trap.scaled(0.5) == TrapConfig(0.5, 1.0, 1.5, 2.0, 2.5)
  assert trap.scaled(0.0) == TrapConfig(0.0, 0.0, 0.0, 0.0, 0.0)
  cfg = dataclasses.replace(CFG, trap=trap)
  assert WorldConfig.from_dict(dataclasses.asdict(cfg)) == cfg
  # A summary written before a mechanism existed had it off.
  older = dataclasses.asdict(CFG)
  older["trap"] = {"purchase_exit": 2.9, "satiation": 0.0, "sales_pressure": 0.0}
  assert WorldConfig.from_dict(older).trap == TrapConfig(2.9, 0.0, 0.0, 0.0, 0.0)
  del older["trap"]
  assert WorldConfig.from_dict(older).trap == TrapConfig(2.9, 0.0, 0.0, 0.0, 0.0)


# --- Closed loops on the same sessions ---------------------------------------------------------------
def test_policies_run_on_the_same_sessions_and_lookahead_of_one_slot_is_greedy(world):
  sim = simulator.Simulator(world, TrapConfig(purchase_exit=2.9, satiation=1.5,
                                              sales_pressure=1.0))
  greedy = sim.evaluate_policy(bh.oracle_greedy_policy("p_purchase"), 60, seed=4, oracle=True)
  one_slot = sim.evaluate_policy(la.oracle_lookahead_policy({"p_purchase": 1.0}, horizon=1), 60,
                                 seed=4, oracle=True)
  rand = sim.evaluate_policy(bh.random_policy(2), 60, seed=4)
  assert greedy == one_slot
  assert [r.user_id for r in rand] == [r.user_id for r in greedy]
  assert simulator.paired_difference(greedy, one_slot, "purchases") == {"mean": 0.0, "ci95": 0.0}
  diff = simulator.paired_difference(greedy, rand, "depth")
  depth = np.array([g.depth - r.depth for g, r in zip(greedy, rand)])
  assert diff["mean"] == pytest.approx(depth.mean())
  with pytest.raises(ValueError, match="different users"):
    simulator.paired_difference(greedy, sim.evaluate_policy(bh.random_policy(2), 60, seed=5),
                                "depth")


def test_logging_policy_can_be_run_in_closed_loop(world):
  sim = simulator.Simulator(world)
  runs = [sim.evaluate_policy(bh.LoggingPolicy(world, seed=1), 40, seed=4,
                              sample_from_policy=True) for _ in range(2)]
  assert runs[0] == runs[1]  # seeded: the same draws
  assert len({r.depth for r in runs[0]}) > 1


# --- Return visits -------------------------------------------------------------------------------
def test_retention_equations_on_hand_values():
  cfg = RetentionConfig(strength=1.0, memory=0.7, depth_weight=0.1, view_weight=0.3,
                        purchase_weight=0.6, quick_weight=0.4, reference=0.8)
  assert retention.session_score(cfg, depth=5, views=2, purchases=1, quick_swipes=2) == (
      pytest.approx(0.5 + 0.6 + 0.6 - 0.8))
  assert retention.updated_satisfaction(cfg, 0.8, 1.8) == pytest.approx(0.7 * 0.8 + 0.3 * 1.8)
  base = 1 - math.exp(-0.6)
  assert retention.p_active(cfg, 0.6, 0.8) == pytest.approx(base)
  assert retention.p_active(cfg, 0.6, 1.8) == pytest.approx(
      bh.sigmoid(math.log(base / (1 - base)) + 1.0))
  assert retention.p_active(dataclasses.replace(cfg, strength=0.0), 0.6, 5.0) == (
      pytest.approx(base))
  with pytest.raises(ValueError, match="RetentionConfig.memory must be in"):
    RetentionConfig(memory=1.0)


def test_sessions_of_an_active_day_are_zero_truncated_poisson():
  rng = np.random.default_rng(0)
  draws = np.array([retention.sessions_on_active_day(rng, 0.6) for _ in range(4000)])
  assert draws.min() == 1
  mean = 0.6 / (1 - math.exp(-0.6))  # E[N | N > 0] of Poisson(0.6)
  assert abs(draws.mean() - mean) < 4 * draws.std() / math.sqrt(len(draws))


def test_who_comes_back_follows_the_last_sessions(world):
  sim = simulator.Simulator(world)
  cfg = world.config.retention
  result = sim.run_days(bh.oracle_greedy_policy("p_purchase"), 60, seed=3, oracle=True)
  assert result.active.shape == (60, CFG.days) and result.active[:, 0].any()
  rates = np.array(CFG.sessions_per_day)[world.user_activity[result.users]]
  for i in range(60):  # day 1's chance recomputed by hand from the user's day-0 sessions
    satisfaction = cfg.reference
    for r in result.sessions[i][0]:
      satisfaction = retention.updated_satisfaction(
          cfg, satisfaction, retention.session_score(cfg, r.depth, r.views, r.purchases,
                                                     r.quick_swipes))
    assert result.p_active[i, 1] == pytest.approx(retention.p_active(cfg, rates[i], satisfaction))
    assert bool(result.sessions[i][1]) == result.active[i, 1]
  again = sim.run_days(bh.random_policy(0), 60, seed=3)
  assert np.array_equal(again.users, result.users)
  np.testing.assert_allclose(again.p_active[:, 0], result.p_active[:, 0])  # day 0: no history
  summary = simulator.summarize_days(result)
  assert summary["dau"]["mean"] == result.active[:, 1:].sum() / (CFG.days - 1)
  with pytest.raises(ValueError, match=r"days must be in \[1, 2\]"):
    sim.run_days(bh.random_policy(0), 10, days=3)


def test_paired_days_difference_is_per_user(world):
  sim = simulator.Simulator(world)
  greedy = sim.run_days(bh.oracle_greedy_policy("p_purchase"), 40, seed=6, oracle=True)
  rand = sim.run_days(bh.random_policy(0), 40, seed=6)
  diff = simulator.paired_days_difference(greedy, rand, "purchases_per_day")
  by_user = (greedy.per_user_day("purchases")[:, 1:].mean(axis=1)
             - rand.per_user_day("purchases")[:, 1:].mean(axis=1))
  assert diff["mean"] == pytest.approx(by_user.mean() * 40)
  assert diff["ci95"] == pytest.approx(1.96 * by_user.std(ddof=1) / math.sqrt(40) * 40)
  assert simulator.paired_days_difference(greedy, greedy, "dau") == {"mean": 0.0, "ci95": 0.0}
  with pytest.raises(ValueError, match="same population"):
    simulator.paired_days_difference(greedy, sim.run_days(bh.random_policy(0), 40, seed=7), "dau")
  with pytest.raises(ValueError, match="'gmv' is not one of"):
    simulator.paired_days_difference(greedy, rand, "gmv")
