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
