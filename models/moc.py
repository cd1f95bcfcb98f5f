"""STCRank's multi-objective collaboration (MOC, seed 002): conversion, view-through and swipe-down.

In a full-screen swipe feed the objectives interfere:

* **Overlap.** A long view that precedes a purchase is a view-through positive *and* a conversion
  positive; trained on the raw labels, the view head spends much of its capacity re-learning
  conversion. Rule: in the view head, impressions that ended in a purchase weigh
  ``view_overlap_weight`` (1: as logged).
* **Conflict.** A purchase often ends the session (the user leaves to pay), so on the raw labels a
  converting room counts *against* swipe-down. Rule ``purchase_exit``, for the swipe-down head's
  impressions with a purchase after which the user left: ``"negative"`` (as logged),
  ``"ignore"`` (weight 0) or ``"positive"`` (counted as a continue: a satisfied exit).

The default keeps the swipe-down head's raw label (``"negative"``): MSC's look-ahead multiplies
through P(swipe down), so that head must estimate the real chance of seeing the next slot, purchase
exits included; ``"ignore"`` and ``"positive"`` are there for the Pareto comparison of
conversion / view / swipe-down AUC. Every rule reads the transformed labels
(``F.TRANSFORMED_LABELS``) only, so it is the same in training and in the Evaluator's weights.
"""

from __future__ import annotations

import dataclasses
from typing import Mapping, Tuple

import tensorflow as tf

from models import features as F
from models import tasks as tasks_lib

EXIT_NEGATIVE, EXIT_IGNORE, EXIT_POSITIVE = "negative", "ignore", "positive"
PURCHASE_EXIT_RULES = (EXIT_NEGATIVE, EXIT_IGNORE, EXIT_POSITIVE)
# STCRank's heads, in its network's output order: the engagement heads, then swipe-down.
STCRANK_HEADS: Tuple[str, ...] = tuple(F.HEADS) + (F.HEAD_SWIPE_DOWN,)


@dataclasses.dataclass(frozen=True)
class MocRules:
  """MOC's label re-definitions and sample weights (see the module docstring).

  Attributes:
    purchase_exit: how the swipe-down head counts a purchase after which the user left, one of
      :data:`PURCHASE_EXIT_RULES`.
    view_overlap_weight: the view head's sample weight of impressions that ended in a purchase,
      in [0, 1] (1: as logged).
    swipe_weight: the swipe-down head's weight in the total loss.
  """
  purchase_exit: str = EXIT_NEGATIVE
  view_overlap_weight: float = 0.5
  swipe_weight: float = 1.0

  def __post_init__(self):
    if self.purchase_exit not in PURCHASE_EXIT_RULES:
      raise ValueError(f"purchase_exit {self.purchase_exit!r} is not one of "
                       f"{PURCHASE_EXIT_RULES}")
    if not 0.0 <= self.view_overlap_weight <= 1.0:
      raise ValueError(f"view_overlap_weight must be in [0, 1], got {self.view_overlap_weight}")
    if not self.swipe_weight >= 0.0:
      raise ValueError(f"swipe_weight must be >= 0, got {self.swipe_weight}")

  def _purchased(self, batch: Mapping[str, tf.Tensor]) -> tf.Tensor:
    return tf.cast(batch[F.PURCHASED], tf.float32)  # [B]

  def _purchase_exit(self, batch: Mapping[str, tf.Tensor], swiped: tf.Tensor) -> tf.Tensor:
    return self._purchased(batch) * (1.0 - swiped)  # [B] 1 where a purchase ended the session

  def swipe_head(self) -> tasks_lib.Head:
    """The swipe-down head under :attr:`purchase_exit`."""
    relabel = reweight = None
    if self.purchase_exit == EXIT_POSITIVE:
      relabel = lambda batch, swiped: tf.maximum(swiped, self._purchase_exit(batch, swiped))  # noqa: E731
    elif self.purchase_exit == EXIT_IGNORE:
      reweight = lambda batch, swiped: 1.0 - self._purchase_exit(batch, swiped)  # noqa: E731
    return tasks_lib.Head(output=F.HEAD_SWIPE_DOWN, labels=(F.HEAD_SWIPE_DOWN,),
                          weight=self.swipe_weight, relabel=relabel, reweight=reweight)

  def view_head(self) -> tasks_lib.Head:
    """The effective-view head with the overlap weight."""
    reweight = None
    if self.view_overlap_weight < 1.0:
      w = self.view_overlap_weight
      reweight = lambda batch, view: 1.0 - (1.0 - w) * self._purchased(batch) * view  # noqa: E731
    return tasks_lib.Head(output=F.HEAD_EFFECTIVE_VIEW, labels=(F.HEAD_EFFECTIVE_VIEW,),
                          reweight=reweight)


# The logged labels as they are: STCRank's network without MOC's rules.
RAW_LABELS = MocRules(purchase_exit="negative", view_overlap_weight=1.0)


def stcrank_tasks(rules: MocRules, extra: Tuple[tasks_lib.Head, ...] = ()) -> tasks_lib.Tasks:
  """The engagement heads with MOC's view rule, the swipe-down head, then ``extra`` heads."""
  heads = tuple(rules.view_head() if h.output == F.HEAD_EFFECTIVE_VIEW else h
                for h in tasks_lib.ENGAGEMENT.heads)
  return tasks_lib.Tasks(heads + (rules.swipe_head(),) + tuple(extra))
