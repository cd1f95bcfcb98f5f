"""How much of each mechanism's reachable bound the logs let any model earn.

Issue 9's share bar divides a pair's AUC lift (e.g. ``lifelong`` over ``lifelong_mean_pool``) by
the mechanism's bound: the reachable AUC minus the reachable AUC without the signal. Both of those
ceilings know every *other* term of the simulator exactly (the room's hot window and traits, the
appetite or the preference, fatigue), and an AUC lift is not additive: the same signal is worth
less on top of noisier other terms. This bench measures what the signal is worth on top of the
other terms as the logs show them. It takes the hand-feature regression (``bench.hand_features``),
removes the signal's own feature group and adds the signal *exactly*: per head, the reachable
ceiling's logit minus the ceiling-without-the-signal's logit (one column per head; for the view
head that is the signal's whole term of the simulator's logit).

Per mechanism (``bench.ablation_feedback.MECHANISMS``), head and activity slice:

- ``bound``: reachable AUC minus reachable-without AUC (as the ablation reports it);
- ``hand_without``: the regression without the signal's features;
- ``exact``: ``hand_without`` plus the exact term; ``exact_share`` = (exact − hand_without) / bound,
  the share a model earns that extracts the signal perfectly over a reference that has none of it;
- ``ceiling``: every hand feature plus the exact term;
- with ``--ablation`` (an ``ablation_feedback`` JSON of the same data): the pair's measured share
  and ``ceiling_share`` = (ceiling − the pair's reference AUC) / bound, the most the model could
  earn over *that* reference (which may carry part of the signal, e.g. mean-pooled purchases).

With ``--export_base`` (the ``ablation_feedback --export_base`` directory of the same run), each
pair's trained models are scored on the eval split and stacked with the exact term: per seed, an
out-of-fold logistic regression (folds grouped by user) on the model's logit and the exact terms.

- ``reference_stacked_share``: (reference + exact − reference) / bound, mean ± sd over seeds: the
  pair's lift if the model were its reference plus a perfect extraction of the signal;
- ``model_stacked_gain``: (model + exact) − model: what the model leaves of the exact signal.

The exact term is the reachable predictor's plug-in, not the posterior predictive, so the figures
are estimates, not strict bounds; a model can exceed them where the logs reveal more than the
ceiling uses.

    python -m bench.ablation_feedback --work /work/w9 --seeds 1,2,3 \
        --variants feedback_no_realtime,feedback,lifelong_mean_pool,lifelong \
        --export_base /tmp/exp7 --name ablation_caps_seed7
    python -m bench.mechanism_caps --work /work/w9 --ablation bench/results/ablation_caps_seed7.json \
        --export_base /tmp/exp7 --name mechanism_caps_seed7
"""

from __future__ import annotations

import json
import os
from typing import Callable, Dict, List, Sequence

import numpy as np
from absl import app, flags, logging

from bench import hand_features as hf
from bench import quality_report as qr
from bench.ablation_feedback import BOUND_SHARE_BAR, MECHANISMS, export_dir
from bench.common import define_run_flags, grouped_bars, pyplot, save_figure, write_json
from bench.metrics import auc
from data_gen import reachable as rc
from data_gen.simulator import read_ground_truth
from models import features as F
from serving.examples_io import latest_examples_dir, read_examples

# The hand-feature groups (``hand_features.FEATURE_GROUPS``) that carry each signal, by the
# reachable variant that leaves the signal out.
SIGNAL_GROUPS: Dict[str, Sequence[str]] = {
    rc.NO_RT_SEQUENCES: ("realtime_overlaps",),
    rc.NO_APPETITE: ("realtime_overlaps", "trigger"),
    rc.NO_LIFELONG: ("lifelong",),
}


def exact_terms(truth: Dict[int, dict], ids: np.ndarray, without: str) -> np.ndarray:
  """[N, heads]: per impression and head, logit(p reachable) − logit(p reachable ``without``)."""
  cols = [hf.logit(qr.truth_column(truth, ids, rc.field_name(field, rc.REACHABLE)))
          - hf.logit(qr.truth_column(truth, ids, rc.field_name(field, without)))
          for field in rc.HEAD_FIELDS]
  return np.stack(cols, axis=1)


def slice_masks(test: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
  """{slice: rows} for :data:`bench.quality_report.SLICES` (all, then each activity level)."""
  level = np.array([v.decode() if isinstance(v, bytes) else str(v)
                    for v in test[F.ACTIVITY_LEVEL][:, 0]])
  return {sl: np.ones(len(level), bool) if sl == "all" else level == sl for sl in qr.SLICES}


def slice_aucs(test: Dict[str, np.ndarray], scores: Dict[str, np.ndarray],
               masks: Dict[str, np.ndarray]) -> Dict[str, Dict[str, float]]:
  """{head: {slice: AUC}}, buy on the rows that display products."""
  out = {}
  for head, label in F.HEADS.items():
    rows = hf.head_rows(test, head)
    out[head] = {sl: auc(test[label][rows & m, 0], scores[head][rows & m])
                 for sl, m in masks.items()}
  return out


def share(gain: float, bound: float) -> float:
  """``gain / bound``; NaN when the bound is not positive (no share to earn)."""
  return float(gain / bound) if bound > 0 else float("nan")


def mechanism_caps(train: Dict[str, np.ndarray], test: Dict[str, np.ndarray],
                   design: hf.Design, truth: Dict[int, dict], full: Dict[str, Dict[str, float]],
                   ablation: dict | None = None, mechanisms=MECHANISMS) -> Dict[str, dict]:
  """Per mechanism, head and slice: the bound, the regression without the signal, with the exact
  signal instead, with every feature and the exact signal, and the shares (module docstring).

  Args:
    design: the hand features of both splits.
    full: :func:`slice_aucs` of the regression on every hand feature.
    ablation: an ``ablation_feedback`` result on the same data, for the measured shares and the
      pairs' reference AUCs; None leaves those out.
  """
  masks = slice_masks(test)
  ids_train, ids_test = train[F.IMPRESSION_ID][:, 0], test[F.IMPRESSION_ID][:, 0]

  def fitted(keep: np.ndarray, extra_train=None, extra_test=None) -> Dict[str, Dict[str, float]]:
    x_train, x_test = design.x_train[:, keep], design.x_test[:, keep]
    if extra_train is not None:
      x_train, x_test = np.hstack([x_train, extra_train]), np.hstack([x_test, extra_test])
    return slice_aucs(test, hf.regression_scores(x_train, x_test, train, test), masks)

  out = {}
  for mech in mechanisms:
    groups = SIGNAL_GROUPS[mech.without]
    keep = np.array([not any(hf.FEATURE_GROUPS[g](n) for g in groups) for n in design.names])
    term_train = exact_terms(truth, ids_train, mech.without)
    term_test = exact_terms(truth, ids_test, mech.without)
    without = fitted(keep)
    exact = fitted(keep, term_train, term_test)
    ceiling = fitted(np.ones(len(design.names), bool), term_train, term_test)
    heads = {}
    for head, label in F.HEADS.items():
      field = qr.ORACLE_FIELD[head]
      heads[head] = {}
      for sl, m in masks.items():
        rows = hf.head_rows(test, head) & m
        ids, y = ids_test[rows], test[label][rows, 0]
        bound = (auc(y, qr.truth_column(truth, ids, rc.field_name(field, rc.REACHABLE)))
                 - auc(y, qr.truth_column(truth, ids, rc.field_name(field, mech.without))))
        row = {"n": int(rows.sum()), "bound": float(bound), "hand": full[head][sl],
               "hand_without": without[head][sl], "exact": exact[head][sl],
               "ceiling": ceiling[head][sl]}
        row["hand_share"] = share(row["hand"] - row["hand_without"], bound)
        row["exact_share"] = share(row["exact"] - row["hand_without"], bound)
        if ablation is not None and mech.name in ablation.get("mechanisms", {}):
          measured = ablation["mechanisms"][mech.name]["heads"][head][sl]
          reference = ablation["variants"][mech.reference]["summary"][head][sl]["auc_mean"]
          row.update(measured_share=measured["share_of_bound"], reference_auc=reference,
                     ceiling_share=share(row["ceiling"] - reference, bound))
        heads[head][sl] = row
    out[mech.name] = {"model": mech.model, "reference": mech.reference, "without": mech.without,
                      "signal_groups": list(groups), "heads": heads}
    logging.info("%s: exact share (all users) %s", mech.name, " / ".join(
        f"{heads[h]['all']['exact_share']:.0%}" for h in F.HEADS))
  return out


def stacked_aucs(test: Dict[str, np.ndarray], scores: Dict[str, np.ndarray], terms: np.ndarray,
                 masks: Dict[str, np.ndarray], folds: int = 5) -> Dict[str, Dict[str, float]]:
  """{head: {slice: AUC}} of the model's logit stacked with ``terms`` ([N, k]): out-of-fold
  logistic regressions on the head's rows, folds grouped by user, scored per slice."""
  users = test[F.USER_ID][:, 0]
  out = {}
  for head, label in F.HEADS.items():
    rows = hf.head_rows(test, head)
    y = test[label][rows, 0]
    design = np.hstack([hf.logit(scores[head][rows])[:, None], terms[rows]])
    stacked = np.full(len(rows), np.nan)
    stacked[rows] = hf.out_of_fold_scores(design, y, users[rows], folds)
    out[head] = {sl: auc(test[label][rows & m, 0], stacked[rows & m]) for sl, m in masks.items()}
  return out


def stacked_caps(caps: Dict[str, dict], test: Dict[str, np.ndarray], truth: Dict[int, dict],
                 ablation: dict, score_fn: Callable[[str, str], Dict[str, np.ndarray]],
                 mechanisms=MECHANISMS) -> None:
  """Adds to ``caps`` (in place) each pair's models stacked with the exact term, per seed.

  Args:
    ablation: the ``ablation_feedback`` result whose models ``score_fn`` scores (its seeds).
    score_fn: (variant, seed) -> {head: [N] scores of the test rows, in their order}.
  """
  masks = slice_masks(test)
  ids = test[F.IMPRESSION_ID][:, 0]
  for mech in mechanisms:
    if mech.name not in caps or mech.name not in ablation.get("mechanisms", {}):
      continue
    terms = exact_terms(truth, ids, mech.without)
    seeds = ablation["mechanisms"][mech.name]["seeds"]
    per_seed = {}  # role -> [(own AUCs, stacked AUCs)] over seeds
    for role, variant in (("reference", mech.reference), ("model", mech.model)):
      per_seed[role] = []
      for seed in seeds:
        scores = score_fn(variant, seed)
        per_seed[role].append((slice_aucs(test, scores, masks),
                               stacked_aucs(test, scores, terms, masks)))
      logging.info("%s: %s stacked with the exact term, %d seeds", mech.name, variant, len(seeds))
    for head in F.HEADS:
      for sl, row in caps[mech.name]["heads"][head].items():
        ref = np.array([st[head][sl] - own[head][sl] for own, st in per_seed["reference"]])
        mod = np.array([st[head][sl] - own[head][sl] for own, st in per_seed["model"]])
        shares = np.array([share(g, row["bound"]) for g in ref])
        sd = lambda v: float(v.std(ddof=1)) if len(v) > 1 else 0.0  # noqa: E731
        row.update(reference_stacked_share=float(shares.mean()),
                   reference_stacked_share_sd=sd(shares),
                   model_stacked_gain=float(mod.mean()), model_stacked_gain_sd=sd(mod))


def table_lines(caps: Dict[str, dict]) -> List[str]:
  """One printed line per mechanism, head and slice."""
  lines = [f"{'mechanism':<26}{'head':<16}{'slice':<6}{'bound':>8}{'hand':>7}{'exact':>7}"
           f"{'measured':>10}{'ceiling':>9}{'ref+exact':>11}{'model+exact':>13}   (shares of "
           "the bound; ceiling: hand + exact over the reference; model+exact: AUC gain)"]
  pct = lambda v: "    -" if v is None or np.isnan(v) else f"{v:6.0%}"  # noqa: E731
  for name, mech in caps.items():
    for head, slices in mech["heads"].items():
      for sl, row in slices.items():
        lines.append(f"{name:<26}{head:<16}{sl:<6}{row['bound']:>8.4f}{pct(row['hand_share']):>7}"
                     f"{pct(row['exact_share']):>7}{pct(row.get('measured_share')):>10}"
                     f"{pct(row.get('ceiling_share')):>9}"
                     f"{pct(row.get('reference_stacked_share')):>11}"
                     + (f"{row['model_stacked_gain']:>+13.4f}" if "model_stacked_gain" in row
                        else f"{'-':>13}"))
  return lines


def plot(caps: Dict[str, dict], path: str) -> None:
  """Per mechanism, per head (all users): the shares side by side, and the bar at 50%."""
  plt = pyplot()
  fig, axes = plt.subplots(1, len(caps), figsize=(5.5 * len(caps), 4.2), squeeze=False)
  kinds = (("hand_share", "hand features over none"), ("exact_share", "exact signal over none"),
           ("measured_share", "model over its reference (measured)"),
           ("ceiling_share", "hand + exact over the reference"),
           ("reference_stacked_share", "reference + exact over the reference"))
  heads = list(F.HEADS)
  for ax, (name, mech) in zip(axes[0], caps.items()):
    grouped_bars(ax, heads, {label: [mech["heads"][h]["all"].get(key, np.nan) for h in heads]
                             for key, label in kinds})
    ax.axhline(BOUND_SHARE_BAR, color="black", lw=0.8, ls="--")
    ax.set_title(f"{name} (vs {mech['without']})", fontsize=9)
    ax.set_ylabel("share of the reachable bound")
    ax.grid(axis="y", alpha=0.3)
  axes[0][0].legend(fontsize=7)
  save_figure(fig, path)


def main(argv):
  del argv
  fl = flags.FLAGS
  train = hf.read_columns(latest_examples_dir(fl.work, fl.pipeline_name, "train"))
  test = hf.read_columns(latest_examples_dir(fl.work, fl.pipeline_name, "eval"))
  print(f"examples: train {len(train[F.IMPRESSION_ID])}, test {len(test[F.IMPRESSION_ID])}")
  truth = read_ground_truth(os.path.join(fl.work, "logs"))
  design = hf.Design.build(train, test)
  full = slice_aucs(test, hf.regression_scores(design.x_train, design.x_test, train, test),
                    slice_masks(test))
  print("hand regression, all users: " + " / ".join(f"{full[h]['all']:.4f}" for h in F.HEADS))
  ablation = None
  if fl.ablation:
    with open(fl.ablation) as f:
      ablation = json.load(f)
  caps = mechanism_caps(train, test, design, truth, full, ablation)
  if fl.export_base:
    if ablation is None:
      raise ValueError("--export_base needs --ablation (the run whose models it holds)")
    examples = read_examples(latest_examples_dir(fl.work, fl.pipeline_name, "eval"),
                             limit=10**9)
    if not np.array_equal(qr.int_feature(examples, F.IMPRESSION_ID), test[F.IMPRESSION_ID][:, 0]):
      raise ValueError(f"{fl.work}: the eval examples were read in two orders")

    scored: Dict[tuple, Dict[str, np.ndarray]] = {}  # two mechanisms can share a pair

    def score(variant: str, seed: str) -> Dict[str, np.ndarray]:
      if (variant, seed) not in scored:
        path = os.path.join(export_dir(fl.export_base, variant, int(seed)), "1")
        scored[variant, seed] = qr.score_examples(path, examples)
      return scored[variant, seed]

    stacked_caps(caps, test, truth, ablation, score)
  print("\n".join(table_lines(caps)))
  result = {"work": fl.work, "ablation": fl.ablation, "mechanisms": caps}
  path = write_json(result, fl.out_dir, fl.name)
  plot(caps, os.path.join(fl.out_dir, f"{fl.name}.png"))
  print(f"wrote {path} and .png")


if __name__ == "__main__":
  define_run_flags("mechanism_caps")
  flags.DEFINE_string("ablation", None,
                      "An ablation_feedback JSON of the same data: measured shares, references.")
  flags.DEFINE_string("export_base", None,
                      "That ablation's --export_base: stack its pairs' models with the exact term.")
  app.run(main)
