"""In-graph checks of a serving request's raw features, before Transform and the model run.

A NaN host statistic or a negative sequence length does not fail anywhere downstream: every
candidate would get the same score with status OK. The serving signature therefore asserts each
raw feature's declared range (``RawFeature.min_value`` / ``max_value``, the schema's domains) and
finiteness; a violation fails the request with a message naming the feature, the expected range
and the offending value (the server turns it into one INVALID_ARGUMENT line).
"""

from __future__ import annotations

from typing import Dict, List, Sequence, Tuple

import tensorflow as tf

from models import features as F

FAILED_PREFIX = "bad request feature"


def sequence_lengths(tf_transform_output) -> Tuple[int, int]:
  """(real-time, lifelong) lengths a Transform output was built for: the real-time one from its
  raw spec, the lifelong one (stored variable-length) from the length Transform pads it to."""
  realtime_len = tf_transform_output.raw_feature_spec()[F.seq_key(F.RT_POS, "host_ids")].shape[-1]
  lifelong_len = tf_transform_output.transformed_feature_spec()[
      F.transformed_name(F.seq_key(F.LL, "item_ids"))].shape[-1]
  return realtime_len, lifelong_len


def raw_features_for(tf_transform_output) -> List[F.RawFeature]:
  """The serving raw features with the sequence lengths a Transform output was built for."""
  return F.serving_raw_features(*sequence_lengths(tf_transform_output))


def _row_counts(x: tf.SparseTensor) -> tf.Tensor:
  """Values per row of a [B, *] sparse tensor: [B] int64."""
  ones = tf.sparse.map_values(tf.ones_like, tf.cast(x, tf.int64))
  return tf.reshape(tf.sparse.reduce_sum(ones, axis=1), [-1])


def _assert(condition: tf.Tensor, data: list, name: str) -> tf.Operation:
  """An Assert op without ``tf.debugging.Assert``'s ``cond`` guard: in a traced function each
  guard is an ``If`` with two branch functions, and with ~90 checks per signature those made a
  new version's first request (function instantiation) seconds slower; the message data here are
  a few scalars, cheap to compute whether or not the check fails."""
  return tf.raw_ops.Assert(condition=condition, data=data, summarize=3, name=name)


def _first(x: tf.Tensor, where: tf.Tensor) -> tf.Tensor:
  """[0 or 1]: the first value of ``x`` (row-major) where ``where`` holds: a gather of one index
  (``tf.boolean_mask`` built ~27 nodes per check into every signature)."""
  return tf.gather_nd(x, tf.where(where)[:1])


def check_raw_features(parsed: Dict[str, tf.Tensor],
                       declared: Sequence[F.RawFeature]) -> List[tf.Operation]:
  """Assert ops: every numeric feature finite and inside its declared range, and every
  variable-length feature with as many values as its length feature says."""
  checks = []
  for feature in declared:
    if feature.dtype == "bytes" or feature.name not in parsed:
      continue
    x = parsed[feature.name]
    if isinstance(x, tf.SparseTensor):  # variable-length: [B, *]; its count is checked below
      x = x.values
    if feature.dtype == "float":
      finite = tf.math.is_finite(x)
      checks.append(_assert(
          tf.reduce_all(finite),
          [f"{FAILED_PREFIX} {feature.name}: expected finite values, got",
           _first(x, tf.logical_not(finite))], name=f"check_finite_{feature.name}"))
    if feature.min_value is not None:
      checks.append(_assert(
          tf.reduce_all(x >= tf.cast(feature.min_value, x.dtype)),
          [f"{FAILED_PREFIX} {feature.name}: expected values >= {feature.min_value:g}, got",
           tf.reduce_min(x)], name=f"check_min_{feature.name}"))
    if feature.max_value is not None:
      checks.append(_assert(
          tf.reduce_all(x <= tf.cast(feature.max_value, x.dtype)),
          [f"{FAILED_PREFIX} {feature.name}: expected values <= {feature.max_value:g}, got",
           tf.reduce_max(x)], name=f"check_max_{feature.name}"))
  # After the ranges (a control dependency: asserts have no order otherwise), so a length
  # feature out of range is reported as such, not as a count mismatch.
  count_checks = []
  for feature in declared:
    x = parsed.get(feature.name)
    if not isinstance(x, tf.SparseTensor) or feature.length_key not in parsed:
      continue
    with tf.control_dependencies(checks):
      counts = _row_counts(x)  # [B]
    said = tf.reshape(tf.cast(parsed[feature.length_key], tf.int64), [-1])  # [B]
    wrong = tf.not_equal(counts, said)
    count_checks.append(_assert(
        tf.logical_not(tf.reduce_any(wrong)),
        [f"{FAILED_PREFIX} {feature.name}: expected as many values as {feature.length_key} "
         f"says (at most {feature.length}), got", _first(counts, wrong),
         f"values where {feature.length_key} is", _first(said, wrong)],
        name=f"check_count_{feature.name}"))
  return checks + count_checks
