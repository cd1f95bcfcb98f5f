"""Real-time positive/negative feedback model (Taobao Live re-ranking, seed 000).

The candidate room queries the positive (long stay or interaction) and the negative (quick
swipe-away) real-time sequences with multi-head target attention; a contrastive residual between
the two interests, the room's real-time statistics and displayed products, and the pooled
lifelong/session sequences feed a PLE with heads for effective view, interact and buy. A
label-aware triplet loss (on the ``triplet_gap`` output) pulls the candidate toward the positive
interest for engaged samples and toward the negative one otherwise. As in the baseline, the match
features also reach each head's logit through a linear path the trainer solves before SGD
(models/linear_start.py), so the attention and the PLE learn what a regression cannot.
"""

from __future__ import annotations

from typing import Sequence

import tensorflow as tf

from models import encoders
from models import features as F
from models import tasks as tasks_lib
from models.layers import MLP, BroadcastConcatenate
from models.layers.attention import TargetAttention
from models.layers.experts import PLE
from models.losses import LabelAwareTripletLoss
from models.multitask import room_offsets, task_heads, wide_features
from models.spec import ModelSpec

xf = F.transformed_name
TRIPLET_OUTPUT = "triplet_gap"


def feedback_tasks(triplet_weight: float = 0.1, triplet_margin: float = 0.2,
                   use_triplet: bool = True) -> tasks_lib.Tasks:
  """The engagement heads, plus the triplet gap labelled 'engaged' (effective view or interact).

  Engaged is the same event the positive sequence holds (see ``F.POSITIVE_STAY_SECONDS``).
  """
  if not use_triplet:
    return tasks_lib.ENGAGEMENT
  return tasks_lib.with_head(tasks_lib.ENGAGEMENT, triplet_head(triplet_weight, triplet_margin))


def triplet_head(weight: float = 0.1, margin: float = 0.2) -> tasks_lib.Head:
  """The training-only triplet gap, labelled 'engaged' (effective view or interact)."""
  return tasks_lib.Head(
      output=TRIPLET_OUTPUT, labels=(F.HEAD_EFFECTIVE_VIEW, F.HEAD_INTERACT),
      loss=lambda **kw: LabelAwareTripletLoss(margin, **kw), weight=weight, served=False)


def _cosine_distance(a, b):
  a, b = tf.math.l2_normalize(a, -1), tf.math.l2_normalize(b, -1)
  return 1.0 - tf.reduce_sum(a * b, axis=-1, keepdims=True)  # [B, 1]


def build_feedback(spec: ModelSpec, use_negative: bool = True, use_triplet: bool = True,
                   use_realtime: bool = True, num_heads: int = 2,
                   heads: Sequence[str] = tuple(F.HEADS), wide: bool = True,
                   name: str = "feedback") -> tf.keras.Model:
  """Builds the feedback model; the switches give the ablations.

  Args:
    spec: input sizes.
    use_negative: attend over the negative sequence and form the contrastive residual.
    use_triplet: expose the ``triplet_gap`` output that the triplet loss trains.
    use_realtime: read the real-time sequences at all (False: the same model without them, the
      reference the real-time mechanism is measured against).
    heads: the task outputs, one PLE task each (STCRank adds MOC's swipe-down head).
    wide: the match features (the real-time ones only with ``use_realtime``), the room's numbers
      and the candidate's place in the session also enter each head's logit linearly, a path
      the trainer solves first (``multitask.wide_features``, models/linear_start.py).
  """
  if use_triplet and not use_negative:
    raise ValueError("the triplet loss needs the negative sequence (use_negative=True)")
  if use_negative and not use_realtime:
    raise ValueError("the negative sequence is a real-time sequence (needs use_realtime=True)")
  inputs = spec.inputs()
  emb = encoders.Embeddings(spec)
  d = spec.embedding_dim
  cand = encoders.candidate_tokens(emb, inputs)  # [B, D]
  attend = lambda prefix: TargetAttention(num_heads, d, output_dim=d, name=f"att_{prefix}")(  # noqa: E731
      [cand, encoders.sequence_tokens(emb, inputs, prefix), inputs[xf(F.len_key(prefix))]])
  context = encoders.context(inputs)
  parts = encoders.context_embeddings(emb, inputs) + context.numeric
  signal_matches = []
  if use_realtime:
    u_pos = attend(F.RT_POS)  # [B, D]
    parts += [u_pos, u_pos * cand]
    signal_matches += encoders.realtime_match(inputs)
  if use_negative:
    u_neg = attend(F.RT_NEG)  # [B, D]
    residual = MLP([d], name="contrastive_residual")(u_pos - u_neg)  # [B, D]
    parts += [u_neg, residual, residual * cand]
  parts += encoders.pooled_session_and_lifelong(emb, inputs)
  signal_matches += encoders.lifelong_match(inputs)
  x = BroadcastConcatenate(name="features")(parts + context.matches + signal_matches)
  tasks = PLE(len(heads), num_levels=2, task_experts=2, shared_experts=2,
              expert_units=(128, 64), name="ple")(x)
  wide_x = wide_features(inputs, context, signal_matches) if wide else None  # [B, W]
  outputs = task_heads(tasks, heads=heads, wide=wide_x,
                       bias_logits=room_offsets(spec, inputs, num_heads=len(heads)))
  if use_triplet:
    gap = _cosine_distance(cand, u_neg) - _cosine_distance(cand, u_pos)  # [B, 1]
    outputs[TRIPLET_OUTPUT] = tf.keras.layers.Activation("linear", name=TRIPLET_OUTPUT)(gap)
  return tf.keras.Model(inputs, outputs, name=name)
