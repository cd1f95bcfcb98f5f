"""Where a trained model's gap to the reachable ceiling is: one true term at a time.

For each head, a logistic regression (5-fold, on the eval split) over the model's logit plus one
term the simulator knows — the real-time appetite term and the lifelong term of the reachable
logit, the room's hot (flash-sale) window, daily popularity, quality and entertainment, or the
whole reachable logit — says how much AUC that term would add to the model. A term that adds
much is information the model misses; the whole reachable logit is the ceiling of the probe.

One term at a time can hide a gap spread over many: each term's error is small next to the
others'. So the probe also fits the model's logit with every term at once (the room terms plus the
observed session fatigue and slot), and that fit without each term in turn: a term whose removal
costs much is one the model knows only approximately.

    python -m bench.gap_probe --work work --model_dir work/serving/livestream-ranking/<version>
"""

from __future__ import annotations

import json
import os
from typing import Dict

import numpy as np
from absl import app, flags
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import cross_val_predict

from bench import hand_features as hf
from bench import quality_report as qr
from bench.common import define_run_flags, write_json
from data_gen import reachable as rc
from data_gen.simulator import read_ground_truth
from data_gen.world import World, WorldConfig
from models import features as F
from serving.examples_io import latest_examples_dir, read_examples

FOLDS = 5


def room_terms(world: World, hosts: np.ndarray, ts: np.ndarray) -> Dict[str, np.ndarray]:
  """The room-side truth at each impression: hot window, popularity, quality, entertainment."""
  def hot(h, t):
    live, is_hot = world.live_hosts(t)
    return float(is_hot[live == h].any())
  return {"hot": np.array([hot(h, t) for h, t in zip(hosts, ts)]),
          "popularity": np.array([world.popularity(h, t) for h, t in zip(hosts, ts)]),
          "quality": world.host_quality[hosts], "entertain": world.host_entertain[hosts]}


def probe(y: np.ndarray, model_logit: np.ndarray, terms: Dict[str, np.ndarray]) -> Dict[str, float]:
  """AUC of the model alone and of LR(model logit, term) for each term (out of fold)."""
  out = {"model": float(roc_auc_score(y, model_logit))}
  for name, term in terms.items():
    x = np.column_stack([model_logit, term])
    score = cross_val_predict(LogisticRegression(max_iter=500), x, y, cv=FOLDS,
                              method="decision_function")
    out[f"+{name}"] = float(roc_auc_score(y, score))
  return out


def joint_probe(y: np.ndarray, model_logit: np.ndarray,
                terms: Dict[str, np.ndarray]) -> Dict[str, float]:
  """AUC of LR(model logit, every term) and of that fit without each term (out of fold).

  Args:
    y: [N] labels.
    model_logit: [N] the model's logit.
    terms: name -> [N] one term per impression.

  Returns:
    ``"+all terms"`` and ``"-<name>"`` for each term.
  """
  if not terms:
    raise ValueError("joint_probe needs at least one term")
  names = list(terms)
  x = np.column_stack([model_logit] + [terms[n] for n in names])  # [N, 1 + T]

  def auc(columns: np.ndarray) -> float:
    score = cross_val_predict(LogisticRegression(max_iter=1000), columns, y, cv=FOLDS,
                              method="decision_function")
    return float(roc_auc_score(y, score))

  out = {"+all terms": auc(x)}
  for i, name in enumerate(names):
    out[f"-{name}"] = auc(np.delete(x, i + 1, axis=1))
  return out


def observed_terms(test: Dict[str, np.ndarray], n_categories: int) -> Dict[str, np.ndarray]:
  """The terms of the view logit that the examples show exactly: session fatigue and slot."""
  x, names = hf.build_features(test, n_categories)
  return {name: x[:, names.index(name)] for name in ("fatigue", "slot")}


def run(work: str, pipeline_name: str, model_dir: str, out_dir: str) -> dict:
  with open(os.path.join(work, "logs", "summary.json")) as f:
    world = World(WorldConfig.from_dict(json.load(f)["config"]))
  split_dir = latest_examples_dir(work, pipeline_name)
  examples = read_examples(split_dir, limit=10**9)
  test = hf.read_columns(split_dir)
  truth = read_ground_truth(os.path.join(work, "logs"))
  scores = qr.score_examples(model_dir, examples)
  get = lambda k: qr.int_feature(examples, k)  # noqa: E731
  ids, hosts, ts = get(F.IMPRESSION_ID), get(F.HOST_ID), get(F.TIMESTAMP).astype(float)
  room = room_terms(world, hosts, ts + 0.5)  # logged times are whole seconds
  if not np.array_equal(ids, test[F.IMPRESSION_ID][:, 0]):
    raise ValueError(f"{split_dir}: the examples were read in two orders")
  observed = observed_terms(test, world.config.n_categories)
  has_products = get(F.DISPLAY_LEN) > 0
  out = {"work": os.path.abspath(work), "model_dir": os.path.abspath(model_dir), "heads": {}}
  lines = [f"{'head':<16}{'n':>7}" + "".join(f"{k:>13}" for k in
                                             ("model", "+appetite", "+lifelong", "+hot",
                                              "+popularity", "+quality", "+entertain",
                                              "+room all", "+reachable"))]
  joint_lines = [f"every term at once, and without each "
                 f"({', '.join(['appetite', 'lifelong', *room, *observed])})"]
  for head, field in qr.ORACLE_FIELD.items():
    keep = has_products if head == F.HEAD_BUY else np.ones(len(ids), bool)
    column = lambda name: hf.logit(qr.truth_column(truth, ids, name))  # noqa: E731
    reach = column(rc.field_name(field, rc.REACHABLE))
    terms = {"appetite": reach - column(rc.field_name(field, rc.NO_APPETITE)),
             "lifelong": reach - column(rc.field_name(field, rc.NO_LIFELONG)), **room}
    y, model_logit = get(F.HEADS[head])[keep], hf.logit(scores[head])[keep]
    res = probe(y, model_logit, {k: v[keep] for k, v in dict(
        terms, **{"room all": np.column_stack(list(room.values())), "reachable": reach}).items()})
    joint = joint_probe(y, model_logit, {k: v[keep] for k, v in dict(terms, **observed).items()})
    out["heads"][head] = dict(res, n=int(keep.sum()), joint=joint)
    lines.append(f"{head:<16}{int(keep.sum()):>7}" + "".join(f"{v:>13.4f}" for v in res.values()))
    joint_lines.append(f"{head:<16}" + "  ".join(f"{k} {v:.4f}" for k, v in joint.items()))
  lines += [""] + joint_lines
  print("\n".join(lines))
  write_json(out, out_dir, "gap_probe")
  return out


def main(argv):
  del argv
  run(flags.FLAGS.work, flags.FLAGS.pipeline_name, flags.FLAGS.model_dir, flags.FLAGS.out_dir)


if __name__ == "__main__":
  define_run_flags()
  flags.DEFINE_string("model_dir", None, "A pushed SavedModel (serving_default signature).")
  flags.mark_flag_as_required("model_dir")
  app.run(main)
