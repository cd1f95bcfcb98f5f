"""Shared-bottom multi-task DNN over non-sequence features plus mean-pooled sequences."""

from __future__ import annotations

from typing import Sequence

import tensorflow as tf

from models import encoders
from models import features as F
from models.layers import MLP
from models.spec import ModelSpec


def build_heads(shared: tf.Tensor, hidden: int = 32) -> dict:
  """One small tower + sigmoid per head, outputs named by head."""
  return {head: MLP([hidden, 1], final_activation="sigmoid", name=head)(shared)  # [B, 1]
          for head in F.HEADS}


def build_baseline(spec: ModelSpec, hidden_units: Sequence[int] = (256, 128),
                   dropout: float = 0.1) -> tf.keras.Model:
  """The shared-bottom baseline: one MLP over all features, a tower per head."""
  inputs = spec.inputs()
  emb = encoders.Embeddings(spec)
  x = tf.keras.layers.Concatenate(name="features")(
      encoders.context_features(emb, inputs) + encoders.pooled_sequences(emb, inputs))
  shared = MLP(list(hidden_units), dropout=dropout, name="shared_bottom")(x)  # [B, H]
  return tf.keras.Model(inputs, build_heads(shared), name="baseline")
