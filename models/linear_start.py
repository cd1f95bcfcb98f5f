"""A linear start: each head's linear path and the room offsets solved exactly before SGD.

Batch-256 Adam stops short of a converged logistic regression on the same inputs, and the deep
part learns nothing on top of a converged one (BUILD_NOTES, "A linear start"). So a network with
a wide path (``multitask.task_heads(wide=...)``) starts from the regression itself:

1. every batch normalisation layer gets its inputs' moments over the train split as its moving
   statistics, so the normalised features the linear path reads are fixed and standardised;
2. per head, an L2-penalised logistic regression on the wide features, the room one-hot and an
   intercept is solved by Newton's method (the room block of the Hessian is diagonal, so it is
   eliminated by its Schur complement: the cost does not grow with the number of rooms); given
   several penalties, each head keeps the one whose fit has the lowest log loss on the eval split
   (the split early stopping reads): a penalty that suits 60,000 examples overfits 500;
3. its coefficients go into ``<head>_wide`` and the ``room_offset`` table, and the output layers
   of each deep tower and of a Bias Net (``multitask.BIAS_NET``) are zeroed, so the network's
   scores are the regression's.

The trainer then freezes the linear path and trains the rest as a residual on it.
"""

from __future__ import annotations

import dataclasses
from typing import Dict, Iterable, List, Sequence, Tuple

import numpy as np
import tensorflow as tf
from absl import logging

from models import features as F
from models import multitask

# Newton steps stop when no coefficient moves more than this, or after MAX_ITERATIONS.
TOLERANCE = 1e-6
MAX_ITERATIONS = 50


def has_linear_path(network: tf.keras.Model) -> bool:
  """True when ``network`` has the wide features, a linear layer per head and room offsets."""
  names = {layer.name for layer in network.layers}
  heads = multitask.linear_heads(network)
  return (multitask.WIDE_FEATURES in names and multitask.ROOM_OFFSET in names and bool(heads))


def set_batch_norm_statistics(network: tf.keras.Model,
                              batches: Iterable[Tuple[dict, dict, dict]]) -> int:
  """Sets each BatchNormalization layer's moving mean and variance to its inputs' moments.

  Args:
    network: a functional Keras model.
    batches: ``(features, labels, weights)`` batches (one pass is read).

  Returns:
    The number of examples read.
  """
  layers = [m for m in network.submodules if isinstance(m, tf.keras.layers.BatchNormalization)]
  if not layers:
    return 0
  probe = tf.keras.Model(network.inputs, [layer.input for layer in layers])
  sums: List[np.ndarray] = []
  squares: List[np.ndarray] = []
  count = 0
  for features, _, _ in batches:
    outputs = probe(features, training=False)
    outputs = outputs if isinstance(outputs, (list, tuple)) else [outputs]
    values = [o.numpy().astype(np.float64) for o in outputs]  # [B, D_k] each
    if not sums:
      sums = [np.zeros(v.shape[1]) for v in values]
      squares = [np.zeros(v.shape[1]) for v in values]
    for k, v in enumerate(values):
      sums[k] += v.sum(axis=0)
      squares[k] += np.square(v).sum(axis=0)
    count += len(values[0])
  if not count:
    raise ValueError("set_batch_norm_statistics: the batches hold no examples")
  for layer, total, square in zip(layers, sums, squares):
    mean = total / count
    layer.moving_mean.assign(mean.astype(np.float32))
    layer.moving_variance.assign(np.maximum(square / count - mean ** 2, 0.0).astype(np.float32))
  return count


@dataclasses.dataclass
class LogisticFit:
  """An L2-penalised logistic regression with one intercept per id (on top of a global one)."""
  coef: np.ndarray  # [D], on the raw (not standardised) features
  intercept: float
  id_coef: np.ndarray  # [V]
  iterations: int


def fit_logistic(x: np.ndarray, ids: np.ndarray, num_ids: int, labels: np.ndarray,
                 weights: np.ndarray, l2: float) -> LogisticFit:
  """Minimises ``sum_i w_i logloss(y_i, x_i·a + c + b[id_i]) + l2/2 (|a_s|² + |b|²)`` by Newton.

  ``a_s`` are the coefficients of the standardised features (as scikit-learn's
  ``LogisticRegression(C=1/l2)`` on standardised inputs and an id one-hot); the intercept ``c``
  is not penalised.

  Args:
    x: [N, D] features.
    ids: [N] ints in [0, num_ids).
    num_ids: the id vocabulary size V.
    labels: [N] in {0, 1}.
    weights: [N] non-negative example weights (0 drops an example, e.g. a masked head).
    l2: the penalty, > 0 (it also keeps the Hessian invertible).
  """
  if not l2 > 0:
    raise ValueError(f"fit_logistic l2 must be > 0, got {l2}")
  x = np.asarray(x, np.float64)
  n, d = x.shape
  ids = np.asarray(ids, np.int64).reshape(-1)
  if len(ids) != n or len(labels) != n or len(weights) != n:
    raise ValueError(f"fit_logistic: x has {n} rows, ids {len(ids)}, labels {len(labels)}, "
                     f"weights {len(weights)}")
  if n and (ids.min() < 0 or ids.max() >= num_ids):
    raise ValueError(f"fit_logistic ids must be in [0, {num_ids}), got [{ids.min()}, {ids.max()}]")
  y = np.asarray(labels, np.float64).reshape(-1)
  w = np.asarray(weights, np.float64).reshape(-1)
  if not w.sum() > 0:
    raise ValueError("fit_logistic: every example weight is 0")
  mean = np.average(x, axis=0, weights=w)  # [D]
  scale = np.sqrt(np.average(np.square(x - mean), axis=0, weights=w))  # [D]
  scale = np.where(scale < 1e-9, 1.0, scale)  # a constant feature: left as it is
  z = np.concatenate([(x - mean) / scale, np.ones((n, 1))], axis=1)  # [N, D+1]: intercept last
  penalty = np.full(d + 1, l2)
  penalty[-1] = 0.0
  a = np.zeros(d + 1)
  b = np.zeros(num_ids)
  iterations = 0
  while iterations < MAX_ITERATIONS:
    iterations += 1
    p = 1.0 / (1.0 + np.exp(-(z @ a + b[ids])))  # [N]
    residual = w * (p - y)  # [N]
    curvature = w * p * (1.0 - p)  # [N]
    grad_a = z.T @ residual + penalty * a  # [D+1]
    grad_b = np.bincount(ids, residual, num_ids) + l2 * b  # [V]
    h_aa = (z * curvature[:, None]).T @ z + np.diag(penalty)  # [D+1, D+1]
    h_ab = np.zeros((d + 1, num_ids))  # [D+1, V]: per id, the curvature-weighted feature sums
    np.add.at(h_ab.T, ids, z * curvature[:, None])
    h_bb = np.bincount(ids, curvature, num_ids) + l2  # [V]: the id block is diagonal
    # Schur complement of the id block: (H_aa - H_ab H_bb^-1 H_ba) da = g_a - H_ab H_bb^-1 g_b.
    step_a = np.linalg.solve(h_aa - (h_ab / h_bb) @ h_ab.T, grad_a - h_ab @ (grad_b / h_bb))
    step_b = (grad_b - h_ab.T @ step_a) / h_bb
    a -= step_a
    b -= step_b
    if max(np.abs(step_a).max(), np.abs(step_b).max(initial=0.0)) < TOLERANCE:
      break
  coef = a[:d] / scale
  return LogisticFit(coef=coef, intercept=float(a[d] - coef @ mean), id_coef=b,
                     iterations=iterations)


def log_loss(fit: LogisticFit, x: np.ndarray, ids: np.ndarray, labels: np.ndarray,
             weights: np.ndarray) -> float:
  """The weighted mean log loss of ``fit``'s probabilities on ``(x, ids)``."""
  logit = np.asarray(x, np.float64) @ fit.coef + fit.intercept + fit.id_coef[ids]  # [N]
  y = np.asarray(labels, np.float64).reshape(-1)
  w = np.asarray(weights, np.float64).reshape(-1)
  # log(1 + e^-z) for a positive, log(1 + e^z) for a negative: logaddexp stays finite.
  losses = np.logaddexp(0.0, np.where(y > 0.5, -logit, logit))
  return float((w * losses).sum() / w.sum())


@dataclasses.dataclass
class HeadStart:
  """What the linear start chose for one head."""
  l2: float
  iterations: int
  eval_log_loss: Dict[float, float]  # per penalty tried ({} when only one was given)


def _check_penalties(caller: str, penalties: Sequence[float], has_eval: bool) -> None:
  """At least one penalty, and an eval split to choose among several."""
  if not penalties:
    raise ValueError(f"{caller} needs at least one penalty")
  if len(penalties) > 1 and not has_eval:
    raise ValueError(f"{caller}: {len(penalties)} penalties {list(penalties)} and no eval split "
                     "to choose among them")


def choose_fit(train: Tuple[np.ndarray, ...], evaluation: Tuple[np.ndarray, ...] | None,
               num_ids: int, penalties: Sequence[float]) -> Tuple[LogisticFit, HeadStart]:
  """Fits each penalty on ``train`` and keeps the one with the lowest log loss on ``evaluation``.

  Args:
    train: ``(x, ids, labels, weights)`` of the train split.
    evaluation: the same of the eval split; may be None when there is one penalty.
    num_ids: the id vocabulary size.
    penalties: the L2 penalties to try (each > 0); ties keep the first.

  Returns:
    The chosen fit and what was tried.
  """
  _check_penalties("choose_fit", penalties, evaluation is not None)
  best, losses = None, {}
  for l2 in penalties:
    fit = fit_logistic(*train[:2], num_ids, *train[2:], l2)
    if len(penalties) == 1:
      return fit, HeadStart(l2=float(l2), iterations=fit.iterations, eval_log_loss={})
    losses[float(l2)] = log_loss(fit, *evaluation)
    if best is None or losses[float(l2)] < losses[best[0]]:
      best = (float(l2), fit)
  l2, fit = best
  return fit, HeadStart(l2=l2, iterations=fit.iterations, eval_log_loss=losses)


def _wide_path(network: tf.keras.Model) -> tf.keras.Model:
  """The part of ``network`` from its inputs to the wide features (its layers are shared)."""
  return tf.keras.Model(network.inputs, network.get_layer(multitask.WIDE_FEATURES).output)


def _collect(network: tf.keras.Model, batches, heads: Sequence[str], id_key: str):
  """The wide features, ids, labels and weights of one pass over ``batches``."""
  probe = _wide_path(network)
  xs, ids = [], []
  labels: Dict[str, list] = {h: [] for h in heads}
  weights: Dict[str, list] = {h: [] for h in heads}
  for features, batch_labels, batch_weights in batches:
    xs.append(probe(features, training=False).numpy())  # [B, D]
    ids.append(np.reshape(features[id_key].numpy(), [-1]))
    for h in heads:
      labels[h].append(np.reshape(batch_labels[h].numpy(), [-1]))
      weight = batch_weights[h]
      weights[h].append(np.ones(len(xs[-1])) if weight is None
                        else np.reshape(weight.numpy(), [-1]))
  if not xs:
    raise ValueError("linear_start: the batches hold no examples")
  return (np.concatenate(xs), np.concatenate(ids),
          {h: np.concatenate(v) for h, v in labels.items()},
          {h: np.concatenate(v) for h, v in weights.items()})


def _zero(layer: tf.keras.layers.Layer) -> None:
  layer.set_weights([np.zeros_like(w) for w in layer.get_weights()])


def linear_start(network: tf.keras.Model, batches: Iterable[Tuple[dict, dict, dict]],
                 penalties: Sequence[float],
                 eval_batches: Iterable[Tuple[dict, dict, dict]] | None = None
                 ) -> Dict[str, HeadStart]:
  """Sets ``network``'s linear path to each head's penalised logistic regression (module doc).

  Args:
    network: a network with a linear path (:func:`has_linear_path`).
    batches: the train split's ``(features, labels, weights)`` batches; iterated twice.
    penalties: the regression's L2 penalties to try (scikit-learn's ``1 / C``), each > 0.
    eval_batches: the eval split's batches, read once to choose among several penalties.

  Returns:
    Per head, the chosen penalty, its Newton iterations and the eval log loss of each penalty.
  """
  if not has_linear_path(network):
    raise ValueError(f"network {network.name!r} has no linear path (a {multitask.WIDE_FEATURES!r} "
                     f"layer, <head>_wide layers and {multitask.ROOM_OFFSET!r})")
  _check_penalties("linear_start", penalties, eval_batches is not None)  # before any pass
  examples = set_batch_norm_statistics(network, batches)
  heads = multitask.linear_heads(network)
  id_key = F.transformed_name(F.HOST_ID)
  x, ids, labels, weights = _collect(network, batches, heads, id_key)
  held_out = (_collect(network, eval_batches, heads, id_key)
              if eval_batches is not None and len(penalties) > 1 else None)
  offset = network.get_layer(multitask.ROOM_OFFSET)
  table = offset.table.numpy()  # [V, H], read as rate × table
  chosen = {}
  for head in heads:
    column = list(F.HEADS).index(head)  # the offsets' columns follow the heads, F.HEADS first
    fit, chosen[head] = choose_fit(
        (x, ids, labels[head], weights[head]),
        None if held_out is None else (held_out[0], held_out[1], held_out[2][head],
                                       held_out[3][head]),
        offset.num_ids, penalties)
    network.get_layer(multitask.wide_layer_name(head)).set_weights(
        [fit.coef[:, None].astype(np.float32), np.array([fit.intercept], np.float32)])
    table[:, column] = fit.id_coef / offset.rate_multiplier
    _zero(network.get_layer(multitask.deep_tower_name(head)).output_layer)
  offset.table.assign(table)
  if multitask.BIAS_NET in {layer.name for layer in network.layers}:
    _zero(network.get_layer(multitask.BIAS_NET).output_layer)
  logging.info("linear start: %d examples, %d wide features, %d rooms; per head L2 (Newton "
               "iterations) %s", examples, x.shape[1], offset.num_ids,
               {h: f"{c.l2:g} ({c.iterations})" for h, c in chosen.items()})
  return chosen


def linear_layers(network: tf.keras.Model) -> List[tf.keras.layers.Layer]:
  """The layers :func:`linear_start` sets (the trainer freezes them after it)."""
  return ([network.get_layer(multitask.wide_layer_name(h)) for h in multitask.linear_heads(network)]
          + [network.get_layer(multitask.ROOM_OFFSET)])


def wide_feature_layers(network: tf.keras.Model) -> List[tf.keras.layers.Layer]:
  """The layers with weights that compute the wide features (batch normalisation, learned decays,
  match summaries): the trainer freezes them with the path, so the features SGD feeds the solved
  regression are the ones it was solved on (a trainable batch normalisation would read batch
  moments, and a learned decay would drift away from the solved coefficients)."""
  return [layer for layer in _wide_path(network).layers if layer.weights]
