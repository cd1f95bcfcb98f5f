"""The quality report scores examples as served: a model that reads a label is caught."""

import numpy as np
import pytest
import tensorflow as tf

from bench import quality_report as qr
from models import features as F


def _example(slot: int, view: int) -> tf.train.Example:
  ex = tf.train.Example()
  ex.features.feature[F.SLOT_INDEX].int64_list.value.append(slot)
  ex.features.feature[F.EFFECTIVE_VIEW].int64_list.value.append(view)
  return ex


def _serve_reading(feature: str):
  spec = {feature: tf.io.FixedLenFeature([1], tf.int64, default_value=[0])}

  def serve(examples):
    x = tf.cast(tf.io.parse_example(examples, spec)[feature][:, 0], tf.float32)  # [B]
    return {head: x / 10.0 for head in F.HEADS}
  return serve


def test_scores_in_batches_and_a_model_that_reads_a_label_fails():
  examples = [_example(slot=i % 7, view=i % 2) for i in range(700)]
  scores = qr.score_with(_serve_reading(F.SLOT_INDEX), examples, batch_size=128)
  np.testing.assert_allclose(scores[F.HEAD_BUY], [(i % 7) / 10 for i in range(700)], rtol=1e-6)
  with pytest.raises(ValueError, match="scores the same examples differently with and without "
                                       "their labels"):
    qr.score_with(_serve_reading(F.EFFECTIVE_VIEW), examples, batch_size=128)


def test_moc_pareto_scores_each_head_on_its_label_buy_where_products_show():
  from bench import moc_pareto  # pylint: disable=import-outside-toplevel

  rows = [  # (display_len, view, interact, buy, swipe_down)
      (6, 1, 1, 1, 0), (6, 0, 0, 0, 1), (0, 1, 0, 1, 1), (6, 1, 0, 0, 1), (0, 0, 1, 0, 0)]
  examples = []
  for i, (shown, view, interact, buy, swipe) in enumerate(rows, start=1):
    ex = tf.train.Example()
    for key, value in ((F.IMPRESSION_ID, i), (F.DISPLAY_LEN, shown), (F.EFFECTIVE_VIEW, view),
                       (F.INTERACT, interact), (F.BUY, buy), (F.SWIPE_DOWN, swipe)):
      ex.features.feature[key].int64_list.value.append(value)
    examples.append(ex)
  ramp = np.array([0.9, 0.1, 0.8, 0.3, 0.2])
  scores = {h: ramp for h in moc_pareto.HEAD_LABELS}
  aucs = moc_pareto.head_aucs(examples, scores)
  assert aucs[F.HEAD_EFFECTIVE_VIEW] == pytest.approx(1.0)  # views at .9, .8, .3; none above
  assert aucs[F.HEAD_INTERACT] == pytest.approx(4 / 6)  # .9 beats .1, .8, .3; .2 beats .1
  # Rooms 3 and 5 show no products: buy ranks .9 against .1 and .3 only.
  assert aucs[F.HEAD_BUY] == pytest.approx(1.0)
  assert aucs[F.HEAD_SWIPE_DOWN] == pytest.approx(1 / 3)  # .1, .8, .3 against .9, .2
  truth = {i: {f: s for f, s in zip(moc_pareto.ORACLE_FIELDS.values(), [1 - p] * 4)}
           for i, p in enumerate(ramp, start=1)}
  assert moc_pareto.head_aucs(examples, {}, truth)[F.HEAD_EFFECTIVE_VIEW] == pytest.approx(0.0)
