"""Lifelong model (seed 001): channel extraction, channel-wise DIN attention, Mixout, warm start."""

import numpy as np
import pytest
import tensorflow as tf

from models import encoders, lifelong, trainer
from models import features as F
from models.layers.lifelong import (
  ChannelDINAttention,
  ChannelExtraction,
  MixoutDense,
  TopKExtraction,
  first_positions,
  hard_search,
  relevance_scores,
)
from models.spec import ModelSpec

xf = F.transformed_name


def test_top_k_extraction_picks_best_never_padding_and_flags_short_sequences():
  scores = tf.constant([[[0.0, 2.0, 5.0, 1.0, 9.0],   # relevance channel
                         [3.0, 1.0, 4.0, 0.0, 9.0]]])  # plain channel; [B=1, C=2, L=5]
  layer = TopKExtraction(3, relevance_channels=[True, False])
  indices, valid = layer([scores, tf.constant([4])])  # position 4 (score 9) is padding
  np.testing.assert_array_equal(indices.numpy(), [[[2, 1, 3], [2, 0, 1]]])
  np.testing.assert_array_equal(valid.numpy(), [[[1, 1, 1], [1, 1, 1]]])
  # Only one relevant purchase in a sequence of two: the zero-score item is not extracted.
  indices, valid = layer([scores, tf.constant([2])])
  np.testing.assert_array_equal(valid.numpy(), [[[1, 0, 0], [1, 1, 0]]])
  np.testing.assert_array_equal(indices.numpy()[0, 1, :2], [0, 1])
  # K larger than the stored length: the extra slots are invalid and index inside the sequence.
  indices, valid = TopKExtraction(7, [False, False])([scores, tf.constant([5])])
  assert valid.numpy().sum() == 10 and indices.numpy().max() <= 4
  # Ties go to the more recent (lower) position.
  tie, _ = TopKExtraction(2, [True])([tf.constant([[[1.0, 1.0, 1.0]]]), tf.constant([3])])
  np.testing.assert_array_equal(tie.numpy(), [[[0, 1]]])


def test_top_k_extraction_of_user_channels_is_taken_once_and_broadcast():
  # Three rooms' own channel and one user channel shared by them (batch 1): the same slots as
  # extracting the user channel from every room's row.
  rooms = tf.constant([[[0.0, 2.0, 5.0, 1.0]], [[4.0, 0.0, 0.0, 3.0]], [[0.0, 0.0, 0.0, 0.0]]])
  user = tf.constant([[[1.0, 7.0, 0.0, 2.0]]])  # [1, C_u=1, L=4]
  layer = TopKExtraction(2, [True, False])
  indices, valid = layer([rooms, tf.constant([[3]]), user])
  np.testing.assert_array_equal(indices.numpy(), [[[2, 1], [1, 0]], [[0, 1], [1, 0]],
                                                  [[0, 1], [1, 0]]])
  np.testing.assert_array_equal(valid.numpy(), [[[1, 1], [1, 1]], [[1, 0], [1, 1]],
                                                [[0, 0], [1, 1]]])
  merged = TopKExtraction(2, [True, False])(
      [tf.concat([rooms, tf.broadcast_to(user, [3, 1, 4])], axis=1), tf.constant([[3]])])
  np.testing.assert_array_equal(merged[0].numpy(), indices.numpy())
  np.testing.assert_array_equal(merged[1].numpy(), valid.numpy())
  with pytest.raises(ValueError, match="got 2 score channels but 3"):
    TopKExtraction(2, [True, False, False])([rooms, tf.constant([[3]]), user])


def test_top_k_extraction_validates_arguments_and_round_trips_config():
  with pytest.raises(ValueError, match="k must be >= 1, got 0"):
    TopKExtraction(0, [True])
  with pytest.raises(ValueError, match="got 2 score channels but 1"):
    TopKExtraction(1, [True])([tf.zeros([1, 2, 3]), tf.constant([3])])
  layer = TopKExtraction(4, [True, False])
  assert TopKExtraction.from_config(layer.get_config()).get_config() == layer.get_config()


def _attention_by_hand(layer, query, items, valid, channel_softmax):
  weights = [w.numpy() for w in layer.mlp[0].weights[:2] + layer.mlp[1].weights[:2]]
  k0, b0, k1, b1 = weights
  q = np.broadcast_to(query[:, None, None, :], items.shape)
  h = np.concatenate([q, items, q - items, q * items], -1)
  logits = (np.maximum(h @ k0 + b0, 0) @ k1 + b1)[..., 0]  # [B, C, K]
  logits = np.where(valid > 0, logits, -np.inf)
  axis = -1 if channel_softmax else (1, 2)
  e = np.exp(logits - np.max(np.where(np.isinf(logits), -1e30, logits), axis=axis, keepdims=True))
  weights = e / np.maximum(e.sum(axis=axis, keepdims=True), 1e-30)
  return np.einsum("bck,bckd->bcd", weights, items), weights


@pytest.mark.parametrize("channel_softmax", [True, False])
def test_channel_din_attention_matches_hand_computation(channel_softmax):
  rng = np.random.default_rng(0)
  query = rng.normal(size=(2, 3)).astype(np.float32)  # [B, D]
  items = rng.normal(size=(2, 2, 4, 3)).astype(np.float32)  # [B, C, K, D]
  valid = np.array([[[1, 1, 0, 0], [1, 1, 1, 1]],
                    [[0, 0, 0, 0], [1, 0, 1, 0]]], np.float32)  # example 2 channel 1 empty
  layer = ChannelDINAttention((5,), channel_softmax=channel_softmax)
  pooled, weights = layer([query, items, valid], return_weights=True)
  expected_pooled, expected_weights = _attention_by_hand(layer, query, items, valid,
                                                         channel_softmax)
  np.testing.assert_allclose(weights.numpy(), expected_weights, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(pooled.numpy(), expected_pooled, rtol=1e-5, atol=1e-6)
  sums = weights.numpy().sum(-1)
  if channel_softmax:  # one per channel with items, zero for the empty one
    np.testing.assert_allclose(sums, [[1, 1], [0, 1]], rtol=1e-6)
  else:
    np.testing.assert_allclose(sums.sum(-1), [1, 1], rtol=1e-6)
  np.testing.assert_allclose(pooled.numpy()[1, 0], 0.0)
  # Channels and items per channel known only at run time: the same result.
  dynamic = tf.function(lambda q, i, v: layer([q, i, v]), input_signature=[
      tf.TensorSpec([None, 3]), tf.TensorSpec([None, None, None, 3]),
      tf.TensorSpec([None, None, None])])
  np.testing.assert_allclose(dynamic(query, items, valid).numpy(), expected_pooled, rtol=1e-5,
                             atol=1e-6)
  # 2 MixoutDense layers: kernel + bias trainable each; anchors and rate are not.
  assert layer.count_params() == (4 * 3 * 5 + 5) * 2 + 1 + (5 + 1) * 2 + 1
  assert len(layer.trainable_weights) == 4
  assert ChannelDINAttention.from_config(layer.get_config()).get_config() == layer.get_config()


def test_channel_din_attention_rejects_bad_arguments():
  with pytest.raises(ValueError, match=r"hidden_units must be positive, got \[0\]"):
    ChannelDINAttention((0,))
  with pytest.raises(ValueError, match="mixout_rate must be in \\[0, 1\\], got 1.5"):
    ChannelDINAttention((4,), mixout_rate=1.5)


def test_mixout_at_rate_zero_and_one_against_hand_computed_weights():
  x = tf.constant([[1.0, 2.0]])
  dense = MixoutDense(2, rate=0.0)
  dense.build([None, 2])
  w = np.array([[1.0, -1.0], [0.5, 2.0]], np.float32)
  u = np.array([[3.0, 0.0], [-1.0, 1.0]], np.float32)
  dense.kernel.assign(u)
  dense.bias.assign([0.5, -0.5])
  dense.set_anchor()  # anchors u, (0.5, -0.5)
  dense.kernel.assign(w)
  dense.bias.assign([1.0, 1.0])
  np.testing.assert_allclose(dense(x, training=True).numpy(), [[1 + 1 + 1, -1 + 4 + 1]])
  dense.rate.assign(1.0)
  np.testing.assert_allclose(dense(x, training=True).numpy(), [[3 - 2 + 0.5, 0 + 2 - 0.5]])
  # At inference the current weights are used, whatever the rate.
  np.testing.assert_allclose(dense(x, training=False).numpy(), [[3.0, 4.0]])
  # In between: each draw mixes, the mean over draws is the current weights' output.
  dense.rate.assign(0.5)
  tf.random.set_seed(0)
  draws = np.stack([dense(x, training=True).numpy() for _ in range(2000)])
  np.testing.assert_allclose(draws.mean(0), [[3.0, 4.0]], atol=0.15)
  assert draws.std(0).min() > 0.5
  with pytest.raises(ValueError, match="rate must be in \\[0, 1\\], got -0.1"):
    MixoutDense(2, rate=-0.1)


def _features(host_cats, shop, brands, ll_cats, ll_shops, ll_brands, ll_len):
  return {xf(F.HOST_CATEGORY_IDS): tf.constant([host_cats], tf.int64),
          xf(F.HOST_SHOP_ID): tf.constant([[shop]], tf.int64),
          xf(F.DISPLAY_BRAND_IDS): tf.constant([brands], tf.int64),
          xf(F.seq_key(F.LL, "category_ids")): tf.constant([ll_cats], tf.int64),
          xf(F.seq_key(F.LL, "shop_ids")): tf.constant([ll_shops], tf.int64),
          xf(F.seq_key(F.LL, "brand_ids")): tf.constant([ll_brands], tf.int64),
          xf(F.len_key(F.LL)): tf.constant([[ll_len]], tf.int64)}


def test_channel_scores_on_a_hand_built_history():
  # Purchases (most recent first): categories 2, 5, 2, 3, 2, then padding.
  x = _features(host_cats=[2, 4, 0], shop=7, brands=[9, 0],
                ll_cats=[2, 5, 2, 3, 2, 0], ll_shops=[1, 7, 1, 1, 7, 0],
                ll_brands=[9, 1, 1, 9, 1, 0], ll_len=5)
  category, shop_brand = relevance_scores(
      x[xf(F.HOST_CATEGORY_IDS)], x[xf(F.HOST_SHOP_ID)], x[xf(F.DISPLAY_BRAND_IDS)],
      *(x[xf(F.seq_key(F.LL, f))] for f in ("category_ids", "shop_ids", "brand_ids")))
  np.testing.assert_array_equal(category.numpy()[0, :5], [1, 0, 1, 0, 1])
  np.testing.assert_array_equal(shop_brand.numpy()[0, :5], [1, 1, 0, 1, 1])
  user_scores = lifelong.user_channel_scores(x, num_categories=8)
  assert user_scores.shape == (1, len(lifelong.USER_CHANNELS), 6)
  by_name = dict(zip(lifelong.USER_CHANNELS, user_scores.numpy()[0]))
  np.testing.assert_array_equal(by_name["interest"][:5], [3, 1, 3, 1, 3])  # category 2 bought 3x
  np.testing.assert_array_equal(by_name["recent"], [0, -1, -2, -3, -4, -5])


def test_first_positions_finds_each_ids_earliest_positions_before_the_length():
  keys = tf.constant([4, 2, 4, 0, 4, 2, 4], tf.int64)  # positions 5 and 6 are padding
  positions, found = first_positions(keys, tf.constant(5), tf.constant([[4, 2], [3, 0]]), k=3)
  np.testing.assert_array_equal(found.numpy(), [[[1, 1, 1], [1, 0, 0]], [[0, 0, 0], [0, 0, 0]]])
  np.testing.assert_array_equal(positions.numpy(), [[[0, 2, 4], [1, 0, 0]], [[0] * 3, [0] * 3]])
  # An empty history finds nothing.
  _, found = first_positions(tf.zeros([0], tf.int64), tf.constant(0), tf.constant([[4]]), k=2)
  assert not found.numpy().any()


def _room_and_user(rng, rooms, length, max_len, ids):
  """Random rooms (duplicated and padded ids included) and one user's purchases of small ids,
  so that matches, ties and duplicates are common."""
  room = [tf.constant(rng.integers(0, ids, size=(rooms, width)), tf.int64)
          for width in (3, 1, 4)]  # categories, shop, displayed brands
  user = [tf.constant(rng.integers(0, ids, size=(1, max_len)), tf.int64) for _ in range(3)]
  return room, user, tf.constant([[length]], tf.int64)


@pytest.mark.parametrize("k,length,max_len,ids", [(3, 30, 40, 6), (5, 7, 12, 4), (20, 25, 25, 8),
                                                  (4, 0, 10, 5), (2, 40, 40, 3)])
def test_hard_search_extracts_what_scoring_every_purchase_extracts(k, length, max_len, ids):
  rng = np.random.default_rng(k * 100 + length)
  room, user, length_t = _room_and_user(rng, 30, length, max_len, ids)
  similarity = tf.constant(rng.normal(size=(30, max_len)), tf.float32)
  user_scores = tf.constant(rng.normal(size=(1, 2, max_len)), tf.float32)
  layer = ChannelExtraction(k)
  shared = layer(room + user + [length_t, similarity, user_scores])  # one user: hard search
  batched = layer(room + [tf.repeat(u, 30, axis=0) for u in user]  # the user on every row
                  + [tf.repeat(length_t, 30, axis=0), similarity,
                     tf.repeat(user_scores, 30, axis=0)])
  valid = batched[1].numpy()
  np.testing.assert_array_equal(shared[1].numpy(), valid)
  np.testing.assert_array_equal(np.where(valid > 0, shared[0].numpy(), -1),
                                np.where(valid > 0, batched[0].numpy(), -1))
  assert valid[:, :2].sum() > 0 or length == 0  # the relevance channels did extract something


def test_hard_search_takes_score_two_first_then_the_most_recent_score_one():
  # Room shop 7, displayed brands 9 (twice) and 5. Purchases (most recent first), (shop, brand):
  # (7, 1) s1, (3, 9) s1, (7, 9) s2, (7, 2) s1, (3, 5) s1, (7, 5) s2, (0, 9) s1.
  shops = tf.constant([[7, 3, 7, 7, 3, 7, 0]], tf.int64)
  brands = tf.constant([[1, 9, 9, 2, 5, 5, 9]], tf.int64)
  cats = tf.constant([[1, 2, 1, 1, 2, 2, 1]], tf.int64)
  indices, valid = hard_search(tf.constant([[2, 2, 0]]), tf.constant([[7]]), tf.constant([[9, 9, 5]]),
                               cats, shops, brands, tf.constant(7), k=4)
  # Category 2 listed twice: positions 1, 4, 5 score 2 each.
  np.testing.assert_array_equal(indices.numpy()[0, 0], [1, 4, 5, 0])
  np.testing.assert_array_equal(valid.numpy()[0, 0], [1, 1, 1, 0])
  np.testing.assert_array_equal(indices.numpy()[0, 1], [2, 5, 0, 1])
  np.testing.assert_array_equal(valid.numpy()[0, 1], [1, 1, 1, 1])


def test_channel_extraction_validates_and_round_trips_config():
  with pytest.raises(ValueError, match="ChannelExtraction k must be >= 1, got 0"):
    ChannelExtraction(0)
  layer = ChannelExtraction(6, name="extract")
  assert ChannelExtraction.from_config(layer.get_config()).get_config() == layer.get_config()


def test_purchase_tokens_at_indices_and_similarity_equal_the_whole_sequence_s():
  spec = _spec()
  purchases = lifelong.PurchaseTokens(encoders.Embeddings(spec))
  rng = np.random.default_rng(3)
  # ids < 11: inside every table of this spec (the age buckets have the fewest rows)
  x = {xf(F.seq_key(F.LL, field)): tf.constant(rng.integers(0, 11, size=(1, 30)), tf.int64)
       for _, field in encoders.LIFELONG_TOKEN_FIELDS}
  x.update({xf(F.seq_key(F.LL, field)): tf.constant(rng.normal(size=(1, 30)), tf.float32)
            for field in F.LL_FLOAT_FIELDS})
  indices = tf.constant([[[0, 7], [29, 7]], [[3, 3], [1, 2]]])  # [B=2, C=2, K=2]; shared user
  every = purchases.all(x).numpy()[0]  # [30, D]
  np.testing.assert_allclose(purchases.at(x, indices).numpy(), every[indices.numpy()], rtol=1e-6)
  query = tf.constant(rng.normal(size=(3, spec.embedding_dim)), tf.float32)  # 3 rooms, 1 user
  np.testing.assert_allclose(purchases.similarity(x, query).numpy(), query.numpy() @ every.T,
                             rtol=1e-5, atol=1e-6)
  # A batch of two users' sequences (training): the same tokens, row by row.
  batch = {key: tf.concat([value, value[:, ::-1]], 0) for key, value in x.items()}  # [2, 30]
  with tf.GradientTape() as tape:
    items = purchases.at(batch, indices)  # [2, 2, 2, D]
    loss = tf.reduce_sum(items)
  np.testing.assert_allclose(items.numpy()[0], every[indices.numpy()[0]], rtol=1e-6)
  np.testing.assert_allclose(items.numpy()[1], every[::-1][indices.numpy()[1]], rtol=1e-6)
  grad = tape.gradient(loss, purchases.emb.tables["item"].embeddings)
  # The item table's gradient has one row per extracted slot, not one per purchase.
  assert isinstance(grad, tf.IndexedSlices) and grad.indices.shape[0] == indices.shape.num_elements()


def test_extraction_relevance_counts_only_valid_room_category_hits():
  indices = tf.constant([[[0, 1, 2], [3, 4, 0]]])  # [B=1, C=2, K=3]
  valid = tf.constant([[[1.0, 1.0, 0.0], [1.0, 1.0, 1.0]]])
  purchases = tf.constant([[2, 5, 2, 3, 2]])
  relevant, extracted = lifelong.extraction_relevance(indices, valid, purchases,
                                                      tf.constant([[2, 0, 0]]))
  np.testing.assert_array_equal(relevant.numpy(), [[1, 2]])  # slot 3 of channel 0 is invalid
  np.testing.assert_array_equal(extracted.numpy(), [[2, 3]])


def _spec():
  return ModelSpec.without_transform(12, realtime_len=4, lifelong_len=30, embedding_dim=4)


def test_lifelong_variants_differ_where_they_should():
  spec = _spec()
  full = lifelong.build_lifelong(spec)
  names = lambda m: {layer.name for layer in m.layers}  # noqa: E731
  assert {lifelong.ATTENTION_LAYER, lifelong.EXTRACTION_LAYER, "bias_net"} <= names(full)
  assert lifelong.AUX_OUTPUT in full.output_names
  pooled = lifelong.build_lifelong(spec, extraction="mean_pool", use_bias_net=False,
                                   use_aux=False)
  assert lifelong.ATTENTION_LAYER not in names(pooled) and "bias_net" not in names(pooled)
  assert set(pooled.output_names) == set(F.HEADS)
  assert trainer.model_tasks(trainer.TrainConfig(model_name="lifelong")).outputs == (
      tuple(F.HEADS) + (lifelong.AUX_OUTPUT,))
  with pytest.raises(ValueError, match="extraction 'nope' is not one of"):
    lifelong.build_lifelong(spec, extraction="nope")


def test_bias_net_logit_adds_to_every_head():
  spec = _spec()
  network = lifelong.build_lifelong(spec, use_aux=False)
  bias_net = network.get_layer("bias_net")
  rng = np.random.default_rng(1)
  feats = {k: (rng.integers(0, 3, size=(4, n)) if spec.inputs()[k].dtype == tf.int64
               else rng.normal(size=(4, n)).astype(np.float32))
           for k, n in spec.feature_shapes.items()}
  # The heads' logits, not their probabilities: an untrained head can saturate its sigmoid,
  # where float32 cannot give the logit back.
  logits = tf.keras.Model(network.inputs,
                          [network.get_layer(f"{head}_logit").output for head in F.HEADS])
  before = logits(feats)
  last = bias_net.weights[-1]  # the output bias: one logit per head
  last.assign(last + tf.constant([1.0, 0.0, -1.0]))
  after = logits(feats)
  for b, a, shift in zip(before, after, [1.0, 0.0, -1.0]):
    np.testing.assert_allclose(a.numpy() - b.numpy(), shift, atol=1e-4)


def test_warm_start_loads_the_attention_and_anchors_mixout(tmp_path):
  spec = _spec()
  base = lifelong.build_lifelong(spec)
  attention = base.get_layer(lifelong.ATTENTION_LAYER)
  for w in attention.trainable_weights:
    w.assign(tf.fill(w.shape, 0.25))
  exported = tf.Module()  # tracked the way ServingModule tracks it
  setattr(exported, trainer.WARM_START_ATTRIBUTE, trainer.warm_start_layers(base))
  tf.saved_model.save(exported, str(tmp_path / "base"))

  new = lifelong.build_lifelong(spec)
  assert trainer.warm_start(new, str(tmp_path / "base"), mixout_rate=0.3) == [
      lifelong.ATTENTION_LAYER]
  started = new.get_layer(lifelong.ATTENTION_LAYER)
  for dense in started.mixout_layers():
    np.testing.assert_allclose(dense.kernel.numpy(), 0.25)
    np.testing.assert_allclose(dense.anchor_kernel.numpy(), 0.25)
    assert float(dense.rate.numpy()) == pytest.approx(0.3)
  # A base model without the layer (e.g. the baseline) leaves the new model as it was.
  plain = tf.Module()
  plain.v = tf.Variable(1.0)
  tf.saved_model.save(plain, str(tmp_path / "plain"))
  other = lifelong.build_lifelong(spec)
  kernel = other.get_layer(lifelong.ATTENTION_LAYER).mlp[0].kernel.numpy().copy()
  assert trainer.warm_start(other, str(tmp_path / "plain"), mixout_rate=0.3) == []
  np.testing.assert_array_equal(other.get_layer(lifelong.ATTENTION_LAYER).mlp[0].kernel.numpy(),
                                kernel)


def test_train_config_validates_lifelong_settings():
  with pytest.raises(ValueError, match="mixout_rate must be in \\[0, 1\\], got 2"):
    trainer.TrainConfig.from_custom_config({"mixout_rate": 2})
  with pytest.raises(ValueError, match="lifelong_aux_weight must be >= 0, got -1"):
    trainer.TrainConfig.from_custom_config({"lifelong_aux_weight": -1})
  with pytest.raises(ValueError, match="lifelong_top_k must be >= 1, got 0"):
    trainer.TrainConfig.from_custom_config({"lifelong_top_k": 0})


def test_the_configured_top_k_reaches_every_multi_channel_lifelong_model():
  """TrainConfig.lifelong_top_k is the K of the built network's extraction layer, for every
  model whose builder takes it."""
  spec = _spec()
  for name in ("lifelong", "lifelong_merged_softmax", "lifelong_no_bias_net"):
    for k in (3, 7):
      cfg = trainer.TrainConfig(model_name=name, lifelong_top_k=k)
      network = trainer.MODELS[name].build_network(spec, cfg)
      assert network.get_layer(lifelong.EXTRACTION_LAYER).k == k, (name, k)
  # The pooled variant has no extraction: the setting does not reach (or break) it.
  pooled = trainer.MODELS["lifelong_mean_pool"].build_network(
      spec, trainer.TrainConfig(model_name="lifelong_mean_pool", lifelong_top_k=3))
  assert lifelong.EXTRACTION_LAYER not in {layer.name for layer in pooled.layers}
  assert trainer.TrainConfig().lifelong_top_k == lifelong.DEFAULT_TOP_K


def test_relevance_by_extraction_merges_channels_and_builds_the_recency_baselines():
  purchases = tf.constant([[3, 2, 5, 2, 2, 0]])  # most recent first; length 5
  room = tf.constant([[2, 0, 0]])
  # One slot per channel (K=2): category picks 1, 3; shop_brand 3, 4; the rest overlap.
  indices = tf.constant([[[1, 3], [3, 4], [0, 1], [1, 3], [0, 1]]])
  valid = tf.ones([1, 5, 2])
  out = lifelong.relevance_by_extraction(indices, valid, purchases, room, tf.constant([5]))
  as_np = {k: (float(r.numpy()[0]), float(n.numpy()[0])) for k, (r, n) in out.items()}
  assert as_np["category"] == (2.0, 2.0) and as_np["recent"] == (1.0, 2.0)
  assert as_np[lifelong.MULTI_CHANNEL] == (3.0, 4.0)  # distinct positions 0, 1, 3, 4
  assert as_np[lifelong.MOST_RECENT_K] == (1.0, 2.0)  # positions 0, 1
  assert as_np[lifelong.MOST_RECENT_SAME_BUDGET] == (2.0, 4.0)  # positions 0..3


def test_relevance_report_over_a_dataset_by_activity_slice():
  from bench import lifelong_relevance
  spec = _spec()
  network = lifelong.build_lifelong(spec, use_aux=False)
  rng = np.random.default_rng(2)
  n, length = 6, spec.feature_shapes[xf(F.seq_key(F.LL, "category_ids"))]
  feats = {k: (rng.integers(1, 3, size=(n, d)) if spec.inputs()[k].dtype == tf.int64
               else rng.normal(size=(n, d)).astype(np.float32))
           for k, d in spec.feature_shapes.items()}
  feats[xf(F.HOST_CATEGORY_IDS)] = np.tile([[4, 0, 0]], (n, 1))
  cats = np.full((n, length), 7)
  cats[:, 1] = 4  # one purchase in the room's category, the second most recent
  feats[xf(F.seq_key(F.LL, "category_ids"))] = cats
  feats[xf(F.len_key(F.LL))] = np.full((n, 1), 10)
  feats[xf(F.ACTIVITY_LEVEL)] = np.array([[0], [0], [1], [1], [2], [2]])
  data = tf.data.Dataset.from_tensors((feats, {}, {}))
  report = lifelong_relevance.relevance_report(network, data)
  assert set(report) == {"all"} | set(F.ACTIVITY_LEVELS)
  assert report["all"]["category"] == {"relevance": 1.0, "items_per_example": 1.0}
  assert report["all"]["recent"]["relevance"] == pytest.approx(1 / 10)  # K=20 > length 10
  assert report["all"][lifelong.MOST_RECENT_K]["items_per_example"] == 10.0
  assert report["all"][lifelong.MULTI_CHANNEL]["relevance"] == pytest.approx(1 / 10)
  assert report[F.ACTIVITY_LEVELS[0]]["category"]["relevance"] == 1.0
