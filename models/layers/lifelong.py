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

from models.layers.blocks import PACKAGE

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
    ``q W_q + k W_k + (q - k) W_d + (q * k) W_p = q (W_q + W_d) + [k, q * k] [W_k - W_d; W_p]``.
    The query's part is computed once per row, not once per item: 2D of the 4D inputs per item
    (the context request ranks 200 rooms x 100 items)."""
    first = self.mlp[0]
    kernel, bias = first.effective_weights(training)  # [4D, H], [H]
    w_query, w_item, w_diff, w_prod = tf.split(kernel, 4, axis=0)  # [D, H] each
    query_part = tf.matmul(query, w_query + w_diff) + bias  # [B, H]
    pair = tf.concat([items, query[:, tf.newaxis, tf.newaxis, :] * items], -1)  # [B, C, K, 2D]
    pair_part = tf.tensordot(pair, tf.concat([w_item - w_diff, w_prod], 0), axes=1)  # [B, C, K, H]
    return first.activation(pair_part + query_part[:, tf.newaxis, tf.newaxis, :])

  def get_config(self):
    return dict(super().get_config(), hidden_units=self.hidden_units,
                channel_softmax=self.channel_softmax, mixout_rate=self.mixout_rate)
