"""How the candidate meets a sequence: exact id matches, counted and summarised.

An MLP over embeddings learns "this past room shares a category with the candidate" poorly (it
has to learn a dot product); ranking systems therefore feed explicit match counts next to the
attention (category/shop/room hit counts, their share and a recency-weighted sum). These layers
compute them for any pair of id features, so every model takes the same signals.
"""

from __future__ import annotations

from typing import List, Sequence

import numpy as np
import tensorflow as tf

from models.layers.blocks import PACKAGE, shared_sequence


def _ids_in_query_table(query: tf.Tensor, keys: tf.Tensor):
  """The query's ids, the rows of a table of them and the keys that can read it.

  The table covers the query's ids only (V = the largest + 1) and one more row that no query id
  reads, so its size does not grow with a key no query holds: such a key is clipped into that
  row, and a negative key into the padding row 0 (one clip, not a compare-and-select per key).

  Returns:
    (query int64 with negatives as 0, keys int64 in [0, V], V + 1 as an int64 scalar).
  """
  query = tf.maximum(tf.cast(query, tf.int64), 0)
  rows = tf.maximum(tf.reduce_max(query), 0) + 2  # ids 0..max, then the row no query reads
  keys = tf.clip_by_value(tf.cast(keys, tf.int64), 0, rows - 1)
  return query, keys, rows


def weighted_match_sums(query: tf.Tensor, keys: tf.Tensor,
                        weights: Sequence[tf.Tensor]) -> tf.Tensor:
  """For each query id, the sum of each weight column over the positions whose key equals it.

  ``out[b, q, k] = sum_l [keys[b, l] == query[b, q]] * weights[k][b, l]``, 0 where the query id
  is <= 0 (padding). Each key row's weights are counted by id into a [V, K] table once (a
  per-row weighted bincount per column, O(L + V) each, V = the largest query id + 1) and every
  query id reads its row (O(Q K)), so one user's history of 10,000 purchases meets N rooms
  without an [N, L] match matrix, and a training batch needs no sort. The ids are vocabulary
  indices (>= 0). The weights get no gradient (a count is not differentiable in its weights
  here): pass constants, e.g. position masks and decays.

  Args:
    query: [B, Q] integer ids.
    keys: [B or 1, L] integer ids (batch 1: one sequence shared by every query row).
    weights: K float [B or 1, L] weight columns, of the keys' batch (zero them on padding).
  Returns:
    [B, Q, K] float32.
  """
  rows_q, rows_k = tf.shape(query)[0], tf.shape(keys)[0]
  # A key no query can ask for is counted into a row no query reads.
  query, keys, size = _ids_in_query_table(query, keys)
  table = tf.stack([tf.math.bincount(keys, weights=tf.cast(column, tf.float32), minlength=size,
                                     maxlength=size, axis=-1)
                    for column in weights], axis=-1)  # [Bk, V, K]
  query_row = tf.cast(tf.minimum(tf.range(rows_q), rows_k - 1), tf.int64)[:, tf.newaxis]
  sums = tf.gather(tf.reshape(table, [-1, len(weights)]), query_row * size + query)  # [Bq, Q, K]
  return sums * tf.cast(query > 0, tf.float32)[..., tf.newaxis]


def position_weighted_sums(values: tf.Tensor, weights: tf.Tensor) -> tf.Tensor:
  """``out[b, k] = sum_l values[b, l] * weights[b, l, k]``: values [B, L], weights [B or 1, L, K].

  Weights of static batch 1 (one user's sequence against N rooms, the context request) meet
  the N rows in one [N, L] x [L, K] product instead of an [N, L, K] product and its sum.
  """
  if shared_sequence(weights):
    return tf.matmul(values, weights[0])  # [B, K]
  return tf.reduce_sum(values[..., tf.newaxis] * weights, axis=1)  # [B, K]


def valid_positions(length: tf.Tensor, max_len) -> tf.Tensor:
  """[B, L] float mask: 1 at the positions before each row's length ([B] or [B, 1])."""
  return tf.sequence_mask(tf.reshape(tf.cast(length, tf.int32), [-1]), max_len, tf.float32)


def id_match_count(query: tf.Tensor, keys: tf.Tensor, width: int = 1) -> tf.Tensor:
  """:class:`IdMatchCount` as a function: ``query`` [B or 1, Q] ids, ``keys`` [B or 1, L * width]
  position-major ids; returns [B, L] float32, per key position the equal (query, key) pairs."""
  positions = keys.shape[-1] // width if keys.shape[-1] is not None else -1
  # A key outside the query's ids cannot match: it reads a column no query id counts into.
  query, keys, size = _ids_in_query_table(query, keys)  # [Bq, Q], [Bk, L * W]
  # Padding (0) gets no weight, so its column stays 0 and a padded key never matches.
  counts = tf.math.bincount(query, weights=tf.cast(query > 0, tf.float32), minlength=size,
                            maxlength=size, axis=-1)  # [Bq, V]
  batch = tf.broadcast_dynamic_shape(tf.shape(query)[:1], tf.shape(keys)[:1])[0]
  if shared_sequence(keys):
    # One sequence (static batch) against N rooms: the table's columns gathered by key, ~2x
    # faster than a batched gather of N L single counts (the context request), and up to 0.1 ms
    # a layer faster than gathering rows of its transpose (BUILD_NOTES, issue 7).
    hits = tf.gather(counts, keys[0], axis=1)  # [Bq, L * W]
  else:
    # Broadcast batch: a side with one row meets the other's rows (N rooms, or none).
    counts = tf.broadcast_to(counts, [batch, tf.shape(counts)[1]])  # [B, V]
    keys = tf.broadcast_to(keys, [batch, tf.shape(keys)[1]])  # [B, L * W]
    hits = tf.gather(counts, keys, batch_dims=1)  # [B, L * W]
  return tf.reduce_sum(tf.reshape(hits, [batch, positions, width]), axis=2)  # [B, L]


@tf.keras.utils.register_keras_serializable(package=PACKAGE)
class IdMatchCount(tf.keras.layers.Layer):
  """Per key position, the number of equal (query id, key id) pairs; id 0 is padding.

  Call with ``(query [B, Q], keys [B, L * width])`` (integer ids, keys position-major with
  ``width`` ids per position, e.g. every category of a past room; either batch may be 1 and is
  then broadcast). Returns [B, L] float32. With distinct query ids this is how many of a
  position's ids occur in the query; with a sequence as the query (e.g. lifelong brands against
  displayed brands) it counts occurrences.

  The ids are vocabulary indices (>= 0; negative ids never match): each row's query ids are
  counted into a [B, V] table, V = the largest query id + 1, and every key looks its count up,
  so the cost is O(B (Q + V + L W)), not the O(B L W Q) of comparing every pair (one user's
  10,000 purchases against the brands displayed in 200 rooms). V grows with the query's ids, not
  the keys': fine for this project's vocabularies (hundreds to thousands of ids).

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
    return id_match_count(query, keys, self.width)

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

  def _split(self, inputs, first: int):
    """(the first ``first`` inputs, length, buckets or None), checking the arity."""
    expected = first + 1 + (1 if self.num_buckets else 0)
    if len(inputs) != expected:
      raise ValueError(f"{type(self).__name__} (num_buckets={self.num_buckets}) expects "
                       f"{expected} inputs, got {len(inputs)}")
    return inputs[:first], inputs[first], inputs[first + 1] if self.num_buckets else None

  def _count_and_decay_weights(self, valid) -> List[tf.Tensor]:
    """2 x [B, L]: per position, its weight in the total and in the recency-weighted sum."""
    position_weight = tf.pow(self.decay, tf.cast(tf.range(tf.shape(valid)[1]), tf.float32))
    return [valid, valid * position_weight]

  def _bucket_ids(self, buckets, dtype) -> tf.Tensor:
    """Bucket ids clipped into [0, num_buckets)."""
    return tf.clip_by_value(tf.cast(buckets, dtype), 0, self.num_buckets - 1)

  def _position_weights(self, length, max_len, buckets) -> tf.Tensor:
    """[B, L, K]: per position, the weight of each summed column (count, decay, [bucket])."""
    valid = valid_positions(length, max_len)  # [B, L]
    columns = self._count_and_decay_weights(valid)
    if self.num_buckets:
      columns.append(valid * tf.gather(self.bucket_weights,
                                       self._bucket_ids(buckets, tf.int32)))  # [B, L]
    return tf.stack(columns, axis=-1)  # [B, L, 2 or 3]

  def _summary(self, sums, length) -> tf.Tensor:
    """[B, K] sums (total, decayed, [bucketed]) -> the [B, 5 or 6] features."""
    length = tf.reshape(tf.cast(length, tf.float32), [-1, 1])  # [B, 1]
    total = sums[:, :1]  # [B, 1]
    cols = [tf.math.log1p(total), total / tf.maximum(length, 1.0),
            total / (length + self.smoothing), sums[:, 1:2], tf.cast(total > 0, tf.float32)]
    if self.num_buckets:
      cols.append(sums[:, 2:3])
    return tf.concat(cols, axis=1)  # [B, 5 or 6]

  def call(self, inputs):
    (matches,), length, buckets = self._split(inputs, 1)
    matches = tf.cast(matches, tf.float32)  # [B, L]
    weights = self._position_weights(length, tf.shape(matches)[1], buckets)  # [B or 1, L, K]
    return self._summary(position_weighted_sums(matches, weights), length)

  def get_config(self):
    return dict(super().get_config(), decay=self.decay, smoothing=self.smoothing,
                num_buckets=self.num_buckets)


@tf.keras.utils.register_keras_serializable(package=PACKAGE)
class LookupMatchSummary(MatchSummary):
  """:class:`MatchSummary` of ``IdMatchCount()([query, keys])`` computed by lookup.

  Call with ``(query [B, Q], keys [B or 1, L], length, [buckets [B or 1, L]])``: the same
  features as ``MatchSummary`` over the per-position match counts of ``query`` in ``keys``, but
  through :func:`weighted_match_sums`, so a long sequence shared by N candidates (the context
  signature) is summed into a per-id table once instead of compared with every candidate's ids.

  With buckets, the table is keyed by (id, bucket) and the matches are counted per bucket before
  the trainable bucket weights meet them ([B, buckets]): the weights' gradient never passes
  through the L positions (for L = 10,000 that per-position path was a third of a training step).
  """

  def call(self, inputs):
    (query, keys), length, buckets = self._split(inputs, 2)
    query, keys = tf.cast(query, tf.int64), tf.cast(keys, tf.int64)  # [Bq, Q], [Bk, L]
    valid = valid_positions(length, tf.shape(keys)[1]) * tf.cast(keys > 0, tf.float32)
    weights = self._count_and_decay_weights(valid)  # 2 x [Bk, L], constants: no gradient
    num_buckets = max(self.num_buckets, 1)
    if self.num_buckets:
      padding = tf.constant(0, tf.int64)
      keys = tf.where(keys > 0, keys * num_buckets + self._bucket_ids(buckets, tf.int64), padding)
      query = tf.where((query > 0)[..., tf.newaxis], query[..., tf.newaxis] * num_buckets
                       + tf.range(num_buckets, dtype=tf.int64), padding)  # [Bq, Q, nb]
    rows_q = tf.shape(query)[0]
    sums = weighted_match_sums(tf.reshape(query, [rows_q, -1]), keys, weights)  # [Bq, Q*nb, 2]
    by_bucket = tf.reduce_sum(tf.reshape(sums, [rows_q, -1, num_buckets, 2]), axis=1)
    totals = tf.reduce_sum(by_bucket, axis=1)  # [Bq, 2]: matches, recency-weighted matches
    if self.num_buckets:
      bucketed = tf.linalg.matvec(by_bucket[..., 0], self.bucket_weights)  # [Bq]
      totals = tf.concat([totals, bucketed[:, tf.newaxis]], axis=1)  # [Bq, 3]
    return self._summary(totals, length)


def match_counts(query: tf.Tensor, keys: tf.Tensor) -> tf.Tensor:
  """[B, Q]: how many of ``keys`` ([B or 1, L], 0 = padding) equal each query id (0 for 0)."""
  present = tf.cast(keys > 0, tf.float32)  # [B or 1, L]
  return weighted_match_sums(query, keys, [present])[..., 0]


@tf.keras.utils.register_keras_serializable(package=PACKAGE)
class DecayedMatchSum(tf.keras.layers.Layer):
  """Match counts summed under learned exponential decays in time and position.

  Call with ``(matches [B, L], length [B] or [B, 1], ages [B, L][, distances [B, L]])`` (ages in
  hours, position 0 the most recent; ``distances``, e.g. the impressions since each event, replace
  the positions' indices). Returns [B, K], one column per kernel k:
  ``sum_{l < length} m_l * exp(-a_k * age_l - b_k * d_l)``, with ``d_l = distances_l`` or ``l``,
  ``a_k = softplus(.) >= 0`` (per hour) and ``b_k >= 0`` (per unit of distance) trained. Age buckets
  give a step function whose widest steps (6 h to a day) span most of the decay; a feedback
  effect that fades with both elapsed time and the rooms seen since needs the two rates
  multiplied (a logistic regression on such sums beat every model by 0.01 AUC: BUILD_NOTES "Demo
  time, hand-feature baselines, learned decays").

  Args:
    half_lives_hours: initial time half-life of each kernel (one kernel each), > 0.
    position_decay: initial factor per position (per unit of distance, when distances are
      given) of every kernel, in (0, 1).
  """

  def __init__(self, half_lives_hours=(0.5, 3.0, 24.0), position_decay: float = 0.9, **kwargs):
    super().__init__(**kwargs)
    half_lives = [float(h) for h in half_lives_hours]
    if not half_lives or min(half_lives) <= 0:
      raise ValueError(f"DecayedMatchSum half_lives_hours must be non-empty and > 0, got "
                       f"{half_lives_hours}")
    if not 0.0 < float(position_decay) < 1.0:
      raise ValueError(f"DecayedMatchSum position_decay must be in (0, 1), got {position_decay}")
    self.half_lives_hours, self.position_decay = tuple(half_lives), float(position_decay)

  def build(self, input_shape):
    # softplus^-1 of each initial rate, so training starts at the given half-lives.
    inverse_softplus = lambda r: float(np.log(np.expm1(r)))  # noqa: E731
    time_rates = [np.log(2.0) / h for h in self.half_lives_hours]
    self.time_rate_raw = self.add_weight(
        name="time_rate_raw", shape=(len(time_rates),), trainable=True,
        initializer=tf.keras.initializers.Constant([inverse_softplus(r) for r in time_rates]))
    self.position_rate_raw = self.add_weight(
        name="position_rate_raw", shape=(len(time_rates),), trainable=True,
        initializer=tf.keras.initializers.Constant(inverse_softplus(-np.log(self.position_decay))))
    super().build(input_shape)

  def call(self, inputs):
    if len(inputs) not in (3, 4):
      raise ValueError(f"DecayedMatchSum expects (matches, length, ages[, distances]), got "
                       f"{len(inputs)} inputs")
    matches, length, ages = inputs[:3]
    matches = tf.cast(matches, tf.float32)  # [B, L]
    max_len = tf.shape(matches)[1]
    valid = valid_positions(length, max_len)  # [B or 1, L]
    if len(inputs) == 4:  # e.g. the impressions since each event
      position = tf.cast(inputs[3], tf.float32)[..., tf.newaxis]  # [B or 1, L, 1]
    else:
      position = tf.cast(tf.range(max_len), tf.float32)[tf.newaxis, :, tf.newaxis]  # [1, L, 1]
    exponent = (tf.cast(ages, tf.float32)[..., tf.newaxis] * tf.nn.softplus(self.time_rate_raw)
                + position * tf.nn.softplus(self.position_rate_raw))  # [B or 1, L, K]
    return position_weighted_sums(matches, valid[..., tf.newaxis] * tf.exp(-exponent))  # [B, K]

  def get_config(self):
    return dict(super().get_config(), half_lives_hours=list(self.half_lives_hours),
                position_decay=self.position_decay)


@tf.keras.utils.register_keras_serializable(package=PACKAGE)
class SessionPosition(tf.keras.layers.Layer):
  """Where the candidate stands in its session, as two numbers for a linear path.

  Call with ``(session_hits [B, S], shown [B or 1, 1], trigger_hits [B, 1], slot [B or 1, 1])``
  (``session_hits``: per session room, its categories shared with the candidate, most recent
  first; ``shown``: the rooms shown so far). Returns [B, 2]:

  - the repeats: ``sum_s session_hits[s]`` over the shown rooms, a plain count (a session tires
    of a category by each repeat; :class:`MatchSummary` has the count's log and shares only);
  - the trigger's pull at this slot: ``1[trigger_hits > 0] * decay ** slot`` (the item that
    opened the session matters less the deeper the session goes).

  Args:
    decay: per-slot decay of the trigger's pull, in (0, 1].
  """

  def __init__(self, decay: float = 0.85, **kwargs):
    super().__init__(**kwargs)
    if not 0.0 < float(decay) <= 1.0:
      raise ValueError(f"SessionPosition decay must be in (0, 1], got {decay}")
    self.decay = float(decay)

  def call(self, inputs):
    if len(inputs) != 4:
      raise ValueError(f"SessionPosition expects (session_hits, shown, trigger_hits, slot), got "
                       f"{len(inputs)} inputs")
    session_hits, shown, trigger_hits, slot = inputs
    session_hits = tf.cast(session_hits, tf.float32)  # [B, S]
    valid = valid_positions(shown, tf.shape(session_hits)[1])  # [B or 1, S]
    repeats = tf.reduce_sum(session_hits * valid, axis=1, keepdims=True)  # [B, 1]
    pull = tf.pow(self.decay, tf.cast(tf.reshape(slot, [-1, 1]), tf.float32))  # [B or 1, 1]
    trigger = tf.cast(trigger_hits > 0, tf.float32) * pull  # [B, 1]
    return tf.concat([repeats, trigger], axis=1)  # [B, 2]

  def get_config(self):
    return dict(super().get_config(), decay=self.decay)
