"""Candidate-sequence match layers, the DCN-v2 cross network and the early-stopping regime."""

import numpy as np
import pytest
import tensorflow as tf

from models import trainer
from models.layers import (
    CrossNetwork,
    DecayedMatchSum,
    IdMatchCount,
    MatchSummary,
    SessionPosition,
)
from models.layers.match import (
    LookupMatchSummary,
    match_counts,
    position_weighted_sums,
    weighted_match_sums,
)
from models.weight_average import WeightAverage


def test_id_match_count_hand_computed_with_width_and_padding():
  query = tf.constant([[5, 7, 0], [3, 0, 0]], tf.int64)  # candidate categories, 0 = padding
  # Two past rooms per row, three categories each (position-major); 0s are padding.
  keys = tf.constant([[5, 9, 0, 7, 5, 0], [0, 0, 0, 3, 3, 1]], tf.int64)
  out = IdMatchCount(width=3)([query, keys]).numpy()
  # Row 0: room 1 shares 5; room 2 shares 7 and 5. Row 1: padding never matches query padding.
  np.testing.assert_array_equal(out, [[1.0, 2.0], [0.0, 2.0]])


def test_session_position_hand_computed_and_one_context_row():
  hits = tf.constant([[1.0, 2.0, 1.0], [0.0, 1.0, 3.0]])  # per session room, most recent first
  shown = tf.constant([[2], [3]], tf.int64)  # row 0: the third room is padding
  trigger = tf.constant([[1.0], [0.0]])
  slot = tf.constant([[2], [0]], tf.int64)
  layer = SessionPosition(decay=0.5)
  np.testing.assert_allclose(layer([hits, shown, trigger, slot]).numpy(),
                             [[3.0, 0.25], [4.0, 0.0]])
  # The context request: one session's length and slot against N rooms' hits.
  np.testing.assert_allclose(layer([hits, shown[:1], trigger, slot[:1]]).numpy(),
                             [[3.0, 0.25], [1.0, 0.0]])
  again = SessionPosition.from_config(layer.get_config())
  assert again.decay == 0.5
  with pytest.raises(ValueError, match="decay must be in \\(0, 1\\], got 1.5"):
    SessionPosition(decay=1.5)


def test_id_match_count_counts_occurrences_when_the_query_is_a_sequence():
  lifelong_brands = tf.constant([[4, 4, 2, 0, 0]], tf.int64)
  display_brands = tf.constant([[4, 2, 8, 0]], tf.int64)
  out = IdMatchCount()([lifelong_brands, display_brands]).numpy()
  np.testing.assert_array_equal(out, [[2.0, 1.0, 0.0, 0.0]])


@pytest.mark.parametrize("query_rows,key_rows,width", [(4, 4, 1), (4, 1, 3), (1, 4, 2)])
def test_id_match_count_equals_every_pair_compared(query_rows, key_rows, width):
  # The lookup table against the definition, with either side's batch broadcast (one user's
  # sequence against N rooms, or one room against N sequences).
  rng = np.random.default_rng(query_rows * 10 + width)
  query = rng.integers(0, 7, size=(query_rows, 3))
  keys = rng.integers(0, 7, size=(key_rows, 5 * width))
  out = IdMatchCount(width=width)([tf.constant(query), tf.constant(keys)]).numpy()
  rows = max(query_rows, key_rows)
  expected = np.zeros((rows, 5))
  for b in range(rows):
    q, k = query[min(b, query_rows - 1)], keys[min(b, key_rows - 1)].reshape(5, width)
    for pos in range(5):
      expected[b, pos] = sum(int(a == c) for a in k[pos] if a > 0 for c in q)
  np.testing.assert_array_equal(out, expected)
  assert expected.sum() > 0
  if key_rows == 1:
    # The batch known only at run time (a signature's None): broadcast, not the shared path.
    dynamic = tf.function(IdMatchCount(width=width), input_signature=[[
        tf.TensorSpec([None, 3], tf.int64), tf.TensorSpec([None, 5 * width], tf.int64)]])
    np.testing.assert_array_equal(dynamic([tf.constant(query), tf.constant(keys)]).numpy(),
                                  expected)
    # No rooms against one user's sequence: no rows, not one.
    none = IdMatchCount(width=width)([tf.constant(query[:0]), tf.constant(keys)])
    assert none.shape == (0, 5)


def test_ids_no_query_holds_never_match_and_do_not_size_the_tables():
  # A key id far beyond every query id (or negative) reads the padding slot: no match, and the
  # lookup tables stay the size of the query's ids (a 10**12-row table would not fit).
  query = tf.constant([[3, 1]], tf.int64)
  keys = tf.constant([[3, 10**12, -4, 1]], tf.int64)
  np.testing.assert_array_equal(IdMatchCount()([query, keys]).numpy(), [[1.0, 0.0, 0.0, 1.0]])
  np.testing.assert_array_equal(match_counts(query, keys).numpy(), [[1.0, 1.0]])
  # A negative query id is padding on both paths: it matches nothing, not even a negative key.
  query = tf.constant([[3, -4, 1]], tf.int64)
  np.testing.assert_array_equal(IdMatchCount()([query, keys]).numpy(), [[1.0, 0.0, 0.0, 1.0]])
  np.testing.assert_array_equal(match_counts(query, keys).numpy(), [[1.0, 0.0, 1.0]])


def test_id_match_count_validation_and_config():
  with pytest.raises(ValueError, match="width must be >= 1, got 0"):
    IdMatchCount(width=0)
  with pytest.raises(ValueError, match="keys length 5 is not a multiple of width 3"):
    IdMatchCount(width=3)([tf.constant([[1]]), tf.constant([[1, 2, 3, 4, 5]])])
  layer = IdMatchCount(width=3, name="m")
  assert IdMatchCount.from_config(layer.get_config()).width == 3


def test_match_summary_hand_computed_masked_and_empty():
  matches = tf.constant([[1.0, 0.0, 2.0, 9.0], [0.0, 0.0, 0.0, 0.0]])  # 9.0 is past the length
  length = tf.constant([[3], [0]])
  out = MatchSummary(decay=0.5, smoothing=1.0)([matches, length]).numpy()
  total = 3.0
  np.testing.assert_allclose(out[0], [np.log1p(total), total / 3, total / 4,
                                      1.0 + 0.25 * 2.0, 1.0], rtol=1e-6)
  np.testing.assert_allclose(out[1], [0.0, 0.0, 0.0, 0.0, 0.0])  # a new user: zeros, no NaN


def test_match_summary_learned_bucket_weights_and_config():
  layer = MatchSummary(num_buckets=4)
  matches = tf.constant([[1.0, 1.0, 1.0]])
  out = layer([matches, tf.constant([[2]]), tf.constant([[1, 3, 2]])])
  assert out.shape == (1, 6) and len(layer.trainable_weights) == 1
  layer.bucket_weights.assign([0.0, 10.0, 20.0, 30.0])
  out = layer([matches, tf.constant([[2]]), tf.constant([[1, 3, 2]])]).numpy()
  assert out[0, 5] == pytest.approx(10.0 + 30.0)  # buckets of the two valid positions
  clone = MatchSummary.from_config(layer.get_config())
  assert (clone.decay, clone.smoothing, clone.num_buckets) == (0.85, 5.0, 4)


def test_position_weighted_sums_for_one_user_against_rooms_equal_the_tiled_user():
  # The context request passes the user's side with static batch 1: the summaries of N rooms'
  # matches must be those of the user repeated per room (the per-row path, as in training).
  rng = np.random.default_rng(3)
  matches = tf.constant(rng.integers(0, 3, size=(4, 6)), tf.float32)  # 4 rooms x 6 positions
  np.testing.assert_allclose(
      position_weighted_sums(matches, tf.constant([[[1.0, 2.0]] * 3 + [[0.0, 0.0]] * 3])),
      tf.stack([tf.reduce_sum(matches[:, :3], 1), 2 * tf.reduce_sum(matches[:, :3], 1)], 1))
  length, buckets = np.array([[4]]), rng.integers(0, 3, size=(1, 6))
  ages = rng.uniform(0, 48, size=(1, 6)).astype(np.float32)
  tile = lambda a: np.repeat(a, 4, axis=0)  # noqa: E731
  summary, decayed = MatchSummary(num_buckets=3), DecayedMatchSum()
  summary([matches, length, buckets])
  summary.bucket_weights.assign([0.5, 2.0, -1.0])
  for shared, tiled in ((summary([matches, length, buckets]),
                         summary([matches, tile(length), tile(buckets)])),
                        (decayed([matches, length, ages]),
                         decayed([matches, tile(length), tile(ages)]))):
    assert shared.shape == tiled.shape and np.abs(tiled.numpy()).sum() > 0
    np.testing.assert_allclose(shared.numpy(), tiled.numpy(), rtol=1e-5, atol=1e-6)


def test_weighted_match_sums_hand_computed_shared_and_per_row_keys():
  keys = tf.constant([[3, 5, 3, 0]])  # one user's sequence; 0 is padding
  weights = [tf.constant([[1.0, 1.0, 1.0, 1.0]]), tf.constant([[10.0, 20.0, 30.0, 40.0]])]
  query = tf.constant([[3, 7], [5, 0], [0, 3]])  # three rooms against the shared keys
  out = weighted_match_sums(query, keys, weights).numpy()  # [3, 2, 2]
  np.testing.assert_allclose(out[0], [[2.0, 40.0], [0.0, 0.0]])  # 3 at positions 0 and 2
  np.testing.assert_allclose(out[1], [[1.0, 20.0], [0.0, 0.0]])  # a 0 query id matches nothing
  np.testing.assert_allclose(out[2], [[0.0, 0.0], [2.0, 40.0]])
  per_row = weighted_match_sums(tf.constant([[3], [3]]), tf.constant([[3, 3, 1], [1, 1, 3]]),
                                [tf.ones([2, 3])]).numpy()[..., 0]
  np.testing.assert_allclose(per_row, [[2.0], [1.0]])  # rows do not see each other's ids
  np.testing.assert_allclose(match_counts(tf.constant([[5, 3, 9]]), keys).numpy(), [[1, 2, 0]])


def test_lookup_match_summary_equals_the_match_matrix_path_and_learns_buckets():
  rng = np.random.default_rng(0)
  keys = rng.integers(-1, 6, size=(4, 30))  # -1: an id that never matches
  query = rng.integers(0, 6, size=(4, 3))
  length = np.array([[30], [12], [0], [5]])
  buckets = rng.integers(-1, 7, size=(4, 30))  # outside [0, 5): clipped to the end buckets
  pairwise = MatchSummary(decay=0.9, num_buckets=5)
  lookup = LookupMatchSummary(decay=0.9, num_buckets=5)
  matches = IdMatchCount()([query, keys])
  pairwise([matches, length, buckets])
  lookup([query, keys, length, buckets])
  for layer in (pairwise, lookup):  # distinct weights, so a bucket mix-up cannot pass
    layer.bucket_weights.assign([0.5, -1.0, 2.0, 0.25, 3.0])
  with tf.GradientTape(persistent=True) as tape:
    expected = pairwise([matches, length, buckets])
    got = lookup([query, keys, length, buckets])
    expected_bucketed, got_bucketed = expected[:, 5], got[:, 5]
  np.testing.assert_allclose(got.numpy(), expected.numpy(), rtol=1e-5, atol=1e-6)
  # The bucket weights train through the per-bucket counts exactly as through every position.
  grad = tf.convert_to_tensor(tape.gradient(got_bucketed, lookup.bucket_weights)).numpy()
  np.testing.assert_allclose(grad, tf.convert_to_tensor(
      tape.gradient(expected_bucketed, pairwise.bucket_weights)).numpy(), rtol=1e-5)
  assert np.abs(grad).sum() > 0
  # One user's keys against several rooms: the same as repeating the user per room.
  shared = lookup([query, keys[:1], length[:1], buckets[:1]]).numpy()
  tiled = lookup([query, np.repeat(keys[:1], 4, 0), np.repeat(length[:1], 4, 0),
                  np.repeat(buckets[:1], 4, 0)]).numpy()
  np.testing.assert_allclose(shared, tiled, rtol=1e-6)
  # Without buckets: the five unweighted columns, the same on both paths.
  np.testing.assert_allclose(LookupMatchSummary(decay=0.9)([query, keys, length]).numpy(),
                             MatchSummary(decay=0.9)([matches, length]).numpy(), rtol=1e-5)
  with pytest.raises(ValueError, match="LookupMatchSummary \\(num_buckets=5\\) expects 4"):
    lookup([query, keys, length])


@pytest.mark.parametrize("kwargs,fragment", [({"decay": 0.0}, "decay must be in"),
                                             ({"decay": 1.5}, "decay must be in"),
                                             ({"smoothing": -1.0}, "smoothing must be >= 0"),
                                             ({"num_buckets": -2}, "num_buckets must be >= 0")])
def test_match_summary_rejects_bad_arguments(kwargs, fragment):
  with pytest.raises(ValueError, match=fragment):
    MatchSummary(**kwargs)


def test_decayed_match_sum_hand_computed_at_its_initial_rates():
  layer = DecayedMatchSum(half_lives_hours=(4.0, 1.0), position_decay=0.5)
  matches = tf.constant([[1.0, 2.0, 7.0], [0.0, 0.0, 0.0]])  # 7.0 is past row 0's length
  ages = tf.constant([[4.0, 8.0, 0.0], [1.0, 1.0, 1.0]])  # hours
  out = layer([matches, tf.constant([[2], [0]]), ages]).numpy()
  assert out.shape == (2, 2) and layer.count_params() == 4  # a time and a position rate each
  # Kernel 1 (4 h): 1 * 2^-1 * 0.5^0 + 2 * 2^-2 * 0.5^1; kernel 2 (1 h): 1 * 2^-4 + 2 * 2^-8 * 0.5.
  np.testing.assert_allclose(out[0], [0.5 + 0.25, 2.0 ** -4 + 2.0 ** -8], rtol=1e-5)
  np.testing.assert_allclose(out[1], [0.0, 0.0])  # nothing in the sequence: zeros
  # Distances (e.g. impressions since each event) replace the positions' indices 0, 1.
  spaced = layer([matches, tf.constant([[2], [0]]), ages, tf.constant([[2.0, 3.0, 9.0]] * 2)])
  np.testing.assert_allclose(spaced.numpy()[0], [0.5 * 0.25 + 0.5 * 0.125,
                                                 2.0 ** -4 * 0.25 + 2.0 ** -7 * 0.125], rtol=1e-5)


def test_decayed_match_sum_learns_its_rates_and_round_trips():
  layer = DecayedMatchSum(half_lives_hours=(2.0,), position_decay=0.9)
  matches, length, ages = tf.ones([4, 3]), tf.fill([4, 1], 3), tf.fill([4, 3], 2.0)
  with tf.GradientTape() as tape:
    loss = tf.reduce_sum(layer([matches, length, ages]))
  grads = tape.gradient(loss, layer.trainable_weights)
  # A larger rate shrinks every term: both gradients are negative, none is missing.
  assert all(g is not None and float(tf.reduce_max(g)) < 0 for g in grads)
  clone = DecayedMatchSum.from_config(layer.get_config())
  assert (clone.half_lives_hours, clone.position_decay) == ((2.0,), 0.9)
  np.testing.assert_allclose(clone([matches, length, ages]), layer([matches, length, ages]),
                             rtol=1e-6)
  with pytest.raises(ValueError, match="half_lives_hours must be non-empty and > 0, got \\(0.0,\\)"):
    DecayedMatchSum(half_lives_hours=(0.0,))
  with pytest.raises(ValueError, match="position_decay must be in \\(0, 1\\), got 1.0"):
    DecayedMatchSum(position_decay=1.0)
  with pytest.raises(ValueError, match="expects \\(matches, length, ages\\[, distances\\]\\), got 2"):
    layer([matches, length])


def test_cross_network_hand_computed_and_weight_count():
  layer = CrossNetwork(num_layers=2)
  x0 = tf.constant([[1.0, 2.0, -1.0]])
  out = layer(x0).numpy()
  assert layer.count_params() == 2 * (3 * 3 + 3)  # full-rank W and b per layer
  x = x0.numpy()
  for cross in layer._cross:  # pylint: disable=protected-access
    kernel, bias = [w.numpy() for w in cross.trainable_weights]
    x = x0.numpy() * (x @ kernel + bias) + x
  np.testing.assert_allclose(out, x, rtol=1e-5)
  assert CrossNetwork.from_config(layer.get_config()).num_layers == 2
  with pytest.raises(ValueError, match="num_layers must be >= 1, got 0"):
    CrossNetwork(num_layers=0)


def _regression_data(seed):
  rng = np.random.default_rng(seed)
  x = rng.normal(size=(64, 4)).astype(np.float32)
  y = (x @ np.array([1.0, -2.0, 0.5, 0.0], np.float32))[:, None]
  return tf.data.Dataset.from_tensor_slices((x, y)).batch(16)


class _Snapshots(tf.keras.callbacks.Callback):
  """Every epoch's weights, to compare with what training leaves in the model."""

  def __init__(self):
    super().__init__()
    self.weights = []

  def on_epoch_end(self, epoch, logs=None):
    self.weights.append([w.copy() for w in self.model.get_weights()])


def _linear_model(optimizer):
  """A seeded 4 -> 1 linear model compiled with ``optimizer`` and the squared error."""
  tf.keras.utils.set_random_seed(0)
  model = tf.keras.Sequential([tf.keras.layers.Dense(1, input_shape=(4,))])
  model.compile(optimizer, "mse")
  return model


def _fit_recording(train, eval_ds, cfg, recorder, max_steps=None):
  """``trainer.fit`` of a linear model with ``recorder`` appended to its callbacks."""
  model = _linear_model(tf.keras.optimizers.SGD(0.05))
  original_fit = model.fit
  model.fit = lambda *a, **k: original_fit(*a, **dict(k, callbacks=k["callbacks"] + [recorder]))
  return model, trainer.fit(model, train, eval_ds, cfg, max_steps=max_steps, verbose=0).history


def _fit_with_snapshots(train, eval_ds, cfg, max_steps=None):
  snaps = _Snapshots()
  model, history = _fit_recording(train, eval_ds, cfg, snaps, max_steps)
  return model, history, snaps.weights


def _assert_weights_equal(got, want, rtol=1e-7, atol=0.0):
  assert len(got) == len(want)
  for a, b in zip(got, want):
    np.testing.assert_allclose(a, b, rtol=rtol, atol=atol)


def test_fit_restores_the_weights_of_the_best_eval_epoch():
  """Eval data with the opposite target: eval loss rises while training fits, so the best
  epoch is the first, and its weights (not the last epoch's) must be what the model keeps."""
  train = _regression_data(0)
  cfg = trainer.TrainConfig(max_epochs=6, patience=2, weight_average_decay=0.0)
  model, history, snaps = _fit_with_snapshots(train, train.map(lambda x, y: (x, -y)), cfg)
  best = int(np.argmin(history["val_loss"]))
  assert len(history["val_loss"]) == best + 1 + cfg.patience < cfg.max_epochs  # by patience
  _assert_weights_equal(model.get_weights(), snaps[best])
  assert not np.allclose(model.get_weights()[0], snaps[-1][0])


def test_fit_step_budget_stops_mid_run_and_keeps_the_best_weights():
  train = _regression_data(1)  # 4 batches per epoch
  # Eval on the opposite target again, so the best epoch is not the last one.
  cfg = trainer.TrainConfig(max_epochs=50, patience=50, weight_average_decay=0.0)
  model, history, snaps = _fit_with_snapshots(train, train.map(lambda x, y: (x, -y)), cfg,
                                              max_steps=10)
  assert len(history["loss"]) == 3  # batches 1-4, 5-8, 9-10 then the budget stops it
  best = int(np.argmin(history["val_loss"]))
  assert best < 2
  _assert_weights_equal(model.get_weights(), snaps[best])
  with pytest.raises(ValueError, match="max_steps must be >= 1, got 0"):
    trainer.StepBudget(0)


class _StepWeights(tf.keras.callbacks.Callback):
  """The trainable weights after every training step, and before each epoch's first step."""

  def __init__(self):
    super().__init__()
    self.after_step, self.epoch_start = [], []

  def on_epoch_begin(self, epoch, logs=None):
    self.epoch_start.append([w.numpy().copy() for w in self.model.trainable_weights])

  def on_train_batch_end(self, batch, logs=None):
    self.after_step.append([w.numpy().copy() for w in self.model.trainable_weights])


def _hand_average(trajectory, decay):
  """Bias-corrected exponential moving average of a list of weight lists."""
  steps = len(trajectory)
  weights = [(1 - decay) * decay ** (steps - 1 - t) for t in range(steps)]
  return [sum(w * step[i] for w, step in zip(weights, trajectory)) / (1 - decay ** steps)
          for i in range(len(trajectory[0]))]


def test_weight_average_is_the_bias_corrected_moving_average_of_the_steps():
  model = _linear_model(tf.keras.optimizers.SGD(0.05))
  steps, average = _StepWeights(), WeightAverage(0.5)
  model.fit(_regression_data(0), epochs=2, callbacks=[steps, average], verbose=0)
  assert len(steps.after_step) == 8
  _assert_weights_equal(average.averaged_weights(), _hand_average(steps.after_step, 0.5),
                        rtol=1e-6, atol=1e-6)
  # Without evaluation nothing is swapped: the model keeps its last iterate.
  _assert_weights_equal(model.get_weights(), steps.after_step[-1])
  with pytest.raises(ValueError, match=r"decay must be in \[0, 1\), got 1.0"):
    WeightAverage(1.0)


def test_fit_traces_the_train_step_once_and_trains_as_plain_keras():
  """Adam's slots are built before the first step: Keras alone makes them inside the traced
  step, which TensorFlow then traces a second time; the weights must not change."""
  train = _regression_data(3)
  cfg = trainer.TrainConfig(max_epochs=2, patience=5, weight_average_decay=0.0)
  model = _linear_model(tf.keras.optimizers.Adam(0.05))
  history = trainer.fit(model, train, train, cfg, verbose=0).history
  assert history["val_loss"][1] < history["val_loss"][0]  # the last epoch is the one kept
  plain = _linear_model(tf.keras.optimizers.Adam(0.05))
  plain.fit(train, epochs=2, verbose=0)
  assert plain.train_function.experimental_get_tracing_count() == 2
  assert model.train_function.experimental_get_tracing_count() == 1
  _assert_weights_equal(model.get_weights(), plain.get_weights())


def test_fit_scores_and_keeps_the_averaged_weights_and_trains_on_the_raw_ones():
  train = _regression_data(2)  # 4 batches per epoch
  eval_ds = train.map(lambda x, y: (x, -y))  # the best epoch is not the last
  cfg = trainer.TrainConfig(max_epochs=4, patience=4, weight_average_decay=0.6)
  steps = _StepWeights()
  model, history = _fit_recording(train, eval_ds, cfg, steps)
  x = np.concatenate([b[0].numpy() for b in eval_ds])
  y = np.concatenate([b[1].numpy() for b in eval_ds])
  averages = [_hand_average(steps.after_step[:4 * (e + 1)], 0.6) for e in range(4)]
  # Each epoch's eval loss is the averaged weights' loss, not the last iterate's.
  eval_losses = [float(np.mean((x @ k + b - y) ** 2)) for k, b in averages]
  np.testing.assert_allclose(history["val_loss"], eval_losses, rtol=1e-5)
  raw_loss = float(np.mean((x @ steps.after_step[3][0] + steps.after_step[3][1] - y) ** 2))
  assert abs(raw_loss - eval_losses[0]) > 1e-3
  # Training resumes from the raw weights after each evaluation.
  for e in range(1, 4):
    _assert_weights_equal(steps.epoch_start[e], steps.after_step[4 * e - 1])
  best = int(np.argmin(eval_losses))
  assert best < 3
  _assert_weights_equal(model.get_weights(), averages[best], rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("custom,fragment", [({"max_epochs": 0}, "max_epochs must be >= 1"),
                                             ({"patience": -1}, "patience must be >= 0"),
                                             ({"learning_rate": 0.0}, "learning_rate must be > 0"),
                                             ({"linear_start_l2": -1.0},
                                              "linear_start_l2 must be >= 0, got -1.0"),
                                             ({"linear_start_l2_steps": -1},
                                              "linear_start_l2_steps must be >= 0, got -1")])
def test_train_config_rejects_bad_values(custom, fragment):
  with pytest.raises(ValueError, match=fragment):
    trainer.TrainConfig.from_custom_config(custom)


def test_train_curve_overrides_are_typed_and_checked():
  assert trainer.parse_overrides(["learning_rate=5e-4", "patience=3", "model_name=dcn"]) == {
      "learning_rate": 5e-4, "patience": 3, "model_name": "dcn"}
  with pytest.raises(ValueError, match="'lr=1'"):
    trainer.parse_overrides(["lr=1"])
  with pytest.raises(ValueError, match="'patience'"):
    trainer.parse_overrides(["patience"])
  with pytest.raises(ValueError, match="'patience=two'"):
    trainer.parse_overrides(["patience=two"])


def test_every_layer_class_is_registered_for_keras_serialization():
  import inspect  # pylint: disable=import-outside-toplevel

  from models.layers import attention, blocks, experts, lifelong, match  # pylint: disable=import-outside-toplevel
  classes = {cls for module in (attention, blocks, experts, lifelong, match)
             for _, cls in inspect.getmembers(module, inspect.isclass)
             if issubclass(cls, tf.keras.layers.Layer) and cls.__module__ == module.__name__}
  assert len(classes) >= 16
  unregistered = sorted(cls.__name__ for cls in classes if tf.keras.utils.get_registered_name(cls)
                        != f"{blocks.PACKAGE}>{cls.__name__}")
  assert not unregistered, unregistered
