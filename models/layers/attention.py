"""Multi-head target attention: a candidate vector queries a padded sequence (Transformer-style)."""

from __future__ import annotations

import tensorflow as tf

from models.layers.blocks import PACKAGE


@tf.keras.utils.register_keras_serializable(package=PACKAGE)
class TargetAttention(tf.keras.layers.Layer):
  """Scaled dot-product attention of one query per example over a padded sequence.

  Call with ``(query [B, Dq], sequence [B, L, Ds], length [B] or [B, 1])``. Positions at or past
  ``length`` are masked out. A fully padded sequence (length 0, e.g. a new user) returns zeros, not
  NaN. ``return_weights=True`` also returns the attention weights ``[B, H, L]``.

  Args:
    num_heads: attention heads (>= 1).
    head_dim: size of each head's query/key/value projection (>= 1).
    output_dim: size of the output projection; defaults to ``num_heads * head_dim``.
  """

  def __init__(self, num_heads: int = 2, head_dim: int = 16, output_dim: int | None = None,
               **kwargs):
    super().__init__(**kwargs)
    if int(num_heads) < 1:
      raise ValueError(f"TargetAttention num_heads must be >= 1, got {num_heads}")
    if int(head_dim) < 1:
      raise ValueError(f"TargetAttention head_dim must be >= 1, got {head_dim}")
    self.num_heads, self.head_dim = int(num_heads), int(head_dim)
    self.output_dim = int(output_dim) if output_dim else self.num_heads * self.head_dim

  def build(self, input_shape):
    inner = self.num_heads * self.head_dim
    self._q = tf.keras.layers.Dense(inner, use_bias=False, name="query")
    self._k = tf.keras.layers.Dense(inner, use_bias=False, name="key")
    self._v = tf.keras.layers.Dense(inner, use_bias=False, name="value")
    self._o = tf.keras.layers.Dense(self.output_dim, name="output")
    super().build(input_shape)

  def _split(self, x):  # [B, L, H*d] -> [B, H, L, d]
    batch, length = tf.shape(x)[0], tf.shape(x)[1]
    return tf.transpose(tf.reshape(x, [batch, length, self.num_heads, self.head_dim]),
                        [0, 2, 1, 3])

  def call(self, inputs, return_weights: bool = False):
    query, seq, length = inputs
    length = tf.reshape(tf.cast(length, tf.int32), [-1])  # [B]
    q = self._split(self._q(query)[:, tf.newaxis, :])  # [B, H, 1, d]
    k, v = self._split(self._k(seq)), self._split(self._v(seq))  # [B, H, L, d]
    logits = tf.matmul(q, k, transpose_b=True)[:, :, 0, :]  # [B, H, L]
    logits /= tf.sqrt(tf.cast(self.head_dim, logits.dtype))
    mask = tf.sequence_mask(length, maxlen=tf.shape(seq)[1])[:, tf.newaxis, :]  # [B, 1, L]
    logits = tf.where(mask, logits, tf.fill(tf.shape(logits), logits.dtype.min))
    weights = tf.nn.softmax(logits, axis=-1) * tf.cast(mask, logits.dtype)  # [B, H, L]
    # matmul broadcasts a shared sequence (batch 1) against B queries; einsum would not.
    context = tf.matmul(weights[:, :, tf.newaxis, :], v)[:, :, 0, :]  # [B, H, d]
    context = tf.reshape(context, [-1, self.num_heads * self.head_dim])  # [B, H*d]
    out = self._o(context) * tf.cast(length > 0, context.dtype)[:, tf.newaxis]  # [B, D_out]
    return (out, weights) if return_weights else out

  def get_config(self):
    return dict(super().get_config(), num_heads=self.num_heads, head_dim=self.head_dim,
                output_dim=self.output_dim)
