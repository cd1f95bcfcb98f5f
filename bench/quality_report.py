"""Quality report: each head's test AUC next to the reachable and oracle AUCs of the ground truth.

Scores the eval split with the pushed SavedModel (through its ``serving_default`` signature), joins
the simulator's true probabilities by impression id, and reports per head and per user-activity
slice: model AUC, reachable AUC (the truth with the hidden user traits replaced by what the
lifelong purchases reveal, ``data_gen/reachable.py``), oracle AUC (the Bayes ceiling), the three
ablated reachable AUCs (no appetite, no lifelong preference, neither), the lift captured
(model - neither) / (reachable - neither), the gap to the oracle, GAUC by user and calibration
(mean score / label rate). The buy head is scored only where the room displays products (its mask).

    python -m bench.quality_report --work work --pipeline_name livestream-ranking
"""

from __future__ import annotations

import glob
import os
from typing import Dict, List

import numpy as np
import tensorflow as tf
from absl import app, flags

from bench.common import write_json
from bench.metrics import auc, gauc, lift_captured
from data_gen import reachable as rc
from data_gen.simulator import read_ground_truth
from models import features as F
from models.signatures import SERVING_SIGNATURE
from pipeline.configs import PIPELINE_NAME
from serving.client import without_labels
from serving.examples_io import latest_examples_dir, read_examples

ORACLE_FIELD = {F.HEAD_EFFECTIVE_VIEW: "p_effective_view", F.HEAD_INTERACT: "p_interact",
                F.HEAD_BUY: "p_buy"}
SLICES = ("all",) + F.ACTIVITY_LEVELS


# Ceilings reported next to the model, as (report key prefix, reachable variant or None: oracle).
CEILINGS = (("oracle", None),) + tuple((v, v) for v in rc.VARIANTS)


def truth_column(truth: Dict[int, dict], ids: np.ndarray, field: str) -> np.ndarray | None:
  """``truth[i][field]`` for each impression id; None when the logs predate the field."""
  if ids.size and field not in truth[int(ids[0])]:
    return None
  return np.array([truth[int(i)][field] for i in ids], np.float64)


def _run_batches(serve_fn, requests: List[bytes], batch_size: int) -> Dict[str, np.ndarray]:
  out: Dict[str, list] = {}
  for i in range(0, len(requests), batch_size):
    res = serve_fn(examples=tf.constant(requests[i:i + batch_size]))
    for name, value in res.items():  # every served head (a swipe-down head too)
      out.setdefault(name, []).append(value.numpy())
  return {name: np.concatenate(v) for name, v in out.items()}


# Examples scored both with and without their labels, to show the model does not read them.
LABEL_CHECK_EXAMPLES = 512


def score_with(serve_fn, examples: List[tf.train.Example],
               batch_size: int = 512) -> Dict[str, np.ndarray]:
  """Runs a serving function (serialized examples -> {head: [B]}) over examples, in batches.

  The examples go in as stored, labels included (copying 25k examples without them was a fifth
  of the report's time); the first ``LABEL_CHECK_EXAMPLES`` are also scored without labels, and
  any difference is an error: a model that reads a label would be scored on it.
  """
  scores = _run_batches(serve_fn, [ex.SerializeToString() for ex in examples], batch_size)
  head = examples[:LABEL_CHECK_EXAMPLES]
  unlabeled = _run_batches(serve_fn, [without_labels(ex).SerializeToString() for ex in head],
                           batch_size)
  for h in scores:
    if not np.allclose(unlabeled[h], scores[h][:len(head)], rtol=1e-5, atol=1e-6):
      raise ValueError(f"head {h!r} scores the same examples differently with and without "
                       f"their labels: the model reads a label")
  return scores


def score_examples(model_dir: str, examples: List[tf.train.Example]) -> Dict[str, np.ndarray]:
  """Scores examples with a SavedModel's serving_default signature."""
  return score_with(tf.saved_model.load(model_dir).signatures[SERVING_SIGNATURE], examples)


def int_feature(examples: List[tf.train.Example], key: str) -> np.ndarray:
  """[N] the first int64 value of feature ``key`` in each example."""
  return np.array([ex.features.feature[key].int64_list.value[0] for ex in examples])


def build_report(examples, scores: Dict[str, np.ndarray], truth: Dict[int, dict]) -> dict:
  """Per head x slice metrics from examples, model scores and ground truth.

  Ground truth written before the reachable ceilings existed gives NaN for those keys.
  """
  get_i = lambda k: int_feature(examples, k)  # noqa: E731
  ids, users = get_i(F.IMPRESSION_ID), get_i(F.USER_ID)
  level = np.array([ex.features.feature[F.ACTIVITY_LEVEL].bytes_list.value[0].decode()
                    for ex in examples])
  buy_mask = get_i(F.DISPLAY_LEN) > 0
  report = {"n_examples": len(examples), "heads": {}}
  for head, label_key in F.HEADS.items():
    y = get_i(label_key)
    field = ORACLE_FIELD[head]
    ceilings = {name: truth_column(truth, ids, field if v is None else rc.field_name(field, v))
                for name, v in CEILINGS}
    oracle = ceilings["oracle"]
    report["heads"][head] = {}
    for sl in SLICES:
      m = np.ones(len(y), bool) if sl == "all" else level == sl
      if head == F.HEAD_BUY:
        m &= buy_mask
      row = {"n": int(m.sum()), "label_rate": float(y[m].mean()) if m.any() else float("nan"),
             "auc": auc(y[m], scores[head][m])}
      for name, col in ceilings.items():
        row[f"{name}_auc"] = auc(y[m], col[m]) if col is not None else float("nan")
      row.update(
          gap_to_oracle=row["oracle_auc"] - row["auc"],
          lift_captured=lift_captured(row["auc"], row[f"{rc.REACHABLE}_auc"],
                                      row[f"{rc.NEITHER}_auc"]),
          gauc=gauc(y[m], scores[head][m], users[m]),
          oracle_gauc=gauc(y[m], oracle[m], users[m]),
          calibration=(float(scores[head][m].mean() / max(y[m].mean(), 1e-9))
                       if m.any() else float("nan")))
      report["heads"][head][sl] = row
  return report


def plot_report(report: dict, path: str, title: str = "") -> None:
  import matplotlib  # pylint: disable=import-outside-toplevel
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel
  heads = list(report["heads"])
  fig, axes = plt.subplots(1, len(heads), figsize=(4.2 * len(heads), 3.6), sharey=True)
  for ax, head in zip(np.atleast_1d(axes), heads):
    rows = report["heads"][head]
    x = np.arange(len(SLICES))
    ax.bar(x - 0.27, [rows[s]["auc"] for s in SLICES], 0.27, label="model")
    ax.bar(x, [rows[s][f"{rc.REACHABLE}_auc"] for s in SLICES], 0.27,
           label="reachable (lifelong estimate)")
    ax.bar(x + 0.27, [rows[s]["oracle_auc"] for s in SLICES], 0.27, label="oracle (truth)")
    ax.set_xticks(x, [f"{s}\nn={rows[s]['n']}" for s in SLICES], fontsize=8)
    ax.set_title(head)
    ax.set_ylim(0.5, 1.0)
    ax.grid(axis="y", alpha=0.3)
  np.atleast_1d(axes)[0].set_ylabel("test AUC")
  np.atleast_1d(axes)[0].legend(loc="upper left", fontsize=8)
  fig.suptitle(title or "test AUC vs reachable and oracle AUC by user activity")
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)


def pushed_model_dir(work: str, pipeline_name: str) -> str:
  versions = glob.glob(os.path.join(work, "serving", pipeline_name, "*", "saved_model.pb"))
  if not versions:
    raise FileNotFoundError(f"no pushed model under {work}/serving/{pipeline_name}: was the "
                            "model blessed?")
  return os.path.dirname(max(versions, key=lambda p: int(p.split(os.sep)[-2])))


def write_report(work: str, pipeline_name: str, out_dir: str | None = None,
                 model_dir: str | None = None) -> dict:
  model_dir = model_dir or pushed_model_dir(work, pipeline_name)
  examples = read_examples(latest_examples_dir(work, pipeline_name), limit=10**9)
  truth = read_ground_truth(os.path.join(work, "logs"))
  report = build_report(examples, score_examples(model_dir, examples), truth)
  report["model_dir"] = os.path.abspath(model_dir)
  out_dir = out_dir or os.path.join(work, "reports")
  write_json(report, out_dir, "quality")
  plot_report(report, os.path.join(out_dir, "quality.png"))
  return report


def format_table(report: dict) -> str:
  """Model, reachable and oracle AUC and the lift captured, per head and slice."""
  lines = [f"{'head':<15}{'slice':<6}{'n':>7}{'rate':>7}{'AUC':>7}{'reach':>7}{'oracle':>8}"
           f"{'lift':>7}{'GAUC':>7}{'calib':>7}"]
  for head, rows in report["heads"].items():
    for sl, r in rows.items():
      lines.append(f"{head:<15}{sl:<6}{r['n']:>7}{r['label_rate']:>7.3f}{r['auc']:>7.3f}"
                   f"{r[f'{rc.REACHABLE}_auc']:>7.3f}{r['oracle_auc']:>8.3f}"
                   f"{r['lift_captured']:>7.2f}{r['gauc']:>7.3f}{r['calibration']:>7.2f}")
  lines.append("reach: the truth with the user's hidden traits estimated from the lifelong "
               "purchases; lift: (AUC - reach without lifelong and appetite) / (reach - that).")
  return "\n".join(lines)


def main(argv):
  del argv
  flags_ = flags.FLAGS
  report = write_report(flags_.work, flags_.pipeline_name)
  print(format_table(report))
  print(f"\nwrote {os.path.join(flags_.work, 'reports', 'quality.json')} and quality.png")


if __name__ == "__main__":
  flags.DEFINE_string("work", "work", "The demo work directory.")
  flags.DEFINE_string("pipeline_name", PIPELINE_NAME, "Pipeline name.")
  app.run(main)
