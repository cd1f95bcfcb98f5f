"""Trained models as rankers in closed loop: the same fresh sessions under every policy.

Reads a pipeline run (``make demo``'s WORK: its logs and its pushed model), rebuilds the world the
logs came from (checked against the logged reference tables), and runs the same sessions (common
random numbers, ``Simulator.evaluate_policy``) with:

* ``logging``: the policy whose impressions are logged (sampled, as in the logs);
* ``random``;
* ``greedy_<head>``: the trained model's rooms by one head's score, for each served head;
* ``greedy_weighted``: by the demo's weighted score (``serving.client.RANK_WEIGHTS``);
* ``stcrank``: the slate of the model's own ``rank`` signature (MSC's look-ahead in the graph on
  its buy and swipe-down heads, ``models/msc.py``), when the model exports one;
* ``oracle_greedy`` and ``oracle_lookahead``: by, and searching on, the true probabilities.

The model policies build every request with the ExampleGen's point-in-time functions
(``serving/policy.py``) and score it in-process or, with ``--scorer grpc``, through the local TF
Serving-compatible server with the official client. Writes ``<name>.json`` shaped
``{"policies": {name: {outcome: {"mean", "ci95"}}}, "paired": ..., ...}`` and a plot. With
``--dau_users`` > 0 it also runs ``--day_policies`` over the world's days for a fixed population
(daily active users and purchases per day; ``data_gen/retention.py``).

    python -m bench.closed_loop --work /work/w7k --sessions 2000
"""

from __future__ import annotations

import json
import os
import time
from typing import Dict, Tuple

import tensorflow as tf
from absl import app, flags

from bench.common import define_run_flags, pyplot, save_figure, write_json_and_plot
from bench.synthetic_model import ServerProcess
from components.live_example_gen.log_tables import LogTables, read_log_tables
from data_gen import behaviour as bh
from data_gen import log_format as lf
from data_gen import lookahead as la
from data_gen import simulator
from data_gen.world import World, WorldConfig
from models import features as F
from models import msc
from models import signatures as S
from serving import client, policy

LOGGING, RANDOM, GREEDY_WEIGHTED, STCRANK = "logging", "random", "greedy_weighted", "stcrank"
ORACLE_GREEDY, ORACLE_LOOKAHEAD = "oracle_greedy", "oracle_lookahead"
GREEDY_BUY = f"greedy_{F.HEAD_BUY}"
# The oracle policies rank by the true probability the model's buy head estimates.
ORACLE_OBJECTIVE = "p_buy"
COMPARED = ("purchases", "depth", "views", "gmv")  # plotted, and paired between policies
DAY_COMPARED = ("dau", "purchases_per_day")  # of simulator.DAY_OUTCOMES, paired per user
FLAGS = flags.FLAGS


def define_flags() -> None:
  define_run_flags("closed_loop")
  flags.DEFINE_integer("sessions", 2000, "Sessions per policy (the same sessions for each).")
  flags.DEFINE_integer("session_seed", 3, "Seed of the sessions.")
  flags.DEFINE_enum("scorer", "inprocess", ["inprocess", "grpc"],
                    "Score in this process or through the local model server (official client).")
  flags.DEFINE_list("policies", [], "Policies to run (default: all available).")
  flags.DEFINE_string("model_base", None,
                      "Model base path (<version>/ SavedModels) of the model policies; default the "
                      "pipeline's pushed models, <work>/serving/<pipeline_name>. E.g. a "
                      "bench.ablation_feedback --export_base model of another training seed.")
  # stcrank's search is the model's (its trainer config); the oracle's defaults are the same.
  flags.DEFINE_integer("horizon", msc.MscConfig.horizon, "Oracle look-ahead slots (H).")
  flags.DEFINE_integer("beam_width", msc.MscConfig.beam_width, "Oracle look-ahead beam width (B).")
  flags.DEFINE_integer("top_m", msc.MscConfig.top_m,
                       "Candidates the oracle look-ahead's first stage keeps (M).")
  flags.DEFINE_integer("dau_users", 0, "Population of a multi-day run (0: none).")
  flags.DEFINE_list("day_policies", [LOGGING, GREEDY_BUY, ORACLE_GREEDY, ORACLE_LOOKAHEAD],
                    "Policies of the multi-day run.")


def logged_world(log_dir: str, tables: LogTables) -> World:
  """The world of a log set, rebuilt from its summary's config and checked against its tables.

  Raises:
    ValueError: the rebuilt world's rooms or items differ from the logged ones (the simulator's
      code changed since the logs were written: run the pipeline again).
  """
  with open(os.path.join(log_dir, lf.SUMMARY_FILE)) as f:
    config = WorldConfig.from_dict(json.load(f)["config"])
  world = World(config)
  for h, rec in tables.hosts.items():
    cats = [int(c) for c in world.host_categories[h] if c]
    if (rec["shop_id"], rec["category_ids"]) != (int(world.host_shop[h]), cats):
      raise ValueError(f"host {h} is logged as {rec} but the rebuilt world has shop "
                       f"{int(world.host_shop[h])}, categories {cats}: logs of other code")
  for i, rec in tables.items.items():
    if rec["category_id"] != int(world.item_category[i]):
      raise ValueError(f"item {i} is logged in category {rec['category_id']} but the rebuilt "
                       f"world has {int(world.item_category[i])}: logs of other code")
  return world


def build_policies(world: World, model_policy, heads, slate_policy: bh.Policy | None
                   ) -> Dict[str, Tuple[bh.Policy, bool, bool]]:
  """name -> (policy, sample from it, needs the truth)."""
  policies = {LOGGING: (bh.LoggingPolicy(world, seed=world.config.seed + 1), True, False),
              RANDOM: (bh.random_policy(FLAGS.session_seed), False, False)}
  for head in heads:
    policies[f"greedy_{head}"] = (model_policy(policy.by_head(head)), False, False)
  policies[GREEDY_WEIGHTED] = (model_policy(policy.by_weighted_sum(client.RANK_WEIGHTS)), False,
                               False)
  if slate_policy is not None:
    policies[STCRANK] = (slate_policy, False, False)
  policies[ORACLE_GREEDY] = (bh.oracle_greedy_policy(ORACLE_OBJECTIVE), False, True)
  policies[ORACLE_LOOKAHEAD] = (la.oracle_lookahead_policy(
      {ORACLE_OBJECTIVE: 1.0}, FLAGS.horizon, FLAGS.beam_width, FLAGS.top_m), False, True)
  return policies


def plot(result: dict, path: str) -> str:
  plt = pyplot()
  names = list(result["policies"])
  fig, axes = plt.subplots(1, len(COMPARED), figsize=(4.2 * len(COMPARED), 4.2))
  for ax, outcome in zip(axes, COMPARED):
    stats = [result["policies"][n][outcome] for n in names]
    colors = ["tab:gray" if n in (LOGGING, RANDOM) else "tab:green" if n.startswith("oracle")
              else "tab:blue" for n in names]
    ax.barh(range(len(names)), [s["mean"] for s in stats], xerr=[s["ci95"] for s in stats],
            color=colors, capsize=3)
    ax.set_yticks(range(len(names)), names if ax is axes[0] else [""] * len(names))
    ax.invert_yaxis()
    ax.set_xlabel(f"{outcome} per session (95% interval)")
    ax.grid(axis="x", alpha=0.3)
  fig.suptitle(f"closed loop, {result['sessions']} sessions per policy, world seed "
               f"{result['world_seed']} (blue: trained model, green: true probabilities)")
  return save_figure(fig, path)


def main(argv):
  del argv
  t0 = time.time()
  work = os.path.abspath(FLAGS.work)
  log_dir = os.path.join(work, "logs")
  tables = read_log_tables(log_dir)
  world = logged_world(log_dir, tables)
  print(f"read {len(tables.impressions)} logged impressions ({tables.quarantined_count} "
        f"quarantined lines left out) and rebuilt world seed {world.config.seed} in "
        f"{time.time() - t0:.0f} s")
  base = (os.path.abspath(FLAGS.model_base) if FLAGS.model_base
          else os.path.join(work, "serving", FLAGS.pipeline_name))
  model_dir = policy.latest_version_dir(base)
  builder = policy.RequestBuilder(tables)
  server = None
  # One load for the model's outputs, whether it has ``rank``, and the in-process scorers (the
  # server serves the same version directory).
  signatures = tf.saved_model.load(model_dir).signatures
  outputs = sorted(signatures[S.CONTEXT_SIGNATURE].structured_outputs)
  has_rank = S.RANK_SIGNATURE in signatures
  if FLAGS.scorer == "grpc":
    server = ServerProcess(FLAGS.pipeline_name, base, os.path.join(work, "closed_loop_server.log"))
    make_scorer = lambda signature: policy.GrpcScorer(  # noqa: E731
        server.target, FLAGS.pipeline_name, signature=signature)
  else:
    make_scorer = lambda signature: policy.SavedModelScorer(  # noqa: E731
        model_dir, signature, signatures)
  scorer = make_scorer(S.CONTEXT_SIGNATURE)
  try:
    sim = simulator.Simulator(world)
    heads = [h for h in F.HEADS if h in outputs]
    print(f"model {model_dir} ({FLAGS.scorer}): outputs {outputs}"
          + ("" if has_rank else f"; no {S.RANK_SIGNATURE!r} signature, so no {STCRANK}"))
    slate_policy = (policy.ModelPolicy(builder, make_scorer(S.RANK_SIGNATURE), policy.by_slate)
                    if has_rank else None)
    policies = build_policies(
        world, lambda rank_by: policy.ModelPolicy(builder, scorer, rank_by), heads, slate_policy)
    for flag in ("policies",) + (("day_policies",) if FLAGS.dau_users > 0 else ()):
      unknown = sorted(set(getattr(FLAGS, flag)) - set(policies))
      if unknown:
        raise ValueError(f"--{flag} names {unknown}; available: {sorted(policies)}")
    runs = {}
    for name, (pol, sample, oracle) in policies.items():
      if FLAGS.policies and name not in FLAGS.policies:
        continue
      t = time.time()
      bar = simulator.Progress(FLAGS.sessions, f"  {name:<17}")
      runs[name] = sim.evaluate_policy(pol, FLAGS.sessions, seed=FLAGS.session_seed,
                                       oracle=oracle, sample_from_policy=sample, progress=bar)
      print(f"  {name}: {FLAGS.sessions} sessions in {time.time() - t:.0f} s")
    result = {"work": work, "model_dir": model_dir, "scorer": FLAGS.scorer,
              "world_seed": world.config.seed, "session_seed": FLAGS.session_seed,
              "sessions": FLAGS.sessions, "oracle_objective": ORACLE_OBJECTIVE,
              "horizon": FLAGS.horizon, "beam_width": FLAGS.beam_width, "top_m": FLAGS.top_m,
              "policies": {n: simulator.summarize_sessions(r) for n, r in runs.items()},
              "paired": {}}
    pairs = [(a, b) for a, b in ((STCRANK, GREEDY_BUY), (GREEDY_BUY, LOGGING),
                                 (STCRANK, LOGGING), (ORACLE_LOOKAHEAD, ORACLE_GREEDY),
                                 (GREEDY_WEIGHTED, GREEDY_BUY), (ORACLE_GREEDY, GREEDY_BUY))
             if a in runs and b in runs]
    for a, b in pairs:
      result["paired"][f"{a}-{b}"] = {o: simulator.paired_difference(runs[a], runs[b], o)
                                      for o in COMPARED}
    if FLAGS.dau_users > 0:
      result["days"] = {"users": FLAGS.dau_users, "policies": {}, "paired": {}}
      day_runs = {}
      for name in FLAGS.day_policies:
        pol, sample, oracle = policies[name]
        bar = simulator.Progress(FLAGS.dau_users * world.config.days, f"  {name:<17} days")
        day_runs[name] = sim.run_days(pol, FLAGS.dau_users, seed=FLAGS.session_seed,
                                      oracle=oracle, sample_from_policy=sample, progress=bar)
        result["days"]["policies"][name] = simulator.summarize_days(day_runs[name])
      # The same population and draws under each policy: per-user paired differences.
      for a, b in pairs:
        if a in day_runs and b in day_runs:
          result["days"]["paired"][f"{a}-{b}"] = {
              o: simulator.paired_days_difference(day_runs[a], day_runs[b], o)
              for o in DAY_COMPARED}
  finally:
    if server is not None:
      server.close()
  print(f"{'policy':<19}" + "".join(f"{o:>17}" for o in simulator.SESSION_OUTCOMES[:5]))
  for name, summary in result["policies"].items():
    print(f"{name:<19}" + "".join(f"{summary[o]['mean']:>10.3f}±{summary[o]['ci95']:<6.3f}"
                                  for o in simulator.SESSION_OUTCOMES[:5]))
  print("paired differences (same sessions):")
  for pair, diffs in result["paired"].items():
    print(f"  {pair:<34}" + "  ".join(f"{o} {d['mean']:+.3f}±{d['ci95']:.3f}"
                                      for o, d in diffs.items()))
  for name, summary in result.get("days", {}).get("policies", {}).items():
    print(f"  days {name:<17} DAU {summary['dau']['mean']:.1f}±{summary['dau']['ci95']:.1f}  "
          f"purchases/day {summary['purchases_per_day']['mean']:.1f}"
          f"±{summary['purchases_per_day']['ci95']:.1f}")
  for pair, diffs in result.get("days", {}).get("paired", {}).items():
    print(f"  days {pair:<34}" + "  ".join(f"{o} {d['mean']:+.1f}±{d['ci95']:.1f}"
                                           for o, d in diffs.items()) + "  (paired per user)")
  path, png = write_json_and_plot(result, FLAGS.out_dir, FLAGS.name, plot)
  print(f"wrote {path} and {png} in {time.time() - t0:.0f} s")


if __name__ == "__main__":
  define_flags()
  app.run(main)
