"""STCRank's MSC look-ahead in TensorFlow (``models/msc.py``): the ``rank`` signature's search.

The graph search must pick exactly the order the numpy search (``data_gen.lookahead``) picks,
ties included; the slate, per-slot values and the configuration are checked on hand-built cases.
The signature's round trip through the server is in ``test_closed_loop.py``.
"""

import numpy as np
import pytest
import tensorflow as tf

from data_gen import lookahead as la
from models import features as F
from models import msc, trainer

# A high-conversion room that usually ends the session and a slightly lower one that keeps the
# user swiping (test_greedy_trap.py has the same case for the numpy search).
TRAP_REWARDS, TRAP_SWIPES = [0.2, 0.1, 0.05], [0.5, 0.9, 0.9]


@tf.function(input_signature=[tf.TensorSpec([None], tf.float64)] * 2)
def _order_h3(rewards, swipes):
  return msc.lookahead_order(rewards, swipes, horizon=3, beam_width=7, top_m=6)


def test_graph_search_equals_the_numpy_search_ties_included():
  rng = np.random.default_rng(0)
  for trial in range(60):
    n = int(rng.integers(1, 30))
    rewards, swipes = rng.random(n), rng.random(n)
    if trial % 2:  # many ties in rewards and swipes
      rewards, swipes = np.round(rewards, 1), np.round(swipes, 1)
    horizon, beam, top_m = int(rng.integers(1, 5)), int(rng.integers(1, 20)), int(rng.integers(1, 12))
    want = la.best_order(rewards, swipes, horizon, beam, top_m)
    got = msc.lookahead_order(tf.constant(rewards), tf.constant(swipes), horizon, beam, top_m)
    assert got.numpy().tolist() == want.tolist(), (trial, n, horizon, beam, top_m)
    # Traced with an unknown N, as in the signature.
    if (horizon, beam, top_m) == (3, 7, 6):
      assert _order_h3(rewards, swipes).numpy().tolist() == want.tolist()
  assert _order_h3(np.array([0.3, 0.1]), np.array([0.2, 0.9])).numpy().tolist() == (
      la.best_order(np.array([0.3, 0.1]), np.array([0.2, 0.9]), 3, 7, 6).tolist())


def test_slate_puts_the_room_that_keeps_the_user_first_and_greedy_at_horizon_one():
  scores = {F.HEAD_BUY: tf.constant(TRAP_REWARDS), F.HEAD_SWIPE_DOWN: tf.constant(TRAP_SWIPES)}
  out = msc.rank_slate(scores, msc.MscConfig(horizon=2))
  assert out[msc.SLATE].numpy().tolist() == [1, 0, 2]
  np.testing.assert_allclose(out[msc.SLOT_REWARD].numpy(), [0.1, 0.2, 0.05], rtol=1e-6)
  np.testing.assert_allclose(out[msc.SLOT_SWIPE_DOWN].numpy(), [0.9, 0.5, 0.9], rtol=1e-6)
  np.testing.assert_allclose(out[msc.SLOT_REACH].numpy(), [1.0, 0.9, 0.45], rtol=1e-6)
  # The planned two slots: 0.1 + 0.9 * 0.2.
  np.testing.assert_allclose(out[msc.PLANNED_VALUE].numpy(), [0.28], rtol=1e-6)
  greedy = msc.rank_slate(scores, msc.MscConfig(horizon=1))
  assert greedy[msc.SLATE].numpy().tolist() == [0, 1, 2]
  np.testing.assert_allclose(greedy[msc.PLANNED_VALUE].numpy(), [0.2], rtol=1e-6)
  # The reward is the configured weighted sum; the rest of the slate follows it.
  weighted = msc.rank_slate(dict(scores, **{F.HEAD_EFFECTIVE_VIEW: tf.constant([0.0, 0.0, 1.0])}),
                            msc.MscConfig(reward_weights={F.HEAD_BUY: 1.0,
                                                          F.HEAD_EFFECTIVE_VIEW: 0.5},
                                          horizon=1))
  assert weighted[msc.SLATE].numpy().tolist() == [2, 0, 1]
  np.testing.assert_allclose(weighted[msc.SLOT_REWARD].numpy(), [0.55, 0.2, 0.1], rtol=1e-6)


def test_slate_of_no_candidates_is_empty():
  out = msc.rank_slate({F.HEAD_BUY: tf.zeros([0]), F.HEAD_SWIPE_DOWN: tf.zeros([0])},
                       msc.MscConfig())
  assert out[msc.SLATE].shape == [0] and out[msc.PLANNED_VALUE].numpy().tolist() == [0.0]


@pytest.mark.parametrize("kwargs, fragment", [
    ({"horizon": 0}, "MscConfig.horizon must be >= 1; got 0"),
    ({"top_m": -2}, "MscConfig.top_m must be >= 1; got -2"),
    ({"reward_weights": {}}, "reward_weights is empty"),
])
def test_config_is_checked(kwargs, fragment):
  with pytest.raises(ValueError, match=fragment):
    msc.MscConfig(**kwargs)


def test_reward_weights_parse_and_bad_ones_are_named():
  assert msc.parse_reward_weights("buy:1, effective_view:0.25") == {
      F.HEAD_BUY: 1.0, F.HEAD_EFFECTIVE_VIEW: 0.25}
  weights = {F.HEAD_BUY: 1.0, F.HEAD_INTERACT: 0.125}
  assert msc.parse_reward_weights(msc.format_reward_weights(weights)) == weights
  assert trainer.TrainConfig().msc() == msc.MscConfig()  # the trainer's defaults are MSC's
  for text, part in (("buy", "'buy'"), ("buy:x", "'buy:x'"), ("buy:1,:2", "':2'"),
                     ("buy:inf", "'buy:inf'")):
    with pytest.raises(ValueError, match=f"weight {part} of .* is not output:weight"):
      msc.parse_reward_weights(text)
  with pytest.raises(ValueError, match="weight 'buy=1' of 'buy=1' is not output:weight"):
    trainer.TrainConfig.from_custom_config({"msc_reward_weights": "buy=1"})
  with pytest.raises(ValueError, match="MscConfig.beam_width must be >= 1; got 0"):
    trainer.TrainConfig.from_custom_config({"msc_beam_width": 0})
  cfg = trainer.TrainConfig.from_custom_config({"msc_horizon": 2, "msc_top_m": 4})
  assert cfg.msc() == msc.MscConfig(horizon=2, top_m=4)


def test_outputs_the_search_reads_must_be_served():
  cfg = msc.MscConfig(reward_weights={F.HEAD_BUY: 1.0, F.HEAD_INTERACT: 0.1})
  assert cfg.outputs == (F.HEAD_BUY, F.HEAD_INTERACT, F.HEAD_SWIPE_DOWN)
  assert cfg.missing(F.HEADS) == [F.HEAD_SWIPE_DOWN]
  with pytest.raises(ValueError, match="reads outputs \\['swipe_down'\\] the model does not serve"):
    cfg.check_outputs(tuple(F.HEADS))
  cfg.check_outputs(tuple(F.HEADS) + (F.HEAD_SWIPE_DOWN,))
