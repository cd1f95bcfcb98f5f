"""Multi-channel lifelong product-sequence model (Taobao Live new-user ranking, seed 001).

The user's main-site purchases, with their side information (item, category, brand, shop, price,
weight, stay, age), share one embedding space with the candidate room's displayed products. Five
channels each extract a top-K from the whole sequence:

- ``category``: purchases in one of the target room's categories (relevance);
- ``shop_brand``: purchases from the room's shop or of a brand it displays (relevance);
- ``similarity``: the purchases nearest the room's products in the embedding space;
- ``interest``: purchases in the user's own most-bought categories (user interest);
- ``recent``: the most recent purchases (auxiliary).

DIN target attention weighs the extracted items against the room with a softmax per channel. A
Main Net (shared bottom over every feature) and a Bias Net (the user's activity and history size
against the room) add up to each head's logit, with a linear path on the match features that
the trainer solves before SGD (models/linear_start.py); an auxiliary head predicts the effective
view from the lifelong interest alone, so that representation is trained directly.
``extraction="mean_pool"`` is the same model with the whole sequence mean-pooled: the reference
the extraction is measured against.
"""

from __future__ import annotations

from typing import Dict, Tuple

import tensorflow as tf

from models import encoders
from models import features as F
from models import preprocessing as P
from models import tasks as tasks_lib
from models.layers import (
  MLP,
  BroadcastConcatenate,
  MaskedMeanPooling,
  ScoringDense,
  TokenLookup,
  TokenScores,
)
from models.layers.lifelong import ChannelDINAttention, ChannelExtraction
from models.layers.match import IdMatchCount, valid_positions
from models.multitask import (
  BIAS_NET,
  NUM_TASKS,
  extractor,
  room_offsets,
  task_heads,
  wide_features,
)
from models.spec import ModelSpec

xf = F.transformed_name
ROOM_CHANNELS: Tuple[str, ...] = ("category", "shop_brand", "similarity")
# The user's alone (no room in their score): extracted once per user, not once per room.
USER_CHANNELS: Tuple[str, ...] = ("interest", "recent")
# ChannelExtraction's order: the two relevance channels (only a score > 0 is extracted) first.
CHANNELS: Tuple[str, ...] = ROOM_CHANNELS + USER_CHANNELS
EXTRACTIONS = ("multi_channel", "mean_pool")
AUX_OUTPUT = "lifelong_interest"
ATTENTION_LAYER = "lifelong_attention"
EXTRACTION_LAYER = "lifelong_extraction"
# Purchases per channel. 10, not 20: the same AUC on every head over 3 training seeds at world
# seeds 7 and 8, more relevant extractions, and ~20% less serving CPU per context request
# (BUILD_NOTES, "Ten purchases per channel").
DEFAULT_TOP_K = 10


def lifelong_tasks(aux_weight: float = 0.1) -> tasks_lib.Tasks:
  """The engagement heads plus the auxiliary effective-view head on the lifelong interest."""
  if not aux_weight:
    return tasks_lib.ENGAGEMENT
  return tasks_lib.with_head(tasks_lib.ENGAGEMENT, tasks_lib.Head(
      output=AUX_OUTPUT, labels=(F.HEAD_EFFECTIVE_VIEW,), weight=aux_weight, served=False))


def _ll(x: Dict[str, tf.Tensor], field: str) -> tf.Tensor:
  return x[xf(F.seq_key(F.LL, field))]


class PurchaseTokens:
  """Purchase tokens: each purchase's ids and side information (age, log price / stay / weight)
  summed in the shared embedding space; one ``purchase_side`` projection for every call.

  ``all(x)`` embeds the whole sequence [B, L, D]; ``at(x, indices)`` embeds only the positions
  ``indices`` ([B, ...]) selects, the same vectors as gathering ``all(x)``; ``similarity(x, q)``
  is ``all(x)`` dotted with the room ``q`` [B, L] (:class:`TokenScores`: table by table in
  training, so the whole batch is never embedded; one user's sequence embedded once in the context
  request). The extracted items are built
  with ``at``, so training's gradient reaches the embedding tables through B * C * K rows, not
  through all L (at L = 10,000 the dense [B, L, D] gradient and its sparse table updates were
  most of a step).
  """

  def __init__(self, emb: encoders.Embeddings):
    self.emb = emb
    self.side = ScoringDense(emb.dim, use_bias=False, name="purchase_side")
    tables = [emb.tables[table] for table, _ in encoders.LIFELONG_TOKEN_FIELDS]
    self.scores = TokenScores(tables, self.side, name="purchase_scores")
    self.lookup = TokenLookup(tables, self.side, name="purchase_lookup")

  @staticmethod
  def _side(x: Dict[str, tf.Tensor]) -> tf.Tensor:
    return tf.stack([_ll(x, f) for f in F.LL_FLOAT_FIELDS], axis=-1)  # [B, L, 3]

  def all(self, x: Dict[str, tf.Tensor]) -> tf.Tensor:
    """[B, L, D]: every purchase."""
    return self.scores.tokens([_ll(x, field) for _, field in encoders.LIFELONG_TOKEN_FIELDS],
                        self._side(x))

  def similarity(self, x: Dict[str, tf.Tensor], query: tf.Tensor) -> tf.Tensor:
    """[B, L]: every purchase's token dotted with its row's ``query`` [B, D] (the sequence may
    have batch 1: one user against N rooms)."""
    return self.scores([_ll(x, field) for _, field in encoders.LIFELONG_TOKEN_FIELDS]
                       + [self._side(x), query])

  def at(self, x: Dict[str, tf.Tensor], indices: tf.Tensor) -> tf.Tensor:
    """[B, ..., D]: the purchases at ``indices`` [B, ...] (the sequence may have batch 1)."""
    return self.lookup([_ll(x, field) for _, field in encoders.LIFELONG_TOKEN_FIELDS]
                       + [_ll(x, field) for field in F.LL_FLOAT_FIELDS] + [indices])


def target_room_query(emb: encoders.Embeddings, x: Dict[str, tf.Tensor]) -> tf.Tensor:
  """The target room in the purchases' space: its displayed products, categories and shop."""
  display = MaskedMeanPooling(name="pool_target_display")(
      [encoders.display_tokens(emb, x), x[xf(F.DISPLAY_LEN)]])  # [B, D]
  cats = x[xf(F.HOST_CATEGORY_IDS)]  # [B, C]
  n_cats = tf.reduce_sum(tf.cast(cats > 0, tf.float32), 1, keepdims=True)
  cat = tf.reduce_sum(emb(P.CATEGORY_VOCAB, cats), axis=1) / tf.maximum(n_cats, 1.0)  # [B, D]
  return display + cat + emb(P.SHOP_VOCAB, x[xf(F.HOST_SHOP_ID)])[:, 0]  # [B, D]


def user_channel_scores(x: Dict[str, tf.Tensor], num_categories: int) -> tf.Tensor:
  """Every purchase's score in each channel of :data:`USER_CHANNELS`, [B or 1, 2, L].

  They do not depend on the room, so with one user ranked against N rooms they stay at batch 1
  and are extracted once. (The room channels are scored inside :class:`ChannelExtraction`.)

  Args:
    x: transformed features.
    num_categories: rows of the category vocabulary (ids are < this).
  """
  cats = _ll(x, "category_ids")  # [B, L]
  length = tf.shape(cats)[1]
  # How often the user bought each purchase's category (their own interest), from a histogram.
  valid = valid_positions(x[xf(F.len_key(F.LL))], length)  # [B or 1, L]
  # A per-row bincount, O(L + V); not a one-hot sum built [B, L, V] (1 GB at B = 128, L = 10k).
  histogram = tf.math.bincount(tf.cast(cats, tf.int32), weights=valid, minlength=num_categories,
                               maxlength=num_categories, axis=-1)  # [B or 1, V]
  interest = tf.gather(histogram, cats, batch_dims=1) * tf.cast(cats > 0, tf.float32)
  recent = -tf.cast(tf.range(length), tf.float32)[tf.newaxis, :] * tf.ones_like(interest)
  return tf.stack([interest, recent], axis=1)  # [B or 1, 2, L]


def extract(x: Dict[str, tf.Tensor], purchases: PurchaseTokens, similarity: tf.Tensor,
            num_categories: int, top_k: int):
  """Top-``top_k`` purchases per channel of :data:`CHANNELS`: (valid [B, C, K], items [B, C, K,
  D]).

  Args:
    similarity: [B, L] each purchase's token dotted with the target room
      (``PurchaseTokens.similarity`` of :func:`target_room_query`).
  """
  indices, valid = ChannelExtraction(top_k, name=EXTRACTION_LAYER)(
      [x[xf(F.HOST_CATEGORY_IDS)], x[xf(F.HOST_SHOP_ID)], x[xf(F.DISPLAY_BRAND_IDS)]]
      + [_ll(x, field) for field in ("category_ids", "shop_ids", "brand_ids")]
      + [x[xf(F.len_key(F.LL))], similarity, user_channel_scores(x, num_categories)])
  return valid, purchases.at(x, indices)  # [B, C, K, D]


def in_room_categories(purchase_categories, room_categories) -> tf.Tensor:
  """[B, L] 1.0 where a purchase's category is one of the room's (the same match as the category
  channel's score), 0.0 elsewhere and on padding."""
  hits = IdMatchCount(name="relevance_category_match")([room_categories, purchase_categories])
  return tf.cast(hits > 0, tf.float32)  # [B, L]


def extraction_relevance(indices, valid, purchase_categories, room_categories) -> tf.Tensor:
  """Per example and channel, the share of extracted purchases in one of the room's categories.

  Our rtpScore: how relevant what a channel extracts is to the target room.

  Args:
    indices: [B, C, K] extracted positions; valid: [B, C, K] 1 where a slot holds a purchase.
    purchase_categories: [B, L] category ids; room_categories: [B, M] the room's (0 = padding).
  Returns:
    ([B, C] relevant extracted counts, [B, C] extracted counts).
  """
  relevant = in_room_categories(purchase_categories, room_categories)  # [B, L]
  hit = tf.gather(relevant, indices, batch_dims=1)  # [B, C, K]
  valid = tf.cast(valid, tf.float32)
  return tf.reduce_sum(hit * valid, -1), tf.reduce_sum(valid, -1)


MULTI_CHANNEL = "multi_channel"
MOST_RECENT_K = "most_recent_k"
MOST_RECENT_SAME_BUDGET = "most_recent_same_budget"


def relevance_by_extraction(indices, valid, purchase_categories, room_categories,
                            length) -> Dict[str, Tuple[tf.Tensor, tf.Tensor]]:
  """Relevant and extracted purchase counts per example, for each way of extracting.

  The ways: each channel of :data:`CHANNELS`; ``multi_channel`` (the distinct purchases any
  channel extracted, as the merged sequence holds them); ``most_recent_k`` (the K most recent,
  the recency-only baseline with one channel's budget); ``most_recent_same_budget`` (as many most
  recent purchases as ``multi_channel`` extracted for that example).

  Args:
    indices, valid: [B, C, K] as :class:`TopKExtraction` returns them.
    purchase_categories: [B, L]; room_categories: [B, M] (0 = padding); length: [B] or [B, 1].
  Returns:
    {way: (relevant [B], extracted [B])}; the relevance of a way is sum(relevant) / sum(extracted).
  """
  relevant, extracted = extraction_relevance(indices, valid, purchase_categories,
                                             room_categories)  # [B, C] each
  out = {name: (relevant[:, c], extracted[:, c]) for c, name in enumerate(CHANNELS)}
  max_len = tf.shape(purchase_categories)[1]
  is_relevant = in_room_categories(purchase_categories, room_categories)  # [B, L]
  union = tf.reduce_max(tf.one_hot(indices, max_len) * tf.cast(valid, tf.float32)[..., tf.newaxis],
                        axis=[1, 2])  # [B, L]
  out[MULTI_CHANNEL] = (tf.reduce_sum(union * is_relevant, 1), tf.reduce_sum(union, 1))
  length = tf.reshape(tf.cast(length, tf.int32), [-1])  # [B]
  k = tf.shape(indices)[-1]
  for name, budget in ((MOST_RECENT_K, tf.fill(tf.shape(length), k)),
                       (MOST_RECENT_SAME_BUDGET, tf.cast(out[MULTI_CHANNEL][1], tf.int32))):
    recent = tf.sequence_mask(tf.minimum(budget, length), max_len, tf.float32)  # [B, L]
    out[name] = (tf.reduce_sum(recent * is_relevant, 1), tf.reduce_sum(recent, 1))
  return out


def build_lifelong(spec: ModelSpec, extraction: str = "multi_channel", top_k: int = DEFAULT_TOP_K,
                   channel_softmax: bool = True, use_bias_net: bool = True,
                   use_aux: bool = True, channel_statistics: bool = True,
                   wide: bool = True, name: str = "lifelong") -> tf.keras.Model:
  """Builds the lifelong model; ``extraction`` and the switches give the ablations.

  Args:
    spec: input sizes.
    extraction: 'multi_channel' (top-K per channel, DIN attention) or 'mean_pool' (the whole
      sequence mean-pooled).
    top_k: purchases per channel.
    channel_softmax: the attention normalises per channel (False: over the merged sequence).
    use_bias_net: add the Bias Net's logit to each head.
    use_aux: expose the auxiliary ``lifelong_interest`` output.
    channel_statistics: add the relevance channels' whole-sequence hit statistics
      (``encoders.lifelong_match``; multi-channel extraction only).
    wide: the match features (the lifelong ones only with the channel statistics), the room's
      numbers and the candidate's place in the session also enter each head's logit linearly, a
      path the trainer solves first (``multitask.wide_features``, models/linear_start.py).
  """
  if extraction not in EXTRACTIONS:
    raise ValueError(f"lifelong extraction {extraction!r} is not one of {EXTRACTIONS}")
  inputs = spec.inputs()
  emb = encoders.Embeddings(spec)
  length = inputs[xf(F.len_key(F.LL))]
  purchases = PurchaseTokens(emb)
  query = target_room_query(emb, inputs)  # [B, D]
  if extraction == "multi_channel":
    # Only ranks purchases for the top-K, so no gradient flows through it.
    similarity = tf.stop_gradient(purchases.similarity(inputs, query))  # [B, L]
    valid, items = extract(inputs, purchases, similarity, spec.vocab_sizes[P.CATEGORY_VOCAB],
                           top_k)
    per_channel = ChannelDINAttention((4 * spec.embedding_dim,), channel_softmax=channel_softmax,
                                      name=ATTENTION_LAYER)([query, items, valid])  # [B, C, D]
    counts = tf.reduce_sum(valid, axis=-1)  # [B, C]
    history = [tf.math.log1p(counts),
               counts / tf.maximum(tf.cast(length, tf.float32), 1.0)]  # [B, C] each
  else:
    per_channel = MaskedMeanPooling(name="pool_lifelong")(
        [purchases.all(inputs), length])[:, tf.newaxis, :]  # [B, 1, D]
    history = []
  interest = tf.keras.layers.Flatten(name="lifelong_interest_vector")(per_channel)  # [B, C*D]
  affinity = tf.reduce_sum(per_channel * query[:, tf.newaxis, :], axis=-1)  # [B, C]: vs the room
  history.append(tf.math.log1p(tf.cast(length, tf.float32)))  # [B, 1]

  context = encoders.context(inputs)
  realtime_matches = encoders.realtime_match(inputs)
  lifelong_matches = []
  if extraction == "multi_channel" and channel_statistics:
    # What the relevance channels find in the whole sequence, before their top-K cap (a heavy
    # buyer's extracted count saturates at K): the lookup summaries every model reads the
    # purchases through, of the room's categories and shop and the displayed brands and
    # categories (the category and shop/brand channels' hits); O(1) in L per room.
    lifelong_matches = encoders.lifelong_match(inputs)  # [B, 22]
  parts = (encoders.context_embeddings(emb, inputs) + context.numeric
           + encoders.pooled_realtime(emb, inputs) + [encoders.pooled_session(emb, inputs)]
           + context.matches + realtime_matches + [interest, affinity] + history
           + lifelong_matches)
  main = BroadcastConcatenate(name="features")(parts)
  bias = None
  if use_bias_net:
    user_bias = BroadcastConcatenate(name="bias_features")(
        [emb("activity", inputs[xf(F.ACTIVITY_LEVEL)])[:, 0],
         emb(P.HOST_VOCAB, inputs[xf(F.HOST_ID)])[:, 0], affinity] + history + lifelong_matches)
    bias = MLP([32, NUM_TASKS], final_activation=None, name=BIAS_NET)(user_bias)  # [B, T]
  offsets = room_offsets(spec, inputs)
  if offsets is not None:
    bias = offsets if bias is None else tf.keras.layers.Add(name="bias_logits")([bias, offsets])
  wide_x = (wide_features(inputs, context, realtime_matches + lifelong_matches) if wide
            else None)  # [B, W]
  outputs = task_heads(extractor("shared_bottom")(main), wide=wide_x, bias_logits=bias)
  if use_aux:
    outputs[AUX_OUTPUT] = MLP([32, 1], final_activation="sigmoid", name=AUX_OUTPUT)(
        BroadcastConcatenate(name="aux_features")([interest, query, affinity]))
  return tf.keras.Model(inputs, outputs, name=name)
