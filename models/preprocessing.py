"""Transform's preprocessing_fn.

- Ids that the candidate room shares with the sequences (rooms, shops, categories, brands) get one
  vocabulary each, computed over every place the id occurs, so a room in the real-time sequence and
  the candidate room have the same index. Items (many) are hashed into one space.
  Index 0 stays padding; real ids map to 1..V, out-of-vocabulary to V+1.
- Times are bucketized with fixed log-scale boundaries; counts are log1p then z-scored.
- The lifelong purchases arrive variable-length (sparse) and leave padded to the lifelong length
  the model reads, which the pipeline passes as ``custom_config[LIFELONG_SEQ_LEN_CONFIG]``.
"""

from __future__ import annotations

from typing import Any, Dict, List, Sequence

import tensorflow as tf
import tensorflow_transform as tft

from models import features as F

ITEM_HASH_BUCKETS = 1 << 15
AGE_SECONDS_BOUNDARIES = [60.0, 300.0, 900.0, 1800.0, 3600.0, 3 * 3600.0, 6 * 3600.0, 86400.0,
                          2 * 86400.0]
AGE_DAYS_BOUNDARIES = [1.0, 3.0, 7.0, 14.0, 30.0, 60.0, 90.0, 180.0, 270.0]
MAX_SLOT = 29
SECONDS_PER_HOUR = 3600.0
NUM_ACTIVITY_LEVELS = len(F.ACTIVITY_LEVELS) + 1  # + unknown
LIFELONG_SEQ_LEN_CONFIG = "lifelong_seq_len"  # Transform custom_config key
# Not read here: the pipeline's source fingerprint, so a code change invalidates the cache.
CODE_VERSION_CONFIG = "code_version"
LIFELONG_FIELDS = [F.seq_key(F.LL, f) for f in F.LL_INT_FIELDS + F.LL_FLOAT_FIELDS]

# Vocabulary name -> raw features that hold that id.
HOST_VOCAB, SHOP_VOCAB, CATEGORY_VOCAB, BRAND_VOCAB = "host_id", "shop_id", "category_id", "brand_id"
SHARED_VOCABS: Dict[str, List[str]] = {
    HOST_VOCAB: [F.HOST_ID, F.SESSION_HOSTS, F.seq_key(F.RT_POS, "host_ids"),
                 F.seq_key(F.RT_NEG, "host_ids")],
    SHOP_VOCAB: [F.HOST_SHOP_ID, F.seq_key(F.RT_POS, "shop_ids"), F.seq_key(F.RT_NEG, "shop_ids"),
                 F.seq_key(F.LL, "shop_ids")],
    CATEGORY_VOCAB: [F.HOST_CATEGORY_IDS, F.TRIGGER_CATEGORY_ID, F.DISPLAY_CATEGORY_IDS,
                     F.SESSION_CATEGORY_IDS,
                     F.seq_key(F.RT_POS, "category_ids"), F.seq_key(F.RT_NEG, "category_ids"),
                     F.seq_key(F.LL, "category_ids")],
    BRAND_VOCAB: [F.DISPLAY_BRAND_IDS, F.seq_key(F.LL, "brand_ids")],
}
ITEM_FEATURES = [F.TRIGGER_ITEM_ID, F.DISPLAY_ITEM_IDS, F.seq_key(F.LL, "item_ids")]
LENGTH_FEATURES = [F.SESSION_HOSTS_LEN_KEY, F.DISPLAY_LEN, F.len_key(F.RT_POS),
                   F.len_key(F.RT_NEG), F.len_key(F.LL)]


def vocab_size(tf_transform_output: tft.TFTransformOutput, vocab: str) -> int:
  """Embedding input size for a shared vocabulary: padding + entries + one OOV bucket."""
  return tf_transform_output.vocabulary_size_by_name(vocab) + 2


def _shared_vocab_ids(inputs: Dict[str, tf.Tensor], keys: Sequence[str], vocab: str):
  """One vocabulary over all ``keys``; returns {key: ids in [0, V+1]} with 0 kept for padding."""
  flat = tf.concat([tf.reshape(inputs[k], [-1]) for k in keys], axis=0)
  flat = tf.boolean_mask(flat, flat > 0)
  # Unit weights make TFT count each batch's ids in the graph (unique + segment sum) and hand
  # Beam one (id, count) per distinct id; unweighted, it hands Beam every occurrence (~20 M at
  # the default scale, counted one by one in Python). The same counts, so the same vocabulary.
  # Integer ids: TFT writes their decimal text, as it wrote the strings before.
  deferred = tft.vocabulary(flat, vocab_filename=vocab, weights=tf.ones_like(flat, tf.float32))
  # Out of vocabulary -> V. Not num_oov_buckets=1: its one bucket is also V, but the table then
  # hashes every value (as text) to pick a bucket among one, ~0.1 ms per feature in a serving
  # request (issue 7).
  oov = tft.experimental.get_vocabulary_size_by_name(vocab)
  out = {}
  for k in keys:
    x = inputs[k]
    # The ids are looked up as integers (the table parses the vocabulary's decimal keys), not
    # converted to strings first: the same indices for less work over every padded value.
    idx = tft.apply_vocabulary(x, deferred, default_value=-1)
    idx = tf.where(idx < 0, oov, idx)
    out[k] = tf.where(x > 0, idx + 1, tf.zeros_like(idx))  # [B, L]
  return out


def _hash_items(x: tf.Tensor) -> tf.Tensor:
  h = tf.strings.to_hash_bucket_fast(tf.strings.as_string(x), ITEM_HASH_BUCKETS - 1) + 1
  return tf.where(x > 0, h, tf.zeros_like(h))


def _bucketize(x: tf.Tensor, boundaries: List[float], valid: tf.Tensor) -> tf.Tensor:
  """1-based fixed buckets where ``valid``; 0 elsewhere (padding)."""
  b = tf.raw_ops.Bucketize(input=tf.cast(x, tf.float32), boundaries=boundaries)
  return tf.where(valid, tf.cast(b, tf.int64) + 1, tf.zeros_like(x, tf.int64))


def _activity_index(level: tf.Tensor) -> tf.Tensor:
  """new/low/high -> 0/1/2; anything else -> 3. Fixed, so it never shifts between runs."""
  idx = tf.fill(tf.shape(level), tf.constant(len(F.ACTIVITY_LEVELS), tf.int64))
  for i, name in enumerate(F.ACTIVITY_LEVELS):
    idx = tf.where(tf.equal(level, name), tf.constant(i, tf.int64), idx)
  return idx


def _seq_valid(inputs, prefix: str, length: int) -> tf.Tensor:
  n = tf.reshape(inputs[F.len_key(prefix)], [-1, 1])
  return tf.range(length, dtype=tf.int64)[tf.newaxis, :] < n  # [B, L]


def padded(x, length: int) -> tf.Tensor:
  """The first ``length`` values of each row, zero-padded: [B, length] from a sparse, ragged or
  dense [B, *] tensor (a variable-length feature as Transform parses it)."""
  if isinstance(x, tf.SparseTensor):
    # Scattered into [B, length + 1]: a value at or past ``length`` lands in the spare last
    # column, which is cut. Four ops, where the ragged detour was ~30 per feature in every
    # serving request (issue 7).
    rows, columns = tf.unstack(x.indices, num=2, axis=1)  # [nnz] each
    spare = tf.constant(length, tf.int64)
    full = tf.scatter_nd(tf.stack([rows, tf.minimum(columns, spare)], 1), x.values,
                         tf.stack([x.dense_shape[0], spare + 1]))  # [B, length + 1]
    return full[:, :length]  # [B, length]
  if isinstance(x, tf.RaggedTensor):
    return x.to_tensor(shape=[None, length])  # [B, length]
  x = x[:, :length]
  return tf.pad(x, [[0, 0], [0, length - tf.shape(x)[1]]])  # [B, length]


def lifelong_seq_len(custom_config: Dict[str, Any] | None) -> int:
  """The lifelong length Transform pads to, from its ``custom_config`` (checked)."""
  if not custom_config or LIFELONG_SEQ_LEN_CONFIG not in custom_config:
    raise ValueError(f"preprocessing_fn needs custom_config[{LIFELONG_SEQ_LEN_CONFIG!r}] (the "
                     f"lifelong length the model reads); got custom_config={custom_config!r}")
  length = int(custom_config[LIFELONG_SEQ_LEN_CONFIG])
  F.check_sequence_lengths(1, length)
  return length


def preprocessing_fn(inputs: Dict[str, tf.Tensor],
                     custom_config: Dict[str, Any] | None = None) -> Dict[str, tf.Tensor]:
  """tf.Transform callback: raw features -> transformed features.

  Args:
    inputs: raw features; dense [B, L] except the variable-length lifelong fields.
    custom_config: ``{LIFELONG_SEQ_LEN_CONFIG: L}`` (the Transform component's custom_config).
  """
  xf = F.transformed_name
  ll_len = lifelong_seq_len(custom_config)
  inputs = dict(inputs)
  for k in LIFELONG_FIELDS:
    inputs[k] = padded(inputs[k], ll_len)  # [B, L]
  out: Dict[str, tf.Tensor] = {}
  for vocab, keys in SHARED_VOCABS.items():
    for k, v in _shared_vocab_ids(inputs, keys, vocab).items():
      out[xf(k)] = v
  for k in ITEM_FEATURES:
    out[xf(k)] = _hash_items(inputs[k])
  for k in LENGTH_FEATURES:
    out[xf(k)] = tf.cast(inputs[k], tf.int64)
  out[xf(F.ACTIVITY_LEVEL)] = _activity_index(inputs[F.ACTIVITY_LEVEL])
  out[xf(F.HOUR_OF_DAY)] = tf.clip_by_value(inputs[F.HOUR_OF_DAY], 0, 23)
  out[xf(F.SLOT_INDEX)] = tf.clip_by_value(inputs[F.SLOT_INDEX], 0, MAX_SLOT)
  out[xf(F.HOST_FLASH_SALE)] = tf.cast(tf.clip_by_value(inputs[F.HOST_FLASH_SALE], 0, 1),
                                      tf.float32)
  for k in F.HOST_STAT_KEYS:
    out[xf(k)] = tft.scale_to_z_score(tf.math.log1p(inputs[k]))
  for prefix in F.RT_PREFIXES:
    valid = _seq_valid(inputs, prefix, inputs[F.seq_key(prefix, "age_seconds")].shape[-1])
    out[xf(F.seq_key(prefix, "age_seconds"))] = _bucketize(
        inputs[F.seq_key(prefix, "age_seconds")], AGE_SECONDS_BOUNDARIES, valid)
    age_hours = tf.cast(inputs[F.seq_key(prefix, "age_seconds")], tf.float32) / SECONDS_PER_HOUR
    out[xf(F.seq_key(prefix, F.RT_AGE_HOURS))] = tf.where(valid, age_hours,
                                                          tf.zeros_like(age_hours))
    out[xf(F.seq_key(prefix, "stay_buckets"))] = inputs[F.seq_key(prefix, "stay_buckets")]
    since = tf.cast(inputs[F.seq_key(prefix, F.RT_IMPRESSIONS_SINCE)], tf.float32)
    out[xf(F.seq_key(prefix, F.RT_IMPRESSIONS_SINCE))] = tf.where(valid, since,
                                                                  tf.zeros_like(since))
    for flag in F.RT_FLAG_FIELDS:
      values = inputs[F.seq_key(prefix, flag)]  # int64, as every raw int feature
      out[xf(F.seq_key(prefix, flag))] = tf.where(valid, values, tf.zeros_like(values))
  ll_valid = _seq_valid(inputs, F.LL, inputs[F.seq_key(F.LL, "age_days")].shape[-1])
  out[xf(F.seq_key(F.LL, "age_days"))] = _bucketize(inputs[F.seq_key(F.LL, "age_days")],
                                                   AGE_DAYS_BOUNDARIES, ll_valid)
  # Log prices / stay / weight: bounded, and 0 stays 0 on padding.
  for field in F.LL_FLOAT_FIELDS:
    out[xf(F.seq_key(F.LL, field))] = tf.math.log1p(inputs[F.seq_key(F.LL, field)])
  out[xf(F.DISPLAY_PRICES)] = tf.math.log1p(inputs[F.DISPLAY_PRICES])
  # Labels (absent at serving: TFT drops the outputs whose inputs are missing).
  for name, label in F.TRANSFORMED_LABELS.items():
    out[name] = tf.cast(inputs[label], tf.float32)
  out[F.BUY_MASK] = tf.cast(inputs[F.DISPLAY_LEN] > 0, tf.float32)
  return out
