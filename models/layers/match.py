"""How the candidate meets a sequence: exact id matches, counted and summarised.

An MLP over embeddings learns "this past room shares a category with the candidate" poorly (it
has to learn a dot product); ranking systems therefore feed explicit match counts next to the
attention (category/shop/room hit counts, their share and a recency-weighted sum). These layers
compute them for any pair of id features, so every model takes the same signals.
"""

from __future__ import annotations

import tensorflow as tf

from models.layers.blocks import PACKAGE


@tf.keras.utils.register_keras_serializable(package=PACKAGE)
class IdMatchCount(tf.keras.layers.Layer):
  """Per key position, the number of equal (query id, key id) pairs; id 0 is padding.

  Call with ``(query [B, Q], keys [B, L * width])`` (integer ids, keys position-major with
  ``width`` ids per position, e.g. every category of a past room). Returns [B, L] float32.
  With distinct query ids this is how many of a position's ids occur in the query; with a
  sequence as the query (e.g. lifelong brands against displayed brands) it counts occurrences.

  Args:
    width: ids per key position (>= 1).
  """

  def __init__(self, width: int = 1, **kwargs):
    super().__init__(**kwargs)
    if int(width) < 1:
      raise ValueError(f"IdMatchCount width must be >= 1, got {width}")
    self.width = int(width)

  def call(self, inputs):
    query, keys = inputs
    if keys.shape[-1] is not None and keys.shape[-1] % self.width:
      raise ValueError(f"IdMatchCount keys length {keys.shape[-1]} is not a multiple of "
                       f"width {self.width}")
    positions = keys.shape[-1] // self.width if keys.shape[-1] is not None else -1
    keys = tf.reshape(keys, [-1, positions, self.width])  # [B, L, W]
    query = tf.cast(query, keys.dtype)
    equal = tf.equal(keys[:, :, :, tf.newaxis], query[:, tf.newaxis, tf.newaxis, :])  # [B,L,W,Q]
    hits = tf.cast(tf.logical_and(equal, (keys > 0)[..., tf.newaxis]), tf.float32)
    return tf.reduce_sum(hits, axis=[2, 3])  # [B, L]

  def get_config(self):
    return dict(super().get_config(), width=self.width)


@tf.keras.utils.register_keras_serializable(package=PACKAGE)
class MatchSummary(tf.keras.layers.Layer):
  """Summary features of per-position match counts over a padded, most-recent-first sequence.

  Call with ``(matches [B, L], length [B] or [B, 1])`` or, when ``num_buckets`` is set, with
  ``(matches, length, buckets [B, L])`` (e.g. age buckets). Positions at or past ``length`` are
  ignored. Returns [B, 5] (+1 with buckets):

  - ``log1p(total)`` with ``total = sum_l m_l``;
  - ``total / max(length, 1)``: the share of the sequence that matches;
  - ``total / (length + smoothing)``: the share shrunk toward 0 for short histories;
  - ``sum_l decay**l * m_l``: recency-weighted, position 0 the most recent;
  - ``1[total > 0]``;
  - with buckets, ``sum_l w[bucket_l] * m_l`` with one trainable weight per bucket (initialised
    to 1): a learned recency decay.

  Args:
    decay: per-position decay of the recency-weighted sum, in (0, 1].
    smoothing: pseudo-count of the shrunk share (>= 0).
    num_buckets: size of the bucket space of the learned weighting; 0 disables it.
  """

  def __init__(self, decay: float = 0.85, smoothing: float = 5.0, num_buckets: int = 0,
               **kwargs):
    super().__init__(**kwargs)
    if not 0.0 < float(decay) <= 1.0:
      raise ValueError(f"MatchSummary decay must be in (0, 1], got {decay}")
    if float(smoothing) < 0.0:
      raise ValueError(f"MatchSummary smoothing must be >= 0, got {smoothing}")
    if int(num_buckets) < 0:
      raise ValueError(f"MatchSummary num_buckets must be >= 0, got {num_buckets}")
    self.decay, self.smoothing, self.num_buckets = float(decay), float(smoothing), int(num_buckets)

  def build(self, input_shape):
    if self.num_buckets:
      self.bucket_weights = self.add_weight(
          name="bucket_weights", shape=(self.num_buckets,), initializer="ones", trainable=True)
    super().build(input_shape)

  def call(self, inputs):
    if self.num_buckets:
      if len(inputs) != 3:
        raise ValueError("MatchSummary with num_buckets expects (matches, length, buckets)")
      matches, length, buckets = inputs
    else:
      if len(inputs) != 2:
        raise ValueError("MatchSummary expects (matches, length)")
      matches, length = inputs
    matches = tf.cast(matches, tf.float32)
    length = tf.reshape(tf.cast(length, tf.float32), [-1, 1])  # [B, 1]
    max_len = tf.shape(matches)[1]
    valid = tf.sequence_mask(tf.cast(length[:, 0], tf.int32), max_len, tf.float32)  # [B, L]
    m = matches * valid  # [B, L]
    total = tf.reduce_sum(m, axis=1, keepdims=True)  # [B, 1]
    position_weight = tf.pow(self.decay, tf.cast(tf.range(max_len), tf.float32))  # [L]
    cols = [tf.math.log1p(total), total / tf.maximum(length, 1.0),
            total / (length + self.smoothing),
            tf.reduce_sum(m * position_weight, axis=1, keepdims=True),
            tf.cast(total > 0, tf.float32)]
    if self.num_buckets:
      w = tf.gather(self.bucket_weights, tf.clip_by_value(tf.cast(buckets, tf.int32), 0,
                                                          self.num_buckets - 1))  # [B, L]
      cols.append(tf.reduce_sum(m * w, axis=1, keepdims=True))
    return tf.concat(cols, axis=1)  # [B, 5 or 6]

  def get_config(self):
    return dict(super().get_config(), decay=self.decay, smoothing=self.smoothing,
                num_buckets=self.num_buckets)
