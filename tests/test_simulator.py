"""The simulator holds the signals the models exploit (DESIGN.md section 4), checked statistically."""

import collections
import dataclasses
import filecmp
import json
import math
import os

import numpy as np
import pytest

from data_gen import behaviour as bh
from data_gen import simulator
from data_gen.world import World, WorldConfig

CFG = simulator.load_config("tiny", seed=11, n_users=500, days=2)


@pytest.fixture(scope="module")
def logs(tmp_path_factory):
  out = tmp_path_factory.mktemp("logs")
  summary = simulator.generate_logs(CFG, str(out), progress=False)
  events = [json.loads(x) for x in open(out / "events.jsonl")]
  imps = {e["impression_id"]: dict(e, actions=set()) for e in events if e["event"] == "impression"}
  for e in events:
    if e["event"] == "leave":
      imps[e["impression_id"]].update(stay=e["stay_seconds"], swipe_down=e["swipe_down"])
    elif e["event"] != "impression":
      imps[e["impression_id"]]["actions"].add(e["event"])
  hosts = {h["host_id"]: set(h["category_ids"]) for h in map(json.loads, open(out / "hosts.jsonl"))}
  return out, summary, imps, hosts


def _rate_diff_z(a, b):
  """z statistic of mean(a) - mean(b) for two 0/1 samples."""
  a, b = np.asarray(a, float), np.asarray(b, float)
  se = math.sqrt(a.var() / len(a) + b.var() / len(b))
  return (a.mean() - b.mean()) / se


def test_summary_counts_and_reproducibility(logs, tmp_path):
  out, summary, imps, _ = logs
  assert summary["counts"]["impressions"] == len(imps) > 2000
  assert sum(summary["counts"]["by_activity"].values()) == len(imps)
  again = simulator.generate_logs(CFG, str(tmp_path), progress=False)
  assert again["counts"] == summary["counts"]
  for name in ("events.jsonl", "ground_truth.jsonl", "purchases.jsonl"):
    assert filecmp.cmp(out / name, tmp_path / name, shallow=False), name


def test_quick_swipe_lowers_the_next_response_to_a_similar_room(logs):
  _, _, imps, hosts = logs
  by_session = collections.defaultdict(list)
  for imp in imps.values():
    by_session[imp["session_id"]].append(imp)
  after_quick, after_engaged = [], []
  for seq in by_session.values():
    seq.sort(key=lambda i: i["slot"])
    for prev, cur in zip(seq, seq[1:]):
      if not hosts[prev["host_id"]] & hosts[cur["host_id"]]:
        continue  # only rooms sharing a category with the previous one
      viewed = float(cur["stay"] >= 10.0)
      if prev["stay"] < 3.0:
        after_quick.append(viewed)
      elif prev["stay"] >= 20.0:
        after_engaged.append(viewed)
  assert len(after_quick) > 30 and len(after_engaged) > 30
  assert _rate_diff_z(after_engaged, after_quick) > 3.0


def test_a_purchase_raises_the_chance_the_session_ends(logs):
  _, _, imps, _ = logs
  left_after_purchase = [not i["swipe_down"] for i in imps.values() if "purchase" in i["actions"]]
  left_after_view = [not i["swipe_down"] for i in imps.values()
                     if i["stay"] >= 10.0 and "purchase" not in i["actions"]]
  assert len(left_after_purchase) > 30
  assert _rate_diff_z(left_after_purchase, left_after_view) > 3.0


def test_new_users_have_lifelong_purchases(logs):
  out, _, _, _ = logs
  levels = {u["user_id"]: u["activity_level"] for u in map(json.loads, open(out / "users.jsonl"))}
  n_purchases = collections.Counter(p["user_id"] for p in map(json.loads,
                                                              open(out / "purchases.jsonl")))
  new_users = [u for u, lvl in levels.items() if lvl == "new"]
  assert len(new_users) > 50
  assert all(n_purchases[u] >= 1 for u in new_users)
  assert np.mean([n_purchases[u] for u in new_users]) > 10


def test_ground_truth_is_calibrated_and_informative(logs):
  out, _, imps, _ = logs
  truth = simulator.read_ground_truth(str(out))
  assert set(truth) == set(imps)
  p = np.array([truth[i]["p_effective_view"] for i in imps])
  y = np.array([imps[i]["stay"] >= 10.0 for i in imps], float)
  assert abs(p.mean() - y.mean()) < 4 * math.sqrt(p.mean() * (1 - p.mean()) / len(p))
  # Viewed impressions had higher true view probability than the rest (the truth is informative).
  assert p[y == 1].mean() - p[y == 0].mean() > 0.1
  buy = np.array([bool({"add_to_cart", "purchase"} & imps[i]["actions"]) for i in imps], float)
  p_buy = np.array([truth[i]["p_buy"] for i in imps])
  assert abs(p_buy.mean() - buy.mean()) < 4 * math.sqrt(p_buy.mean() / len(p_buy))


def test_logging_policy_propensities_are_valid(logs):
  _, _, imps, _ = logs
  props = np.array([i["propensity"] for i in imps.values()])
  assert np.all((props > 0) & (props <= 1))
  assert props.min() < 0.2 < props.max()  # a stochastic policy, not a deterministic one


def test_host_hot_windows_show_in_purchases():
  world = World(CFG)
  beh = bh.Behaviour(world)
  state = beh.new_state()
  host = next(h for h in range(1, CFG.n_hosts + 1) if not world.host_is_entertainer[h]
              and world.displays and any(d["host_id"] == h and d["item_ids"]
                                         for d in world.displays))
  t = next(d["ts"] for d in world.displays if d["host_id"] == host and d["item_ids"]) + 1
  cold = beh.truth(1, state, host, t, hot=False, slot=0)
  hot = beh.truth(1, state, host, t, hot=True, slot=0)
  assert hot.p_purchase > cold.p_purchase and hot.p_effective_view > cold.p_effective_view


def test_closed_loop_oracle_beats_random():
  sim = simulator.Simulator(World(CFG))
  oracle = sim.evaluate_policy(bh.oracle_greedy_policy("p_effective_view"), 300, seed=5,
                               oracle=True)
  rand = sim.evaluate_policy(bh.random_policy(1), 300, seed=5)
  so, sr = simulator.summarize_sessions(oracle), simulator.summarize_sessions(rand)
  assert so["views"]["mean"] - sr["views"]["mean"] > so["views"]["ci95"] + sr["views"]["ci95"]
  assert all(r.depth >= 1 for r in oracle)


def test_closed_loop_rejects_wrong_score_shape():
  sim = simulator.Simulator(World(CFG))
  with pytest.raises(ValueError, match="policy returned scores of shape"):
    sim.evaluate_policy(lambda ctx: np.zeros(1 + len(ctx.candidate_host_ids)), 1)


def test_bad_corrupt_fraction_is_rejected(tmp_path):
  with pytest.raises(ValueError, match="corrupt_fraction must be in"):
    simulator.generate_logs(CFG, str(tmp_path), corrupt_fraction=1.5, progress=False)
  assert not os.path.exists(tmp_path / "events.jsonl")


def test_long_history_preset_gives_thousands_of_purchases_and_keeps_the_cap():
  cfg = simulator.load_config("long_history", seed=3, n_users=12, n_items=400)
  world = World(cfg)
  per_user = collections.Counter(p["user_id"] for p in world.purchases)
  assert max(per_user.values()) > 1_000  # high-activity users: thousands of purchases
  assert max(per_user.values()) <= cfg.max_lifelong_purchases + 1
  capped = World(simulator.load_config("long_history", seed=3, n_users=12, n_items=400,
                                       max_lifelong_purchases=50))
  assert max(collections.Counter(p["user_id"] for p in capped.purchases).values()) == 51


def test_draw_index_draws_what_numpy_choice_draws_and_leaves_the_same_state():
  import numpy as np

  from data_gen import world as world_lib

  probs = np.random.default_rng(0).dirichlet(np.full(7, 0.3), size=200)
  ours, numpys = np.random.default_rng(11), np.random.default_rng(11)
  got = [world_lib.draw_index(ours, p) for p in probs]
  want = [int(numpys.choice(len(p), p=p)) for p in probs]
  assert got == want and len(set(got)) > 3
  assert ours.random() == numpys.random()


def test_logs_are_reused_only_for_the_same_settings_and_complete_files(tmp_path):
  out = str(tmp_path / "logs")
  cfg = simulator.load_config("tiny", seed=3, n_users=20, days=1)
  assert "no " in simulator.reusable_logs(out, cfg, 0.0)
  simulator.generate_logs(cfg, out, 0.0, progress=False)
  assert simulator.reusable_logs(out, cfg, 0.0) is None
  assert "config differs" in simulator.reusable_logs(out, simulator.load_config("tiny", seed=4,
                                                                                n_users=20,
                                                                                days=1), 0.0)
  assert "corrupt_fraction differs" in simulator.reusable_logs(out, cfg, 0.05)
  no_trap = simulator.load_config("tiny", seed=3, trap_scale=0.0, n_users=20, days=1)
  assert "config differs" in simulator.reusable_logs(out, no_trap, 0.0)
  (tmp_path / "logs" / "events.jsonl").unlink()
  assert simulator.reusable_logs(out, cfg, 0.0) == "missing ['events.jsonl']"


def test_trap_scale_scales_every_strength_and_survives_the_summary(tmp_path):
  preset = simulator.load_config("tiny", seed=3)
  doubled = simulator.load_config("tiny", seed=3, trap_scale=2.0)
  for name, value in dataclasses.asdict(preset.trap).items():
    assert getattr(doubled.trap, name) == pytest.approx(2.0 * value), name
  assert preset.trap.hard_sell_exit > 0.0
  no_trap = simulator.load_config("tiny", seed=3, trap_scale=0.0, n_users=20, days=1)
  assert set(dataclasses.asdict(no_trap.trap).values()) == {0.0}
  assert dataclasses.replace(no_trap, trap=preset.trap) == dataclasses.replace(
      preset, n_users=20, days=1)
  out = str(tmp_path / "logs")
  simulator.generate_logs(no_trap, out, 0.0, progress=False)
  with open(os.path.join(out, simulator.SUMMARY_FILE)) as f:
    assert WorldConfig.from_dict(json.load(f)["config"]).trap == no_trap.trap
  with pytest.raises(ValueError, match="trap scale factor must be >= 0; got -1"):
    simulator.load_config("tiny", trap_scale=-1.0)
