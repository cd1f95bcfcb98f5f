"""Multi-task models over the shared encoders: DNN, shared-bottom, MMoE and PLE.

They differ only in the sequence view (none for the DNN, mean-pooled otherwise) and in the expert
block that turns the features into one representation per task; heads are shared code.
"""

from __future__ import annotations

from typing import List, Sequence

import tensorflow as tf

from models import encoders
from models import features as F
from models.layers import MLP, CrossNetwork
from models.layers.experts import PLE, mmoe, shared_bottom
from models.spec import ModelSpec

NUM_TASKS = len(F.HEADS)


def task_heads(task_inputs: List[tf.Tensor], tower_units: Sequence[int] = (32,)) -> dict:
  """One tower + sigmoid per head, one input per head, outputs named by head."""
  return {head: MLP(list(tower_units) + [1], final_activation="sigmoid", name=head)(x)  # [B, 1]
          for head, x in zip(F.HEADS, task_inputs)}


def extractor(kind: str, expert_units: Sequence[int] = (128, 64)) -> tf.keras.layers.Layer:
  """The expert block by name: 'shared_bottom' | 'mmoe' | 'ple'."""
  if kind == "shared_bottom":
    return shared_bottom(NUM_TASKS, expert_units)
  if kind == "mmoe":
    return mmoe(NUM_TASKS, num_experts=4, expert_units=expert_units)
  if kind == "ple":
    return PLE(NUM_TASKS, num_levels=2, task_experts=2, shared_experts=2,
               expert_units=expert_units, name="ple")
  raise ValueError(f"unknown extractor {kind!r}; expected shared_bottom, mmoe or ple")


def build_multitask(spec: ModelSpec, kind: str, use_sequences: bool = True,
                    cross_layers: int = 0, name: str | None = None) -> tf.keras.Model:
  """Shared encoders -> [DCN-v2 cross network] -> expert block ``kind`` -> one head per task.

  Args:
    use_sequences: add the pooled sequences and their match features against the candidate.
    cross_layers: stacked DCN-v2 cross layers before the expert block (0: none).
  """
  inputs = spec.inputs()
  emb = encoders.Embeddings(spec)
  parts = encoders.context_features(emb, inputs)
  if use_sequences:
    parts += encoders.pooled_sequences(emb, inputs)
  x = tf.keras.layers.Concatenate(name="features")(parts)  # [B, D]
  if cross_layers:
    x = CrossNetwork(cross_layers, name="cross")(x)  # [B, D]
  return tf.keras.Model(inputs, task_heads(extractor(kind)(x)), name=name or kind)


def build_dcn(spec: ModelSpec) -> tf.keras.Model:
  """DCN-v2 baseline: two cross layers over the shared features, then a shared bottom."""
  return build_multitask(spec, "shared_bottom", cross_layers=2, name="dcn")


def build_dnn(spec: ModelSpec) -> tf.keras.Model:
  """DNN baseline: no sequences at all, a shared bottom and a tower per head."""
  return build_multitask(spec, "shared_bottom", use_sequences=False, name="dnn")
