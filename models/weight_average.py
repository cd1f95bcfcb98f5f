"""An exponential moving average of a model's trainable weights, evaluated and kept in training.

Adam's last iterate carries the noise of its last few hundred steps; the average over them
generalises better (Polyak averaging). The average is bias-corrected as Adam's moments are (it
starts at zero and is divided by ``1 - decay**t``), so the initial weights never leak into it.

Under ``trainer.fit`` the eval split is scored with the averaged weights, early stopping records
them, and so the weights the model keeps are the averaged ones of the best epoch. Training itself
always continues from the raw weights.
"""

from __future__ import annotations

from typing import List

import tensorflow as tf


class WeightAverage(tf.keras.callbacks.Callback):
  """Keeps a bias-corrected moving average of the trainable weights; swaps it in for evaluation.

  Place it *after* ``EarlyStopping`` in the callback list: the averaged weights go in when the
  evaluation begins and stay in through the other callbacks' ``on_epoch_end`` (so early stopping
  records and restores them), and this callback's own ``on_epoch_end`` puts the raw ones back.

  Args:
    decay: the average's per-step decay in [0, 1); the average spans ~``1 / (1 - decay)`` steps.
  """

  def __init__(self, decay: float):
    super().__init__()
    if not 0.0 <= decay < 1.0:
      raise ValueError(f"WeightAverage decay must be in [0, 1), got {decay}")
    self.decay = float(decay)
    self._averages: List[tf.Variable] = []
    self._raw: List[tf.Variable] = []
    self._steps = None
    self._swapped = False

  def on_train_begin(self, logs=None):
    weights = self.model.trainable_weights
    with self.model.distribute_strategy.scope():  # mirrored like the weights they follow
      self._averages = [tf.Variable(tf.zeros_like(w), trainable=False, name="average")
                        for w in weights]
      self._raw = [tf.Variable(tf.zeros_like(w), trainable=False, name="raw") for w in weights]
      self._steps = tf.Variable(0.0, trainable=False, name="average_steps")
    self._swapped = False
    # Fresh functions per run: a traced function holds the variables it was traced with.
    self._update = tf.function(self._update_average)
    self._swap_in = tf.function(self._swap_in_average)
    self._swap_out = tf.function(self._swap_out_average)

  def _update_average(self):
    self._steps.assign_add(1.0)
    for average, weight in zip(self._averages, self.model.trainable_weights):
      average.assign(self.decay * average + (1.0 - self.decay) * weight)

  def _corrected(self, average: tf.Variable) -> tf.Tensor:
    return average / (1.0 - tf.pow(self.decay, self._steps))

  def _swap_in_average(self):
    for raw, average, weight in zip(self._raw, self._averages, self.model.trainable_weights):
      raw.assign(weight)
      weight.assign(self._corrected(average))

  def _swap_out_average(self):
    for raw, weight in zip(self._raw, self.model.trainable_weights):
      weight.assign(raw)

  def on_train_batch_end(self, batch, logs=None):
    self._update()

  def on_test_begin(self, logs=None):
    if not self._swapped and self._steps is not None and self._steps.numpy() > 0:
      self._swap_in()
      self._swapped = True

  def on_epoch_end(self, epoch, logs=None):
    if self._swapped:
      self._swap_out()
      self._swapped = False

  def averaged_weights(self) -> List[tf.Tensor]:
    """The bias-corrected average of each trainable weight (in ``trainable_weights`` order)."""
    return [self._corrected(a) for a in self._averages]
