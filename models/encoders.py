"""Shared input encoders: embedding tables and the feature groups every model starts from.

Models differ in how they use the sequences; they share how ids become vectors, so every model
calls :class:`Embeddings`, :func:`context_embeddings` and :func:`context_numeric` instead of
building its own tables.
"""

from __future__ import annotations

import dataclasses
from typing import Dict, List, Tuple

import tensorflow as tf

from models import features as F
from models import preprocessing as P
from models.layers import (
    BroadcastConcatenate,
    DecayedMatchSum,
    IdMatchCount,
    MaskedMeanPooling,
    MatchSummary,
    SequenceEmbedding,
    SessionPosition,
)
from models.layers.match import LookupMatchSummary, match_counts
from models.spec import ModelSpec

xf = F.transformed_name
STAY_BUCKETS = F.MAX_STAY_BUCKET + 1  # with padding
AGE_BUCKETS = len(P.AGE_SECONDS_BOUNDARIES) + 2
LL_AGE_BUCKETS = len(P.AGE_DAYS_BOUNDARIES) + 2


def table_sizes(spec: ModelSpec) -> Dict[str, int]:
  """Rows of every embedding table by id-space name: the shared vocabularies and fixed spaces."""
  return dict(spec.vocab_sizes, item=P.ITEM_HASH_BUCKETS, activity=P.NUM_ACTIVITY_LEVELS,
              hour=24, slot=P.MAX_SLOT + 1, stay=STAY_BUCKETS, age=AGE_BUCKETS,
              ll_age=LL_AGE_BUCKETS)


class Embeddings:
  """One embedding table per id space, shared by every place the id occurs."""

  def __init__(self, spec: ModelSpec):
    self.dim = spec.embedding_dim
    reg = tf.keras.regularizers.L2(spec.embedding_l2) if spec.embedding_l2 else None
    self.tables = {name: SequenceEmbedding(n, spec.embedding_dim, name=f"emb_{name}",
                                           embeddings_regularizer=reg)
                   for name, n in table_sizes(spec).items()}

  def __call__(self, table: str, ids: tf.Tensor) -> tf.Tensor:
    return self.tables[table](ids)  # [B, L] -> [B, L, D]

  def pooled(self, table: str, ids: tf.Tensor, length: tf.Tensor) -> tf.Tensor:
    """Mean of the first ``length`` positions' embeddings: [B, L] -> [B, D]."""
    return self.tables[table](ids, length=length)


def multi_id_tokens(emb: Embeddings, table: str, ids: tf.Tensor, width: int) -> tf.Tensor:
  """Sum of the embeddings of ``width`` ids per position (0 = padding, contributes nothing).

  Args:
    ids: [B, L * width] position-major ids, e.g. every category of each past room.
  Returns:
    [B, L, D].
  """
  ids = tf.reshape(ids, [-1, ids.shape[-1] // width, width])  # [B, L, W]
  vectors = emb(table, ids) * tf.cast(ids > 0, tf.float32)[..., tf.newaxis]  # [B, L, W, D]
  return tf.reduce_sum(vectors, axis=2)  # [B, L, D]


def sequence_tokens(emb: Embeddings, x: Dict[str, tf.Tensor], prefix: str) -> tf.Tensor:
  """Per-position vectors of a real-time sequence: room + its categories + shop + stay + age."""
  s = lambda f: x[xf(F.seq_key(prefix, f))]  # noqa: E731
  cats = multi_id_tokens(emb, P.CATEGORY_VOCAB, s("category_ids"),
                         F.RT_FIELD_WIDTH["category_ids"])  # [B, L, D]
  return (emb(P.HOST_VOCAB, s("host_ids")) + cats
          + emb(P.SHOP_VOCAB, s("shop_ids")) + emb("stay", s("stay_buckets"))
          + emb("age", s("age_seconds")))  # [B, L, D]


# (embedding table, lifelong field): a purchase's token is the sum of these embeddings.
LIFELONG_TOKEN_FIELDS = (("item", "item_ids"), (P.CATEGORY_VOCAB, "category_ids"),
                         (P.BRAND_VOCAB, "brand_ids"), (P.SHOP_VOCAB, "shop_ids"),
                         ("ll_age", "age_days"))


def pooled_lifelong(emb: Embeddings, x: Dict[str, tf.Tensor]) -> tf.Tensor:
  """Mean over the history of the summed :data:`LIFELONG_TOKEN_FIELDS` embeddings: [B, D]
  (``lifelong.PurchaseTokens`` without the side projection). Pooled per table (the mean of a
  sum is the sum of the means), so the small tables pool by histogram
  (:class:`models.layers.SequenceEmbedding`) without building the [B, L, D] tokens."""
  length = x[xf(F.len_key(F.LL))]
  return tf.add_n([emb.pooled(table, x[xf(F.seq_key(F.LL, field))], length)
                   for table, field in LIFELONG_TOKEN_FIELDS])  # [B, D]


def candidate_tokens(emb: Embeddings, x: Dict[str, tf.Tensor]) -> tf.Tensor:
  """The candidate room as one vector in the real-time token space (room + category + shop)."""
  cats = emb(P.CATEGORY_VOCAB, x[xf(F.HOST_CATEGORY_IDS)])  # [B, 3, D]
  n_cats = tf.reduce_sum(tf.cast(x[xf(F.HOST_CATEGORY_IDS)] > 0, tf.float32), 1, keepdims=True)
  cat = tf.reduce_sum(cats, axis=1) / tf.maximum(n_cats, 1.0)  # [B, D]
  return (emb(P.HOST_VOCAB, x[xf(F.HOST_ID)])[:, 0] + cat
          + emb(P.SHOP_VOCAB, x[xf(F.HOST_SHOP_ID)])[:, 0])  # [B, D]


def display_tokens(emb: Embeddings, x: Dict[str, tf.Tensor]) -> tf.Tensor:
  return (emb("item", x[xf(F.DISPLAY_ITEM_IDS)]) + emb(P.CATEGORY_VOCAB, x[xf(F.DISPLAY_CATEGORY_IDS)])
          + emb(P.BRAND_VOCAB, x[xf(F.DISPLAY_BRAND_IDS)]))  # [B, N, D]


def context_numeric(x: Dict[str, tf.Tensor]) -> List[tf.Tensor]:
  """The room's numbers: mean displayed log price, flash sale, window statistics, and the
  sequence lengths (log1p); [B, 1], [B, 1], [B, 12], [B, 5]."""
  display_price = MaskedMeanPooling(name="mean_display_log_price")(
      [x[xf(F.DISPLAY_PRICES)][..., tf.newaxis], x[xf(F.DISPLAY_LEN)]])  # [B, 1]
  stats = tf.concat([x[xf(k)] for k in F.HOST_STAT_KEYS], axis=-1)  # [B, 12]
  lengths = tf.math.log1p(tf.cast(BroadcastConcatenate(name="lengths")(
      [x[xf(k)] for k in P.LENGTH_FEATURES]), tf.float32))  # [B, 5]: user's and room's
  return [display_price, x[xf(F.HOST_FLASH_SALE)], stats, lengths]


def context_embeddings(emb: Embeddings, x: Dict[str, tf.Tensor]) -> List[tf.Tensor]:
  """The embedded non-sequence features: candidate room, activity, hour, slot, trigger category,
  displayed products; [B, D] each."""
  pool = MaskedMeanPooling(name="pool_display")
  return [
      candidate_tokens(emb, x),
      emb("activity", x[xf(F.ACTIVITY_LEVEL)])[:, 0], emb("hour", x[xf(F.HOUR_OF_DAY)])[:, 0],
      emb("slot", x[xf(F.SLOT_INDEX)])[:, 0],
      # The trigger item enters through its category only: its id embedding (one item per
      # session, shared by every impression of it) memorised the training sessions' outcomes
      # (eval AUC fell from the second epoch on; BUILD_NOTES "Why the models did not learn").
      emb(P.CATEGORY_VOCAB, x[xf(F.TRIGGER_CATEGORY_ID)])[:, 0],
      pool([display_tokens(emb, x), x[xf(F.DISPLAY_LEN)]]),
  ]


def _match(name: str, query: tf.Tensor, keys: tf.Tensor, width: int = 1) -> tf.Tensor:
  return IdMatchCount(width, name=f"match_{name}")([query, keys])  # [B, L]


def _normalized(name: str, parts: List[tf.Tensor]) -> tf.Tensor:
  """Match features on very different scales (counts, shares) -> one batch-normalised vector."""
  # Synchronized under a multi-replica strategy: the statistics are the global batch's, so N
  # workers train what one worker would. Not otherwise: Keras' synchronized path computes the
  # variance as E[x^2] - E[x]^2 even on one replica, where tf.nn.moments is the steadier one.
  strategy = tf.distribute.get_strategy()
  return tf.keras.layers.BatchNormalization(
      name=f"{name}_norm", synchronized=strategy.num_replicas_in_sync > 1)(
      BroadcastConcatenate(name=f"{name}_concat")(parts))


def session_category_hits(x: Dict[str, tf.Tensor]) -> Tuple[tf.Tensor, tf.Tensor]:
  """The candidate's categories against the trigger item's ([B, 1]) and against each room shown
  in this session ([B, S]); :func:`context_match` and :func:`session_position` both read them."""
  cand_cats = x[xf(F.HOST_CATEGORY_IDS)]  # [B, C]
  trigger = _match("trigger_category", cand_cats, x[xf(F.TRIGGER_CATEGORY_ID)])  # [B, 1]
  session_cats = _match("session_categories", cand_cats, x[xf(F.SESSION_CATEGORY_IDS)],
                        F.HOST_MAX_CATEGORIES)  # [B, S]
  return trigger, session_cats


def context_match(x: Dict[str, tf.Tensor],
                  hits: Tuple[tf.Tensor, tf.Tensor] | None = None) -> List[tf.Tensor]:
  """The candidate against this session: trigger-category hit, repeated rooms and categories.

  Args:
    hits: :func:`session_category_hits` of ``x`` when the caller has them already.
  """
  n_shown = x[xf(F.SESSION_HOSTS_LEN_KEY)]
  trigger, session_cats = hits or session_category_hits(x)
  session_room = _match("session_room", x[xf(F.HOST_ID)], x[xf(F.SESSION_HOSTS)])  # [B, S]
  return [_normalized("context_match", [
      trigger,
      MatchSummary(name="summary_session_categories")([session_cats, n_shown]),
      MatchSummary(name="summary_session_room")([session_room, n_shown])])]


@dataclasses.dataclass(frozen=True)
class Context:
  """The candidate in its context as every model reads it: built once per network, so the
  features, the linear path (``multitask.wide_features``) and :func:`session_position` share it.

  Attributes:
    numeric: :func:`context_numeric`, the room's numbers.
    matches: :func:`context_match`, the candidate against this session.
    session_hits: :func:`session_category_hits`, which both of the others' matches read.
  """
  numeric: List[tf.Tensor]
  matches: List[tf.Tensor]
  session_hits: Tuple[tf.Tensor, tf.Tensor]


def context(x: Dict[str, tf.Tensor]) -> Context:
  """The :class:`Context` of the transformed inputs ``x``."""
  hits = session_category_hits(x)
  return Context(numeric=context_numeric(x), matches=context_match(x, hits), session_hits=hits)


def session_position(x: Dict[str, tf.Tensor], hits: Tuple[tf.Tensor, tf.Tensor]) -> tf.Tensor:
  """The candidate's repeats in this session and the trigger's pull at this slot
  (:class:`SessionPosition`): [B, 2], for a linear path.

  Args:
    hits: :func:`session_category_hits` of ``x`` (the ones :func:`context_match` reads).
  """
  trigger, session_cats = hits
  return SessionPosition(name="session_position")([
      session_cats, x[xf(F.SESSION_HOSTS_LEN_KEY)], trigger, x[xf(F.SLOT_INDEX)]])


def realtime_match(x: Dict[str, tf.Tensor]) -> List[tf.Tensor]:
  """The candidate's room, categories and shop against the positive and negative sequences."""
  parts = []
  for prefix in F.RT_PREFIXES:
    length, age = x[xf(F.len_key(prefix))], x[xf(F.seq_key(prefix, "age_seconds"))]
    decay_inputs = [length, x[xf(F.seq_key(prefix, F.RT_AGE_HOURS))],
                    x[xf(F.seq_key(prefix, F.RT_IMPRESSIONS_SINCE))]]
    for field, query in (("category_ids", F.HOST_CATEGORY_IDS), ("host_ids", F.HOST_ID),
                         ("shop_ids", F.HOST_SHOP_ID)):
      hits = _match(f"{prefix}_{field}", x[xf(query)], x[xf(F.seq_key(prefix, field))],
                    F.RT_FIELD_WIDTH.get(field, 1))  # [B, L]
      parts.append(MatchSummary(decay=0.85, num_buckets=AGE_BUCKETS,
                                name=f"summary_{prefix}_{field}")([hits, length, age]))  # [B, 6]
      parts.append(DecayedMatchSum(name=f"decayed_{prefix}_{field}")(
          [hits] + decay_inputs))  # [B, 3]
      if prefix == F.RT_POS and field == "category_ids":
        category_hits = tf.cast(hits, tf.float32)  # [B, L]
        # Liked rooms move the appetite further than viewed ones, and the share of liked events
        # is the user's taste for the rooms they like (negative events are never liked).
        liked = tf.cast(x[xf(F.seq_key(prefix, F.RT_LIKED))], tf.float32)  # [B, L]
        parts.append(DecayedMatchSum(name=f"decayed_{prefix}_liked_{field}")(
            [category_hits * liked] + decay_inputs))  # [B, 3]
        parts.append(MatchSummary(decay=0.85, num_buckets=AGE_BUCKETS,
                                  name=f"summary_{prefix}_liked")([liked, length, age]))  # [B, 6]
        # A purchase sates: later rooms in its categories get fewer item clicks for a while.
        purchased = tf.cast(x[xf(F.seq_key(prefix, F.RT_PURCHASED))], tf.float32)  # [B, L]
        parts.append(DecayedMatchSum(name=f"decayed_{prefix}_purchased_{field}")(
            [category_hits * purchased] + decay_inputs))  # [B, 3]
  return [_normalized("realtime_match", parts)]


def lifelong_match(x: Dict[str, tf.Tensor]) -> List[tf.Tensor]:
  """The candidate's categories and shop, and the displayed products, against the purchases."""
  s = lambda f: x[xf(F.seq_key(F.LL, f))]  # noqa: E731
  length, n_display = x[xf(F.len_key(F.LL))], x[xf(F.DISPLAY_LEN)]
  parts = []
  # By lookup, not a [B, L] match matrix: one user's L purchases are summed by id once however
  # many rooms they meet (the context signature), so the cost per room does not grow with L.
  for field, query in (("category_ids", x[xf(F.HOST_CATEGORY_IDS)]),
                       ("shop_ids", x[xf(F.HOST_SHOP_ID)])):
    parts.append(LookupMatchSummary(decay=0.98, num_buckets=LL_AGE_BUCKETS,
                                    name=f"summary_lifelong_{field}")(
        [query, s(field), length, s("age_days")]))  # [B, 6]
  # Per displayed product: how many past purchases share its brand / category.
  for field, display in (("brand_ids", F.DISPLAY_BRAND_IDS), ("category_ids", F.DISPLAY_CATEGORY_IDS)):
    hits = match_counts(x[xf(display)], s(field))  # [B, N]
    parts.append(MatchSummary(name=f"summary_display_{field}_in_lifelong")([hits, n_display]))
  return [_normalized("lifelong_match", parts)]


def pooled_realtime(emb: Embeddings, x: Dict[str, tf.Tensor]) -> List[tf.Tensor]:
  """Mean-pooled positive and negative real-time sequences."""
  return [MaskedMeanPooling(name=f"pool_{prefix}")([sequence_tokens(emb, x, prefix),
                                                    x[xf(F.len_key(prefix))]])
          for prefix in F.RT_PREFIXES]


def pooled_session(emb: Embeddings, x: Dict[str, tf.Tensor]) -> tf.Tensor:
  """Mean-pooled rooms already shown in this session: [B, D]."""
  return MaskedMeanPooling(name="pool_session")([emb(P.HOST_VOCAB, x[xf(F.SESSION_HOSTS)]),
                                                 x[xf(F.SESSION_HOSTS_LEN_KEY)]])


def pooled_session_and_lifelong(emb: Embeddings, x: Dict[str, tf.Tensor]) -> List[tf.Tensor]:
  """Mean-pooled rooms already shown in this session and lifelong purchases."""
  return [
      pooled_session(emb, x),
      pooled_lifelong(emb, x),
  ]


def pooled_sequences(emb: Embeddings, x: Dict[str, tf.Tensor]) -> List[tf.Tensor]:
  """Every sequence mean-pooled (the baselines' sequence view; match features are separate)."""
  return pooled_realtime(emb, x) + pooled_session_and_lifelong(emb, x)
