"""In-graph checks of a serving request's raw features, before Transform and the model run.

A NaN host statistic or a negative sequence length does not fail anywhere downstream: every
candidate would get the same score with status OK. The serving signature therefore asserts each
raw feature's declared range (``RawFeature.min_value`` / ``max_value``, the schema's domains) and
finiteness; a violation fails the request with a message naming the feature, the expected range
and the offending value (the server turns it into one INVALID_ARGUMENT line).
"""

from __future__ import annotations

from typing import Dict, List, Sequence

import tensorflow as tf

from models import features as F

FAILED_PREFIX = "bad request feature"


def raw_features_for(raw_spec: Dict[str, tf.io.FixedLenFeature]) -> List[F.RawFeature]:
  """The serving raw features with the sequence lengths of a Transform's raw feature spec."""
  realtime_len = raw_spec[F.seq_key(F.RT_POS, "host_ids")].shape[-1]
  lifelong_len = raw_spec[F.seq_key(F.LL, "item_ids")].shape[-1]
  return F.serving_raw_features(realtime_len, lifelong_len)


def check_raw_features(parsed: Dict[str, tf.Tensor],
                       declared: Sequence[F.RawFeature]) -> List[tf.Operation]:
  """Assert ops: every numeric feature finite and inside its declared range."""
  checks = []
  for feature in declared:
    if feature.dtype == "bytes" or feature.name not in parsed:
      continue
    x = parsed[feature.name]
    if feature.dtype == "float":
      finite = tf.math.is_finite(x)
      checks.append(tf.debugging.Assert(
          tf.reduce_all(finite),
          [f"{FAILED_PREFIX} {feature.name}: expected finite values, got",
           tf.boolean_mask(x, tf.logical_not(finite))[:1]], name=f"check_finite_{feature.name}"))
    if feature.min_value is not None:
      checks.append(tf.debugging.Assert(
          tf.reduce_all(x >= tf.cast(feature.min_value, x.dtype)),
          [f"{FAILED_PREFIX} {feature.name}: expected values >= {feature.min_value:g}, got",
           tf.reduce_min(x)], name=f"check_min_{feature.name}"))
    if feature.max_value is not None:
      checks.append(tf.debugging.Assert(
          tf.reduce_all(x <= tf.cast(feature.max_value, x.dtype)),
          [f"{FAILED_PREFIX} {feature.name}: expected values <= {feature.max_value:g}, got",
           tf.reduce_max(x)], name=f"check_max_{feature.name}"))
  return checks
