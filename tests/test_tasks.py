"""Per-model tasks: labels, masks, the weighted loss, served scores and the trainer's registry."""

import numpy as np
import pytest
import tensorflow as tf

from models import features as F
from models import feedback, moc, tasks, trainer
from models.losses import LabelAwareTripletLoss


def _batch():
  """Four examples with one input feature, every head's label and the buy mask."""
  return {
      "x_xf": tf.constant([[0.5], [-1.0], [2.0], [0.0]]),
      F.HEAD_EFFECTIVE_VIEW: tf.constant([[1], [0], [0], [1]], tf.int64),
      F.HEAD_INTERACT: tf.constant([[0], [1], [0], [1]], tf.int64),
      F.HEAD_BUY: tf.constant([[1], [0], [1], [0]], tf.int64),
      F.BUY_MASK: tf.constant([[1.0], [0.0], [1.0], [1.0]]),
  }


def test_split_keeps_inputs_and_gives_each_head_its_label_and_mask():
  feedback_tasks = feedback.feedback_tasks(triplet_weight=0.5, triplet_margin=0.1)
  features, labels, weights = feedback_tasks.split(_batch())
  assert list(features) == ["x_xf"]  # labels and masks are never model inputs
  np.testing.assert_array_equal(labels[F.HEAD_BUY].numpy().ravel(), [1, 0, 1, 0])
  np.testing.assert_array_equal(weights[F.HEAD_BUY].numpy().ravel(), [1, 0, 1, 1])
  np.testing.assert_array_equal(weights[F.HEAD_INTERACT].numpy().ravel(), [1, 1, 1, 1])
  # Engaged = effective view or interact.
  np.testing.assert_array_equal(labels[feedback.TRIPLET_OUTPUT].numpy().ravel(), [1, 1, 0, 1])
  assert feedback_tasks.served_outputs == tuple(F.HEADS)
  assert feedback_tasks.outputs == tuple(F.HEADS) + (feedback.TRIPLET_OUTPUT,)


def _toy_network(with_gap: bool) -> tf.keras.Model:
  x = tf.keras.Input(shape=(1,), name="x_xf")
  outputs = {h: tf.keras.layers.Dense(1, activation="sigmoid", name=h)(x) for h in F.HEADS}
  if with_gap:
    outputs[feedback.TRIPLET_OUTPUT] = tf.keras.layers.Dense(1, name=feedback.TRIPLET_OUTPUT)(x)
  return tf.keras.Model({"x_xf": x}, outputs)


def test_loss_is_the_weighted_sum_of_head_losses_with_masks():
  tf.keras.utils.set_random_seed(0)
  model = tasks.RankingModel(_toy_network(with_gap=True),
                             feedback.feedback_tasks(triplet_weight=0.5, triplet_margin=0.1))
  model.compile(tf.keras.optimizers.SGD(0.0))
  batch = _batch()
  features, labels, weights = model.tasks.split(batch)
  preds = model(features)
  bce = tf.keras.losses.BinaryCrossentropy()
  want = sum(float(bce(labels[h], preds[h], sample_weight=weights[h])) for h in F.HEADS)
  want += 0.5 * float(LabelAwareTripletLoss(0.1)(labels[feedback.TRIPLET_OUTPUT],
                                                 preds[feedback.TRIPLET_OUTPUT]))
  # The buy loss ignores the masked row: changing its label changes nothing.
  flipped = dict(batch, **{F.HEAD_BUY: tf.constant([[1], [1], [1], [0]], tf.int64)})
  got = model.evaluate(tf.data.Dataset.from_tensors(batch).map(model.tasks.split),
                       verbose=0, return_dict=True)
  got_flipped = model.evaluate(tf.data.Dataset.from_tensors(flipped).map(model.tasks.split),
                               verbose=0, return_dict=True)
  assert got["loss"] == pytest.approx(want, rel=1e-5)
  assert got_flipped["loss"] == pytest.approx(want, rel=1e-5)
  assert got[f"{F.HEAD_INTERACT}_loss"] == pytest.approx(
      float(bce(labels[F.HEAD_INTERACT], preds[F.HEAD_INTERACT])), rel=1e-5)
  # Every head reports its loss; only served heads an AUC (not the triplet gap).
  assert set(got) == ({"loss"} | {f"{h}_auc" for h in F.HEADS}
                      | {f"{h}_loss" for h in model.tasks.outputs})


def test_the_eval_loss_leaves_out_the_regularisation_that_training_adds():
  x = tf.keras.Input(shape=(1,), name="x_xf")
  l2 = tf.keras.regularizers.L2(0.5)
  network = tf.keras.Model(x, {h: tf.keras.layers.Dense(1, activation="sigmoid", name=h,
                                                        kernel_regularizer=l2)(x)
                               for h in F.HEADS})
  model = tasks.RankingModel(network, tasks.ENGAGEMENT)
  model.compile(tf.keras.optimizers.SGD(0.0))
  for h in F.HEADS:
    network.get_layer(h).set_weights([np.array([[2.0]], np.float32), np.zeros(1, np.float32)])
  penalty = 0.5 * 4.0 * len(F.HEADS)  # 0.5 * kernel² per head
  batch = _batch()
  features, labels, weights = model.tasks.split(batch)
  preds = model(features)
  bce = tf.keras.losses.BinaryCrossentropy()
  heads = sum(float(bce(labels[h], preds[h], sample_weight=weights[h])) for h in F.HEADS)
  data = tf.data.Dataset.from_tensors(batch).map(model.tasks.split)
  assert model.evaluate(data, verbose=0, return_dict=True)["loss"] == pytest.approx(heads, rel=1e-5)
  trained = model.fit(data, epochs=1, verbose=0).history["loss"][0]
  assert trained == pytest.approx(heads + penalty, rel=1e-5)


def test_training_reduces_the_loss_and_reports_val_auc_per_head():
  tf.keras.utils.set_random_seed(0)
  model = tasks.RankingModel(_toy_network(with_gap=False), tasks.ENGAGEMENT)
  model.compile(tf.keras.optimizers.Adam(0.1))
  data = tf.data.Dataset.from_tensors(_batch()).map(model.tasks.split).repeat(20)
  history = model.fit(data, validation_data=data.take(1), epochs=2, verbose=0).history
  assert history["loss"][1] < history["loss"][0]
  assert {f"val_{h}_auc" for h in F.HEADS} <= set(history)


def test_network_outputs_must_match_the_heads():
  with pytest.raises(ValueError, match=r"without a head \['triplet_gap'\]"):
    tasks.RankingModel(_toy_network(with_gap=True), tasks.ENGAGEMENT)
  with pytest.raises(ValueError, match=r"missing \['triplet_gap'\]"):
    tasks.RankingModel(_toy_network(with_gap=False), feedback.feedback_tasks())


def test_scored_outputs_are_the_served_heads_with_masks_applied():
  outputs = {h: tf.constant([[0.5], [0.25]]) for h in F.HEADS}
  outputs[feedback.TRIPLET_OUTPUT] = tf.constant([[3.0], [3.0]])
  scores = tasks.scored_outputs(feedback.feedback_tasks(), outputs,
                                {F.BUY_MASK: tf.constant([[1.0], [0.0]])})
  assert set(scores) == set(F.HEADS)
  np.testing.assert_allclose(scores[F.HEAD_BUY].numpy(), [0.5, 0.0])
  np.testing.assert_allclose(scores[F.HEAD_INTERACT].numpy(), [0.5, 0.25])  # unmasked


def test_head_arguments_are_validated():
  with pytest.raises(ValueError, match="'x' needs at least one label"):
    tasks.Head(output="x", labels=())
  with pytest.raises(ValueError, match="'x' weight must be >= 0, got -1"):
    tasks.Head(output="x", labels=("y",), weight=-1.0)
  head = tasks.Head(output="x", labels=("y",))
  with pytest.raises(ValueError, match="duplicate head outputs"):
    tasks.Tasks((head, head))


def test_every_registered_model_declares_the_served_engagement_heads():
  for name in trainer.MODELS:
    cfg = trainer.TrainConfig(model_name=name)
    served = trainer.model_tasks(cfg).served_outputs
    assert served == (moc.STCRANK_HEADS if name.startswith("stcrank") else tuple(F.HEADS)), name
  triplet = trainer.model_tasks(trainer.TrainConfig(model_name="feedback", triplet_weight=0.3))
  assert triplet.heads[-1].weight == 0.3 and not triplet.heads[-1].served


# --- MOC's rules (models/moc.py) on hand-built labels ------------------------------------------------
def _moc_batch():
  """Five impressions: (view, purchased, swiped down) =
  (1,1,0) a purchase that ended the session, (1,1,1) a purchase and on, (1,0,1), (0,0,0), (1,0,0)."""
  col = lambda *v: tf.constant([[x] for x in v], tf.float32)  # noqa: E731
  return {F.HEAD_EFFECTIVE_VIEW: col(1, 1, 1, 0, 1), F.PURCHASED: col(1, 1, 0, 0, 0),
          F.HEAD_SWIPE_DOWN: col(0, 1, 1, 0, 0)}


@pytest.mark.parametrize("rule, label, weight", [
    ("negative", [0, 1, 1, 0, 0], [1, 1, 1, 1, 1]),
    ("ignore", [0, 1, 1, 0, 0], [0, 1, 1, 1, 1]),
    ("positive", [1, 1, 1, 0, 0], [1, 1, 1, 1, 1]),
])
def test_moc_purchase_exit_rule_on_the_swipe_down_head(rule, label, weight):
  head = moc.MocRules(purchase_exit=rule).swipe_head()
  batch = _moc_batch()
  np.testing.assert_array_equal(tf.reshape(head.label(batch), [-1]).numpy(), label)
  np.testing.assert_array_equal(tf.reshape(head.sample_weight(batch), [-1]).numpy(), weight)


def test_moc_overlap_weight_on_the_view_head_and_raw_labels():
  batch = _moc_batch()
  head = moc.MocRules(view_overlap_weight=0.25).view_head()
  # Only views that ended in a purchase (the first two) weigh less; the label is as logged.
  np.testing.assert_allclose(tf.reshape(head.sample_weight(batch), [-1]).numpy(),
                             [0.25, 0.25, 1, 1, 1])
  np.testing.assert_array_equal(tf.reshape(head.label(batch), [-1]).numpy(), [1, 1, 1, 0, 1])
  raw = moc.stcrank_tasks(moc.RAW_LABELS)
  _, labels, weights = raw.split(dict(batch, **{F.HEAD_INTERACT: batch[F.PURCHASED],
                                                F.HEAD_BUY: batch[F.PURCHASED],
                                                F.BUY_MASK: tf.ones([5, 1])}))
  for head in moc.STCRANK_HEADS:
    np.testing.assert_array_equal(tf.reshape(weights[head], [-1]).numpy(), [1, 1, 1, 1, 1])
  np.testing.assert_array_equal(tf.reshape(labels[F.HEAD_SWIPE_DOWN], [-1]).numpy(),
                                [0, 1, 1, 0, 0])


@pytest.mark.parametrize("kwargs, fragment", [
    ({"purchase_exit": "drop"}, "purchase_exit 'drop' is not one of"),
    ({"view_overlap_weight": 1.5}, "view_overlap_weight must be in \\[0, 1\\], got 1.5"),
    ({"swipe_weight": -1.0}, "swipe_weight must be >= 0, got -1.0"),
])
def test_moc_rules_are_validated(kwargs, fragment):
  with pytest.raises(ValueError, match=fragment):
    moc.MocRules(**kwargs)
  if "purchase_exit" in kwargs:  # and through the trainer's custom config
    with pytest.raises(ValueError, match=fragment):
      trainer.TrainConfig.from_custom_config({"model_name": "stcrank",
                                              "moc_purchase_exit": kwargs["purchase_exit"]})
