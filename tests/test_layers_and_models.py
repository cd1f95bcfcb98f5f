"""Shared layers and the baseline model: hand-computed values, weights, round trips, one fit step."""

import numpy as np
import pytest
import tensorflow as tf

from models import baseline, trainer
from models import features as F
from models import preprocessing as P
from models.layers import MLP, MaskedMeanPooling
from models.spec import ModelSpec, transformed_feature_shapes


def test_masked_mean_pooling_hand_computed_and_empty_sequence():
  seq = tf.constant([[[1.0, 2.0], [3.0, 4.0], [100.0, 100.0]],
                     [[5.0, 5.0], [9.0, 9.0], [9.0, 9.0]]])  # [B=2, L=3, D=2]
  out = MaskedMeanPooling()([seq, tf.constant([[2], [0]])]).numpy()
  np.testing.assert_allclose(out, [[2.0, 3.0], [0.0, 0.0]])  # padding ignored; empty -> zeros
  assert not np.isnan(out).any()


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


def _spec():
  return ModelSpec(vocab_sizes={v: 12 for v in P.SHARED_VOCABS},
                   feature_shapes=transformed_feature_shapes(realtime_len=4, lifelong_len=6),
                   embedding_dim=4)


def _batch(spec, n=8, seed=0):
  rng = np.random.default_rng(seed)
  feats = {}
  for name, inp in spec.inputs().items():
    shape = (n, spec.feature_shapes[name])
    if inp.dtype == tf.float32:
      feats[name] = rng.normal(size=shape).astype(np.float32)
    else:
      feats[name] = rng.integers(0, 3, size=shape).astype(np.int64)
  labels = {h: rng.integers(0, 2, size=(n, 1)).astype(np.float32) for h in F.HEADS}
  return feats, labels


def test_baseline_fits_one_step_and_survives_savedmodel_round_trip(tmp_path):
  spec = _spec()
  model = baseline.build_baseline(spec)
  trainer.compile_model(model, 1e-2)
  feats, labels = _batch(spec)
  before = [w.numpy().copy() for w in model.trainable_weights]
  hist = model.fit(feats, labels, epochs=1, batch_size=8, verbose=0)
  assert np.isfinite(hist.history["loss"][0])
  assert any(not np.allclose(a, b.numpy()) for a, b in zip(before, model.trainable_weights))
  preds = model.predict(feats, verbose=0)
  assert set(preds) == set(F.HEADS)
  model.save(str(tmp_path / "m"))
  loaded = tf.keras.models.load_model(str(tmp_path / "m"))
  again = loaded.predict(feats, verbose=0)
  for h in F.HEADS:
    np.testing.assert_allclose(again[h], preds[h], rtol=1e-5)


def test_baseline_handles_empty_sequences():
  spec = _spec()
  model = baseline.build_baseline(spec)
  feats, _ = _batch(spec)
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
