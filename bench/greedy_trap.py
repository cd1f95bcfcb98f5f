"""The temporal greedy trap of seed 002, measured with the simulator's true probabilities.

For trap strengths from none to strong (``world.TrapConfig`` scaled by a factor), runs the same
fresh sessions (common random numbers) with the logging policy, oracle greedy (the room with the
highest true purchase probability) and the oracle look-ahead (``data_gen/lookahead.py``: the MSC
search on the true probabilities), and reports purchases and depth per session with 95% intervals,
the look-ahead's paired gain over greedy, a table, JSON and a plot. At the ``--dau_factors`` it
also runs each policy for the world's days over a fixed population whose return visits follow the
retention model (``data_gen/retention.py``), and reports daily active users and purchases per day.

    python -m bench.greedy_trap --sessions 4000 --factors 0,0.5,1,1.5,2 --dau_factors 0,1
"""

from __future__ import annotations

import dataclasses
import time
from typing import Dict

from absl import app, flags

from bench.common import define_output_flags, pyplot, save_figure, write_json_and_plot
from data_gen import behaviour as bh
from data_gen import lookahead as la
from data_gen import simulator
from data_gen.world import SCALES, TrapConfig, World

# The trap at factor 1: the world's defaults (``data_gen/README.md`` says why they are where they are).
UNIT_TRAP = TrapConfig()
REWARD = {"p_purchase": 1.0}  # what the oracle policies maximise: the purchases counted
GAIN_OUTCOMES = ("purchases", "depth")
DAY_COLUMNS = ("dau", "purchases_per_day")  # of simulator.DAY_OUTCOMES, in the table
LOOKAHEAD, GREEDY, LOGGING = "oracle_lookahead", "oracle_greedy", "logging"

FLAGS = flags.FLAGS


def define_flags() -> None:
  flags.DEFINE_enum("scale", "default", list(SCALES), "World scale preset.")
  flags.DEFINE_integer("seed", 7, "World seed.")
  flags.DEFINE_integer("session_seed", 3, "Seed of the sessions (the same for every policy).")
  flags.DEFINE_integer("sessions", 4000, "Sessions per policy and trap strength.")
  flags.DEFINE_list("factors", ["0", "0.5", "1", "1.5", "2"], "Multiples of the unit trap.")
  flags.DEFINE_integer("horizon", 3, "Look-ahead slots (H).")
  flags.DEFINE_integer("beam_width", 30, "Look-ahead beam width (B).")
  flags.DEFINE_integer("top_m", 15, "Candidates the look-ahead's first stage keeps (M).")
  flags.DEFINE_list("dau_factors", ["0", "1"], "Trap factors with a multi-day run (DAU).")
  flags.DEFINE_integer("dau_users", 3000, "Population of the multi-day runs.")
  define_output_flags("greedy_trap")


def run_strength(world: World, trap: TrapConfig, sessions: int, session_seed: int,
                 policies: Dict[str, tuple]) -> dict:
  """Every policy on the same sessions at one trap strength; outcomes and the paired gains."""
  sim = simulator.Simulator(world, trap)
  runs = {}
  for name, (policy, sample) in policies.items():
    bar = simulator.Progress(sessions, f"  {name:<17}")
    runs[name] = sim.evaluate_policy(policy, sessions, seed=session_seed, oracle=not sample,
                                     sample_from_policy=sample, progress=bar)
  return {"trap": dataclasses.asdict(trap),
          "policies": {n: simulator.summarize_sessions(r) for n, r in runs.items()},
          "lookahead_minus_greedy": {o: simulator.paired_difference(runs[LOOKAHEAD], runs[GREEDY], o)
                                     for o in GAIN_OUTCOMES}}


def run_days(world: World, trap: TrapConfig, n_users: int, seed: int,
             policies: Dict[str, tuple]) -> dict:
  """Every policy over the world's days for the same population, at one trap strength."""
  sim = simulator.Simulator(world, trap)
  runs = {}
  for name, (policy, sample) in policies.items():
    bar = simulator.Progress(n_users * world.config.days, f"  {name:<17} days")
    runs[name] = sim.run_days(policy, n_users, seed=seed, oracle=not sample,
                              sample_from_policy=sample, progress=bar)
  out = {name: simulator.summarize_days(run) for name, run in runs.items()}
  out["lookahead_minus_greedy"] = {
      o: simulator.paired_days_difference(runs[LOOKAHEAD], runs[GREEDY], o) for o in DAY_COLUMNS}
  return out


def plot(result: dict, path: str) -> str:
  plt = pyplot()
  factors = [float(f) for f in result["factors"]]
  fig, axes = plt.subplots(1, 3, figsize=(15, 4))
  for ax, outcome in zip(axes, GAIN_OUTCOMES):
    for name in (LOGGING, GREEDY, LOOKAHEAD):
      stats = [result["factors"][f]["policies"][name][outcome] for f in result["factors"]]
      ax.errorbar(factors, [s["mean"] for s in stats], yerr=[s["ci95"] for s in stats],
                  marker="o", capsize=3, label=name)
    ax.set_xlabel("trap strength (multiple of the unit trap)")
    ax.set_ylabel(f"{outcome} per session (95% interval)")
    ax.grid(alpha=0.3)
  axes[0].legend()
  days = {f: r["days"] for f, r in result["factors"].items() if "days" in r}
  if days:
    names = (LOGGING, GREEDY, LOOKAHEAD)
    width = 0.8 / len(names)
    for k, name in enumerate(names):
      stats = [d[name]["dau"] for d in days.values()]
      axes[2].bar([i + k * width for i in range(len(days))], [s["mean"] for s in stats], width,
                  yerr=[s["ci95"] for s in stats], capsize=3, label=name)
    axes[2].set_xticks([i + width for i in range(len(days))], [f"x{f}" for f in days])
    axes[2].set_xlabel("trap strength")
    axes[2].set_ylabel(f"daily active users of {result['dau_users']} (95% interval)")
    axes[2].legend(fontsize=8)
  fig.suptitle(f"greedy trap, true probabilities, {result['sessions']} sessions per point")
  return save_figure(fig, path)


def main(argv):
  del argv
  factors = [float(f) for f in FLAGS.factors]
  t0 = time.time()
  cfg = simulator.load_config(FLAGS.scale, FLAGS.seed)
  world = World(cfg)
  print(f"world {FLAGS.scale} seed {FLAGS.seed} built in {time.time() - t0:.0f} s; "
        f"{FLAGS.sessions} sessions per policy, unit trap {UNIT_TRAP}")
  policies = {
      LOGGING: (bh.LoggingPolicy(world, seed=cfg.seed + 1), True),
      GREEDY: (bh.oracle_greedy_policy("p_purchase"), False),
      LOOKAHEAD: (la.oracle_lookahead_policy(REWARD, FLAGS.horizon, FLAGS.beam_width,
                                             FLAGS.top_m), False)}
  result = {"scale": FLAGS.scale, "world_seed": FLAGS.seed, "session_seed": FLAGS.session_seed,
            "sessions": FLAGS.sessions, "unit_trap": dataclasses.asdict(UNIT_TRAP),
            "reward": REWARD, "horizon": FLAGS.horizon, "beam_width": FLAGS.beam_width,
            "top_m": FLAGS.top_m, "dau_users": FLAGS.dau_users, "factors": {}}
  header = f"{'factor':>6} {'policy':<17} {'purchases':>15} {'depth':>13}"
  lines, day_lines = [], []
  dau_factors = [float(f) for f in FLAGS.dau_factors]
  for factor in factors:
    print(f"trap x{factor:g}")
    trap = UNIT_TRAP.scaled(factor)
    row = run_strength(world, trap, FLAGS.sessions, FLAGS.session_seed, policies)
    result["factors"][f"{factor:g}"] = row
    for name, summary in row["policies"].items():
      p, d = summary["purchases"], summary["depth"]
      lines.append(f"{factor:>6g} {name:<17} {p['mean']:>7.3f}±{p['ci95']:.3f} "
                   f"{d['mean']:>6.2f}±{d['ci95']:.2f}")
    gain = row["lookahead_minus_greedy"]
    lines.append(f"{'':>6} {'look-ahead gain':<17} {gain['purchases']['mean']:>+7.3f}±"
                 f"{gain['purchases']['ci95']:.3f} {gain['depth']['mean']:>+6.2f}±"
                 f"{gain['depth']['ci95']:.2f}  (paired)")
    if factor in dau_factors:
      row["days"] = run_days(world, trap, FLAGS.dau_users, FLAGS.session_seed, policies)
      for name in policies:
        summary = row["days"][name]
        day_lines.append(f"{factor:>6g} {name:<17} " + "  ".join(
            f"{o} {summary[o]['mean']:.1f}±{summary[o]['ci95']:.1f}" for o in DAY_COLUMNS)
            + f"  (expected DAU {summary['expected_dau']['mean']:.1f})")
      gain = row["days"]["lookahead_minus_greedy"]
      day_lines.append(f"{'':>6} {'look-ahead gain':<17} " + "  ".join(
          f"{o} {gain[o]['mean']:+.1f}±{gain[o]['ci95']:.1f}" for o in DAY_COLUMNS) + "  (paired)")
  print(header)
  print("\n".join(lines))
  if day_lines:
    print(f"over days 1..{world.config.days - 1} of {FLAGS.dau_users} users (day 0 is "
          "before any policy's sessions count):")
    print("\n".join(day_lines))
  path, png = write_json_and_plot(result, FLAGS.out_dir, FLAGS.name, plot)
  print(f"wrote {path} and {png} in {time.time() - t0:.0f} s")


if __name__ == "__main__":
  define_flags()
  app.run(main)
