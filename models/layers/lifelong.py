"""Lifelong-sequence blocks (seed 001): top-K channel extraction, channel-wise DIN attention, Mixout.

A lifelong purchase history is too long and too mixed to attend over whole: each extraction channel
scores every purchase (by category match with the target room, by embedding similarity, by the
user's own interests, by recency ...) and keeps its top K. DIN attention then weighs the extracted
items against the target room with a softmax *per channel*, so a long merged sequence does not
dilute the weight of the few relevant items. Its MLP can start from a previous model's weights and
be regularised toward them with Mixout (Lee et al., 2020).
"""

from __future__ import annotations

from typing import Sequence

import tensorflow as tf

from models.layers.blocks import PACKAGE, shared_sequence
from models.layers.match import id_match_count

# Score given to positions that must never be extracted (padding): below any real score.
_NEVER = -1e9


@tf.keras.utils.register_keras_serializable(package=PACKAGE)
class TopKExtraction(tf.keras.layers.Layer):
  """Each channel's top-``k`` positions of a padded, most-recent-first sequence.

  Call with ``(scores [B, C, L], length [B] or [B, 1])``, or with
  ``(scores, length, user_scores [B or 1, C_u, L])`` where ``user_scores`` are channels of the
  user alone: with one user ranked against N rooms (``user_scores`` and ``length`` of batch 1
  there) their top-K is taken once and broadcast to the N rows, and they follow ``scores``'
  channels in the output. Positions at or
  past ``length`` are never extracted; ties go to the more recent (lower) position. Returns
  ``(indices [B, C (+ C_u), K] int32, valid [B, C (+ C_u), K] float32)``: ``valid`` is 0 for a
  slot that holds padding (the sequence is shorter than ``k``; its index is clipped into the
  sequence) and, for a channel in ``relevance_channels``, for an item whose score is not > 0 (a
  category channel must not fill its K with unrelated purchases).

  Args:
    k: items per channel (>= 1; a sequence shorter than ``k`` leaves slots invalid).
    relevance_channels: per channel, True if only positive scores count as extracted.
  """

  def __init__(self, k: int, relevance_channels: Sequence[bool], **kwargs):
    super().__init__(**kwargs)
    if int(k) < 1:
      raise ValueError(f"TopKExtraction k must be >= 1, got {k}")
    if not relevance_channels:
      raise ValueError("TopKExtraction needs at least one channel in relevance_channels")
    self.k = int(k)
    self.relevance_channels = [bool(r) for r in relevance_channels]

  def build(self, input_shape):
    channels = sum(int(tf.TensorShape(shape)[1]) for i, shape in enumerate(input_shape) if i != 1)
    if channels != len(self.relevance_channels):
      raise ValueError(f"TopKExtraction got {channels} score channels but "
                       f"{len(self.relevance_channels)} relevance_channels")
    super().build(input_shape)

  def _top_k(self, scores, length, relevance_channels):
    """(indices, valid) [B, C, K] of ``scores`` [B, C, L] under ``relevance_channels`` [C]."""
    max_len = tf.shape(scores)[-1]
    # Added, not selected: the [B or 1, 1, L] penalty broadcasts, so no [B, C, L] fill is built
    # (scores are far smaller than 1e9, so a padded position stays below _NEVER / 2).
    penalty = tf.sequence_mask(length, maxlen=max_len, dtype=tf.float32) - 1.0  # [B, L]: 0 or -1
    masked = scores + (-_NEVER) * penalty[:, tf.newaxis, :]  # [B, C, L]
    if scores.shape[-1] is None or scores.shape[-1] < self.k:
      # Fewer stored positions than k: never-picked columns fill the rest (a copy of the
      # scores, so skipped when the length is known to be enough).
      masked = tf.pad(masked, [[0, 0], [0, 0], [0, tf.maximum(self.k - max_len, 0)]],
                      constant_values=_NEVER)  # [B, C, max(L, K)]
    top_scores, indices = tf.math.top_k(masked, k=self.k, sorted=True)  # [B, C, K]
    indices = tf.minimum(indices, max_len - 1)  # a padded column's slot is invalid anyway
    relevance = tf.constant(relevance_channels)[tf.newaxis, :, tf.newaxis]  # [1, C, 1]
    valid = tf.logical_and(top_scores > _NEVER / 2,
                           tf.logical_or(tf.logical_not(relevance), top_scores > 0.0))
    return indices, tf.cast(valid, tf.float32)

  def call(self, inputs):
    scores, length = inputs[0], inputs[1]
    length = tf.reshape(tf.cast(length, tf.int32), [-1])  # [B]
    channels = scores.shape[1]
    indices, valid = self._top_k(scores, length, self.relevance_channels[:channels])
    if len(inputs) > 2:
      user_indices, user_valid = self._top_k(inputs[2], length,
                                             self.relevance_channels[channels:])  # [1 or B, ...]
      shape = tf.concat([tf.shape(indices)[:1], tf.shape(user_indices)[1:]], axis=0)
      indices = tf.concat([indices, tf.broadcast_to(user_indices, shape)], axis=1)
      valid = tf.concat([valid, tf.broadcast_to(user_valid, shape)], axis=1)
    return indices, valid

  def get_config(self):
    return dict(super().get_config(), k=self.k, relevance_channels=self.relevance_channels)


def relevance_scores(room_categories, room_shop, room_brands, categories, shops, brands):
  """The relevance channels' score of every purchase against each room.

  Args:
    room_categories: [B, M] the room's category ids; room_shop: [B, 1]; room_brands: [B, Nb] the
      displayed products' brands (0 = padding, as every id below).
    categories, shops, brands: [B or 1, L] each purchase's ids.
  Returns:
    (category [B, L]: how many of the room's categories are the purchase's;
    shop_brand [B, L]: 1 for the room's shop + 1 for a brand the room displays, in {0, 1, 2}).
  """
  category = id_match_count(room_categories, categories)
  same_shop = id_match_count(room_shop, shops)
  same_brand = tf.minimum(id_match_count(room_brands, brands), 1.0)
  return category, same_shop + same_brand


def first_positions(keys: tf.Tensor, length: tf.Tensor, queries: tf.Tensor, k: int):
  """For one sequence of ids, the first ``k`` positions holding each query id.

  The sequence is sorted by id once (stable, so each id's positions stay in order) and each
  query id finds its run by binary search: O(L log L + N Q (log L + k)), with no [N, L] work.

  Args:
    keys: [L] integer ids; positions at or past ``length`` (a scalar) never match.
    queries: [N, Q] integer ids; an id <= 0 (padding) finds nothing.
    k: positions per query id.
  Returns:
    (positions [N, Q, k] int32, ascending, 0 where nothing was found; found [N, Q, k] bool).
  """
  keys = tf.cast(keys, tf.int64)
  max_len = tf.shape(keys)[0]
  keys = tf.where(tf.range(max_len) < tf.cast(length, tf.int32), keys, -1)  # padding: no match
  order = tf.argsort(keys, stable=True)  # [L]
  # One sentinel past the end, so that a slot beyond the sequence reads an id no query holds.
  sorted_keys = tf.concat([tf.gather(keys, order), [-1]], 0)  # [L + 1]
  order = tf.concat([order, [0]], 0)
  queries = tf.cast(queries, tf.int64)
  start = tf.reshape(tf.searchsorted(sorted_keys[tf.newaxis, :-1], tf.reshape(queries, [1, -1])),
                     tf.shape(queries))  # [N, Q]
  slot = tf.minimum(start[..., tf.newaxis] + tf.range(k), max_len)  # [N, Q, k]
  found = tf.logical_and(tf.equal(tf.gather(sorted_keys, slot), queries[..., tf.newaxis]),
                         queries[..., tf.newaxis] > 0)
  return tf.where(found, tf.gather(order, slot), 0), found


def _first_of_duplicates(ids):
  """[N, Q] bool: True where an id is > 0 and no earlier id of its row is the same."""
  same = tf.equal(ids[:, :, tf.newaxis], ids[:, tf.newaxis, :])  # [N, Q, Q]: [n, j, i]
  q = tf.shape(ids)[1]
  earlier = tf.linalg.band_part(tf.ones([q, q], tf.bool), -1, 0)  # i <= j ...
  earlier = tf.logical_and(earlier, tf.logical_not(tf.eye(q, dtype=tf.bool)))  # ... i < j
  return tf.logical_and(ids > 0, tf.logical_not(tf.reduce_any(tf.logical_and(same, earlier), -1)))


def _top_by_score(positions, scores, k: int, max_len):
  """The top ``k`` of candidate positions [N, C] by (score desc, position asc); a score <= 0 is
  not a candidate. Returns (indices [N, k] int32, 0 on an empty slot; valid [N, k] float32)."""
  key = tf.where(scores > 0, scores * tf.cast(max_len + 1, tf.float32)
                 - tf.cast(positions, tf.float32), _NEVER)  # exact: both are small integers
  key = tf.pad(key, [[0, 0], [0, k]], constant_values=_NEVER)  # fewer candidates than k
  positions = tf.pad(positions, [[0, 0], [0, k]])
  top, picked = tf.math.top_k(key, k=k)
  valid = top > _NEVER / 2
  return tf.where(valid, tf.gather(positions, picked, batch_dims=1), 0), tf.cast(valid, tf.float32)


def hard_search(room_categories, room_shop, room_brands, categories, shops, brands, length,
                k: int):
  """The relevance channels' top-``k`` for one user's purchases against N rooms, from an index
  of the purchases by id (SIM's hard search) instead of scoring all L purchases per room.

  Equal to ``top_k`` of :func:`relevance_scores` (score desc, then the more recent; a score of 0
  is never extracted), from a few short lists per room:
  - category: the first ``k`` purchases of each distinct room category, scored by how often the
    room lists it;
  - shop/brand: the first ``k`` purchases of each (room shop, displayed brand) pair (score 2), and
    the first ``k`` of the shop and of each displayed brand less their score-2 entries (score 1).
    ``k`` is enough: with r score-2 purchases, the top-k holds at most k - r of score 1, and a
    list's j-th score-1 entry (j <= k - r) has at most r score-2 entries before it, so it is
    among the list's first k.

  Args:
    room_categories: [N, M]; room_shop: [N, 1]; room_brands: [N, Nb] (0 = padding).
    categories, shops, brands: [1, L] the user's purchases; length: its length (any shape with
      one element).
    k: purchases per channel.
  Returns:
    (indices [N, 2, k] int32, valid [N, 2, k] float32) for the category and shop/brand channels;
    an invalid slot's index is 0.
  """
  categories, shops, brands = (tf.cast(ids[0], tf.int64) for ids in (categories, shops, brands))
  length = tf.reshape(length, [])
  max_len = tf.shape(categories)[0]
  room_categories, room_shop, room_brands = (
      tf.cast(ids, tf.int64) for ids in (room_categories, room_shop, room_brands))
  n = tf.shape(room_categories)[0]

  positions, found = first_positions(categories, length, room_categories, k)  # [N, M, k]
  multiplicity = tf.reduce_sum(tf.cast(tf.equal(room_categories[:, :, tf.newaxis],
                                                room_categories[:, tf.newaxis, :]), tf.float32),
                               -1)  # [N, M]
  score = tf.where(tf.logical_and(found, _first_of_duplicates(room_categories)[..., tf.newaxis]),
                   multiplicity[..., tf.newaxis], 0.0)
  category = _top_by_score(tf.reshape(positions, [n, -1]), tf.reshape(score, [n, -1]), k, max_len)

  shop = room_shop[:, 0]  # [N]
  brand_lists = _first_of_duplicates(room_brands)  # [N, Nb]
  # (shop, brand) as one id; a purchase with either id missing gets none.
  width = tf.maximum(tf.reduce_max(brands), tf.reduce_max(room_brands)) + 1
  pair_ids = tf.where(tf.logical_and(shops > 0, brands > 0), shops * width + brands, -1)
  room_pairs = tf.where(tf.logical_and(shop[:, tf.newaxis] > 0, brand_lists),
                        shop[:, tf.newaxis] * width + room_brands, 0)  # [N, Nb]
  pair_pos, pair_found = first_positions(pair_ids, length, room_pairs, k)  # [N, Nb, k]: score 2
  # The shop's and the brands' lists keep their score-1 entries only (a score-2 one is its pair
  # list's): the shop's those of a brand not displayed, a brand's those of another shop.
  shop_pos, shop_found = first_positions(shops, length, room_shop, k)  # [N, 1, k]
  displayed = tf.reduce_any(tf.logical_and(
      tf.equal(tf.gather(brands, shop_pos)[..., tf.newaxis], room_brands[:, tf.newaxis, tf.newaxis]),
      room_brands[:, tf.newaxis, tf.newaxis] > 0), -1)  # [N, 1, k]
  shop_found = tf.logical_and(shop_found, tf.logical_not(displayed))
  brand_pos, brand_found = first_positions(brands, length, room_brands, k)  # [N, Nb, k]
  same_shop = tf.logical_and(tf.equal(tf.gather(shops, brand_pos), shop[:, tf.newaxis, tf.newaxis]),
                             shop[:, tf.newaxis, tf.newaxis] > 0)  # [N, Nb, k]
  brand_found = tf.logical_and(tf.logical_and(brand_found, brand_lists[..., tf.newaxis]),
                               tf.logical_not(same_shop))
  flat = lambda t: tf.reshape(t, [n, -1])  # noqa: E731
  score = lambda found, value: tf.where(flat(found), value, 0.0)  # noqa: E731
  shop_brand = _top_by_score(
      tf.concat([flat(pair_pos), flat(shop_pos), flat(brand_pos)], 1),  # [N, C]
      tf.concat([score(pair_found, 2.0), score(shop_found, 1.0), score(brand_found, 1.0)], 1),
      k, max_len)
  return (tf.stack([category[0], shop_brand[0]], 1),  # [N, 2, k]
          tf.stack([category[1], shop_brand[1]], 1))


@tf.keras.utils.register_keras_serializable(package=PACKAGE)
class ChannelExtraction(tf.keras.layers.Layer):
  """The lifelong model's extraction: each channel's top-``k`` purchases for each room.

  Call with ``[room_categories [B, M], room_shop [B, 1], room_brands [B, Nb], categories,
  shops, brands [B or 1, L], length [B or 1 (, 1)], similarity [B, L], user_scores [B or 1,
  C_u, L]]``. The channels, in order: category and shop/brand (:func:`relevance_scores`; only a
  score > 0 is extracted), similarity, then the user's own channels. Returns ``(indices, valid)``
  [B, 3 + C_u, k] as :class:`TopKExtraction` does.

  A batch of sequences (training) scores every purchase and takes the top-k
  (:class:`TopKExtraction`). One user's sequence of static batch 1 against N rooms (the context
  request) extracts the relevance channels by :func:`hard_search`, so only the similarity
  channel is scored over all L purchases per room: the same purchases, in the same order.

  Args:
    k: purchases per channel (>= 1).
  """

  RELEVANCE = (True, True)

  def __init__(self, k: int, **kwargs):
    super().__init__(**kwargs)
    if int(k) < 1:
      raise ValueError(f"ChannelExtraction k must be >= 1, got {k}")
    self.k = int(k)

  def build(self, input_shape):
    user_channels = int(tf.TensorShape(input_shape[-1])[1])
    self.every_channel = TopKExtraction(self.k, self.RELEVANCE + (False,) * (1 + user_channels),
                                        name="every_channel")
    self.scored_channels = TopKExtraction(self.k, (False,) * (1 + user_channels),
                                          name="scored_channels")
    super().build(input_shape)

  def call(self, inputs):
    (room_categories, room_shop, room_brands, categories, shops, brands, length, similarity,
     user_scores) = inputs
    if shared_sequence(categories, shops, brands):
      relevance = hard_search(room_categories, room_shop, room_brands, categories, shops, brands,
                              length, self.k)
      indices, valid = self.scored_channels([similarity[:, tf.newaxis, :], length, user_scores])
      return (tf.concat([relevance[0], indices], 1),  # [B, 3 + C_u, k]
              tf.concat([relevance[1], valid], 1))
    category, shop_brand = relevance_scores(room_categories, room_shop, room_brands,
                                            categories, shops, brands)  # [B, L] each
    return self.every_channel([tf.stack([category, shop_brand, similarity], 1), length,
                               user_scores])

  def get_config(self):
    return dict(super().get_config(), k=self.k)


@tf.keras.utils.register_keras_serializable(package=PACKAGE)
class MixoutDense(tf.keras.layers.Layer):
  """Dense layer with Mixout toward anchor weights (e.g. a previous model's).

  In training each weight is, with probability ``rate``, replaced by its anchor, and the result is
  rescaled so that its expectation is the current weight:
  ``w~ = u + (1 - M) (w - u) / (1 - p)``, ``M ~ Bernoulli(p)`` per element. ``rate = 0`` is a plain
  Dense layer; ``rate = 1`` uses the anchor weights only. At inference the current weights are used.
  The anchors are the initial weights until :meth:`set_anchor` copies the current ones (after a warm
  start). ``rate`` is a variable so a warm start can switch Mixout on without rebuilding.

  Args:
    units: output size (>= 1).
    activation: Keras activation name or None.
    rate: Mixout probability in [0, 1].
  """

  def __init__(self, units: int, activation: str | None = None, rate: float = 0.0, **kwargs):
    super().__init__(**kwargs)
    if int(units) < 1:
      raise ValueError(f"MixoutDense units must be >= 1, got {units}")
    if not 0.0 <= rate <= 1.0:
      raise ValueError(f"MixoutDense rate must be in [0, 1], got {rate}")
    self.units, self.initial_rate = int(units), float(rate)
    self.activation = tf.keras.activations.get(activation)

  def build(self, input_shape):
    d_in = int(input_shape[-1])
    self.kernel = self.add_weight("kernel", [d_in, self.units],
                                  initializer="glorot_uniform")
    self.bias = self.add_weight("bias", [self.units], initializer="zeros")
    self.anchor_kernel = self.add_weight("anchor_kernel", [d_in, self.units], trainable=False,
                                         initializer="zeros")
    self.anchor_bias = self.add_weight("anchor_bias", [self.units], trainable=False,
                                       initializer="zeros")
    self.rate = self.add_weight("rate", [], trainable=False,
                                initializer=tf.keras.initializers.Constant(self.initial_rate))
    self.set_anchor()
    super().build(input_shape)

  def set_anchor(self) -> None:
    """The current weights become the anchors Mixout mixes toward."""
    self.anchor_kernel.assign(self.kernel)
    self.anchor_bias.assign(self.bias)

  def _mix(self, weight, anchor):
    keep = tf.cast(tf.random.uniform(tf.shape(weight)) >= self.rate, weight.dtype)  # 1 - M
    return anchor + tf.math.divide_no_nan(keep * (weight - anchor), 1.0 - self.rate)

  def effective_weights(self, training=None):
    """(kernel [D_in, units], bias [units]) as this call uses them: mixed in training."""
    if training:
      return self._mix(self.kernel, self.anchor_kernel), self._mix(self.bias, self.anchor_bias)
    return self.kernel, self.bias

  def call(self, x, training=None):  # [..., D_in] -> [..., units]
    kernel, bias = self.effective_weights(training)
    return self.activation(tf.tensordot(x, kernel, axes=1) + bias)

  def get_config(self):
    return dict(super().get_config(), units=self.units, rate=self.initial_rate,
                activation=tf.keras.activations.serialize(self.activation))


@tf.keras.utils.register_keras_serializable(package=PACKAGE)
class ChannelDINAttention(tf.keras.layers.Layer):
  """DIN target attention over extracted items, with a softmax per channel.

  Call with ``(query [B, D], items [B, C, K, D], valid [B, C, K])``. An MLP on
  ``[q, k, q - k, q * k]`` gives each item a logit; the weights are a softmax over each channel's
  valid items (``channel_softmax``) or over all C * K merged items (the dilution the channel-wise
  softmax avoids). Returns the per-channel weighted sums ``[B, C, D]`` (zeros for an empty channel)
  and, with ``return_weights=True``, also the weights ``[B, C, K]``.

  Args:
    hidden_units: the attention MLP's hidden sizes (non-empty, positive).
    channel_softmax: normalise per channel (True) or over the merged sequence (False).
    mixout_rate: Mixout of the MLP toward its anchors (see :class:`MixoutDense`).
  """

  def __init__(self, hidden_units: Sequence[int] = (32,), channel_softmax: bool = True,
               mixout_rate: float = 0.0, **kwargs):
    super().__init__(**kwargs)
    hidden_units = [int(u) for u in hidden_units]
    if not hidden_units or any(u < 1 for u in hidden_units):
      raise ValueError(f"ChannelDINAttention hidden_units must be positive, got {hidden_units}")
    if not 0.0 <= mixout_rate <= 1.0:
      raise ValueError(f"ChannelDINAttention mixout_rate must be in [0, 1], got {mixout_rate}")
    self.hidden_units, self.channel_softmax = hidden_units, bool(channel_softmax)
    self.mixout_rate = float(mixout_rate)

  def build(self, input_shape):
    self.mlp = [MixoutDense(u, "relu", self.mixout_rate, name=f"hidden_{i}")
                for i, u in enumerate(self.hidden_units)]
    self.mlp.append(MixoutDense(1, None, self.mixout_rate, name="logit"))
    # Built here: the first layer's weights are read by _first_layer, not through its call.
    width = 4 * int(tf.TensorShape(input_shape[1])[-1])  # [q, k, q - k, q * k]
    for dense in self.mlp:
      dense.build(tf.TensorShape([None, width]))
      width = dense.units
    super().build(input_shape)

  def mixout_layers(self):
    return list(self.mlp)

  def call(self, inputs, training=None, return_weights: bool = False):
    query, items, valid = inputs
    h = self._first_layer(query, items, training)  # [B, C, K, H]
    for dense in self.mlp[1:]:
      h = dense(h, training=training)
    logits = h[..., 0]  # [B, C, K]
    mask = valid > 0
    logits = tf.where(mask, logits, tf.fill(tf.shape(logits), logits.dtype.min))
    if self.channel_softmax:
      weights = tf.nn.softmax(logits, axis=-1)  # [B, C, K]
    else:
      shape = tf.shape(logits)
      weights = tf.reshape(tf.nn.softmax(tf.reshape(logits, [shape[0], -1]), axis=-1), shape)
    weights *= valid  # an empty channel (or sequence) gets no weight, not a uniform one
    pooled = tf.einsum("bck,bckd->bcd", weights, items)  # [B, C, D]
    return (pooled, weights) if return_weights else pooled

  def _first_layer(self, query, items, training):
    """The first MLP layer on ``[q, k, q - k, q * k]``, rearranged so that no [B, C, K, 4D]
    input is built: with W split by rows into W_q, W_k, W_d, W_p,
    ``q W_q + k W_k + (q - k) W_d + (q * k) W_p = q (W_q + W_d) + k M_q``, where
    ``M_q = (W_k - W_d) + q^T * W_p`` ([D, H], each column of W_p scaled by q). The query's part
    and M_q are computed once per row, and each item costs one D-wide product: a quarter of the
    multiply-adds of the 4D-wide input, and no per-item copy of ``q * k`` (the context request
    ranks 200 rooms x 100 items)."""
    first = self.mlp[0]
    kernel, bias = first.effective_weights(training)  # [4D, H], [H]
    w_query, w_item, w_diff, w_prod = tf.split(kernel, 4, axis=0)  # [D, H] each
    query_part = tf.matmul(query, w_query + w_diff) + bias  # [B, H]
    row_kernels = (w_item - w_diff)[tf.newaxis] + query[:, :, tf.newaxis] * w_prod  # [B, D, H]
    dynamic = tf.shape(items)
    channels, per_channel, dim = (items.shape[i] if items.shape[i] is not None else dynamic[i]
                                  for i in (1, 2, 3))
    flat = tf.reshape(items, [-1, channels * per_channel, dim])  # [B, C * K, D]
    item_part = tf.reshape(tf.matmul(flat, row_kernels),
                           [-1, channels, per_channel, first.units])  # [B, C, K, H]
    return first.activation(item_part + query_part[:, tf.newaxis, tf.newaxis, :])

  def get_config(self):
    return dict(super().get_config(), hidden_units=self.hidden_units,
                channel_softmax=self.channel_softmax, mixout_rate=self.mixout_rate)
