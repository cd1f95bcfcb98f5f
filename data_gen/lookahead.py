"""Look-ahead slot ranking on per-candidate probabilities: the search of STCRank's MSC (seed 002).

In a swipe-down feed a later slot is only seen if the user swipes on, so the value of showing rooms
``c_1, ..., c_H`` in the next H slots is

    V = r(c_1) + s(c_1) * (r(c_2) + s(c_2) * (... r(c_H)))

with ``r`` the immediate reward (a weighted sum of objective probabilities) and ``s`` the
probability of swiping down. Greedy ranking maximises ``r(c_1)`` alone; it falls into the temporal
greedy trap when the best immediate conversion usually ends the session. :func:`best_order` finds
a high-value order in two stages: keep the ``top_m`` candidates by immediate reward, then a beam
search of width ``beam_width`` over their orders of length ``horizon``. ``horizon=1`` is greedy.

The probabilities are those of the current slot, held fixed over the horizon (what a ranker scoring
the slot's candidates knows); :func:`oracle_lookahead_policy` runs the search on the simulator's
true probabilities, the reference the trained ranker's search is measured against.
"""

from __future__ import annotations

from typing import Mapping

import numpy as np

from data_gen import behaviour as bh
from data_gen.simulator import TRUTH_FIELDS


def order_value(rewards: np.ndarray, swipes: np.ndarray, order: np.ndarray) -> float:
  """Expected session value of showing ``order`` (candidate indices) in the next slots.

  Args:
    rewards: [N] immediate reward of each candidate.
    swipes: [N] probability that the user swipes on after each candidate.
    order: [H] candidate indices in slot order.

  Returns:
    ``sum_k rewards[order[k]] * prod_{j<k} swipes[order[j]]``.
  """
  r, s = np.asarray(rewards, np.float64)[order], np.asarray(swipes, np.float64)[order]
  survive = np.concatenate([[1.0], np.cumprod(s)[:-1]])  # [H] P(slot k is seen)
  return float(np.sum(r * survive))


def _check(rewards: np.ndarray, swipes: np.ndarray, horizon: int, beam_width: int,
           top_m: int) -> None:
  if rewards.ndim != 1 or rewards.shape != swipes.shape:
    raise ValueError(f"rewards and swipes must be [N] vectors of one length; got shapes "
                     f"{rewards.shape} and {swipes.shape}")
  if len(rewards) == 0:
    raise ValueError("no candidates to order")
  for name, value in (("horizon", horizon), ("beam_width", beam_width), ("top_m", top_m)):
    if value < 1:
      raise ValueError(f"{name} must be >= 1; got {value}")
  if np.any((swipes < 0) | (swipes > 1)) or not np.all(np.isfinite(rewards)):
    raise ValueError("swipes must be probabilities in [0, 1] and rewards finite; got swipes in "
                     f"[{swipes.min()}, {swipes.max()}]")


def best_order(rewards: np.ndarray, swipes: np.ndarray, horizon: int = 3, beam_width: int = 10,
               top_m: int = 10) -> np.ndarray:
  """The order of the next ``horizon`` slots with the highest :func:`order_value` the search finds.

  Stage 1 keeps the ``top_m`` candidates by immediate reward; stage 2 extends partial orders one
  slot at a time with every unused kept candidate and keeps the ``beam_width`` best by value so
  far. With ``beam_width >= top_m ** (horizon - 1)`` the search is exhaustive over the kept ones.

  Args:
    rewards: [N] immediate reward of each candidate.
    swipes: [N] probability of swiping down after each candidate.
    horizon: Slots planned (H); 1 is greedy by reward.
    beam_width: Partial orders kept per slot (B).
    top_m: Candidates kept by stage 1 (M).

  Returns:
    [min(H, M, N)] candidate indices, first slot first.
  """
  rewards, swipes = np.asarray(rewards, np.float64), np.asarray(swipes, np.float64)
  _check(rewards, swipes, horizon, beam_width, top_m)
  # Stage 1; a stable sort so ties keep the candidates' order.
  kept = np.argsort(-rewards, kind="stable")[:top_m]  # [M]
  r, s = rewards[kept], swipes[kept]
  m = len(kept)
  orders = np.zeros((1, 0), np.int64)  # [beams, depth] positions in ``kept``
  values, survive = np.zeros(1), np.ones(1)  # [beams]
  for _ in range(min(horizon, m)):
    used = np.zeros((len(orders), m), bool)
    np.put_along_axis(used, orders, True, axis=1)
    grown = values[:, None] + survive[:, None] * r[None, :]  # [beams, M]
    grown[used] = -np.inf
    flat = np.argsort(-grown, axis=None, kind="stable")[:beam_width]
    flat = flat[np.isfinite(grown.ravel()[flat])]
    beam, nxt = np.unravel_index(flat, grown.shape)
    orders = np.concatenate([orders[beam], nxt[:, None]], axis=1)
    values, survive = grown[beam, nxt], survive[beam] * s[nxt]
  return kept[orders[int(np.argmax(values))]]


def order_scores(n: int, order: np.ndarray) -> np.ndarray:
  """[n] scores whose descending order starts with ``order`` (the rest tie below it)."""
  scores = np.full(n, -1.0)
  scores[order] = np.arange(len(order), 0, -1, dtype=np.float64)
  return scores


def check_reward_weights(reward_weights: Mapping[str, float]) -> None:
  """Raises ValueError unless ``reward_weights`` maps ground-truth fields to weights."""
  if not reward_weights:
    raise ValueError("reward_weights is empty")
  bad = sorted(set(reward_weights) - set(TRUTH_FIELDS))
  if bad:
    raise ValueError(f"reward_weights names {bad}, not Truth fields {TRUTH_FIELDS}")


def weighted_reward(truths, reward_weights: Mapping[str, float]) -> np.ndarray:
  """[N] ``sum_f w_f * truth.f`` over the candidates' truths."""
  return np.array([sum(w * getattr(t, f) for f, w in reward_weights.items()) for t in truths])


def oracle_lookahead_policy(reward_weights: Mapping[str, float], horizon: int = 3,
                            beam_width: int = 10, top_m: int = 10) -> bh.Policy:
  """The look-ahead search on the simulator's true probabilities (run with ``oracle=True``)."""
  check_reward_weights(reward_weights)

  def policy(ctx: bh.SlotContext) -> np.ndarray:
    if ctx.truths is None:
      raise ValueError("oracle_lookahead_policy needs SlotContext.truths (run with oracle=True)")
    rewards = weighted_reward(ctx.truths, reward_weights)
    swipes = np.array([t.p_swipe_down for t in ctx.truths])
    order = best_order(rewards, swipes, horizon, beam_width, top_m)
    return order_scores(len(rewards), order)
  return policy
