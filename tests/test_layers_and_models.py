"""Shared layers and the baseline model: hand-computed values, weights, round trips, one fit step."""

import dataclasses

import numpy as np
import pytest
import tensorflow as tf

from models import encoders, lifelong, linear_start, multitask, trainer
from models import features as F
from models.layers import (
    MLP,
    BroadcastConcatenate,
    IdLogitOffset,
    MaskedMeanPooling,
    ScoringDense,
    SequenceEmbedding,
    TokenLookup,
    TokenScores,
    batch_gather,
)
from models.spec import ModelSpec


def test_masked_mean_pooling_hand_computed_and_empty_sequence():
  seq = tf.constant([[[1.0, 2.0], [3.0, 4.0], [100.0, 100.0]],
                     [[5.0, 5.0], [9.0, 9.0], [9.0, 9.0]]])  # [B=2, L=3, D=2]
  out = MaskedMeanPooling()([seq, tf.constant([[2], [0]])]).numpy()
  np.testing.assert_allclose(out, [[2.0, 3.0], [0.0, 0.0]])  # padding ignored; empty -> zeros
  assert not np.isnan(out).any()


@pytest.mark.parametrize("rows", [5, 50])  # by histogram (5 <= 4 L = 24), by gather (50 > 24)
def test_sequence_embedding_pools_as_masked_mean_pooling_of_the_lookup(rows):
  table = SequenceEmbedding(rows, 3)
  ids = tf.constant([[1, 4, 1, 0, 2, 3], [2, 2, 0, 0, 0, 0], [4, 1, 3, 2, 0, 1]])
  length = tf.constant([[3], [2], [0]])  # row 0: ids 1, 4, 1; row 2: empty
  table(ids)  # builds the table outside the tape, as a model's first call does
  weights = tf.constant([[1.0, -2.0, 0.5]])
  with tf.GradientTape(persistent=True) as tape:
    pooled = table(ids, length=length)  # [B, D]
    reference = MaskedMeanPooling()([table(ids), length])
    pooled_loss, reference_loss = pooled * weights, reference * weights
  vectors = table.embeddings.numpy()
  np.testing.assert_allclose(pooled.numpy()[0], (2 * vectors[1] + vectors[4]) / 3, atol=1e-7)
  np.testing.assert_allclose(pooled.numpy()[1], vectors[2], atol=1e-7)
  np.testing.assert_array_equal(pooled.numpy()[2], [0.0, 0.0, 0.0])  # empty -> zeros
  np.testing.assert_allclose(pooled.numpy(), reference.numpy(), atol=1e-7)
  grad = tf.convert_to_tensor(tape.gradient(pooled_loss, table.embeddings)).numpy()
  expected = tf.convert_to_tensor(tape.gradient(reference_loss, table.embeddings)).numpy()
  np.testing.assert_allclose(grad, expected, rtol=1e-6, atol=1e-7)
  assert np.abs(grad[1]).sum() > 0 and np.abs(grad[3]).sum() == 0  # id 3 is only past a length
  clone = SequenceEmbedding.from_config(table.get_config())
  assert clone.get_config() == table.get_config()
  with pytest.raises(ValueError, match="mask_zero and sparse are not supported"):
    SequenceEmbedding(rows, 3, mask_zero=True)


@pytest.mark.parametrize("rows", [5, 50])  # by a score table (5 <= L = 6), by lookup (50 > 6)
def test_sequence_embedding_scores_ids_against_a_query_per_row(rows):
  table = SequenceEmbedding(rows, 3)
  ids = tf.constant([[1, 4, 1, 0, 2, 3], [2, 2, 0, 0, 0, 0]])  # [B=2, L=6]
  query = tf.constant([[1.0, -2.0, 0.5], [0.0, 3.0, 1.0]])  # [B, D]
  vectors = table(ids).numpy()  # [B, L, D]
  expected = np.einsum("bld,bd->bl", vectors, query.numpy())
  np.testing.assert_allclose(table(ids, query=query).numpy(), expected, rtol=1e-6, atol=1e-7)
  # One sequence (batch 1) against both queries: as if repeated per query row.
  np.testing.assert_allclose(table(ids[:1], query=query).numpy(),
                             np.einsum("ld,bd->bl", vectors[0], query.numpy()), rtol=1e-6,
                             atol=1e-7)
  assert table(ids[:1], query=query[:0]).shape == (0, 6)  # no rooms, no rows
  with pytest.raises(ValueError, match="pools \\(length=\\) or scores \\(query=\\), not both"):
    table(ids, length=tf.constant([[1], [1]]), query=query)


def test_scoring_dense_scores_its_projection_against_a_query():
  layer = ScoringDense(2, name="side")
  x = tf.constant([[[1.0, 0.0, 2.0], [0.5, -1.0, 0.0]]])  # [1, L=2, In=3]: one shared sequence
  layer(x)  # builds the kernel and bias
  layer.bias.assign([0.25, -1.0])
  projected = layer(x).numpy()[0]  # [L, 2]
  query = tf.constant([[1.0, 2.0], [-1.0, 0.0], [0.0, 0.0]])  # [N=3, 2]
  np.testing.assert_allclose(layer(x, query=query).numpy(), query.numpy() @ projected.T,
                             rtol=1e-6)
  assert len(layer.weights) == 2
  assert ScoringDense.from_config(layer.get_config()).get_config() == layer.get_config()
  with pytest.raises(ValueError, match="ScoringDense is linear: activation must be None, got 'relu'"):
    ScoringDense(2, activation="relu")


@pytest.mark.parametrize("rows", [5, 50])  # tables scored by score table or by lookup (L = 6)
def test_token_scores_equal_the_summed_tokens_dotted_with_the_query(rows):
  tables = [SequenceEmbedding(rows, 3, name="a"), SequenceEmbedding(7, 3, name="b")]
  side = ScoringDense(3, use_bias=False, name="side")
  layer = TokenScores(tables, side, name="scores")
  rng = np.random.default_rng(rows)
  ids_a = tf.constant(rng.integers(0, rows, size=(2, 6)))  # [B=2, L=6]
  ids_b = tf.constant(rng.integers(0, 7, size=(2, 6)))
  extra = tf.constant(rng.normal(size=(2, 6, 2)), tf.float32)  # [B, L, S=2]
  query = tf.constant(rng.normal(size=(4, 3)), tf.float32)  # [N=4, D]
  tokens = (tables[0](ids_a) + tables[1](ids_b) + side(extra)).numpy()  # [B, L, D]
  # A batch of sequences, one query row each (the first two queries).
  np.testing.assert_allclose(layer([ids_a, ids_b, extra, query[:2]]).numpy(),
                             np.einsum("bld,bd->bl", tokens, query.numpy()[:2]), rtol=1e-5,
                             atol=1e-6)
  # One sequence of static batch 1 against four queries: embedded once.
  shared = layer([ids_a[:1], ids_b[:1], extra[:1], query]).numpy()
  np.testing.assert_allclose(shared, query.numpy() @ tokens[0].T, rtol=1e-5, atol=1e-6)
  # The same sequence when its batch is only known at run time: broadcast table by table.
  dynamic = tf.function(layer, input_signature=[[
      tf.TensorSpec([None, 6], tf.int64), tf.TensorSpec([None, 6], tf.int64),
      tf.TensorSpec([None, 6, 2], tf.float32), tf.TensorSpec([None, 3], tf.float32)]])
  np.testing.assert_allclose(dynamic([ids_a[:1], ids_b[:1], extra[:1], query]).numpy(), shared,
                             rtol=1e-5, atol=1e-6)
  assert layer([ids_a[:1], ids_b[:1], extra[:1], query[:0]]).shape == (0, 6)  # no rooms
  assert len(layer.weights) == 3  # the injected tables' and projection's, nothing of its own
  clone = TokenScores.from_config(layer.get_config())  # rebuilt tables (unbuilt: no weights yet)
  assert [t.get_config() for t in clone.tables] == [t.get_config() for t in tables]
  assert clone.side_projection.get_config() == side.get_config() and clone.name == "scores"
  with pytest.raises(ValueError, match="TokenScores takes 2 id tensors"):
    layer([ids_a, extra, query])
  with pytest.raises(ValueError, match="side_projection must be a ScoringDense, got <"):
    TokenScores(tables, tf.keras.layers.Dense(3))
  with pytest.raises(ValueError, match="needs at least one table"):
    TokenScores([], side)


def test_token_lookup_equals_the_summed_tokens_at_the_picked_positions():
  tables = [SequenceEmbedding(50, 3, name="a"), SequenceEmbedding(7, 3, name="b")]
  side = ScoringDense(3, use_bias=False, name="side")
  layer = TokenLookup(tables, side, name="lookup")
  rng = np.random.default_rng(0)
  ids_a = tf.constant(rng.integers(0, 50, size=(2, 6)))  # [B=2, L=6]
  ids_b = tf.constant(rng.integers(0, 7, size=(2, 6)))
  price, stay = (tf.constant(rng.normal(size=(2, 6)), tf.float32) for _ in range(2))  # [B, L]
  tokens = (tables[0](ids_a) + tables[1](ids_b)
            + side(tf.stack([price, stay], -1))).numpy()  # [B, L, D]
  picks = np.array([[[5, 0], [2, 2]], [[1, 4], [3, 0]]])  # [B, C=2, K=2]
  # A batch of sequences: each row's own positions.
  np.testing.assert_allclose(layer([ids_a, ids_b, price, stay, tf.constant(picks)]).numpy(),
                             tokens[np.arange(2)[:, None, None], picks], rtol=1e-5, atol=1e-6)
  # One sequence of static batch 1, three rows of picks (one user against three rooms).
  rooms = np.array([[[5, 0]], [[1, 1]], [[3, 2]]])  # [N=3, C=1, K=2]
  shared = layer([ids_a[:1], ids_b[:1], price[:1], stay[:1], tf.constant(rooms)]).numpy()
  np.testing.assert_allclose(shared, tokens[0][rooms], rtol=1e-5, atol=1e-6)
  # The same when the batch is known only at run time: gathered field by field.
  dynamic = tf.function(layer, input_signature=[[
      tf.TensorSpec([None, 6], tf.int64), tf.TensorSpec([None, 6], tf.int64),
      tf.TensorSpec([None, 6], tf.float32), tf.TensorSpec([None, 6], tf.float32),
      tf.TensorSpec([None, 1, 2], tf.int64)]])
  np.testing.assert_allclose(dynamic([ids_a[:1], ids_b[:1], price[:1], stay[:1], rooms]).numpy(),
                             shared, rtol=1e-5, atol=1e-6)
  assert len(layer.weights) == 3  # the injected tables' and projection's
  clone = TokenLookup.from_config(layer.get_config())
  assert [t.get_config() for t in clone.tables] == [t.get_config() for t in tables]
  with pytest.raises(ValueError, match="TokenLookup takes 2 id tensors, at least one side"):
    layer([ids_a, ids_b, tf.constant(picks)])
  with pytest.raises(ValueError, match="TokenLookup side_projection must be a ScoringDense"):
    TokenLookup(tables, tf.keras.layers.Dense(3))


def test_mlp_weights_values_and_config_round_trip():
  mlp = MLP([3, 2], activation="relu", final_activation=None)
  x = tf.constant([[1.0, -1.0]])
  y = mlp(x)
  assert len(mlp.trainable_weights) == 4
  assert mlp.count_params() == (2 * 3 + 3) + (3 * 2 + 2)
  k0, b0, k1, b1 = [w.numpy() for w in mlp.weights]
  expected = np.maximum(x.numpy() @ k0 + b0, 0) @ k1 + b1
  np.testing.assert_allclose(y.numpy(), expected, rtol=1e-6)
  clone = MLP.from_config(mlp.get_config())
  assert clone.get_config() == mlp.get_config()


@pytest.mark.parametrize("kwargs,fragment", [({"units": []}, "non-empty"),
                                             ({"units": [4, 0]}, "positive"),
                                             ({"units": [4], "dropout": 1.0}, "dropout")])
def test_mlp_rejects_bad_arguments(kwargs, fragment):
  with pytest.raises(ValueError, match=fragment):
    MLP(**kwargs)


def test_id_logit_offset_reads_its_row_times_the_rate_and_starts_at_zero():
  layer = IdLogitOffset(4, 3, rate_multiplier=10.0)
  ids = tf.constant([[2], [0], [2]])
  np.testing.assert_array_equal(layer(ids).numpy(), np.zeros((3, 3)))  # no change at start
  assert layer.count_params() == 4 * 3
  layer.table.assign(np.arange(12, dtype=np.float32).reshape(4, 3) / 100)
  np.testing.assert_allclose(layer(ids).numpy(), [[0.6, 0.7, 0.8], [0.0, 0.1, 0.2],
                                                  [0.6, 0.7, 0.8]], rtol=1e-6)
  clone = IdLogitOffset.from_config(layer.get_config())
  assert clone.get_config() == layer.get_config() and clone.rate_multiplier == 10.0


def test_id_logit_offset_moves_rate_times_faster_under_adam():
  # Adam's first step moves each weight by the learning rate whatever its gradient's scale, so
  # the offset the model reads moves by rate x learning rate: what the layer is for.
  for rate, step in [(1.0, 0.01), (10.0, 0.1)]:
    layer = IdLogitOffset(3, 2, rate_multiplier=rate)
    ids = tf.constant([[1]])
    optimizer = tf.keras.optimizers.Adam(0.01)
    with tf.GradientTape() as tape:
      loss = -tf.reduce_sum(layer(ids))
    optimizer.apply_gradients(zip(tape.gradient(loss, layer.trainable_weights),
                                  layer.trainable_weights))
    np.testing.assert_allclose(layer(tf.constant([[1], [0]])).numpy(), [[step, step], [0, 0]],
                               rtol=1e-3)


@pytest.mark.parametrize("kwargs,fragment", [({"num_ids": 0}, "num_ids must be positive, got 0"),
                                             ({"num_outputs": -1}, "num_outputs"),
                                             ({"rate_multiplier": 0.0}, "rate_multiplier")])
def test_id_logit_offset_rejects_bad_arguments(kwargs, fragment):
  with pytest.raises(ValueError, match=fragment):
    IdLogitOffset(**dict({"num_ids": 3, "num_outputs": 2}, **kwargs))


def _spec():
  return ModelSpec.without_transform(12, realtime_len=4, lifelong_len=6, embedding_dim=4)


def _batch(spec, n=8, seed=0):
  """A transformed batch: model inputs, every transformed label and the buy mask."""
  rng = np.random.default_rng(seed)
  batch = {}
  for name, inp in spec.inputs().items():
    shape = (n, spec.feature_shapes[name])
    if inp.dtype == tf.float32:
      batch[name] = rng.normal(size=shape).astype(np.float32)
    else:
      batch[name] = rng.integers(0, 3, size=shape).astype(np.int64)
  for h in F.TRANSFORMED_LABELS:
    batch[h] = rng.integers(0, 2, size=(n, 1)).astype(np.int64)
  batch[F.BUY_MASK] = rng.integers(0, 2, size=(n, 1)).astype(np.float32)
  return batch


def _build(name, spec, **overrides):
  return trainer.build_model(spec, trainer.TrainConfig(model_name=name, **overrides))


def _fit_one_step(name):
  spec = _spec()
  model = _build(name, spec, learning_rate=1e-2)
  model.run_eagerly = True  # one step: tracing the whole graph would cost ~30 s per model
  batch = _batch(spec)
  data = tf.data.Dataset.from_tensors(batch).map(model.tasks.split)
  before = [w.numpy().copy() for w in model.trainable_weights]
  hist = model.fit(data, epochs=1, verbose=0)
  assert np.isfinite(hist.history["loss"][0])
  assert {f"{h}_auc" for h in F.HEADS} <= set(hist.history)
  assert any(not np.allclose(a, b.numpy()) for a, b in zip(before, model.trainable_weights))
  features, _, _ = model.tasks.split(batch)
  return model, features


@pytest.mark.parametrize("name", sorted(trainer.MODELS))
def test_every_model_fits_one_step(name):
  model, feats = _fit_one_step(name)
  preds = model.predict(feats, verbose=0)
  assert set(preds) == set(model.tasks.outputs)
  assert all(((preds[h] >= 0) & (preds[h] <= 1)).all() for h in F.HEADS)


# Together these use every shared layer (attention, PLE/CGC, gates, MLP, pooling, extraction,
# channel DIN attention, Mixout).
@pytest.mark.parametrize("name", ["feedback", "mmoe", "lifelong"])
def test_savedmodel_round_trip(tmp_path, name):
  model, feats = _fit_one_step(name)
  # Eager calls: a predict function would trace the whole graph twice (~15 s per model).
  preds = model.network(feats, training=False)
  # Without traces the loader rebuilds every layer from its registered config (no
  # custom_objects), which is what this checks; tracing each layer's call for Keras' own
  # loader cost ~35 s per model and nothing here loads those traces (the served graph is
  # ``trainer.export_serving_model``'s, tested with the pipeline and the server).
  model.network.save(str(tmp_path / "m"), save_traces=False)
  loaded = tf.keras.models.load_model(str(tmp_path / "m"))
  assert isinstance(loaded, tf.keras.Model) and loaded is not model.network
  again = loaded(feats, training=False)
  for h in F.HEADS:
    np.testing.assert_allclose(again[h].numpy(), preds[h].numpy(), rtol=1e-5)


@pytest.mark.parametrize("name", ["feedback", "lifelong", "baseline"])
def test_one_user_at_batch_one_scores_as_the_user_repeated_per_room(name):
  # The context signature passes the user's side with a static batch of 1 (the shared paths of
  # IdMatchCount, TokenScores and the extraction); the scores must equal full rows per room.
  spec = dataclasses.replace(_spec(), room_offset_rate=3.0)
  # Top-2 of 6 purchases, so what the channels extract depends on their scores.
  network = (lifelong.build_lifelong(spec, top_k=2) if name == "lifelong"
             else _build(name, spec).network)
  offsets = network.get_layer("room_offset").table  # per room, so it must not be broadcast
  offsets.assign(np.random.default_rng(0).normal(size=offsets.shape).astype(np.float32))
  batch = _batch(spec, n=5, seed=3)
  batch[F.transformed_name(F.len_key(F.LL))][:] = 6  # every purchase can be extracted
  room_keys = {F.transformed_name(k) for k in F.HOST_SIDE_FEATURES}
  names = sorted(network.input)
  assert room_keys & set(names) and set(names) - room_keys
  full = {k: v if k in room_keys else np.repeat(v[:1], 5, axis=0) for k, v in batch.items()
          if k in names}
  context = {k: v if k in room_keys else v[:1] for k, v in full.items()}
  expected = network(full, training=False)
  got = network(context, training=False)
  for h in F.HEADS:
    assert got[h].shape == (5, 1)
    np.testing.assert_allclose(got[h].numpy(), expected[h].numpy(), rtol=1e-5, atol=1e-6)
  assert np.ptp(expected[F.HEAD_EFFECTIVE_VIEW].numpy()) > 0  # the rooms are told apart


@pytest.mark.parametrize("name", ["baseline", "feedback", "lifelong"])
def test_room_offset_moves_only_its_rooms_logit_on_its_head(name):
  spec = dataclasses.replace(_spec(), room_offset_rate=3.0)
  network = _build(name, spec).network
  assert network.get_layer("room_offset").rate_multiplier == 3.0
  batch = _batch(spec, n=6, seed=5)
  room = batch[F.transformed_name(F.HOST_ID)][:, 0]
  feats = {k: batch[k] for k in network.input}
  # The heads' logits, not their probabilities: an untrained head can saturate its sigmoid,
  # where float32 cannot give the logit back.
  logits = tf.keras.Model(network.inputs,
                          [network.get_layer(f"{head}_logit").output for head in F.HEADS])
  before = logits(feats, training=False)
  offsets = network.get_layer("room_offset").table
  offsets.assign(tf.tensor_scatter_nd_update(offsets, [[2, 0]], [0.5]))  # room 2, first head
  after = logits(feats, training=False)
  for i, head in enumerate(F.HEADS):
    moved = after[i].numpy()[:, 0] - before[i].numpy()[:, 0]
    np.testing.assert_allclose(moved, np.where(room == 2, 1.5, 0.0) if i == 0 else 0.0, err_msg=head,
                               atol=2e-4)
  assert (room == 2).any() and (room != 2).any()
  assert "room_offset" not in [layer.name for layer in _build(name, _spec()).network.layers]


def test_feedback_ablation_switches():
  spec = _spec()
  full = trainer.MODELS["feedback"].network(spec)
  no_neg = trainer.MODELS["feedback_no_negative"].network(spec)
  no_trip = trainer.MODELS["feedback_no_triplet"].network(spec)
  assert "triplet_gap" in full.output_names and "triplet_gap" not in no_trip.output_names
  names = lambda m: {layer.name for layer in m.layers}  # noqa: E731
  assert {"att_rt_pos", "att_rt_neg", "contrastive_residual"} <= names(full)
  assert "att_rt_neg" not in names(no_neg) and "contrastive_residual" not in names(no_neg)
  no_rt = trainer.MODELS["feedback_no_realtime"].network(spec)
  assert not any(layer.name.startswith(("att_rt", "match_rt", "summary_rt"))
                 for layer in no_rt.layers)
  assert {"match_rt_pos_category_ids", "summary_rt_neg_host_ids"} <= names(full)
  from models import feedback
  with pytest.raises(ValueError, match="needs the negative sequence"):
    feedback.build_feedback(spec, use_negative=False, use_triplet=True)
  with pytest.raises(ValueError, match="needs use_realtime=True"):
    feedback.build_feedback(spec, use_triplet=False, use_realtime=False)


@pytest.mark.parametrize("name", ["baseline", "feedback"])
def test_models_handle_empty_sequences(name):
  spec = _spec()
  model = _build(name, spec)
  feats, _, _ = model.tasks.split(_batch(spec))
  for k in list(feats):
    if k.endswith("_len_xf") or "rt_" in k or "ll_" in k or "session" in k:
      feats[k] = np.zeros_like(feats[k])  # a new user: nothing in any sequence
  preds = model.predict(feats, verbose=0)
  assert all(np.isfinite(preds[h]).all() for h in F.HEADS)


def test_train_config_validation():
  assert trainer.TrainConfig.from_custom_config({"model_name": "baseline"}).batch_size == 256
  with pytest.raises(ValueError, match="model_name 'nope'"):
    trainer.TrainConfig.from_custom_config({"model_name": "nope"})
  with pytest.raises(ValueError, match="unknown trainer custom_config keys"):
    trainer.TrainConfig.from_custom_config({"lr": 1})


def test_model_spec_rejects_shapes_and_dtypes_of_different_features():
  with pytest.raises(ValueError, match=r"name different features: \['b_xf'\]"):
    ModelSpec(vocab_sizes={}, feature_shapes={"a_xf": 1, "b_xf": 2},
              feature_dtypes={"a_xf": tf.int64})


def test_broadcast_concatenate_repeats_batch_one_inputs_only():
  user = tf.constant([[1.0, 2.0]])  # [1, 2]
  rooms = tf.constant([[3.0], [4.0], [5.0]])  # [3, 1]
  out = BroadcastConcatenate()([user, rooms]).numpy()
  np.testing.assert_array_equal(out, [[1, 2, 3], [1, 2, 4], [1, 2, 5]])
  same = BroadcastConcatenate()([tf.ones([3, 1]), rooms]).numpy()  # equal batches: a concat
  np.testing.assert_array_equal(same, [[1, 3], [1, 4], [1, 5]])
  assert BroadcastConcatenate()([user, tf.ones([0, 1])]).shape == (0, 3)  # no rooms, no rows
  with pytest.raises(tf.errors.InvalidArgumentError):  # 2 vs 3 rows is a bug, not a broadcast
    BroadcastConcatenate()([tf.ones([2, 1]), rooms])


def test_batch_gather_with_a_shared_and_a_per_row_sequence():
  seq = tf.constant([[[10.0], [11.0], [12.0]]])  # [1, L=3, 1]: one user's sequence
  idx = tf.constant([[2, 0], [1, 1]])  # [B=2, K=2]
  np.testing.assert_array_equal(batch_gather(seq, idx).numpy()[..., 0], [[12, 10], [11, 11]])
  per_row = tf.constant([[[1.0], [2.0], [3.0]], [[4.0], [5.0], [6.0]]])  # [2, 3, 1]
  np.testing.assert_array_equal(batch_gather(per_row, idx).numpy(),
                                tf.gather(per_row, idx, batch_dims=1).numpy())


@pytest.mark.parametrize("name", sorted(trainer.MODELS))
def test_one_user_against_n_rooms_scores_as_n_full_rows(name):
  """The context signature feeds the user's inputs with batch 1; every model must broadcast them
  and give exactly the scores of N full rows."""
  spec = _spec()
  network = trainer.MODELS[name].network(spec)
  room_side = {F.transformed_name(k) for k in F.HOST_SIDE_FEATURES}
  user, rooms = _batch(spec, n=1, seed=3), _batch(spec, n=5, seed=4)
  for prefix, n in ((F.RT_POS, 3), (F.RT_NEG, 2), (F.LL, 5)):  # non-empty user sequences
    user[F.transformed_name(F.len_key(prefix))][:] = n
  names = list(spec.feature_shapes)
  shared = {k: (rooms if k in room_side else user)[k] for k in names}
  tiled = {k: rooms[k] if k in room_side else np.repeat(user[k], 5, axis=0) for k in names}
  assert room_side & set(names) and set(names) - room_side  # both sides are model inputs
  once, full = network(shared, training=False), network(tiled, training=False)
  for output in full:
    assert once[output].shape == full[output].shape == (5, 1), output
    np.testing.assert_allclose(once[output].numpy(), full[output].numpy(), rtol=1e-5, atol=1e-6)


# The linear start (models/linear_start.py).


def _logistic_data(n=400, seed=0):
  rng = np.random.default_rng(seed)
  x = rng.normal(size=(n, 3)) * [1.0, 5.0, 0.1] + [0.0, 2.0, 1.0]
  ids = rng.integers(0, 5, n)
  logit = x @ [0.5, -0.2, 3.0] + np.linspace(-1, 1, 5)[ids] - 0.3
  y = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(float)
  return x, ids, y


def test_fit_logistic_reproduces_each_groups_rate_when_the_penalty_is_negligible():
  # One binary feature, one id: the unpenalised optimum predicts each group's label mean.
  x = np.array([[0.0]] * 4 + [[1.0]] * 5)
  y = np.array([1, 0, 0, 0, 1, 1, 1, 0, 1], float)
  fit = linear_start.fit_logistic(x, np.zeros(9, int), 1, y, np.ones(9), l2=1e-9)
  p = 1 / (1 + np.exp(-(x[:, 0] * fit.coef[0] + fit.intercept + fit.id_coef[0])))
  np.testing.assert_allclose(p[[0, 4]], [0.25, 0.8], atol=1e-6)


def test_fit_logistic_is_stationary_and_ignores_zero_weight_examples():
  x, ids, y = _logistic_data()
  w = np.where(np.arange(len(y)) % 7 == 0, 0.0, 1.0)
  fit = linear_start.fit_logistic(x, ids, 6, y, w, l2=2.0)  # id 5 never occurs
  p = 1 / (1 + np.exp(-(x @ fit.coef + fit.intercept + fit.id_coef[ids])))
  r = w * (p - y)
  assert abs(r.sum()) < 1e-6  # the intercept is not penalised
  np.testing.assert_allclose(np.bincount(ids, r, 6) + 2.0 * fit.id_coef, 0, atol=1e-6)
  assert fit.id_coef[5] == pytest.approx(0.0, abs=1e-9)
  # The features' penalty is on the standardised coefficients (coef × weighted sd).
  sd2 = np.average((x - np.average(x, 0, weights=w)) ** 2, 0, weights=w)
  np.testing.assert_allclose(x.T @ r + 2.0 * fit.coef * sd2, 0, atol=1e-6)
  flipped = np.where(w == 0, 1 - y, y)
  again = linear_start.fit_logistic(x, ids, 6, flipped, w, l2=2.0)
  np.testing.assert_allclose(again.coef, fit.coef, rtol=1e-8)
  assert 2 <= fit.iterations < linear_start.MAX_ITERATIONS


@pytest.mark.parametrize("change,fragment", [({"l2": 0.0}, "l2 must be > 0, got 0.0"),
                                             ({"num_ids": 3}, r"ids must be in \[0, 3\)"),
                                             ({"weights": 0.0}, "every example weight is 0")])
def test_fit_logistic_rejects_bad_arguments(change, fragment):
  x, ids, y = _logistic_data(50)
  args = {"num_ids": 5, "weights": 1.0, "l2": 1.0, **change}
  with pytest.raises(ValueError, match=fragment):
    linear_start.fit_logistic(x, ids, args["num_ids"], y, np.full(50, args["weights"]), args["l2"])


def test_log_loss_by_hand():
  fit = linear_start.LogisticFit(coef=np.array([1.0]), intercept=0.0, id_coef=np.array([0.0, 2.0]),
                                 iterations=1)
  x, ids = np.array([[0.0], [1.0], [-1.0]]), np.array([0, 0, 1])  # logits 0, 1, 1
  y, w = np.array([1.0, 0.0, 1.0]), np.array([1.0, 2.0, 0.0])
  by_hand = (np.log(2.0) + 2.0 * np.log(1.0 + np.e)) / 3.0  # the third example weighs nothing
  assert linear_start.log_loss(fit, x, ids, y, w) == pytest.approx(by_hand)


def test_choose_fit_keeps_the_penalty_the_eval_split_prefers():
  # 40 examples and 30 noise features: a weak penalty fits the noise, a strong one does not.
  rng = np.random.default_rng(0)
  x_signal = rng.normal(size=(2040, 1))
  x = np.hstack([x_signal, rng.normal(size=(2040, 30))])
  y = (rng.random(2040) < 1 / (1 + np.exp(-1.5 * x_signal[:, 0]))).astype(float)
  ids, w = np.zeros(2040, int), np.ones(2040)
  train = (x[:40], ids[:40], y[:40], w[:40])
  held_out = (x[40:], ids[40:], y[40:], w[40:])
  fit, start = linear_start.choose_fit(train, held_out, 1, [0.01, 10.0, 1e4])
  losses = {l2: linear_start.log_loss(linear_start.fit_logistic(*train[:2], 1, *train[2:], l2),
                                      *held_out) for l2 in (0.01, 10.0, 1e4)}
  assert start.eval_log_loss == pytest.approx(losses)
  assert start.l2 == min(losses, key=losses.get) == 10.0  # neither extreme
  np.testing.assert_allclose(fit.coef, linear_start.fit_logistic(*train[:2], 1, *train[2:],
                                                                 10.0).coef)
  # One penalty needs no eval split and reports no losses.
  _, single = linear_start.choose_fit(train, None, 1, [3.0])
  assert (single.l2, single.eval_log_loss) == (3.0, {})
  with pytest.raises(ValueError, match=r"2 penalties \[1.0, 2.0\] and no eval split"):
    linear_start.choose_fit(train, None, 1, [1.0, 2.0])
  with pytest.raises(ValueError, match="at least one penalty"):
    linear_start.choose_fit(train, held_out, 1, [])


def test_batch_norm_statistics_are_the_inputs_moments():
  inputs = tf.keras.Input((2,))
  network = tf.keras.Model(inputs, tf.keras.layers.BatchNormalization()(inputs))
  x = np.array([[1.0, 10.0], [3.0, 10.0], [5.0, 16.0], [7.0, 12.0]], np.float32)
  batches = [(x[:3], None, None), (x[3:], None, None)]
  assert linear_start.set_batch_norm_statistics(network, batches) == 4
  bn = network.layers[-1]
  np.testing.assert_allclose(bn.moving_mean.numpy(), [4.0, 12.0])
  np.testing.assert_allclose(bn.moving_variance.numpy(), [5.0, 6.0])


def _linear_baseline(n=64, name="baseline"):
  spec = dataclasses.replace(_spec(), room_offset_rate=3.0)
  model = _build(name, spec)
  batch = _batch(spec, n=n, seed=5)
  batch[F.transformed_name(F.HOST_ID)] = np.arange(n).reshape(-1, 1) % 4
  data = tf.data.Dataset.from_tensor_slices(batch).batch(16).map(model.tasks.split)
  return model, batch, data


@pytest.mark.parametrize("name", ["baseline", "feedback", "lifelong"])
def test_linear_start_scores_are_each_heads_regression(name):
  model, batch, data = _linear_baseline(name=name)
  network = model.network
  assert linear_start.has_linear_path(network)
  assert not linear_start.has_linear_path(_build("shared_bottom", _spec()).network)
  chosen = linear_start.linear_start(network, data, [1.0])
  if name == "lifelong":  # the Bias Net's logits start at zero with the deep towers'
    bias_net = network.get_layer(multitask.BIAS_NET).output_layer
    assert bias_net.get_weights() and all(not w.any() for w in bias_net.get_weights())
  assert set(chosen) == set(F.HEADS) and {c.l2 for c in chosen.values()} == {1.0}
  features, labels, weights = model.tasks.split(batch)
  wide = tf.keras.Model(network.inputs, network.get_layer(multitask.WIDE_FEATURES).output)
  x = wide(features, training=False).numpy()
  rooms = batch[F.transformed_name(F.HOST_ID)][:, 0]
  scores = network(features, training=False)
  for head in F.HEADS:
    tower = network.get_layer(multitask.deep_tower_name(head)).output_layer
    assert all(not w.any() for w in tower.get_weights())
    w = weights[head].numpy().reshape(-1)
    y = labels[head].numpy().reshape(-1)
    fit = linear_start.fit_logistic(x, rooms, network.get_layer("room_offset").num_ids, y, w, 1.0)
    expected = 1 / (1 + np.exp(-(x @ fit.coef + fit.intercept + fit.id_coef[rooms])))
    np.testing.assert_allclose(scores[head].numpy().reshape(-1), expected, rtol=1e-4, atol=1e-5)
    assert abs((w * (expected - y)).sum()) < 1e-4  # the unpenalised intercept


def test_ablation_pairs_share_the_linear_path_except_their_signal():
  # Like with like: a reference model's linear path lacks only the signal its pair measures.
  spec = _spec()
  width = lambda network, layer: network.get_layer(layer).output.shape[-1]  # noqa: E731
  for model, reference, signal in (("feedback", "feedback_no_realtime", "realtime_match_norm"),
                                   ("lifelong", "lifelong_mean_pool", "lifelong_match_norm")):
    full, ref = _build(model, spec).network, _build(reference, spec).network
    assert width(full, multitask.WIDE_FEATURES) - width(ref, multitask.WIDE_FEATURES) == (
        width(full, signal)) > 0
  stcrank = _build("stcrank", spec).network
  assert not linear_start.has_linear_path(stcrank)


def test_start_linear_path_freezes_the_path_and_the_rest_trains():
  model, _, data = _linear_baseline()
  cfg = trainer.TrainConfig()
  assert not trainer.start_linear_path(model, data, dataclasses.replace(cfg, linear_start_l2=0.0))
  assert all(layer.trainable for layer in linear_start.linear_layers(model.network))
  with pytest.raises(ValueError, match="no eval split"):  # three penalties to choose among
    trainer.start_linear_path(model, data, cfg)
  chosen = trainer.start_linear_path(model, data, cfg, eval_batches=data)
  assert set(chosen) == set(F.HEADS)
  for start in chosen.values():
    assert set(start.eval_log_loss) == {10.0, 100.0, 1000.0}
    assert start.eval_log_loss[start.l2] == min(start.eval_log_loss.values())
  solved = linear_start.linear_layers(model.network)
  assert len(solved) == len(F.HEADS) + 1
  # What computes the wide features is frozen too: batch normalisation (which, frozen, also
  # normalises by the moments the regression was solved on) and the learned decays.
  feeding = linear_start.wide_feature_layers(model.network)
  kinds = {type(layer).__name__ for layer in feeding}
  assert {"BatchNormalization", "DecayedMatchSum", "MatchSummary"} <= kinds, kinds
  frozen = solved + feeding
  assert not any(layer.trainable for layer in frozen)
  before = [layer.get_weights() for layer in frozen]
  others = [w.numpy().copy() for w in model.trainable_weights]
  model.run_eagerly = True
  model.fit(data.take(1), epochs=1, verbose=0)
  for layer, weights in zip(frozen, before):
    for a, b in zip(layer.get_weights(), weights):
      np.testing.assert_array_equal(a, b)
  assert any(not np.allclose(a, b.numpy()) for a, b in zip(others, model.trainable_weights))


def test_realtime_match_reads_the_liked_and_purchased_events_of_the_positive_sequence():
  spec = _spec()
  inputs = spec.inputs()
  network = tf.keras.Model(inputs, encoders.realtime_match(inputs))
  probe = tf.keras.Model(inputs, [network.get_layer("decayed_rt_pos_liked_category_ids").output,
                                  network.get_layer("summary_rt_pos_liked").output,
                                  network.get_layer("decayed_rt_pos_purchased_category_ids").output])
  xf = F.transformed_name
  width = F.HOST_MAX_CATEGORIES
  feats = {k: np.zeros((1,) + tuple(v.shape[1:]), v.dtype.as_numpy_dtype)
           for k, v in inputs.items()}
  feats[xf(F.HOST_CATEGORY_IDS)][0, :2] = [5, 7]
  # Three positive events sharing 1, 2 and 1 categories with the room; the first and the third
  # liked; 0, 1 and 2 impressions ago, just now (age 0 h), so only the distance decays them.
  cats = feats[xf(F.seq_key(F.RT_POS, "category_ids"))]
  for position, room in enumerate([[5], [5, 7], [7, 9]]):
    cats[0, position * width:position * width + len(room)] = room
  feats[xf(F.len_key(F.RT_POS))][0] = 3
  feats[xf(F.seq_key(F.RT_POS, F.RT_LIKED))][0, :3] = [1, 0, 1]
  feats[xf(F.seq_key(F.RT_POS, F.RT_IMPRESSIONS_SINCE))][0, :3] = [0, 1, 2]
  # The user bought in the second room only.
  feats[xf(F.seq_key(F.RT_POS, F.RT_PURCHASED))][0, :3] = [0, 1, 0]
  # Flags past the length are padding: they must not count.
  feats[xf(F.seq_key(F.RT_POS, F.RT_LIKED))][0, 3] = 1
  feats[xf(F.seq_key(F.RT_POS, F.RT_PURCHASED))][0, 3] = 1
  decayed, summary, purchased = probe(feats)
  # Each kernel starts at x0.9 per unit of distance: 1 * 0.9^0 + 1 * 0.9^2 (the unliked 2 drops).
  np.testing.assert_allclose(decayed.numpy(), [[1 + 0.81] * 3], rtol=1e-5)
  np.testing.assert_allclose(summary.numpy()[0, :2], [np.log1p(2.0), 2 / 3], rtol=1e-5)
  # The purchased room's 2 shared categories, 1 impression ago: 2 * 0.9 per kernel.
  np.testing.assert_allclose(purchased.numpy(), [[2 * 0.9] * 3], rtol=1e-5)
