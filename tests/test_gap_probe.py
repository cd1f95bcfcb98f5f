"""The gap probe's joint fit: every term at once, and without each."""

import numpy as np
import pytest

from bench import gap_probe as gp


def _two_term_world():
  """y = [a + b > 0] on a 20 x 20 grid; the model knows a only; `shuffle` carries nothing."""
  grid = np.linspace(-1.0, 1.0, 20)
  a = np.tile(grid, 20)  # [400]
  b = np.repeat(grid + 0.025, 20)  # [400], offset so that a + b is never 0
  y = (a + b > 0).astype(int)
  shuffle = ((np.arange(400) * 7) % 11 - 5) / 5.0  # a pattern unrelated to the labels
  return y, a, {"b": b, "shuffle": shuffle}


def test_joint_probe_finds_the_term_the_model_misses():
  y, model_logit, terms = _two_term_world()
  res = gp.joint_probe(y, model_logit, terms)
  assert set(res) == {"+all terms", "-b", "-shuffle"}
  # a + b separates the labels; out of fold, five fits' scores pooled rank a few pairs wrong.
  assert res["+all terms"] > 0.97
  assert res["-shuffle"] == pytest.approx(res["+all terms"], abs=0.01)  # it costs nothing
  assert res["-b"] < res["+all terms"] - 0.1  # without b the fit is the model's a alone


def test_joint_probe_needs_a_term():
  y, model_logit, _ = _two_term_world()
  with pytest.raises(ValueError, match="at least one term"):
    gp.joint_probe(y, model_logit, {})
