"""Ranking metrics the reports share: AUC (scikit-learn's), per-user GAUC, lift captured.

GAUC needs an AUC per user; one scikit-learn call per user (~20k) was 40 of the quality report's
60 seconds, almost all of it argument checking, so ``grouped_auc`` computes every group's AUC at
once from ranks (the Mann-Whitney statistic, which equals the ROC area, ties half credit); a test
holds it equal to scikit-learn's per group. Kept free of TensorFlow so the log-only benchmarks
(``bench.reachable_bounds``) import it cheaply.
"""

from __future__ import annotations

from typing import Tuple

import numpy as np
from sklearn.metrics import roc_auc_score


def grouped_auc(labels: np.ndarray, scores: np.ndarray,
                groups: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
  """AUC of each group (ties get half credit) and its size; NaN for a group with one class.

  Args:
    labels: [N] 0/1 or bool.
    scores: [N] finite scores.
    groups: [N] group keys (any sortable type).

  Returns:
    (auc per group, examples per group), both [G], groups in sorted key order.

  Raises:
    ValueError: scores that are NaN or infinite (they have no rank).
  """
  labels = np.asarray(labels, bool)
  scores = np.asarray(scores, np.float64)
  bad = ~np.isfinite(scores)
  if bad.any():
    raise ValueError(f"scores must be finite; {int(bad.sum())} of {len(scores)} are not "
                     f"(first: {scores[bad][0]})")
  codes = np.unique(np.asarray(groups), return_inverse=True)[1].reshape(-1)
  order = np.lexsort((scores, codes))
  g, s, y = codes[order], scores[order], labels[order]
  n = len(y)
  pos = np.arange(n)
  group_first = np.r_[True, g[1:] != g[:-1]]
  run_first = group_first | np.r_[True, s[1:] != s[:-1]]  # runs of equal (group, score)
  run_start = pos[run_first]
  run_len = np.diff(np.r_[run_start, n])
  run_of = np.cumsum(run_first) - 1
  group_start = np.maximum.accumulate(np.where(group_first, pos, 0))
  rank = run_start[run_of] + (run_len[run_of] - 1) / 2.0 - group_start + 1  # 1-based, tie-averaged
  size = np.bincount(g)
  n_pos = np.bincount(g, weights=y.astype(np.float64), minlength=len(size))
  n_neg = size - n_pos
  rank_sum = np.bincount(g, weights=rank * y, minlength=len(size))
  with np.errstate(invalid="ignore", divide="ignore"):
    aucs = (rank_sum - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg)
  aucs[(n_pos == 0) | (n_neg == 0)] = np.nan
  return aucs, size


def auc(labels: np.ndarray, scores: np.ndarray) -> float:
  """Area under the ROC curve (ties get half credit); NaN when only one class is present."""
  labels = np.asarray(labels, bool)
  if labels.all() or not labels.any():  # roc_auc_score raises on one class; a slice may have one
    return float("nan")
  return float(roc_auc_score(labels, np.asarray(scores, np.float64)))


def gauc(labels: np.ndarray, scores: np.ndarray, groups: np.ndarray) -> float:
  """Impression-weighted mean of per-group AUC over groups that have both classes."""
  if len(labels) == 0:
    return float("nan")
  aucs, size = grouped_auc(labels, scores, groups)
  ok = ~np.isnan(aucs)
  return float((aucs[ok] * size[ok]).sum() / size[ok].sum()) if ok.any() else float("nan")


def lift_captured(model_auc: float, reachable_auc: float, neither_auc: float) -> float:
  """Share of the reachable lift over the no-lifelong, no-appetite bound that the model captures.

  ``(model - neither) / (reachable - neither)``: 0 means the model ranks no better than the truth
  does with the user's traits at their prior means and no appetite (room-side signals only), 1 that
  it uses the lifelong history and the appetite as well as the plug-in estimate does (it can go
  above 1: the logs hold more about a user than the estimate uses). NaN when the reachable bound
  adds nothing (or is undefined).
  """
  denom = reachable_auc - neither_auc
  if not np.isfinite(denom) or denom <= 0 or not np.isfinite(model_auc):
    return float("nan")
  return float((model_auc - neither_auc) / denom)


def paired_auc_difference(labels: np.ndarray, scores_a: np.ndarray, scores_b: np.ndarray,
                          groups: np.ndarray, resamples: int = 500, seed: int = 0) -> dict:
  """AUC(a) − AUC(b) on the same rows, with a bootstrap over groups (e.g. users).

  Each resample draws the groups with replacement and weights every row by its group's draws, so
  both scorers are compared on the same resampled rows (paired) and a user's correlated rows stay
  together. This is the evaluation sample's noise, which training seeds do not show.

  Returns:
    {"difference": on all rows, "lo" / "hi": the 2.5 / 97.5 percentiles over resamples,
     "share_above_zero": the share of resamples where a ranks better, "resamples"}.
  """
  if resamples < 1:
    raise ValueError(f"resamples must be >= 1, got {resamples}")
  labels = np.asarray(labels, bool)
  codes = np.unique(np.asarray(groups), return_inverse=True)[1].reshape(-1)
  n_groups = int(codes.max()) + 1
  rng = np.random.default_rng(seed)
  diffs = np.empty(resamples)
  for r in range(resamples):
    weight = np.bincount(rng.integers(0, n_groups, n_groups), minlength=n_groups)[codes]
    rows = weight > 0
    y, w = labels[rows], weight[rows]
    if y.all() or not y.any():  # a resample with one class has no AUC
      diffs[r] = np.nan
      continue
    diffs[r] = (roc_auc_score(y, scores_a[rows], sample_weight=w)
                - roc_auc_score(y, scores_b[rows], sample_weight=w))
  lo, hi = np.nanpercentile(diffs, [2.5, 97.5])
  return {"difference": auc(labels, scores_a) - auc(labels, scores_b), "lo": float(lo),
          "hi": float(hi), "share_above_zero": float(np.nanmean(diffs > 0)),
          "resamples": resamples}
