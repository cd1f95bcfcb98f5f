"""Basic blocks: MLP, masked mean pooling over padded sequences, pooling embedding tables."""

from __future__ import annotations

from typing import Sequence

import tensorflow as tf

PACKAGE = "livestream"
# SequenceEmbedding pools by histogram while its table has at most this many rows per position.
HISTOGRAM_ROWS_PER_POSITION = 4
# It scores ids against a query through a [B, V] table of scores while V <= this times L: per
# row, V D multiply-adds and L scalar gathers, against L D gathered and multiplied. That wins in
# training (every row its own sequence); one user's sequence shared by N rooms would pay N L
# gathers per table, so TokenScores looks it up once instead.
SCORE_TABLE_ROWS_PER_POSITION = 1


@tf.keras.utils.register_keras_serializable(package=PACKAGE)
class MLP(tf.keras.layers.Layer):
  """Stack of Dense layers with an activation and optional dropout between them.

  Args:
    units: sizes of the hidden layers, e.g. (256, 128); must be non-empty and positive.
    activation: activation after every layer (the last one too unless ``final_activation``
      says otherwise).
    dropout: dropout rate after each hidden layer, in [0, 1).
    final_activation: activation of the last layer; defaults to ``activation``.
  """

  def __init__(self, units: Sequence[int], activation: str = "relu", dropout: float = 0.0,
               final_activation: str | None = "same", **kwargs):
    super().__init__(**kwargs)
    units = [int(u) for u in units]
    if not units or any(u <= 0 for u in units):
      raise ValueError(f"MLP units must be a non-empty list of positive ints, got {units}")
    if not 0.0 <= dropout < 1.0:
      raise ValueError(f"MLP dropout must be in [0, 1), got {dropout}")
    self.units = units
    self.activation = activation
    self.dropout = dropout
    self.final_activation = activation if final_activation == "same" else final_activation

  def build(self, input_shape):
    self._dense = []
    for i, u in enumerate(self.units):
      act = self.final_activation if i == len(self.units) - 1 else self.activation
      self._dense.append(tf.keras.layers.Dense(u, activation=act, name=f"dense_{i}"))
    # Dropout layers only exist when used (an unbuilt layer is skipped at SavedModel export).
    self._drop = ([tf.keras.layers.Dropout(self.dropout) for _ in self.units[:-1]]
                  if self.dropout else [])
    super().build(input_shape)

  @property
  def output_layer(self) -> tf.keras.layers.Dense:
    """The last Dense layer (it exists once the MLP is built)."""
    if not self.built:
      raise ValueError(f"MLP {self.name!r} has no output layer before it is built")
    return self._dense[-1]

  def call(self, x, training=None):  # x: [B, D_in] -> [B, units[-1]]
    for i, dense in enumerate(self._dense):
      x = dense(x)
      if i < len(self._drop):
        x = self._drop[i](x, training=training)
    return x

  def get_config(self):
    return dict(super().get_config(), units=self.units, activation=self.activation,
                dropout=self.dropout, final_activation=self.final_activation)


@tf.keras.utils.register_keras_serializable(package=PACKAGE)
class MaskedMeanPooling(tf.keras.layers.Layer):
  """Mean of the first ``length`` vectors of a padded sequence; zeros for an empty sequence.

  Call with ``(sequence [B, L, D], length [B] or [B, 1])``; returns [B, D].
  """

  def call(self, inputs):
    seq, length = inputs
    length = tf.reshape(tf.cast(length, tf.int32), [-1])  # [B]
    mask = tf.sequence_mask(length, maxlen=tf.shape(seq)[1], dtype=seq.dtype)  # [B, L]
    total = tf.reduce_sum(seq * mask[:, :, tf.newaxis], axis=1)  # [B, D]
    count = tf.maximum(tf.reduce_sum(mask, axis=1, keepdims=True), 1.0)  # [B, 1]
    return total / count


@tf.keras.utils.register_keras_serializable(package=PACKAGE)
class SequenceEmbedding(tf.keras.layers.Embedding):
  """An embedding table that can also mean-pool a padded id sequence.

  ``layer(ids)`` looks ids up ([B, L] -> [B, L, D]), as ``tf.keras.layers.Embedding``.
  ``layer(ids, length=n)`` (``n`` [B] or [B, 1]) returns the mean of the first ``n`` positions'
  embeddings ([B, D]; zeros for an empty sequence), equal to :class:`MaskedMeanPooling` over the
  lookup. While the table has at most :data:`HISTOGRAM_ROWS_PER_POSITION` rows per sequence
  position it is computed as each row's id histogram times the table: O(B L) counting and an
  O(B V D) product, and a dense [V, D] gradient, instead of gathering B L vectors and scattering
  B L gradients back (a 10,000-purchase history against a few hundred categories). Larger tables
  (the hashed items of a short history) gather. Pooling needs ids in [0, input_dim) and ``ids``
  and ``length`` of one batch (the histogram path drops an out-of-range id where a lookup fails).

  ``layer(ids, query=q)`` (ids [B or 1, L], q [B, D]) returns each id's embedding dotted with
  its row's query, [B, L] (ids of batch 1: one user's sequence against every query row). While
  the table has at most :data:`SCORE_TABLE_ROWS_PER_POSITION` rows per position this is the
  table's scores against each query ([B, V]) read at the ids, so no [B, L, D] lookup is built.
  """

  def __init__(self, input_dim: int, output_dim: int, **kwargs):
    if kwargs.get("mask_zero") or kwargs.get("sparse"):
      raise ValueError("SequenceEmbedding pools to [B, D]: mask_zero and sparse are not supported, "
                       f"got mask_zero={kwargs.get('mask_zero')}, sparse={kwargs.get('sparse')}")
    super().__init__(input_dim, output_dim, **kwargs)

  def call(self, inputs, length=None, query=None):
    if length is not None and query is not None:
      raise ValueError("SequenceEmbedding pools (length=) or scores (query=), not both")
    if query is not None:
      return self._scores(inputs, query)
    if length is None:
      return super().call(inputs)
    ids = tf.cast(inputs, tf.int32)  # [B, L]
    length = tf.reshape(tf.cast(length, tf.int32), [-1])  # [B]
    mask = tf.sequence_mask(length, maxlen=tf.shape(ids)[1], dtype=tf.float32)  # [B, L]
    count = tf.maximum(tf.reduce_sum(mask, axis=1, keepdims=True), 1.0)  # [B, 1]
    positions = inputs.shape[-1]
    # The histogram's product costs B V D dense multiply-adds, the gather B L D scattered copies
    # and as many scattered gradient adds: measured (bench.lifelong_cost, baseline), the
    # histogram wins up to a table of ~4 L rows (the 32k hashed items at L = 10,000).
    if positions is None or self.input_dim > HISTOGRAM_ROWS_PER_POSITION * positions:
      total = tf.reduce_sum(super().call(ids) * mask[:, :, tf.newaxis], axis=1)  # [B, D]
      return total / count
    histogram = tf.math.bincount(ids, weights=mask, minlength=self.input_dim,
                                 maxlength=self.input_dim, axis=-1)  # [B, V]
    return tf.matmul(histogram / count, self.embeddings)  # [B, D]

  def _scores(self, ids, query):
    """[B, L]: <embedding(ids[b, l]), query[b]>; ids [B or 1, L], query [B, D]."""
    positions = ids.shape[-1]
    if positions is None or self.input_dim > SCORE_TABLE_ROWS_PER_POSITION * positions:
      # A batched matmul broadcasts one user's [1, L, D] against N queries.
      return tf.matmul(super().call(ids), query[:, :, tf.newaxis])[..., 0]  # [B, L]
    table = tf.matmul(query, self.embeddings, transpose_b=True)  # [Bq, V]
    batch = tf.broadcast_dynamic_shape(tf.shape(query)[:1], tf.shape(ids)[:1])[0]
    table = tf.broadcast_to(table, [batch, self.input_dim])  # [B, V]
    ids = tf.broadcast_to(tf.cast(ids, tf.int32), [batch, tf.shape(ids)[1]])  # [B, L]
    return tf.gather(table, ids, batch_dims=1)  # [B, L]


@tf.keras.utils.register_keras_serializable(package=PACKAGE)
class ScoringDense(tf.keras.layers.Dense):
  """A linear ``Dense`` that can also score its rows against a query in its output space.

  ``layer(x)`` is ``Dense``. ``layer(x, query=q)`` (x [B or 1, L, In], q [B, Units]) returns
  ``<layer(x)[b, l], q[b]>`` as [B, L], computed as x . (W q) (+ b . q): the L rows are never
  projected to the output space (a 10,000-purchase history scored against N rooms).
  """

  def __init__(self, units: int, **kwargs):
    super().__init__(units, **kwargs)
    if self.activation not in (None, tf.keras.activations.linear):
      raise ValueError(f"ScoringDense is linear: activation must be None, got "
                       f"{kwargs.get('activation')!r}")

  def call(self, inputs, query=None):
    if query is None:
      return super().call(inputs)
    projected_query = tf.matmul(query, self.kernel, transpose_b=True)  # [Bq, In]
    scores = tf.matmul(inputs, projected_query[:, :, tf.newaxis])[..., 0]  # [B, L]
    if self.use_bias:
      scores += tf.reduce_sum(query * self.bias, axis=-1, keepdims=True)  # [Bq, 1]
    return scores


@tf.keras.utils.register_keras_serializable(package=PACKAGE)
class TokenLayer(tf.keras.layers.Layer):
  """Base of the layers over sequence tokens, where a token is the sum of several id fields'
  embeddings and a linear projection of its dense side features.

  The tables and the projection are injected (shared with the rest of the model). A config
  round trip rebuilds them from their configs, as ``tf.keras.layers.Bidirectional`` does its
  layer, so the copy has its own weights.

  Args:
    tables: one ``SequenceEmbedding`` per id field.
    side_projection: a ``ScoringDense`` of the side features (output size D).
  """

  def __init__(self, tables: Sequence[SequenceEmbedding], side_projection: ScoringDense,
               **kwargs):
    super().__init__(**kwargs)
    name = type(self).__name__
    if not tables:
      raise ValueError(f"{name} needs at least one table, got none")
    bad = [t for t in tables if not isinstance(t, SequenceEmbedding)]
    if bad:
      raise ValueError(f"{name} tables must be SequenceEmbedding layers, got {bad}")
    if not isinstance(side_projection, ScoringDense):
      raise ValueError(f"{name} side_projection must be a ScoringDense, got "
                       f"{side_projection!r}")
    self.tables = list(tables)
    self.side_projection = side_projection

  def tokens(self, ids: Sequence[tf.Tensor], side: tf.Tensor) -> tf.Tensor:
    """The tokens themselves, [..., D]: ``ids`` one [...] tensor per table, ``side`` [..., S]."""
    return tf.add_n([table(i) for table, i in zip(self.tables, ids)] + [self.side_projection(side)])

  def get_config(self):
    return dict(super().get_config(),
                tables=[tf.keras.layers.serialize(t) for t in self.tables],
                side_projection=tf.keras.layers.serialize(self.side_projection))

  @classmethod
  def from_config(cls, config):
    config = dict(config)
    config["tables"] = [tf.keras.layers.deserialize(t) for t in config["tables"]]
    config["side_projection"] = tf.keras.layers.deserialize(config["side_projection"])
    return cls(**config)


def shared_sequence(*sequences: tf.Tensor) -> bool:
  """True when every sequence has static batch 1: one user's, shared by every row (the context
  request passes the user side so, and the layers' calls run again when a signature is traced)."""
  return all(s.shape[0] == 1 for s in sequences)


@tf.keras.utils.register_keras_serializable(package=PACKAGE)
class TokenScores(TokenLayer):
  """Sequence tokens (see :class:`TokenLayer`) scored against a query.

  Call with ``[ids_1, ..., ids_T, side, query]``: ``ids_t`` [B or 1, L] for ``tables[t]``,
  ``side`` [B or 1, L, S] for ``side_projection``, ``query`` [B, D]. Returns [B, L]:
  ``<sum_t tables[t](ids_t)[b, l] + side_projection(side)[b, l], query[b]>``.

  A sequence of static batch 1 (one user's history against N rooms, as the context signature
  passes it) is embedded once, [L, D], and meets the N queries in one [N, D] x [D, L] product. A
  batch of sequences (training) is scored table by table (``SequenceEmbedding(ids, query=)``,
  ``ScoringDense(x, query=)``), so no [B, L, D] tokens are built.
  """

  def call(self, inputs):
    if len(inputs) != len(self.tables) + 2:
      raise ValueError(f"TokenScores takes {len(self.tables)} id tensors, the side features and "
                       f"the query; got {len(inputs)} inputs")
    *ids, side, query = inputs
    if shared_sequence(*ids, side):
      tokens = self.tokens([i[0] for i in ids], side[0])  # [L, D]
      return tf.matmul(query, tokens, transpose_b=True)  # [B, L]
    return tf.add_n([table(i, query=query) for table, i in zip(self.tables, ids)]
                    + [self.side_projection(side, query=query)])  # [B, L]


@tf.keras.utils.register_keras_serializable(package=PACKAGE)
class TokenLookup(TokenLayer):
  """The tokens (see :class:`TokenLayer`) at chosen positions of a sequence.

  Call with ``[ids_1, ..., ids_T, side_1, ..., side_S, indices]``: ``ids_t`` and ``side_s``
  [B or 1, L] (the side features one tensor each), ``indices`` [B, ...] positions in L. Returns
  [B, ..., D], the tokens of ``batch_gather``-ed fields.

  A sequence of static batch 1 (one user against N rooms) is embedded once, [L, D], and the
  picked tokens are gathered from it: one gather of D-vectors instead of T + S gathers and T
  lookups of the N rooms' picks. A batch of sequences (training) gathers each field at the
  picked positions first, so only the picked tokens are embedded and the gradient reaches the
  tables through those rows alone (at L = 10,000 a dense [B, L, D] gradient would dominate).
  """

  def call(self, inputs):
    if len(inputs) < len(self.tables) + 2:
      raise ValueError(f"TokenLookup takes {len(self.tables)} id tensors, at least one side "
                       f"feature and the indices; got {len(inputs)} inputs")
    ids, side, indices = inputs[:len(self.tables)], inputs[len(self.tables):-1], inputs[-1]
    if shared_sequence(*ids, *side):
      tokens = self.tokens([i[0] for i in ids], tf.stack([s[0] for s in side], -1))  # [L, D]
      return tf.gather(tokens, indices)  # [B, ..., D]
    # Field by field: stacking the side fields first would copy the whole sequence once more.
    return self.tokens([batch_gather(i, indices) for i in ids],
                       tf.stack([batch_gather(s, indices) for s in side], -1))  # [B, ..., D]


@tf.keras.utils.register_keras_serializable(package=PACKAGE)
class CrossNetwork(tf.keras.layers.Layer):
  """DCN-v2 cross network: ``num_layers`` stacked ``tfrs.layers.dcn.Cross`` on one input.

  x_{l+1} = x_0 * (W_l x_l + b_l) + x_l: explicit feature crosses of bounded degree, which an MLP
  learns poorly (e.g. candidate x sequence products). Call with [B, D]; returns [B, D].

  Args:
    num_layers: cross layers (>= 1).
    projection_dim: low-rank size of each W_l; None for full rank.
  """

  def __init__(self, num_layers: int = 2, projection_dim: int | None = None, **kwargs):
    super().__init__(**kwargs)
    if int(num_layers) < 1:
      raise ValueError(f"CrossNetwork num_layers must be >= 1, got {num_layers}")
    if projection_dim is not None and int(projection_dim) < 1:
      raise ValueError(f"CrossNetwork projection_dim must be >= 1 or None, got {projection_dim}")
    self.num_layers = int(num_layers)
    self.projection_dim = None if projection_dim is None else int(projection_dim)

  def build(self, input_shape):
    import tensorflow_recommenders as tfrs  # pylint: disable=import-outside-toplevel
    self._cross = [tfrs.layers.dcn.Cross(projection_dim=self.projection_dim, name=f"cross_{i}")
                   for i in range(self.num_layers)]
    super().build(input_shape)

  def call(self, x0):  # [B, D] -> [B, D]
    x = x0
    for cross in self._cross:
      x = cross(x0, x)
    return x

  def get_config(self):
    return dict(super().get_config(), num_layers=self.num_layers,
                projection_dim=self.projection_dim)


def broadcast_batch(tensors: Sequence[tf.Tensor]) -> list:
  """Tensors whose batch is 1 repeated to the largest batch among ``tensors``; others as given.

  The context signature feeds one user's features with batch 1 next to N candidates' with batch
  N (the user side is computed once); where the two meet, the user side is broadcast.
  """
  batches = tf.stack([tf.shape(t)[0] for t in tensors])
  # The largest batch, except that no rooms (batch 0) means no rows at all.
  batch = tf.where(tf.reduce_min(batches) == 0, 0, tf.reduce_max(batches))
  return [tf.broadcast_to(t, tf.concat([[batch], tf.shape(t)[1:]], 0)) for t in tensors]


@tf.keras.utils.register_keras_serializable(package=PACKAGE)
class BroadcastConcatenate(tf.keras.layers.Layer):
  """Concatenation along the last axis that broadcasts batch-1 inputs to the others' batch.

  In training every input has batch B and this is a plain concatenation. Serving one user
  against N rooms, user-only features arrive with batch 1 and are repeated here, after they were
  computed once (see ``models.signatures``).
  """

  def call(self, inputs):  # [B or 1, D_i] each -> [B, sum D_i]
    return tf.concat(broadcast_batch(inputs), axis=-1)


def batch_gather(sequence: tf.Tensor, indices: tf.Tensor) -> tf.Tensor:
  """``tf.gather(sequence, indices, batch_dims=1)`` where ``sequence`` may have batch 1.

  Args:
    sequence: [B or 1, L, ...] (batch 1: one user's sequence shared by every row of ``indices``).
    indices: [B, ...] positions in L.
  Returns:
    [B, ..., <sequence's trailing dims>].
  """
  rows = tf.shape(indices)[0]
  row = tf.minimum(tf.range(rows), tf.shape(sequence)[0] - 1)  # [B]: all 0 for a shared sequence
  row = tf.reshape(row, tf.concat([[rows], tf.ones([tf.rank(indices) - 1], tf.int32)], 0))
  row = tf.broadcast_to(row, tf.shape(indices))  # [B, ...]
  return tf.gather_nd(sequence, tf.stack([row, tf.cast(indices, tf.int32)], axis=-1))


@tf.keras.utils.register_keras_serializable(package=PACKAGE)
class IdLogitOffset(tf.keras.layers.Layer):
  """A learned logit intercept per id and output, to add to the outputs' logits.

  The table starts at zero (no change to the logits) and is read as ``rate_multiplier`` times its
  stored values. Adam's step on a weight does not depend on its gradient's scale, so the offsets
  move ``rate_multiplier`` times faster than the network's other weights: a per-room intercept
  that an id embedding read through an MLP does not reach in the few epochs early stopping allows
  (BUILD_NOTES, "per-room constants").

  Args:
    num_ids: rows of the table (the id vocabulary, padding and OOV included); positive.
    num_outputs: one offset per output (head); positive.
    rate_multiplier: the scale the stored table is read with; positive.
  """

  def __init__(self, num_ids: int, num_outputs: int, rate_multiplier: float = 1.0, **kwargs):
    super().__init__(**kwargs)
    if int(num_ids) <= 0:
      raise ValueError(f"IdLogitOffset num_ids must be positive, got {num_ids}")
    if int(num_outputs) <= 0:
      raise ValueError(f"IdLogitOffset num_outputs must be positive, got {num_outputs}")
    if not float(rate_multiplier) > 0.0:
      raise ValueError(f"IdLogitOffset rate_multiplier must be > 0, got {rate_multiplier}")
    self.num_ids = int(num_ids)
    self.num_outputs = int(num_outputs)
    self.rate_multiplier = float(rate_multiplier)

  def build(self, input_shape):
    self.table = self.add_weight(name="table", shape=(self.num_ids, self.num_outputs),
                                 initializer="zeros")  # [V, H]
    super().build(input_shape)

  def call(self, ids):  # ids: [B, 1] or [B] -> [B, H]
    ids = tf.reshape(ids, [-1])  # [B]
    return self.rate_multiplier * tf.gather(self.table, ids)  # [B, H]

  def get_config(self):
    return dict(super().get_config(), num_ids=self.num_ids, num_outputs=self.num_outputs,
                rate_multiplier=self.rate_multiplier)
