"""AUC of the oracle, the reachable ceiling and its ablations, straight from a simulator log dir.

No model involved: the labels come from ``events.jsonl`` (effective view = the leave event's stay
of at least ``EFFECTIVE_VIEW_SECONDS``; interact = a like, comment, share or follow; buy = an
add-to-cart or purchase), the scores from the columns of ``ground_truth.jsonl``. The buy head is
scored only where the room displays products at the impression (``displays.jsonl``), as the
models' buy head is. What the bounds mean: ``data_gen/README.md``, section "Reachable ceiling".

    python -m bench.reachable_bounds --log_dir /tmp/logs --out_dir bench/results
"""

from __future__ import annotations

import bisect
import json
import os
from typing import Dict, List, Tuple

import numpy as np
from absl import app, flags

from bench.common import define_output_flags, grouped_bars, write_json
from bench.metrics import auc
from data_gen import log_format as lf
from data_gen import reachable as rc
from data_gen.simulator import read_ground_truth

HEADS = {"effective_view": "p_effective_view", "interact": "p_interact", "buy": "p_buy"}
SLICES = ("all",) + lf.ACTIVITY_LEVELS
BOUNDS = ("oracle",) + rc.VARIANTS


def _read_jsonl(path: str) -> List[dict]:
  with open(path, encoding="utf-8") as f:
    return [json.loads(line) for line in f]


def read_impressions(log_dir: str) -> Dict[str, np.ndarray]:
  """Per impression (sorted by id): ids, labels of the three heads, display flag, activity level."""
  def path(kind: str) -> str:
    return os.path.join(log_dir, kind + lf.LOG_SUFFIX)

  imps: Dict[int, dict] = {}
  stay: Dict[int, float] = {}
  acts: Dict[int, set] = {}
  for e in _read_jsonl(path(lf.EVENTS)):
    kind, i = e[lf.EVENT], e["impression_id"]
    if kind == lf.IMPRESSION:
      imps[i] = e
    elif kind == lf.LEAVE:
      stay[i] = e["stay_seconds"]
    else:
      acts.setdefault(i, set()).add(kind)
  level = {u["user_id"]: u["activity_level"] for u in _read_jsonl(path(lf.USERS))}
  displays: Dict[int, Tuple[List[float], List[bool]]] = {}
  for d in sorted(_read_jsonl(path(lf.DISPLAYS)), key=lambda d: d["ts"]):
    ts, shows = displays.setdefault(d["host_id"], ([], []))
    ts.append(d["ts"])
    shows.append(bool(d["item_ids"]))

  def displays_products(host: int, t: float) -> bool:  # the latest refresh at or before t
    ts, shows = displays.get(host, ([], []))
    k = bisect.bisect_right(ts, t) - 1
    return k >= 0 and shows[k]

  ids = np.array(sorted(imps), np.int64)
  a = [acts.get(int(i), set()) for i in ids]
  return {
      "impression_id": ids,
      "effective_view": np.array([stay[int(i)] >= lf.EFFECTIVE_VIEW_SECONDS for i in ids]),
      "interact": np.array([bool(s & set(lf.INTERACTIONS)) for s in a]),
      "buy": np.array([bool(s & {lf.ADD_TO_CART, lf.PURCHASE}) for s in a]),
      "displays_products": np.array([displays_products(imps[int(i)]["host_id"], imps[int(i)]["ts"])
                                     for i in ids]),
      "activity_level": np.array([level[imps[int(i)]["user_id"]] for i in ids]),
  }


def compute_bounds(log_dir: str) -> dict:
  """{"heads": {head: {slice: {"n", "label_rate", "<bound>_auc"...}}}} for a log dir."""
  imp = read_impressions(log_dir)
  truth = read_ground_truth(log_dir)
  ids = imp["impression_id"]
  out = {"log_dir": os.path.abspath(log_dir), "n_impressions": int(len(ids)), "heads": {}}
  for head, field in HEADS.items():
    y = imp[head]
    cols = {b: np.array([truth[int(i)][field if b == "oracle" else rc.field_name(field, b)]
                         for i in ids]) for b in BOUNDS}
    out["heads"][head] = {}
    for sl in SLICES:
      m = np.ones(len(ids), bool) if sl == "all" else imp["activity_level"] == sl
      if head == "buy":
        m &= imp["displays_products"]
      row = {"n": int(m.sum()), "label_rate": float(y[m].mean()) if m.any() else float("nan")}
      row.update({f"{b}_auc": auc(y[m], cols[b][m]) for b in BOUNDS})
      out["heads"][head][sl] = row
  return out


def format_table(out: dict, slices=SLICES) -> str:
  short = {"oracle": "oracle", rc.REACHABLE: "reach", rc.NO_APPETITE: "no_app",
           rc.NO_LIFELONG: "no_life", rc.NEITHER: "neither", rc.NO_RT_SEQUENCES: "no_rtseq"}
  lines = [f"{'head':<15}{'slice':<6}{'n':>8}{'rate':>7}" + "".join(f"{short[b]:>9}" for b in BOUNDS)]
  for head, rows in out["heads"].items():
    for sl in slices:
      r = rows[sl]
      lines.append(f"{head:<15}{sl:<6}{r['n']:>8}{r['label_rate']:>7.3f}"
                   + "".join(f"{r[f'{b}_auc']:>9.3f}" for b in BOUNDS))
  return "\n".join(lines)


def plot(out: dict, path: str) -> None:
  import matplotlib  # pylint: disable=import-outside-toplevel
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel
  heads = list(out["heads"])
  fig, ax = plt.subplots(figsize=(8, 3.8))
  grouped_bars(ax, [f"{h}\nn={out['heads'][h]['all']['n']}" for h in heads],
               {b: [out["heads"][h]["all"][f"{b}_auc"] for h in heads] for b in BOUNDS})
  ax.set_ylim(0.5, 0.85)
  ax.set_ylabel("AUC (all impressions)")
  ax.grid(axis="y", alpha=0.3)
  ax.legend(fontsize=7, ncol=2, loc="upper left")
  ax.set_title(f"oracle vs reachable ceilings: {os.path.basename(out['log_dir'].rstrip('/'))}")
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)


def main(argv):
  del argv
  fl = flags.FLAGS
  out = compute_bounds(fl.log_dir)
  print(format_table(out))
  path = write_json(out, fl.out_dir, fl.name)
  plot(out, os.path.join(fl.out_dir, f"{fl.name}.png"))
  print(f"\nwrote {path} and {fl.name}.png")


if __name__ == "__main__":
  # absl.logging owns a --log_dir too (where it would write log files, which it only does when asked
  # to; this script never asks), so this definition overrides it instead of clashing.
  flags.DEFINE_string("log_dir", "work/logs", "A simulator log directory (data_gen.cli --out_dir).",
                      allow_override=True)
  define_output_flags("reachable_bounds")
  app.run(main)
