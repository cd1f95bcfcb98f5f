"""Multi-task models over the shared encoders: DNN, shared-bottom, MMoE and PLE.

They differ only in the sequence view (none for the DNN, mean-pooled otherwise) and in the expert
block that turns the features into one representation per task; heads are shared code.
"""

from __future__ import annotations

from typing import List, Sequence

import tensorflow as tf

from models import encoders
from models import features as F
from models import preprocessing as P
from models.layers import MLP, BroadcastConcatenate, CrossNetwork, IdLogitOffset
from models.layers.experts import PLE, mmoe, shared_bottom
from models.spec import ModelSpec

NUM_TASKS = len(F.HEADS)
# Layer names of the linear path (models/linear_start.py reads and sets them).
WIDE_FEATURES = "wide"
ROOM_OFFSET = "room_offset"
# A model's Bias Net (an MLP whose [B, heads] output adds to the heads' logits); the linear start
# zeroes its output layer with the deep towers', so the network starts at the regression.
BIAS_NET = "bias_net"


def wide_layer_name(head: str) -> str:
  """The head's linear layer on the wide features."""
  return f"{head}_wide"


def deep_tower_name(head: str) -> str:
  """The head's MLP tower when its logit has other terms (wide path, bias logits)."""
  return f"{head}_deep"


def linear_heads(network: tf.keras.Model) -> List[str]:
  """The heads of ``network`` with a linear layer on the wide features, in ``F.HEADS`` order
  (the room offsets' column order)."""
  names = {layer.name for layer in network.layers}
  return [h for h in F.HEADS if wide_layer_name(h) in names]


def wide_features(inputs: dict, context: encoders.Context,
                  signal_matches: List[tf.Tensor]) -> tf.Tensor:
  """The linear path's input, [B, W]: the session matches and the match features of the
  model's signals, the room's numbers and the candidate's place in the session.

  Args:
    inputs: the model's transformed inputs.
    context: ``encoders.context(inputs)`` as the model already built it.
    signal_matches: the batch-normalised match features of the sequences the model reads
      (``encoders.realtime_match``, ``encoders.lifelong_match``); a model without a signal leaves
      its matches out here too, so an ablation pair differs only by that signal.
  """
  return BroadcastConcatenate(name=WIDE_FEATURES)(
      context.matches + signal_matches + context.numeric
      + [encoders.session_position(inputs, context.session_hits)])  # [B, W]


def task_heads(task_inputs: List[tf.Tensor], tower_units: Sequence[int] = (32,),
               wide: tf.Tensor | None = None, bias_logits: tf.Tensor | None = None,
               heads: Sequence[str] = tuple(F.HEADS)) -> dict:
  """One tower per head on its own input, outputs named by head.

  Args:
    task_inputs: one [B, D] input per head, in ``heads`` order.
    wide: optional [B, W] features that also enter every head's logit linearly (Wide & Deep):
      the match features are near-linear in the true logit, and a linear path learns them in the
      first epoch, before the id embeddings start to memorise.
    bias_logits: optional [B, len(heads)] logits added to the heads' (a Bias Net's output).
    heads: the output names (``F.HEADS`` by default; a model may add, e.g., MOC's swipe-down).
  """
  if len(task_inputs) != len(heads):
    raise ValueError(f"{len(task_inputs)} task inputs for {len(heads)} heads {list(heads)}")
  outputs = {}
  for i, (head, x) in enumerate(zip(heads, task_inputs)):
    if wide is None and bias_logits is None:
      outputs[head] = MLP(list(tower_units) + [1], final_activation="sigmoid", name=head)(x)
      continue
    terms = [MLP(list(tower_units) + [1], final_activation=None, name=deep_tower_name(head))(x)]
    if wide is not None:
      terms.append(tf.keras.layers.Dense(1, name=wide_layer_name(head))(wide))  # [B, 1]
    if bias_logits is not None:
      terms.append(bias_logits[:, i:i + 1])  # [B, 1]
    logit = tf.keras.layers.Add(name=f"{head}_logit")(terms) if len(terms) > 1 else terms[0]
    outputs[head] = tf.keras.layers.Activation("sigmoid", name=head)(logit)  # [B, 1]
  return outputs


def room_offsets(spec: ModelSpec, inputs: dict, num_heads: int = NUM_TASKS) -> tf.Tensor | None:
  """The candidate room's logit offset per head, [B, num_heads]; None when the spec has none."""
  if not spec.room_offset_rate:
    return None
  return IdLogitOffset(spec.vocab_sizes[P.HOST_VOCAB], num_heads, spec.room_offset_rate,
                       name=ROOM_OFFSET)(inputs[F.transformed_name(F.HOST_ID)])


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
                    cross_layers: int = 0, wide: bool = False,
                    name: str | None = None) -> tf.keras.Model:
  """Shared encoders -> [DCN-v2 cross network] -> expert block ``kind`` -> one head per task.

  Args:
    use_sequences: add the pooled sequences and their match features against the candidate.
    cross_layers: stacked DCN-v2 cross layers before the expert block (0: none).
    wide: the match features, the room's numbers and the candidate's place in the session
      (``encoders.session_position``) also enter each head's logit linearly (Wide & Deep; the
      trainer solves that path first, models/linear_start.py).
  """
  inputs = spec.inputs()
  emb = encoders.Embeddings(spec)
  context = encoders.context(inputs)
  parts = encoders.context_embeddings(emb, inputs) + context.numeric
  signal_matches = []
  if use_sequences:
    parts += encoders.pooled_sequences(emb, inputs)
    signal_matches = encoders.realtime_match(inputs) + encoders.lifelong_match(inputs)
  x = BroadcastConcatenate(name="features")(parts + context.matches + signal_matches)  # [B, D]
  if cross_layers:
    x = CrossNetwork(cross_layers, name="cross")(x)  # [B, D]
  wide_x = wide_features(inputs, context, signal_matches) if wide else None  # [B, W]
  outputs = task_heads(extractor(kind)(x), wide=wide_x, bias_logits=room_offsets(spec, inputs))
  return tf.keras.Model(inputs, outputs, name=name or kind)


def build_dcn(spec: ModelSpec) -> tf.keras.Model:
  """DCN-v2 baseline: two cross layers over the shared features, then a shared bottom."""
  return build_multitask(spec, "shared_bottom", cross_layers=2, name="dcn")


def build_dnn(spec: ModelSpec) -> tf.keras.Model:
  """DNN baseline: no sequences at all, a shared bottom and a tower per head."""
  return build_multitask(spec, "shared_bottom", use_sequences=False, name="dnn")
