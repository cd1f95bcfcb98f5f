"""A trained ranking model as a closed-loop policy of the simulator.

Each slot, :class:`ModelPolicy` builds one request (the user's context once, one example per
live candidate room) and ranks the rooms by the model's scores. The features come from the
ExampleGen's own point-in-time functions (``point_in_time.user_side_features`` and
``host_side_features``), so the model is served what it was trained on:

* the user side from the user's rooms shown so far in the closed loop (``SlotContext.past``: the
  simulator's user state and the model see the same history) and the logged lifelong purchases;
* the room side from the logs: a room's statistics count the logged traffic of every user (the
  closed-loop users are a few among them and are not added) and its displays are the logged ones.

Scoring runs in-process on the SavedModel (:class:`SavedModelScorer`) or through the TF
Serving-compatible server with the official client (:class:`GrpcScorer`), one request per slot:
``rank_with_context`` for the heads' scores, or ``rank`` for the slate the model's own
look-ahead orders (:func:`by_slate`).
"""

from __future__ import annotations

import glob
import os
from typing import Callable, Dict, List, Mapping, Sequence, Tuple

import numpy as np
import tensorflow as tf

from components.live_example_gen import beam_transforms as bt
from components.live_example_gen import point_in_time as pit
from components.live_example_gen import records as r
from components.live_example_gen.log_tables import LogTables
from data_gen import behaviour as bh
from data_gen import lookahead, simulator
from models import features as F
from models import msc
from models import signatures as S
from serving import client

# Scores of one request: output name -> [N] per candidate.
Scores = Dict[str, np.ndarray]
# (user context, candidate rooms) -> scores.
Scorer = Callable[[tf.train.Example, Sequence[tf.train.Example]], Scores]


class RequestBuilder:
  """Builds ``rank_with_context`` requests from logged tables and a user's shown rooms.

  Args:
    tables: the log set the model was trained on (``log_tables.read_log_tables``).
    realtime_len: padded length of each real-time sequence (the pipeline's setting).
    lifelong_len: the most lifelong purchases a request carries (the pipeline's setting).
  """

  def __init__(self, tables: LogTables, realtime_len: int = F.REALTIME_SEQ_LEN,
               lifelong_len: int = F.LIFELONG_SEQ_LEN):
    F.check_sequence_lengths(realtime_len, lifelong_len)
    self.tables = tables
    self.realtime_len, self.lifelong_len = realtime_len, lifelong_len
    self.timelines = tables.timelines()
    parts = bt.part_specs(F.serving_raw_features(realtime_len, lifelong_len))
    self._user_specs, self._host_specs = parts[bt.USER_PART], parts[bt.HOST_PART]

  def context(self, imp, history: Sequence[pit.ImpressionRecord]) -> tf.train.Example:
    """The user-side example of ``imp`` (a ``SlotImpression`` or ``ImpressionRecord``).

    ``history`` is every impression of the user the features may use: the session's earlier
    rooms and the feedback finished before ``imp.ts``.
    """
    level = self.tables.users[imp.user_id]["activity_level"]
    feats = pit.user_side_features(
        imp, level, history, pit.FeedbackIndex(history, self.tables.hosts),
        pit.PurchaseIndex(self.tables.purchases_desc.get(imp.user_id, [])), self.tables.items,
        self.tables.hosts, self.realtime_len, self.lifelong_len)
    return bt.to_example(feats, self._user_specs)

  def candidate(self, host_id: int, ts: float) -> tf.train.Example:
    """The room-side example of showing ``host_id`` at ``ts``."""
    feats = pit.host_side_features(host_id, self.tables.hosts[host_id],
                                   self.timelines[host_id], ts, self.tables.items)
    return bt.to_example(feats, self._host_specs)


def impression_records(user_id: int, past: Sequence[bh.ShownRoom]) -> List[pit.ImpressionRecord]:
  """The closed loop's shown rooms as the ExampleGen reads them from the logs.

  Each room's events are made as the log writer makes them (``simulator.impression_events``:
  times rounded to the millisecond) and joined by the ExampleGen's ``assemble_impression``; the
  impression ids number the user's rooms in order (they only break ties).

  Raises:
    ValueError: a room's events do not join into one impression (a log-format bug).
  """
  out = []
  for k, room in enumerate(past, start=1):
    rec = {"host_id": room.host_id, "ts": room.ts, "slot": room.slot,
           "trigger_item_id": room.trigger_item_id, "propensity": 1.0, "outcome": room.outcome}
    events = [r.Parsed(r.RawLine(r.EVENTS, "closed loop", n, b""), e) for n, e in
              enumerate(simulator.impression_events(k, room.session_id, user_id, rec), start=1)]
    joined = [x for x in bt.assemble_impression(k, events)
              if isinstance(x, (pit.ImpressionRecord, r.BadRecord))]
    if len(joined) != 1 or not isinstance(joined[0], pit.ImpressionRecord):
      raise ValueError(f"shown room {k} of user {user_id} does not join into one impression: "
                       f"{joined}")
    out.append(joined[0])
  return out


# --- Scorers -------------------------------------------------------------------------------------
def latest_version_dir(base: str) -> str:
  """The highest numeric version directory under a model base path (the Pusher's layout)."""
  versions = [d for d in glob.glob(os.path.join(base, "*")) if os.path.basename(d).isdigit()]
  if not versions:
    raise FileNotFoundError(f"no numeric model version directory under {base}")
  return max(versions, key=lambda d: int(os.path.basename(d)))


class SavedModelScorer:
  """Calls a context signature (``rank_with_context`` or ``rank``) of a SavedModel in this
  process."""

  def __init__(self, model_dir: str, signature: str = S.CONTEXT_SIGNATURE,
               signatures: Mapping[str, Callable] | None = None):
    """``signatures``: the model's loaded signatures, to share one load between scorers
    (default: load ``model_dir``)."""
    self.model_dir = model_dir
    if signatures is None:
      signatures = tf.saved_model.load(model_dir).signatures
    if signature not in signatures:
      raise KeyError(f"the model at {model_dir} has no signature {signature!r}; it has "
                     f"{sorted(signatures)}")
    self._rank = signatures[signature]

  def __call__(self, context: tf.train.Example, candidates: Sequence[tf.train.Example]) -> Scores:
    out = self._rank(**{
        S.CONTEXT_INPUT: tf.constant([context.SerializeToString()]),
        S.EXAMPLES_INPUT: tf.constant([c.SerializeToString() for c in candidates])})
    return {k: v.numpy().reshape(-1) for k, v in out.items()}


class GrpcScorer:
  """Calls a context signature through a TF Serving-compatible server (official client)."""

  def __init__(self, target: str, model_name: str, timeout: float = 30.0,
               signature: str = S.CONTEXT_SIGNATURE):
    self.target, self.model_name, self.timeout = target, model_name, timeout
    self.signature = signature

  def __call__(self, context: tf.train.Example, candidates: Sequence[tf.train.Example]) -> Scores:
    elwc = client.example_list_with_context(context, candidates)
    return {k: np.asarray(v).reshape(-1) for k, v in client.rank(
        self.target, self.model_name, elwc, self.timeout, self.signature).items()}


# --- Ranking rules -------------------------------------------------------------------------------
# scores -> [N] ranking scores (highest is shown).
RankBy = Callable[[Scores], np.ndarray]


def _output(scores: Scores, name: str) -> np.ndarray:
  if name not in scores:
    raise KeyError(f"the model has no output {name!r}; it has {sorted(scores)}")
  return scores[name]


def by_head(head: str) -> RankBy:
  """Greedy by one head's score."""
  return lambda scores: _output(scores, head)


def by_weighted_sum(weights: Mapping[str, float]) -> RankBy:
  """Greedy by ``sum_h weights[h] * score_h``."""
  if not weights:
    raise ValueError("weights is empty")
  return lambda scores: sum(w * _output(scores, h) for h, w in weights.items())


def by_lookahead(reward_weights: Mapping[str, float], swipe_output: str, horizon: int = 3,
                 beam_width: int = 10, top_m: int = 10) -> RankBy:
  """STCRank's MSC on the model's scores: the first room of the best order of the next slots.

  The reward is ``sum_h reward_weights[h] * score_h``; ``swipe_output`` is the model's
  P(swipe down) (``data_gen/lookahead.best_order`` has the search).
  """
  if not reward_weights:
    raise ValueError("reward_weights is empty")

  def rank(scores: Scores) -> np.ndarray:
    rewards = sum(w * _output(scores, h) for h, w in reward_weights.items())
    swipes = np.clip(_output(scores, swipe_output), 0.0, 1.0)
    order = lookahead.best_order(rewards, swipes, horizon, beam_width, top_m)
    return lookahead.order_scores(len(rewards), order)
  return rank


def by_slate(scores: Scores) -> np.ndarray:
  """The ``rank`` signature's slate as ranking scores: its first room is shown."""
  slate = _output(scores, msc.SLATE).astype(np.int64)
  return lookahead.order_scores(len(slate), slate)


class ModelPolicy:
  """A simulator policy (``behaviour.Policy``) that ranks each slot's rooms with a model.

  Run it in a closed loop whose user states keep their history (``Simulator.evaluate_policy``
  and ``run_days`` do), so ``SlotContext.past`` holds the rooms the user has been shown.

  Args:
    builder: builds the requests.
    scorer: scores a request (in-process or over gRPC).
    rank_by: turns the scores into the ranking.
  """

  def __init__(self, builder: RequestBuilder, scorer: Scorer, rank_by: RankBy):
    self.builder, self.scorer, self.rank_by = builder, scorer, rank_by
    self.requests = 0
    self.last_scores: Scores = {}

  def request(self, ctx: bh.SlotContext) -> Tuple[tf.train.Example, List[tf.train.Example]]:
    """The slot's user context and one example per candidate room."""
    history = impression_records(ctx.user_id, ctx.past)
    ts = round(ctx.timestamp, 3)  # as logged
    imp = pit.SlotImpression(impression_id=len(history) + 1, session_id=ctx.session_id,
                             user_id=ctx.user_id, ts=ts, slot=ctx.slot_index,
                             trigger_item_id=ctx.trigger_item_id)
    return (self.builder.context(imp, history),
            [self.builder.candidate(int(h), ts) for h in ctx.candidate_host_ids])

  def __call__(self, ctx: bh.SlotContext) -> np.ndarray:
    context, candidates = self.request(ctx)
    scores = self.scorer(context, candidates)
    self.requests += 1
    self.last_scores = scores
    return np.asarray(self.rank_by(scores), np.float64)
