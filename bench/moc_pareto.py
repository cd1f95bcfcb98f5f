"""STCRank's MOC rules against raw labels: conversion, view and swipe-down AUC (a Pareto plot).

Trains STCRank (``models/moc.py``) under each set of label rules on the same transformed examples
of one pipeline run, with the Trainer's regime (``bench.ablation_feedback.train_variant``), for
several training seeds, and scores the eval split through the serving function. Reports per rule
set and head (buy, effective view, interact, swipe-down) the AUC as mean ± sd over the seeds next
to the oracle AUC of the simulator's truth, writes JSON and a plot of buy and view AUC against
swipe-down AUC (each rule set a point with ±1 sd bars).

    python -m bench.moc_pareto --work /work/w7h --seeds 1,2,3
"""

from __future__ import annotations

import dataclasses
import os
import time
from typing import Dict, List

import numpy as np
import tensorflow_transform as tft
from absl import app, flags

from bench import ablation_feedback as ab
from bench import quality_report as qr
from bench.common import define_run_flags, pyplot, save_figure, write_json_and_plot
from bench.metrics import auc
from data_gen.simulator import read_ground_truth
from models import features as F
from models import moc, trainer
from serving.examples_io import latest_examples_dir, read_examples

FLAGS = flags.FLAGS


@dataclasses.dataclass(frozen=True)
class RuleSet:
  """A name, the model and the trainer overrides that give its label rules."""
  name: str
  model: str
  overrides: Dict[str, object] = dataclasses.field(default_factory=dict)


RULE_SETS = (
    RuleSet("moc", "stcrank"),  # the defaults of moc.MocRules
    RuleSet("raw_labels", "stcrank_raw_labels"),
    RuleSet("exit_ignored", "stcrank", {"moc_purchase_exit": moc.EXIT_IGNORE}),
    RuleSet("exit_positive", "stcrank", {"moc_purchase_exit": moc.EXIT_POSITIVE}),
)
# Each head's label and the ground-truth field of its oracle AUC; buy is scored where the room
# displays products, as in the quality report.
HEAD_LABELS = {**F.HEADS, F.HEAD_SWIPE_DOWN: F.SWIPE_DOWN}
ORACLE_FIELDS = {**qr.ORACLE_FIELD, F.HEAD_SWIPE_DOWN: "p_swipe_down"}


def head_aucs(examples, scores: Dict[str, np.ndarray], truth: Dict[int, dict] | None = None
              ) -> Dict[str, float]:
  """Per head, the AUC of ``scores`` (or, with ``truth``, of the oracle) on the examples."""
  get = lambda k: qr.int_feature(examples, k)  # noqa: E731
  buy_mask = get(F.DISPLAY_LEN) > 0
  ids = get(F.IMPRESSION_ID)
  out = {}
  for head, label in HEAD_LABELS.items():
    m = buy_mask if head == F.HEAD_BUY else np.ones(len(examples), bool)
    s = (scores[head] if truth is None
         else qr.truth_column(truth, ids, ORACLE_FIELDS[head]))
    out[head] = auc(get(label)[m], s[m])
  return out


def run(work: str, pipeline_name: str, seeds: List[int], rule_sets=RULE_SETS) -> dict:
  dirs = ab.latest_transform_dirs(work, pipeline_name)
  tft_output = tft.TFTransformOutput(dirs["graph"])
  examples = read_examples(latest_examples_dir(work, pipeline_name), limit=10**9)
  truth = read_ground_truth(os.path.join(work, "logs"))
  out = {"work": os.path.abspath(work), "seeds": seeds, "n_eval": len(examples),
         "oracle_auc": head_aucs(examples, {}, truth), "rule_sets": {}}
  total, done = len(rule_sets) * len(seeds), 0
  for rules in rule_sets:
    cfg = trainer.TrainConfig.from_custom_config(dict(rules.overrides, model_name=rules.model))
    runs = []
    for seed in seeds:
      done += 1
      model, history, seconds, _ = ab.train_variant(rules.model, tft_output, dirs["examples"],
                                                    seed, cfg)
      module = trainer.ServingModule(model, tft_output)  # held: serve keeps only a weak ref
      scores = qr.score_with(module.serve, examples)
      runs.append(head_aucs(examples, scores))
      print(f"[{done}/{total}] {rules.name:<14} seed {seed}: " + "  ".join(
          f"{h} {v:.4f}" for h, v in runs[-1].items())
          + f"  ({len(history['loss'])} epochs, {seconds:.0f} s)", flush=True)
    out["rule_sets"][rules.name] = {
        "model": rules.model, "overrides": rules.overrides, "rules": dataclasses.asdict(
            cfg.moc_rules()) if rules.model == "stcrank" else "raw labels",
        "runs": runs, "auc": {h: {"mean": float(np.mean([r[h] for r in runs])),
                                  "sd": float(np.std([r[h] for r in runs], ddof=1))
                                  if len(runs) > 1 else 0.0} for h in HEAD_LABELS}}
  return out


def plot(result: dict, path: str) -> str:
  plt = pyplot()
  fig, axes = plt.subplots(1, 2, figsize=(11, 4.5))
  for ax, head in zip(axes, (F.HEAD_BUY, F.HEAD_EFFECTIVE_VIEW)):
    for name, res in result["rule_sets"].items():
      x, y = res["auc"][F.HEAD_SWIPE_DOWN], res["auc"][head]
      ax.errorbar(x["mean"], y["mean"], xerr=x["sd"], yerr=y["sd"], marker="o", capsize=3,
                  label=name)
    ax.set_xlabel(f"swipe-down AUC (oracle {result['oracle_auc'][F.HEAD_SWIPE_DOWN]:.3f})")
    ax.set_ylabel(f"{head} AUC (oracle {result['oracle_auc'][head]:.3f})")
    ax.grid(alpha=0.3)
  axes[0].legend(fontsize=8)
  fig.suptitle(f"STCRank label rules, eval split, mean ± sd over seeds {result['seeds']}")
  return save_figure(fig, path)


def main(argv):
  del argv
  t0 = time.time()
  by_name = {r.name: r for r in RULE_SETS}
  unknown = sorted(set(FLAGS.rule_sets) - set(by_name))
  if unknown:
    raise ValueError(f"--rule_sets names {unknown}; known: {sorted(by_name)}")
  result = run(FLAGS.work, FLAGS.pipeline_name, [int(s) for s in FLAGS.seeds],
               [by_name[n] for n in FLAGS.rule_sets])
  heads = list(HEAD_LABELS)
  print(f"{'rules':<14}" + "".join(f"{h:>22}" for h in heads))
  for name, res in result["rule_sets"].items():
    print(f"{name:<14}" + "".join(
        f"{res['auc'][h]['mean']:>14.4f} ± {res['auc'][h]['sd']:.4f}" for h in heads))
  print(f"{'oracle':<14}" + "".join(f"{result['oracle_auc'][h]:>22.4f}" for h in heads))
  path, png = write_json_and_plot(result, FLAGS.out_dir, FLAGS.name, plot)
  print(f"wrote {path} and {png} in {time.time() - t0:.0f} s")


if __name__ == "__main__":
  define_run_flags("moc_pareto")
  flags.DEFINE_list("seeds", ["1", "2", "3"], "Training seeds.")
  flags.DEFINE_list("rule_sets", [r.name for r in RULE_SETS], "Label rule sets to train.")
  app.run(main)
