"""What a model is trained on: its heads, each with its labels, loss, weight and sample weights.

A model declares its heads once, as a :class:`Tasks` object; the trainer, the serving signature,
the Evaluator's config and the benches iterate over it instead of naming models. Each head is a
``tfrs.tasks.Ranking`` (its loss and its AUC), and :class:`RankingModel` sums the heads' weighted
losses around any functional network whose outputs are the heads.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Dict, Mapping, Tuple

import tensorflow as tf
import tensorflow_recommenders as tfrs

from models import features as F
from models.spec import NON_INPUT_KEYS

# Builds a head's loss; called with ``reduction=NONE`` (per-example values: the model averages
# them itself, the same way with or without a tf.distribute strategy).
LossFactory = Callable[..., tf.keras.losses.Loss]
PER_EXAMPLE = tf.keras.losses.Reduction.NONE


@dataclasses.dataclass(frozen=True)
class Head:
  """One model output and how it is trained and scored.

  Attributes:
    output: the network's output name.
    labels: transformed label keys; with several, the label is their maximum (any of them).
    loss: builds the head's loss (a fresh object per model), given ``reduction=NONE``.
    weight: the head's weight in the total loss.
    mask: a transformed feature used as the sample weight in training and metrics, and multiplied
      into the served score (e.g. no purchase where the room displays no products); None: all 1.
    served: a score the serving signature returns and the Evaluator checks (False: a training-
      only output such as the feedback model's triplet gap).
    relabel: optional ``(batch, label) -> label``: a label re-definition (MOC's rules).
    reweight: optional ``(batch, label) -> [B] weights`` multiplied into the sample weight.
  """
  output: str
  labels: Tuple[str, ...]
  loss: LossFactory = tf.keras.losses.BinaryCrossentropy
  weight: float = 1.0
  mask: str | None = None
  served: bool = True
  relabel: Callable[[Mapping[str, tf.Tensor], tf.Tensor], tf.Tensor] | None = None
  reweight: Callable[[Mapping[str, tf.Tensor], tf.Tensor], tf.Tensor] | None = None

  def __post_init__(self):
    if not self.labels:
      raise ValueError(f"head {self.output!r} needs at least one label key")
    if not self.weight >= 0:
      raise ValueError(f"head {self.output!r} weight must be >= 0, got {self.weight}")

  def _raw_label(self, batch: Mapping[str, tf.Tensor]) -> tf.Tensor:
    values = [tf.cast(batch[k], tf.float32) for k in self.labels]
    return values[0] if len(values) == 1 else tf.reduce_max(tf.stack(values, 0), axis=0)

  def label(self, batch: Mapping[str, tf.Tensor]) -> tf.Tensor:
    label = self._raw_label(batch)
    return self.relabel(batch, label) if self.relabel else label

  def sample_weight(self, batch: Mapping[str, tf.Tensor]) -> tf.Tensor:
    label = batch[self.labels[0]]
    weight = (tf.cast(batch[self.mask], tf.float32) if self.mask
              else tf.ones_like(label, dtype=tf.float32))
    return weight * self.reweight(batch, self._raw_label(batch)) if self.reweight else weight


def engagement_heads() -> Tuple[Head, ...]:
  """The three scored heads every ranking model here has: effective view, interact and buy."""
  masks = {F.HEAD_BUY: F.BUY_MASK}
  return tuple(Head(output=head, labels=(head,), mask=masks.get(head)) for head in F.HEADS)


@dataclasses.dataclass(frozen=True)
class Tasks:
  """A model's heads, in output order."""
  heads: Tuple[Head, ...]

  def __post_init__(self):
    names = [h.output for h in self.heads]
    if len(set(names)) != len(names):
      raise ValueError(f"duplicate head outputs in {names}")

  @property
  def outputs(self) -> Tuple[str, ...]:
    return tuple(h.output for h in self.heads)

  @property
  def served(self) -> Tuple[Head, ...]:
    return tuple(h for h in self.heads if h.served)

  @property
  def served_outputs(self) -> Tuple[str, ...]:
    return tuple(h.output for h in self.served)

  def split(self, batch: Mapping[str, tf.Tensor]):
    """Transformed batch -> (model inputs, labels per head, sample weights per head)."""
    features = {k: v for k, v in batch.items() if k not in NON_INPUT_KEYS}
    labels = {h.output: h.label(batch) for h in self.heads}
    weights = {h.output: h.sample_weight(batch) for h in self.heads}
    return features, labels, weights


def with_head(tasks: Tasks, head: Head) -> Tasks:
  return Tasks(tasks.heads + (head,))


ENGAGEMENT = Tasks(engagement_heads())


class RankingModel(tf.keras.Model):
  """A functional ranking network trained on its :class:`Tasks`.

  ``fit`` takes ``(features, labels, sample_weights)`` batches as :meth:`Tasks.split` makes them.
  The training loss is ``sum_h weight_h * loss_h`` plus the network's regularisation losses; the
  evaluation loss is the heads' sum alone, so early stopping on ``val_loss`` compares the fits to
  the eval data and not the size of the weights (a growing embedding penalty would otherwise stop
  training while the eval fit still improves). Each head reports ``<output>_loss`` and, when
  served, ``<output>_auc`` (``val_`` prefixed on validation data).

  Args:
    network: a Keras model whose outputs are a dict keyed by every head's output name.
    tasks: the heads.
  """

  def __init__(self, network: tf.keras.Model, tasks: Tasks, **kwargs):
    super().__init__(name=kwargs.pop("name", network.name), **kwargs)
    missing = set(tasks.outputs) - set(network.output_names)
    extra = set(network.output_names) - set(tasks.outputs)
    if missing or extra:
      raise ValueError(f"network {network.name!r} outputs {sorted(network.output_names)} do not "
                       f"match the heads {list(tasks.outputs)} (missing {sorted(missing)}, "
                       f"without a head {sorted(extra)})")
    self.network = network
    self.tasks = tasks
    # Weighted by the head's sample weights, as the Evaluator's AUC is.
    self.head_aucs = {h.output: tf.keras.metrics.AUC(name=f"{h.output}_auc")
                      for h in tasks.heads if h.served}
    self.ranking_tasks: Dict[str, tfrs.tasks.Ranking] = {
        h.output: tfrs.tasks.Ranking(loss=h.loss(reduction=PER_EXAMPLE), name=f"{h.output}_task",
                                     metrics=[self.head_aucs[h.output]] if h.served else [])
        for h in tasks.heads}
    self.loss_tracker = tf.keras.metrics.Mean(name="loss")
    self.head_loss_trackers = {h.output: tf.keras.metrics.Mean(name=f"{h.output}_loss")
                               for h in tasks.heads}

  @property
  def metrics(self):
    return ([self.loss_tracker] + list(self.head_loss_trackers.values())
            + list(self.head_aucs.values()))

  def call(self, inputs, training=False):
    return self.network(inputs, training=training)

  def _total_loss(self, data, training: bool):
    """This replica's share of sum_h weight_h * loss_h (+ regularisation when ``training``);
    updates the metrics.

    A head's loss is its weighted per-example losses summed over the global batch and divided by
    the global batch size (Keras' ``SUM_OVER_BATCH_SIZE``). Under a strategy with N replicas each
    replica returns its share (its sum over the global count, and 1/N of the regularisation), so
    the optimizer's sum of the replicas' gradients is the global batch's gradient even when the
    last batch splits unevenly or leaves a replica empty. The loss metrics record the global
    values. Without a strategy (N = 1) the share is the whole.
    """
    features, labels, weights = data
    predictions = self(features, training=training)
    context = tf.distribute.get_replica_context()
    replicas = context.num_replicas_in_sync
    terms = []
    for h in self.tasks.heads:
      per_example = self.ranking_tasks[h.output](
          labels[h.output], predictions[h.output], sample_weight=weights[h.output],
          training=training)  # [B]
      count = tf.cast(tf.size(per_example), per_example.dtype)
      if replicas > 1:
        count = context.all_reduce(tf.distribute.ReduceOp.SUM, count)
      share = tf.math.divide_no_nan(tf.reduce_sum(per_example), count)
      # Keras averages a Mean metric over the replicas' updates: N × share averages to the sum.
      self.head_loss_trackers[h.output].update_state(share * replicas)
      terms.append(h.weight * share)
    loss = tf.add_n(terms)
    if training and self.network.losses:
      loss += tf.add_n(self.network.losses) / replicas
    self.loss_tracker.update_state(loss * replicas)
    return loss

  def train_step(self, data):
    with tf.GradientTape() as tape:
      loss = self._total_loss(data, training=True)
    grads = tape.gradient(loss, self.trainable_variables)
    self.optimizer.apply_gradients(zip(grads, self.trainable_variables))
    return {m.name: m.result() for m in self.metrics}

  def test_step(self, data):
    self._total_loss(data, training=False)
    return {m.name: m.result() for m in self.metrics}


def scored_outputs(tasks: Tasks, outputs: Mapping[str, tf.Tensor],
                   transformed: Mapping[str, tf.Tensor]) -> Dict[str, tf.Tensor]:
  """The served heads' scores, [B] each, with each head's mask applied."""
  scores = {}
  for h in tasks.served:
    score = tf.reshape(outputs[h.output], [-1])
    if h.mask:
      score *= tf.reshape(tf.cast(transformed[h.mask], score.dtype), [-1])
    scores[h.output] = score
  return scores
