"""TargetAttention, expert/gate blocks and the triplet loss on tiny hand-computed inputs."""

import math

import numpy as np
import pytest
import tensorflow as tf

from models.layers import CGC, PLE, ExpertGate, TargetAttention
from models.layers.experts import mmoe, shared_bottom
from models.losses import LabelAwareTripletLoss


def _identity_attention():
  att = TargetAttention(num_heads=1, head_dim=2, output_dim=2)
  att([tf.zeros([1, 2]), tf.zeros([1, 3, 2]), tf.constant([1])])  # build
  eye = np.eye(2, dtype=np.float32)
  att.set_weights([eye, eye, eye, eye, np.zeros(2, np.float32)])
  return att


def test_attention_hand_computed_and_masked():
  att = _identity_attention()
  query = tf.constant([[1.0, 0.0], [1.0, 0.0]])
  seq = tf.constant([[[1.0, 0.0], [0.0, 1.0], [50.0, 50.0]]] * 2)  # [B=2, L=3, D=2]
  out, w = att([query, seq, tf.constant([2, 0])], return_weights=True)
  a = math.exp(1 / math.sqrt(2))
  p = [a / (a + 1), 1 / (a + 1)]
  np.testing.assert_allclose(w.numpy()[0, 0], [p[0], p[1], 0.0], rtol=1e-5)  # 3rd is padding
  np.testing.assert_allclose(out.numpy()[0], [p[0], p[1]], rtol=1e-5)
  # Fully padded sequence: defined zeros, no NaN, no attention mass.
  np.testing.assert_array_equal(out.numpy()[1], [0.0, 0.0])
  np.testing.assert_array_equal(w.numpy()[1], np.zeros((1, 3)))


def test_attention_weight_count_config_and_validation():
  att = _identity_attention()
  assert att.count_params() == 3 * (2 * 2) + (2 * 2 + 2)
  clone = TargetAttention.from_config(att.get_config())
  assert clone.get_config() == att.get_config()
  with pytest.raises(ValueError, match="num_heads must be >= 1, got 0"):
    TargetAttention(num_heads=0)


def test_gate_mixes_experts_by_softmax():
  gate = ExpertGate(2)
  experts = tf.constant([[[1.0, 2.0], [3.0, 6.0]]])  # [B=1, E=2, H=2]
  gate([tf.zeros([1, 4]), experts])
  gate.set_weights([np.zeros((4, 2), np.float32), np.array([0.0, math.log(3.0)], np.float32)])
  mixed, w = gate([tf.zeros([1, 4]), experts])
  np.testing.assert_allclose(w.numpy(), [[0.25, 0.75]], rtol=1e-6)
  np.testing.assert_allclose(mixed.numpy(), [[2.5, 5.0]], rtol=1e-6)
  single = ExpertGate(1)
  out, w1 = single([tf.zeros([1, 4]), experts[:, :1]])
  assert single.count_params() == 0
  np.testing.assert_allclose(out.numpy(), [[1.0, 2.0]])
  np.testing.assert_allclose(w1.numpy(), [[1.0]])


def test_cgc_mmoe_shared_bottom_weight_counts():
  x = tf.ones([4, 2])
  cgc = CGC(num_tasks=2, task_experts=1, shared_experts=1, expert_units=[3])
  outs = cgc(x)
  assert len(outs) == 2 and outs[0].shape == (4, 3)
  assert cgc.count_params() == 3 * (2 * 3 + 3) + 2 * (2 * 2 + 2)  # 3 experts + 2 gates
  inner = CGC(num_tasks=2, task_experts=1, shared_experts=1, expert_units=[3], emit_shared=True)
  assert len(inner(x)) == 3
  assert inner.count_params() == 3 * 9 + 2 * 6 + (2 * 3 + 3)  # + shared gate over 3 experts
  m = mmoe(num_tasks=3, num_experts=4, expert_units=[3])
  m(x)
  assert m.count_params() == 4 * 9 + 3 * (2 * 4 + 4)
  sb = shared_bottom(num_tasks=3, expert_units=[3])
  outs = sb(x)
  assert sb.count_params() == 9  # one expert, identity gates
  np.testing.assert_allclose(outs[0].numpy(), outs[2].numpy())  # every task reads the same


def test_ple_stacks_levels_and_round_trips_config():
  ple = PLE(num_tasks=3, num_levels=2, task_experts=1, shared_experts=2, expert_units=[5])
  outs = ple(tf.ones([2, 4]))
  assert len(outs) == 3 and all(o.shape == (2, 5) for o in outs)
  assert PLE.from_config(ple.get_config()).get_config() == ple.get_config()
  cgc = CGC(2, 1, 1, [3])
  assert CGC.from_config(cgc.get_config()).get_config() == cgc.get_config()


@pytest.mark.parametrize("kwargs,fragment", [
    ({"num_tasks": 0, "task_experts": 1, "shared_experts": 1, "expert_units": [2]}, "num_tasks"),
    ({"num_tasks": 2, "task_experts": 0, "shared_experts": 0, "expert_units": [2]},
     "at least one expert"),
    ({"num_tasks": 2, "task_experts": 1, "shared_experts": 0, "expert_units": [2],
      "emit_shared": True}, "emit_shared"),
])
def test_cgc_rejects_bad_arguments(kwargs, fragment):
  with pytest.raises(ValueError, match=fragment):
    CGC(**kwargs)


def test_triplet_loss_hand_computed_with_margin_edges():
  loss = LabelAwareTripletLoss(margin=0.2, reduction="none")
  y = tf.constant([[1.0], [1.0], [1.0], [0.0], [0.0]])
  gap = tf.constant([[0.5], [0.1], [0.2], [0.1], [-0.2]])  # d(c, neg) - d(c, pos)
  np.testing.assert_allclose(loss(y, gap).numpy(), [0.0, 0.1, 0.0, 0.3, 0.0], atol=1e-7)
  mean = LabelAwareTripletLoss(margin=0.2)(y, gap).numpy()
  assert mean == pytest.approx(0.4 / 5)
  with pytest.raises(ValueError, match="margin must be >= 0, got -1"):
    LabelAwareTripletLoss(margin=-1)
  assert LabelAwareTripletLoss.from_config(loss.get_config()).margin == 0.2
