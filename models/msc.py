"""STCRank's multi-slot collaboration (MSC, seed 002) in TensorFlow: the ``rank`` signature's search.

In a swipe-down feed slot ``k`` is only seen if the user swiped on after every earlier slot, so
the value of showing rooms ``c_1, ..., c_H`` next is ``r(c_1) + s(c_1) * (r(c_2) + ...)``, with
``r`` a weighted sum of the model's head scores and ``s`` its P(swipe down). Stage 1 keeps the
``top_m`` rooms by ``r``; stage 2 is a beam search (width ``beam_width``) over their orders of
length ``horizon``. :func:`lookahead_order` is the graph twin of
``data_gen.lookahead.best_order`` (the same ties, the same order: a test holds them equal), so the
served model re-ranks a request by itself and a TF Serving Predict returns the slate.
"""

from __future__ import annotations

import dataclasses
from typing import Dict, List, Mapping, Sequence, Tuple

import tensorflow as tf

from models import features as F

# The ``rank`` signature's outputs: the slate (candidate indices, first slot first) and, per slot
# of the slate, the reward, P(swipe down) and P(the slot is seen); the value the search found
# for the planned slots.
SLATE = "slate"
SLOT_REWARD = "slot_reward"
SLOT_SWIPE_DOWN = "slot_swipe_down"
SLOT_REACH = "slot_reach"
PLANNED_VALUE = "planned_value"
OUTPUTS = (SLATE, SLOT_REWARD, SLOT_SWIPE_DOWN, SLOT_REACH, PLANNED_VALUE)


@dataclasses.dataclass(frozen=True)
class MscConfig:
  """What the look-ahead maximises and how wide it searches.

  Attributes:
    reward_weights: head output -> weight of its score in the immediate reward.
    swipe_output: the head output read as P(swipe down).
    horizon: slots planned (H); 1 is greedy by reward.
    beam_width: partial orders kept per slot (B).
    top_m: candidates stage 1 keeps (M).
  """
  reward_weights: Mapping[str, float] = dataclasses.field(
      default_factory=lambda: {F.HEAD_BUY: 1.0})
  swipe_output: str = F.HEAD_SWIPE_DOWN
  horizon: int = 3
  beam_width: int = 30
  top_m: int = 15

  def __post_init__(self):
    if not self.reward_weights:
      raise ValueError("MscConfig.reward_weights is empty")
    for name in ("horizon", "beam_width", "top_m"):
      if getattr(self, name) < 1:
        raise ValueError(f"MscConfig.{name} must be >= 1; got {getattr(self, name)!r}")

  @property
  def outputs(self) -> Tuple[str, ...]:
    """The head outputs the search reads."""
    return tuple(sorted(set(self.reward_weights) | {self.swipe_output}))

  def missing(self, outputs: Sequence[str]) -> List[str]:
    """The outputs the search reads that are not among ``outputs``."""
    return sorted(set(self.outputs) - set(outputs))

  def check_outputs(self, outputs: Sequence[str]) -> None:
    """Raises ValueError unless the model serves every output the search reads."""
    missing = self.missing(outputs)
    if missing:
      raise ValueError(f"the look-ahead reads outputs {missing} the model does not serve; it "
                       f"serves {sorted(outputs)}")


def parse_reward_weights(text: str) -> Dict[str, float]:
  """``"buy:1,effective_view:0.1"`` -> ``{"buy": 1.0, "effective_view": 0.1}``.

  Raises:
    ValueError: naming the part that is not ``output:weight`` with a finite weight.
  """
  weights = {}
  for part in text.split(","):
    name, sep, value = part.strip().partition(":")
    try:
      weight = float(value)
    except ValueError:
      weight = float("nan")
    if not sep or not name or not abs(weight) < float("inf"):
      raise ValueError(f"look-ahead reward weight {part!r} of {text!r} is not output:weight")
    weights[name] = weight
  return weights


def format_reward_weights(weights: Mapping[str, float]) -> str:
  """``{"buy": 1.0}`` -> ``"buy:1"``: the text :func:`parse_reward_weights` reads back."""
  return ",".join(f"{name}:{weight:g}" for name, weight in weights.items())


def lookahead_order(rewards: tf.Tensor, swipes: tf.Tensor, horizon: int, beam_width: int,
                    top_m: int) -> tf.Tensor:
  """The best order of the next ``horizon`` slots the two-stage search finds.

  Args:
    rewards: [N] immediate reward of each candidate (float64 for the numpy twin's exact ties).
    swipes: [N] P(swipe down) after each candidate, same dtype.
    horizon: slots planned (H).
    beam_width: partial orders kept per slot (B).
    top_m: candidates stage 1 keeps (M).

  Returns:
    [min(H, M, N)] int32 candidate indices, first slot first.
  """
  n = tf.shape(rewards)[0]
  m = tf.minimum(top_m, n)
  # top_k puts the lower index first among equals: a stable sort, as the numpy twin's.
  kept = tf.math.top_k(rewards, k=m).indices  # [M]
  r, s = tf.gather(rewards, kept), tf.gather(swipes, kept)  # [M]
  orders = tf.zeros([1, 0], tf.int32)  # [beams, depth] positions in ``kept``
  values = tf.zeros([1], rewards.dtype)  # [beams]
  survive = tf.ones([1], rewards.dtype)  # [beams] P(the next slot is seen)

  def grow(orders, values, survive):
    used = tf.reduce_any(orders[:, :, None] == tf.range(m)[None, None, :], axis=1)  # [beams, M]
    grown = values[:, None] + survive[:, None] * r[None, :]  # [beams, M]
    grown = tf.reshape(tf.where(used, tf.constant(-float("inf"), grown.dtype), grown), [-1])
    top = tf.math.top_k(grown, k=tf.minimum(beam_width, tf.size(grown)))
    flat = tf.boolean_mask(top.indices, tf.math.is_finite(top.values))  # [beams']
    beam, nxt = flat // m, flat % m
    return (tf.concat([tf.gather(orders, beam), nxt[:, None]], axis=1), tf.gather(grown, flat),
            tf.gather(survive, beam) * tf.gather(s, nxt))

  for depth in range(horizon):
    orders, values, survive = tf.cond(
        depth < m, lambda o=orders, v=values, p=survive: grow(o, v, p),
        lambda o=orders, v=values, p=survive: (o, v, p))
  best = tf.math.top_k(values, k=1).indices[0]  # the first of equal values, as np.argmax
  return tf.gather(kept, orders[best])


def rank_slate(scores: Mapping[str, tf.Tensor], config: MscConfig) -> Dict[str, tf.Tensor]:
  """The re-ranked slate of one request's N candidates from the heads' [N] scores.

  The slate is the search's order of the planned slots, then the other candidates by reward
  (highest first).

  Returns:
    :data:`OUTPUTS`: ``slate`` [N] int32, ``slot_reward`` / ``slot_swipe_down`` / ``slot_reach``
    [N] float32 per slot of the slate, ``planned_value`` [1] float32.
  """
  rewards = tf.add_n([w * tf.cast(scores[h], tf.float64)
                      for h, w in config.reward_weights.items()])  # [N]
  swipes = tf.clip_by_value(tf.cast(scores[config.swipe_output], tf.float64), 0.0, 1.0)  # [N]
  order = lookahead_order(rewards, swipes, config.horizon, config.beam_width, config.top_m)
  n = tf.size(rewards)
  planned = tf.scatter_nd(order[:, None], tf.ones_like(order, tf.bool), [n])  # [N]
  rest = tf.math.top_k(tf.where(planned, tf.constant(-float("inf"), tf.float64), rewards),
                       k=n).indices[:n - tf.size(order)]
  slate = tf.concat([order, rest], axis=0)  # [N]
  slot_reward, slot_swipe = tf.gather(rewards, slate), tf.gather(swipes, slate)
  reach = tf.math.cumprod(slot_swipe, exclusive=True)  # [N] P(slot k is seen)
  planned_value = tf.reduce_sum((slot_reward * reach)[:tf.size(order)], keepdims=True)  # [1]
  return {SLATE: slate, SLOT_REWARD: tf.cast(slot_reward, tf.float32),
          SLOT_SWIPE_DOWN: tf.cast(slot_swipe, tf.float32),
          SLOT_REACH: tf.cast(reach, tf.float32),
          PLANNED_VALUE: tf.cast(planned_value, tf.float32)}
