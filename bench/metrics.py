"""Ranking metrics the reports share: AUC (scikit-learn's), per-user GAUC, lift captured.

Kept free of TensorFlow so the log-only benchmarks (``bench.reachable_bounds``) import it cheaply.
"""

from __future__ import annotations

import numpy as np
from sklearn.metrics import roc_auc_score


def auc(labels: np.ndarray, scores: np.ndarray) -> float:
  """Area under the ROC curve (ties get half credit); NaN when only one class is present."""
  labels = np.asarray(labels, bool)
  if labels.all() or not labels.any():  # roc_auc_score raises on one class; a slice may have one
    return float("nan")
  return float(roc_auc_score(labels, np.asarray(scores, np.float64)))


def gauc(labels: np.ndarray, scores: np.ndarray, groups: np.ndarray) -> float:
  """Impression-weighted mean of per-group AUC over groups that have both classes."""
  labels = np.asarray(labels, bool)
  total, weight = 0.0, 0
  for g in np.unique(groups):
    m = groups == g
    a = auc(labels[m], scores[m])
    if not np.isnan(a):
      total += a * m.sum()
      weight += m.sum()
  return total / weight if weight else float("nan")


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
