"""Shared input encoders: embedding tables and the feature groups every model starts from.

Models differ in how they use the sequences; they share how ids become vectors, so every model
calls :class:`Embeddings` and :func:`context_features` instead of building its own tables.
"""

from __future__ import annotations

from typing import Dict, List

import tensorflow as tf

from models import features as F
from models import preprocessing as P
from models.layers import MaskedMeanPooling
from models.spec import ModelSpec

xf = F.transformed_name
STAY_BUCKETS = len(F.STAY_BUCKET_BOUNDARIES) + 2
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
    self.tables = {name: tf.keras.layers.Embedding(n, spec.embedding_dim, name=f"emb_{name}")
                   for name, n in table_sizes(spec).items()}

  def __call__(self, table: str, ids: tf.Tensor) -> tf.Tensor:
    return self.tables[table](ids)  # [B, L] -> [B, L, D]


def sequence_tokens(emb: Embeddings, x: Dict[str, tf.Tensor], prefix: str) -> tf.Tensor:
  """Per-position vectors of a real-time sequence: room + category + shop + stay + age."""
  s = lambda f: x[xf(F.seq_key(prefix, f))]  # noqa: E731
  return (emb(P.HOST_VOCAB, s("host_ids")) + emb(P.CATEGORY_VOCAB, s("category_ids"))
          + emb(P.SHOP_VOCAB, s("shop_ids")) + emb("stay", s("stay_buckets"))
          + emb("age", s("age_seconds")))  # [B, L, D]


def lifelong_tokens(emb: Embeddings, x: Dict[str, tf.Tensor]) -> tf.Tensor:
  """Per-position vectors of the lifelong purchase sequence with its side information."""
  s = lambda f: x[xf(F.seq_key(F.LL, f))]  # noqa: E731
  return (emb("item", s("item_ids")) + emb(P.CATEGORY_VOCAB, s("category_ids"))
          + emb(P.BRAND_VOCAB, s("brand_ids")) + emb(P.SHOP_VOCAB, s("shop_ids"))
          + emb("ll_age", s("age_days")))  # [B, L, D]


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


def context_features(emb: Embeddings, x: Dict[str, tf.Tensor]) -> List[tf.Tensor]:
  """Non-sequence features: user, context, candidate room, host statistics, displayed products."""
  pool = MaskedMeanPooling(name="pool_display")
  stats = tf.concat([x[xf(k)] for k in F.HOST_STAT_KEYS], axis=-1)  # [B, 12]
  lengths = tf.math.log1p(tf.cast(tf.concat([x[xf(k)] for k in P.LENGTH_FEATURES], -1),
                                  tf.float32))  # [B, 5]
  return [
      candidate_tokens(emb, x),
      emb("activity", x[xf(F.ACTIVITY_LEVEL)])[:, 0], emb("hour", x[xf(F.HOUR_OF_DAY)])[:, 0],
      emb("slot", x[xf(F.SLOT_INDEX)])[:, 0],
      emb(P.CATEGORY_VOCAB, x[xf(F.TRIGGER_CATEGORY_ID)])[:, 0],
      emb("item", x[xf(F.TRIGGER_ITEM_ID)])[:, 0],
      pool([display_tokens(emb, x), x[xf(F.DISPLAY_LEN)]]),
      stats, lengths,
  ]


def pooled_realtime(emb: Embeddings, x: Dict[str, tf.Tensor]) -> List[tf.Tensor]:
  """Mean-pooled positive and negative real-time sequences."""
  return [MaskedMeanPooling(name=f"pool_{prefix}")([sequence_tokens(emb, x, prefix),
                                                    x[xf(F.len_key(prefix))]])
          for prefix in (F.RT_POS, F.RT_NEG)]


def pooled_session_and_lifelong(emb: Embeddings, x: Dict[str, tf.Tensor]) -> List[tf.Tensor]:
  """Mean-pooled rooms already shown in this session and lifelong purchases."""
  return [
      MaskedMeanPooling(name="pool_session")([emb(P.HOST_VOCAB, x[xf(F.SESSION_HOSTS)]),
                                              x[xf(F.SESSION_HOSTS_LEN_KEY)]]),
      MaskedMeanPooling(name="pool_lifelong")([lifelong_tokens(emb, x), x[xf(F.len_key(F.LL))]]),
  ]


def pooled_sequences(emb: Embeddings, x: Dict[str, tf.Tensor]) -> List[tf.Tensor]:
  """Every sequence mean-pooled (the baselines' sequence view)."""
  return pooled_realtime(emb, x) + pooled_session_and_lifelong(emb, x)
