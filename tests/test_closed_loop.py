"""A trained model in the simulator's closed loop (``serving/policy.py``, ``bench/closed_loop.py``).

The request builder's parity with the ExampleGen on logged impressions is tested in
``test_example_gen_integrity.py``; here: the closed loop's shown rooms read back as the ExampleGen
reads their logged events, the policy sees the user's past, the ranking rules on hand-built
scores, the same sessions through an exported model in-process and over gRPC, and the model's own
look-ahead (the ``rank`` signature) through the server.
"""

import dataclasses
import json

import numpy as np
import pytest
import tensorflow as tf

from bench import closed_loop, synthetic_model
from components.live_example_gen import beam_transforms as bt
from components.live_example_gen import point_in_time as pit
from components.live_example_gen import records as r
from components.live_example_gen.log_tables import read_log_tables
from data_gen import behaviour as bh
from data_gen import log_format as lf
from data_gen import lookahead as la
from data_gen import simulator
from data_gen.world import World
from models import features as F
from models import moc, msc, trainer
from models import signatures as S
from serving import client, policy
from serving.model_server import ModelServer

CFG = simulator.load_config("tiny", seed=11)
RT, LL = 4, 6  # the exported model's and the requests' sequence lengths
MODEL = "closed-loop"


@pytest.fixture(scope="module")
def world():
  return World(CFG)


class _Recorder:
  """A policy that shows the first candidate and keeps every context it was asked about."""

  def __init__(self):
    self.contexts = []

  def __call__(self, ctx):
    self.contexts.append(ctx)
    return np.arange(len(ctx.candidate_host_ids), 0, -1, dtype=np.float64)


def test_shown_rooms_read_back_as_the_example_gen_reads_their_logged_events(world):
  sim = simulator.Simulator(world)
  state = sim.behaviour.new_state(keep_history=True)
  rng = np.random.default_rng(4)
  start = sim._live_time(rng, world.session_day_windows()[:1])  # pylint: disable=protected-access
  records = []
  for session_id in (7, 8):  # two sessions: the history carries over
    records += list(sim.run_session(rng, 3, start, state, bh.LoggingPolicy(world), True,
                                    session_id=session_id))
    start = state.last_ts + 60.0
  assert len(state.history) == len(records) >= 3
  assert any(room.outcome.action_offsets for room in state.history)
  windows = {lf.WINDOW_EVENTS: (0.0, 4e9), lf.WINDOW_PURCHASES: (0.0, 4e9)}
  converted = policy.impression_records(3, state.history)
  for k, (rec, room) in enumerate(zip(records, state.history), start=1):
    lines = [r.RawLine(r.EVENTS, "events.jsonl", n, json.dumps(e).encode())
             for n, e in enumerate(simulator.impression_events(k, room.session_id, 3, rec))]
    parsed = [r.parse_line(line, windows) for line in lines]
    logged = [x for x in bt.assemble_impression(k, parsed) if isinstance(x, pit.ImpressionRecord)]
    assert len(logged) == 1
    expected = dataclasses.replace(logged[0], propensity=1.0, actions=sorted(logged[0].actions))
    got = dataclasses.replace(converted[k - 1], actions=sorted(converted[k - 1].actions))
    assert got == expected


def test_the_policy_sees_the_users_shown_rooms_in_order(world):
  sim = simulator.Simulator(world)
  recorder = _Recorder()
  results = sim.evaluate_policy(recorder, 6, seed=2)
  assert sum(res.depth for res in results) == len(recorder.contexts)
  for ctx in recorder.contexts:
    assert len(ctx.past) == ctx.slot_index  # a fresh user state per session
    assert [room.host_id for room in ctx.past] == list(ctx.shown_host_ids)
    assert all(room.session_id == ctx.session_id for room in ctx.past)
  assert sorted({ctx.session_id for ctx in recorder.contexts}) == list(range(1, 7))
  # Over days the state, and so the past, carries over from session to session.
  recorder = _Recorder()
  sim.run_days(recorder, n_users=5, days=2, seed=3)
  firsts = [ctx for ctx in recorder.contexts if ctx.slot_index == 0]
  assert any(len(ctx.past) > 0 for ctx in firsts)
  assert all({room.session_id for room in ctx.past} <= set(range(1, ctx.session_id))
             for ctx in firsts)


def test_ranking_rules_on_hand_built_scores():
  # A converts best but usually ends the session; B converts a little less and keeps it going.
  scores = {F.HEAD_BUY: np.array([0.30, 0.25, 0.20]), "swipe_down": np.array([0.2, 0.9, 0.9]),
            F.HEAD_EFFECTIVE_VIEW: np.array([0.1, 0.5, 0.9])}
  assert int(np.argmax(policy.by_head(F.HEAD_BUY)(scores))) == 0
  lookahead = policy.by_lookahead({F.HEAD_BUY: 1.0}, "swipe_down", horizon=3, beam_width=10)
  # B first: .25 + .9 * (.30 + .2 * .20) = .556 beats A first: .30 + .2 * (.25 + .9 * .20) = .386.
  assert int(np.argmax(lookahead(scores))) == 1
  greedy = policy.by_lookahead({F.HEAD_BUY: 1.0}, "swipe_down", horizon=1)
  assert int(np.argmax(greedy(scores))) == 0
  weighted = policy.by_weighted_sum({F.HEAD_BUY: 1.0, F.HEAD_EFFECTIVE_VIEW: 0.5})(scores)
  np.testing.assert_allclose(weighted, [0.35, 0.50, 0.65])
  with pytest.raises(KeyError, match="no output 'interact'.*'buy'"):
    policy.by_head(F.HEAD_INTERACT)(scores)
  with pytest.raises(ValueError, match="weights is empty"):
    policy.by_weighted_sum({})


@pytest.fixture(scope="module")
def served(tmp_path_factory):
  """Tiny logs, and an untrained STCRank model at the requests' lengths, exported and served."""
  root = tmp_path_factory.mktemp("closed_loop")
  simulator.generate_logs(CFG, str(root / "logs"), progress=False)
  rows = [synthetic_model.synthetic_row(s, RT, LL) for s in range(4)]
  synthetic_model.export_model(rows, RT, LL, str(root / "models" / "1"), model_name="stcrank",
                               embedding_dim=4, work_dir=str(root / "tft"))
  server = ModelServer(MODEL, str(root / "models"), port=0, poll_seconds=3600).start()
  yield root, f"127.0.0.1:{server.port}"
  server.stop()


def test_the_same_sessions_in_process_and_over_grpc(served, world):
  root, target = served
  tables = read_log_tables(str(root / "logs"))
  assert closed_loop.logged_world(str(root / "logs"), tables).config == CFG
  builder = policy.RequestBuilder(tables, RT, LL)
  rank_by = policy.by_weighted_sum(client.RANK_WEIGHTS)
  in_process = policy.ModelPolicy(
      builder, policy.SavedModelScorer(policy.latest_version_dir(str(root / "models"))), rank_by)
  over_grpc = policy.ModelPolicy(builder, policy.GrpcScorer(target, MODEL), rank_by)
  sim = simulator.Simulator(world)
  a = sim.evaluate_policy(in_process, 4, seed=5)
  b = sim.evaluate_policy(over_grpc, 4, seed=5)
  assert in_process.requests == over_grpc.requests == sum(x.depth for x in a) > 4
  assert a == b
  assert set(in_process.last_scores) == set(moc.STCRANK_HEADS)
  for head, score in in_process.last_scores.items():
    np.testing.assert_allclose(score, over_grpc.last_scores[head], atol=1e-6)
    assert np.all((score >= 0) & (score <= 1))


def test_a_rebuilt_world_that_differs_from_the_logs_is_refused(served):
  root, _ = served
  tables = read_log_tables(str(root / "logs"))
  tables.hosts[2] = dict(tables.hosts[2], shop_id=tables.hosts[2]["shop_id"] + 1)
  with pytest.raises(ValueError, match="host 2 is logged as"):
    closed_loop.logged_world(str(root / "logs"), tables)


def test_the_rank_signature_serves_the_look_ahead_of_the_context_scores(served, world):
  root, target = served
  builder = policy.RequestBuilder(read_log_tables(str(root / "logs")), RT, LL)
  model_dir = policy.latest_version_dir(str(root / "models"))
  cfg = trainer.TrainConfig(model_name="stcrank").msc()  # what the export used
  search = policy.by_lookahead(cfg.reward_weights, cfg.swipe_output, cfg.horizon,
                               cfg.beam_width, cfg.top_m)
  scores_policy = policy.ModelPolicy(builder, policy.SavedModelScorer(model_dir), search)
  loaded = tf.saved_model.load(model_dir).signatures  # shared by a scorer, as closed_loop does
  slate_in_process = policy.ModelPolicy(
      builder, policy.SavedModelScorer(model_dir, S.RANK_SIGNATURE, loaded), policy.by_slate)
  slate_over_grpc = policy.ModelPolicy(
      builder, policy.GrpcScorer(target, MODEL, signature=S.RANK_SIGNATURE), policy.by_slate)
  sim = simulator.Simulator(world)
  runs = [sim.evaluate_policy(p, 3, seed=6)
          for p in (scores_policy, slate_in_process, slate_over_grpc)]
  assert runs[0] == runs[1] == runs[2]
  # The last request's slate: a permutation of the candidates whose planned slots are the
  # numpy search's order on the context signature's scores; the per-slot values match them.
  scores, slate = scores_policy.last_scores, slate_over_grpc.last_scores
  order = np.asarray(slate[msc.SLATE])
  assert sorted(order.tolist()) == list(range(len(scores[F.HEAD_BUY])))
  planned = la.best_order(scores[F.HEAD_BUY].astype(np.float64),
                          scores[F.HEAD_SWIPE_DOWN].astype(np.float64), cfg.horizon,
                          cfg.beam_width, cfg.top_m)
  assert order[:len(planned)].tolist() == planned.tolist()
  np.testing.assert_allclose(slate[msc.SLOT_REWARD], scores[F.HEAD_BUY][order], rtol=1e-6)
  np.testing.assert_allclose(slate[msc.SLOT_SWIPE_DOWN], scores[F.HEAD_SWIPE_DOWN][order],
                             rtol=1e-6)
  np.testing.assert_allclose(slate[msc.PLANNED_VALUE], [la.order_value(
      scores[F.HEAD_BUY], scores[F.HEAD_SWIPE_DOWN], planned)], rtol=1e-5)
  assert S.RANK_SIGNATURE in client.signature_names(target, MODEL)
  with pytest.raises(KeyError, match="has no signature 'rank_all'"):
    policy.SavedModelScorer(model_dir, "rank_all")


def test_closed_loop_seeds_averages_paired_differences_over_training_seeds():
  from bench import closed_loop_seeds as cls

  def run(stc, greedy, diff, model_dir):
    stats = lambda m: {"mean": m, "ci95": 0.01}  # noqa: E731
    return {"world_seed": 7, "session_seed": 3, "sessions": 10, "model_dir": model_dir,
            "policies": {"stcrank": {"purchases": stats(stc), "depth": stats(4.0)},
                         "greedy_buy": {"purchases": stats(greedy), "depth": stats(3.0)}},
            "paired": {cls.COMPARISON: {"purchases": stats(diff), "depth": stats(1.0)}}}

  runs = [run(0.4, 0.3, 0.10, "a"), run(0.5, 0.3, 0.20, "b"), run(0.6, 0.3, 0.30, "c")]
  oracle = {"world_seed": 7, "session_seed": 3, "sessions": 10, "paired": {
      cls.ORACLE_COMPARISON: {"purchases": {"mean": 0.4, "ci95": 0.02},
                              "depth": {"mean": 2.0, "ci95": 0.1}}}}
  out = cls.summarize(runs, oracle)
  assert out["policies"]["stcrank"]["purchases"] == pytest.approx(
      {"mean": 0.5, "sd": 0.1, "n": 3})
  paired = out["paired"][cls.COMPARISON]["purchases"]
  assert (paired["mean"], paired["sd"]) == pytest.approx((0.2, 0.1))
  assert [s["mean"] for s in paired["per_seed"]] == [0.10, 0.20, 0.30]
  assert out["share_of_oracle_gain"]["purchases"]["mean"] == pytest.approx(0.5)
  assert out["share_of_oracle_gain"]["depth"]["mean"] == pytest.approx(0.5)
  with pytest.raises(ValueError, match="different worlds or sessions"):
    cls.summarize(runs + [dict(run(0.5, 0.3, 0.2, "d"), sessions=11)])
