"""Losses beyond per-head cross-entropy."""

from __future__ import annotations

import tensorflow as tf

from models.layers.blocks import PACKAGE


@tf.keras.utils.register_keras_serializable(package=PACKAGE)
class LabelAwareTripletLoss(tf.keras.losses.Loss):
  """Label-aware triplet loss on a distance gap.

  ``y_pred`` is ``gap = d(candidate, negative) - d(candidate, positive)`` [B, 1]; ``y_true`` is 1
  for engaged samples. Engaged: the candidate should sit nearer the positive-sequence interest than
  the negative one by ``margin`` -> ``max(0, margin - gap)``. Not engaged: the reverse ->
  ``max(0, margin + gap)``.
  """

  def __init__(self, margin: float = 0.2, name: str = "label_aware_triplet", **kwargs):
    super().__init__(name=name, **kwargs)
    if margin < 0:
      raise ValueError(f"LabelAwareTripletLoss margin must be >= 0, got {margin}")
    self.margin = float(margin)

  def call(self, y_true, y_pred):
    sign = 2.0 * tf.cast(y_true, y_pred.dtype) - 1.0  # +1 engaged, -1 not
    return tf.reduce_mean(tf.nn.relu(self.margin - sign * y_pred), axis=-1)  # [B]

  def get_config(self):
    return dict(super().get_config(), margin=self.margin)
