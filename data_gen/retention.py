"""Return visits (DAU): whether a user is active on a day, from how their last sessions went.

In the spirit of KuaiSim's retention module: good sessions (deep, with effective views and
purchases) make a user come back, quick swipe-aways keep them away. The equations and their
defaults are in ``world.RetentionConfig`` and ``data_gen/README.md`` ("Return visits"); the
probability of being active is exact, so the closed loop records it as ground truth next to the
realised daily active users.
"""

from __future__ import annotations

import math

import numpy as np

from data_gen.behaviour import sigmoid
from data_gen.world import RetentionConfig


def session_score(cfg: RetentionConfig, depth: int, views: int, purchases: int,
                  quick_swipes: int) -> float:
  """How well one session went, in the units of ``cfg.reference``."""
  return (cfg.depth_weight * depth + cfg.view_weight * views + cfg.purchase_weight * purchases
          - cfg.quick_weight * quick_swipes)


def updated_satisfaction(cfg: RetentionConfig, satisfaction: float, score: float) -> float:
  """The satisfaction after a session with ``score`` (an exponentially weighted average)."""
  return cfg.memory * satisfaction + (1.0 - cfg.memory) * score


def p_active(cfg: RetentionConfig, sessions_per_day: float, satisfaction: float) -> float:
  """The chance a user with this session rate and satisfaction is active on a day."""
  if not sessions_per_day > 0.0:
    raise ValueError(f"sessions_per_day must be > 0; got {sessions_per_day!r}")
  base = 1.0 - math.exp(-sessions_per_day)
  return sigmoid(math.log(base / (1.0 - base)) + cfg.strength * (satisfaction - cfg.reference))


def sessions_on_active_day(rng: np.random.Generator, sessions_per_day: float) -> int:
  """A zero-truncated Poisson draw: the sessions of a day the user is active."""
  while True:
    n = int(rng.poisson(sessions_per_day))
    if n > 0:
      return n
