"""Closed loops of one model trained with several seeds: mean ± sd over the training seeds.

Each input is a ``bench.closed_loop`` JSON of the same world and sessions, one per training seed
(the pushed model, and ``bench.ablation_feedback --export_base`` exports read with
``bench.closed_loop --model_base``). The report gives, per policy and outcome, the mean over the
seeds of the per-session means, and for each paired comparison (e.g. ``stcrank-greedy_buy``) the
mean ± sd over the seeds of the paired difference, next to each seed's own 95% interval; with
``--oracle`` (a closed-loop JSON with the oracle policies of the same sessions), the share of the
oracle look-ahead's gain each seed recovers.

    python -m bench.closed_loop_seeds --runs a.json,b.json,c.json --oracle closed_loop.json
"""

from __future__ import annotations

import json
from typing import Dict, List

import numpy as np
from absl import app, flags

from bench.common import define_output_flags, pyplot, save_figure, write_json_and_plot

FLAGS = flags.FLAGS
OUTCOMES = ("purchases", "depth")
COMPARISON = "stcrank-greedy_buy"
ORACLE_COMPARISON = "oracle_lookahead-oracle_greedy"


def _mean_sd(values: List[float]) -> Dict[str, float]:
  v = np.asarray(values, dtype=float)
  return {"mean": float(v.mean()), "sd": float(v.std(ddof=1)) if v.size > 1 else 0.0,
          "n": int(v.size)}


def summarize(runs: List[dict], oracle: dict | None = None) -> dict:
  """Mean ± sd over training seeds of every policy outcome and paired difference in ``runs``.

  Raises:
    ValueError: the runs are not of the same world, sessions and session count.
  """
  keys = {(r["world_seed"], r["session_seed"], r["sessions"]) for r in runs}
  if oracle is not None:
    keys.add((oracle["world_seed"], oracle["session_seed"], oracle["sessions"]))
  if len(keys) != 1:
    raise ValueError(f"runs of different worlds or sessions (world, session seed, sessions): "
                     f"{sorted(keys)}")
  policies = sorted(set.intersection(*(set(r["policies"]) for r in runs)))
  pairs = sorted(set.intersection(*(set(r["paired"]) for r in runs)))
  out = {"world_seed": runs[0]["world_seed"], "sessions": runs[0]["sessions"],
         "model_dirs": [r["model_dir"] for r in runs],
         "policies": {p: {o: _mean_sd([r["policies"][p][o]["mean"] for r in runs])
                          for o in OUTCOMES} for p in policies},
         "paired": {c: {o: dict(_mean_sd([r["paired"][c][o]["mean"] for r in runs]),
                                per_seed=[r["paired"][c][o] for r in runs])
                        for o in OUTCOMES} for c in pairs}}
  if oracle is not None and COMPARISON in pairs:
    gain = oracle["paired"][ORACLE_COMPARISON]
    out["oracle_gain"] = {o: gain[o] for o in OUTCOMES}
    out["share_of_oracle_gain"] = {
        o: _mean_sd([r["paired"][COMPARISON][o]["mean"] / gain[o]["mean"] for r in runs])
        for o in OUTCOMES}
  return out


def plot(summary: dict, path: str) -> str:
  plt = pyplot()
  fig, axes = plt.subplots(1, len(OUTCOMES), figsize=(4.5 * len(OUTCOMES), 3.8))
  for ax, outcome in zip(axes, OUTCOMES):
    per_seed = summary["paired"][COMPARISON][outcome]["per_seed"]
    ax.errorbar(range(len(per_seed)), [s["mean"] for s in per_seed],
                yerr=[s["ci95"] for s in per_seed], fmt="o", capsize=4, label="training seed")
    if "oracle_gain" in summary:
      ax.axhline(summary["oracle_gain"][outcome]["mean"], color="tab:green", linestyle="--",
                 label="oracle look-ahead gain")
    ax.axhline(0.0, color="grey", linewidth=0.8)
    ax.set_xticks(range(len(per_seed)), [f"seed {i + 1}" for i in range(len(per_seed))])
    ax.set_ylabel(f"{COMPARISON}: {outcome} per session")
    ax.legend(fontsize=8)
  fig.suptitle(f"{COMPARISON}, paired, 95% intervals; world seed {summary['world_seed']}, "
               f"{summary['sessions']} sessions")
  return save_figure(fig, path)


def format_table(summary: dict) -> str:
  lines = [f"{'':<34}" + "".join(f"{o:>22}" for o in OUTCOMES)]
  for name, stats in list(summary["policies"].items()) + list(summary["paired"].items()):
    lines.append(f"{name:<34}" + "".join(
        f"{stats[o]['mean']:>13.3f} ± {stats[o]['sd']:.3f}" for o in OUTCOMES))
  if "share_of_oracle_gain" in summary:
    lines.append(f"{'share of the oracle gain':<34}" + "".join(
        f"{summary['share_of_oracle_gain'][o]['mean']:>13.2f} ± "
        f"{summary['share_of_oracle_gain'][o]['sd']:.2f}" for o in OUTCOMES))
  return "\n".join(lines)


def main(argv):
  del argv
  runs = []
  for path in FLAGS.runs:
    with open(path) as f:
      runs.append(json.load(f))
  oracle = None
  if FLAGS.oracle:
    with open(FLAGS.oracle) as f:
      oracle = json.load(f)
  summary = summarize(runs, oracle)
  print(format_table(summary))
  paths = write_json_and_plot(summary, FLAGS.out_dir, FLAGS.name, plot)
  print(f"wrote {paths[0]} and {paths[1]}")


if __name__ == "__main__":
  flags.DEFINE_list("runs", [], "bench.closed_loop JSONs, one per training seed.")
  flags.DEFINE_string("oracle", None,
                      "A bench.closed_loop JSON with the oracle policies of the same sessions.")
  define_output_flags("closed_loop_seeds")
  app.run(main)
