"""Extraction relevance of a trained lifelong model (our rtpScore, seed 001).

For each way of extracting purchases from the lifelong sequence — each channel, the merged
multi-channel sequence, and the recency-only baselines — the share of extracted purchases whose
category is one of the target room's, over the eval split, overall and by user activity level.
``bench.ablation_feedback`` calls it for every trained variant that has the extraction layer.
"""

from __future__ import annotations

from typing import Dict, List

import numpy as np
import tensorflow as tf

from bench.common import grouped_bars
from models import features as F
from models import lifelong

xf = F.transformed_name
SLICES = ("all",) + F.ACTIVITY_LEVELS
WAYS = lifelong.CHANNELS + (lifelong.MULTI_CHANNEL, lifelong.MOST_RECENT_K,
                            lifelong.MOST_RECENT_SAME_BUDGET)


def has_extraction(network: tf.keras.Model) -> bool:
  return any(layer.name == lifelong.EXTRACTION_LAYER for layer in network.layers)


def relevance_report(network: tf.keras.Model, dataset: tf.data.Dataset) -> Dict[str, dict]:
  """{slice: {way: {"relevance": share, "items_per_example": mean extracted}}} over ``dataset``.

  Args:
    network: a lifelong network (with the extraction layer).
    dataset: (features, labels, weights) batches of transformed examples.
  """
  probe = tf.keras.Model(network.inputs, network.get_layer(lifelong.EXTRACTION_LAYER).output)
  sums = {sl: {way: np.zeros(2) for way in WAYS} for sl in SLICES}
  examples = dict.fromkeys(SLICES, 0)
  for features, _, _ in dataset:
    indices, valid = probe(features, training=False)
    counts = lifelong.relevance_by_extraction(
        indices, valid, features[xf(F.seq_key(F.LL, "category_ids"))],
        features[xf(F.HOST_CATEGORY_IDS)], features[xf(F.len_key(F.LL))])
    level = np.reshape(features[xf(F.ACTIVITY_LEVEL)].numpy(), [-1])
    for sl in SLICES:
      m = np.ones(len(level), bool) if sl == "all" else level == F.ACTIVITY_LEVELS.index(sl)
      examples[sl] += int(m.sum())
      for way, (relevant, extracted) in counts.items():
        sums[sl][way] += [relevant.numpy()[m].sum(), extracted.numpy()[m].sum()]
  return {sl: {way: {"relevance": float(r / n) if n else float("nan"),
                     "items_per_example": float(n / max(examples[sl], 1))}
               for way, (r, n) in sums[sl].items()} for sl in SLICES}


def summarize(reports: List[Dict[str, dict]]) -> Dict[str, dict]:
  """Mean and sd over training seeds of each slice x way relevance."""
  out = {}
  for sl in SLICES:
    out[sl] = {}
    for way in WAYS:
      vals = np.array([r[sl][way]["relevance"] for r in reports])
      out[sl][way] = {"relevance_mean": float(vals.mean()),
                      "relevance_sd": float(vals.std(ddof=1)) if len(vals) > 1 else 0.0,
                      "items_per_example": float(np.mean([r[sl][way]["items_per_example"]
                                                          for r in reports]))}
  return out


def format_table(variant: str, summary: Dict[str, dict]) -> str:
  lines = [f"Extraction relevance of {variant} (share of extracted purchases in the room's "
           "categories; mean ± sd over seeds; items per example)",
           f"{'way':<26}" + "".join(f"{sl:>22}" for sl in SLICES)]
  for way in WAYS:
    lines.append(f"{way:<26}" + "".join(
        f"{summary[sl][way]['relevance_mean']:>9.3f}±{summary[sl][way]['relevance_sd']:.3f}"
        f" ({summary[sl][way]['items_per_example']:>5.1f})" for sl in SLICES))
  return "\n".join(lines)


def plot(variant: str, summary: Dict[str, dict], path: str) -> None:
  import matplotlib  # pylint: disable=import-outside-toplevel
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel
  fig, ax = plt.subplots(figsize=(11, 4.2))
  grouped_bars(ax, WAYS, {sl: [summary[sl][w]["relevance_mean"] for w in WAYS] for sl in SLICES},
               errors={sl: [summary[sl][w]["relevance_sd"] for w in WAYS] for sl in SLICES})
  plt.setp(ax.get_xticklabels(), rotation=20, ha="right")
  ax.set_ylabel("share of extracted purchases\nin the target room's categories")
  ax.set_title(f"Lifelong extraction relevance ({variant})")
  ax.legend(fontsize=8)
  ax.grid(axis="y", alpha=0.3)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)
