"""The end of `make demo`: serve the pushed model, rank ~200 rooms for one user over gRPC, print.

Starts ``serving.model_server`` as a separate process on loopback, waits for GetModelStatus to
say AVAILABLE, sends one ``rank_with_context`` request (the user's context from an eval-split
impression once, and each candidate room's latest displayed products and statistics) and prints
the rooms ranked by ``RANK_WEIGHTS``. The same rooms scored through ``serving_default`` (one full
example per room) must agree. A model that exports ``rank`` (STCRank's look-ahead,
``models/msc.py``) also answers the same request with its slate, printed with each slot's P(buy),
P(swipe down) and P(the slot is seen). The request is saved as an ELWC TFRecord that
``python -m serving.client --elwc_file`` replays.
"""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
from absl import app, flags

from models import features as F
from models import msc
from models import signatures as S
from pipeline.configs import PIPELINE_NAME
from serving import client
from serving.examples_io import latest_examples_dir, read_examples

FLAGS = flags.FLAGS
flags.DEFINE_string("work", "work", "The demo work directory (make demo's WORK).")
flags.DEFINE_string("pipeline_name", PIPELINE_NAME, "Pipeline and model name.")
flags.DEFINE_integer("port", 8500, "Port for the local model server.")
flags.DEFINE_integer("candidates", 200, "How many candidate rooms to rank.")
flags.DEFINE_integer("top", 15, "How many ranked rooms to print.")

RANK_WEIGHTS = client.RANK_WEIGHTS
SLATE_SLOTS = 5  # slots of the look-ahead's slate printed
# The two signatures run the same float32 graph on the same values; only op order may differ.
SIGNATURE_TOLERANCE = 1e-5


def pick_request(examples, n_candidates: int):
  """A user context (the latest impression with a non-empty real-time history) and the latest
  example of up to ``n_candidates`` distinct rooms at or before its time."""
  val = lambda ex, k: ex.features.feature[k].int64_list.value[0]  # noqa: E731
  ordered = sorted(examples, key=lambda ex: val(ex, F.TIMESTAMP))
  context = next(ex for ex in reversed(ordered) if val(ex, F.len_key(F.RT_POS)) > 0)
  latest = {}
  for ex in ordered:
    if val(ex, F.TIMESTAMP) <= val(context, F.TIMESTAMP):
      latest[val(ex, F.HOST_ID)] = ex
  rooms = sorted(latest)[:n_candidates]
  return context, [latest[h] for h in rooms]


def main(argv):
  del argv
  base = os.path.join(os.path.abspath(FLAGS.work), "serving", FLAGS.pipeline_name)
  examples = read_examples(latest_examples_dir(FLAGS.work, FLAGS.pipeline_name))
  context, candidates = pick_request(examples, FLAGS.candidates)
  elwc = client.example_list_with_context(context, candidates)
  request_file = os.path.join(os.path.abspath(FLAGS.work), "demo_request.elwc.tfrecord")
  client.write_tfrecord(request_file, [elwc.SerializeToString()])
  server = subprocess.Popen([sys.executable, "-m", "serving.model_server", "--model_name",
                             FLAGS.pipeline_name, "--model_base_path", base, "--port",
                             str(FLAGS.port)])
  target = f"127.0.0.1:{FLAGS.port}"
  try:
    version = client.wait_until_available(target, FLAGS.pipeline_name, timeout=120)
    scores = client.rank(target, FLAGS.pipeline_name, elwc)
    full = client.predict(target, FLAGS.pipeline_name,
                          client.candidate_requests(context, candidates))
    slate = (client.rank(target, FLAGS.pipeline_name, elwc, signature=S.RANK_SIGNATURE)
             if S.RANK_SIGNATURE in client.signature_names(target, FLAGS.pipeline_name) else None)
  finally:
    server.terminate()
    server.wait(timeout=30)
  disagreement = max(float(np.max(np.abs(scores[h] - full[h]))) for h in RANK_WEIGHTS)
  if disagreement > SIGNATURE_TOLERANCE:
    raise RuntimeError(f"{S.CONTEXT_SIGNATURE} and {S.SERVING_SIGNATURE} disagree by "
                       f"{disagreement:.2e} on the same rooms (tolerance {SIGNATURE_TOLERANCE})")
  rank = sum(w * scores[h] for h, w in RANK_WEIGHTS.items())
  order = np.argsort(-rank)
  f = context.features.feature
  print(f"\nuser {f[F.USER_ID].int64_list.value[0]} "
        f"({f[F.ACTIVITY_LEVEL].bytes_list.value[0].decode()}), "
        f"{len(candidates)} candidate rooms, model version {version} via gRPC {target} "
        f"({S.CONTEXT_SIGNATURE}; {S.SERVING_SIGNATURE} agrees within {disagreement:.1e})")
  print(f"{'rank':>4} {'room':>6} {'cats':>10} {'shown':>5} {'p_view':>7} {'p_inter':>7} "
        f"{'p_buy':>7} {'score':>7}")
  for i, j in enumerate(order[:FLAGS.top]):
    cf = candidates[j].features.feature
    cats = ",".join(str(c) for c in cf[F.HOST_CATEGORY_IDS].int64_list.value if c)
    print(f"{i + 1:>4} {cf[F.HOST_ID].int64_list.value[0]:>6} {cats:>10} "
          f"{cf[F.DISPLAY_LEN].int64_list.value[0]:>5} {scores[F.HEAD_EFFECTIVE_VIEW][j]:7.3f} "
          f"{scores[F.HEAD_INTERACT][j]:7.3f} {scores[F.HEAD_BUY][j]:7.3f} {rank[j]:7.3f}")
  if slate is not None:
    print(f"\n{S.RANK_SIGNATURE} (the model's look-ahead; planned value "
          f"{float(slate[msc.PLANNED_VALUE][0]):.3f}):")
    print(f"{'slot':>4} {'room':>6} {'cats':>10} {'reward':>7} {'p_swipe':>7} {'p_seen':>7}")
    for k, j in enumerate(slate[msc.SLATE][:SLATE_SLOTS]):
      cf = candidates[j].features.feature
      cats = ",".join(str(c) for c in cf[F.HOST_CATEGORY_IDS].int64_list.value if c)
      print(f"{k + 1:>4} {cf[F.HOST_ID].int64_list.value[0]:>6} {cats:>10} "
            f"{slate[msc.SLOT_REWARD][k]:7.3f} {slate[msc.SLOT_SWIPE_DOWN][k]:7.3f} "
            f"{slate[msc.SLOT_REACH][k]:7.3f}")
  print(f"\nrequest saved as {request_file} (replay: python -m serving.client --elwc_file ...)")
  print(f"quality report: {os.path.join(os.path.abspath(FLAGS.work), 'reports')}/")


if __name__ == "__main__":
  app.run(main)
