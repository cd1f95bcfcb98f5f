"""What a model builder needs to know about its inputs: vocabulary sizes, shapes and dtypes.

In a pipeline all three come from the Transform output (:meth:`ModelSpec.from_transform_output`).
:meth:`ModelSpec.without_transform` builds the same spec without running Transform (tests,
benchmarks on synthetic tensors); a test pins it to what ``preprocessing_fn`` produces.
"""

from __future__ import annotations

import dataclasses
from typing import Dict

import tensorflow as tf

from models import features as F
from models import preprocessing as P

xf = F.transformed_name
NON_INPUT_KEYS = set(F.TRANSFORMED_LABELS) | {F.BUY_MASK}


@dataclasses.dataclass(frozen=True)
class ModelSpec:
  """Input sizes of a ranking model; built from a TFTransformOutput or by hand in tests."""
  vocab_sizes: Dict[str, int]  # shared vocabulary name -> embedding rows (incl. pad and OOV)
  feature_shapes: Dict[str, int]  # transformed model-input name -> last dimension
  feature_dtypes: Dict[str, tf.DType]  # transformed model-input name -> dtype
  embedding_dim: int = 16
  # L2 penalty on every embedding table, added to the batch's mean loss (0: none): keeps rare ids
  # (hashed items, small rooms) from memorising the training days.
  embedding_l2: float = 0.0
  # Rate multiplier of the per-room logit offsets (layers.IdLogitOffset) models add to their
  # heads (0: none).
  room_offset_rate: float = 0.0

  def __post_init__(self):
    if set(self.feature_shapes) != set(self.feature_dtypes):
      raise ValueError("ModelSpec feature_shapes and feature_dtypes name different features: "
                       f"{sorted(set(self.feature_shapes) ^ set(self.feature_dtypes))}")

  @classmethod
  def from_transform_output(cls, tf_transform_output, embedding_dim: int = 16,
                            embedding_l2: float = 0.0,
                            room_offset_rate: float = 0.0) -> ModelSpec:
    """Vocabulary sizes, input shapes and dtypes as this Transform output produces them."""
    spec = {k: s for k, s in tf_transform_output.transformed_feature_spec().items()
            if k not in NON_INPUT_KEYS}
    vocab = {v: P.vocab_size(tf_transform_output, v) for v in P.SHARED_VOCABS}
    return cls(vocab_sizes=vocab,
               feature_shapes={k: int(s.shape[-1]) if s.shape else 1 for k, s in spec.items()},
               feature_dtypes={k: s.dtype for k, s in spec.items()},
               embedding_dim=embedding_dim, embedding_l2=embedding_l2,
               room_offset_rate=room_offset_rate)

  @classmethod
  def without_transform(cls, vocab_size: int, realtime_len: int = F.REALTIME_SEQ_LEN,
                        lifelong_len: int = F.LIFELONG_SEQ_LEN, **kwargs) -> ModelSpec:
    """The spec ``preprocessing_fn`` would give, every shared vocabulary of ``vocab_size`` rows."""
    shapes = transformed_feature_shapes(realtime_len, lifelong_len)
    return cls(vocab_sizes=dict.fromkeys(P.SHARED_VOCABS, vocab_size), feature_shapes=shapes,
               feature_dtypes={k: _expected_dtype(k) for k in shapes}, **kwargs)

  def inputs(self) -> Dict[str, tf.keras.Input]:
    """Keras inputs keyed by transformed feature name."""
    return {k: tf.keras.Input(shape=(n,), name=k, dtype=self.feature_dtypes[k])
            for k, n in sorted(self.feature_shapes.items())}


def _expected_dtype(name: str) -> tf.DType:
  float_keys = ({xf(k) for k in F.HOST_STAT_KEYS} | {xf(F.DISPLAY_PRICES), xf(F.HOST_FLASH_SALE)}
                | {xf(F.seq_key(F.LL, f)) for f in F.LL_FLOAT_FIELDS}
                | {xf(F.seq_key(p, f)) for p in F.RT_PREFIXES
                   for f in (F.RT_AGE_HOURS, F.RT_IMPRESSIONS_SINCE)})
  return tf.float32 if name in float_keys else tf.int64


def transformed_feature_shapes(realtime_len: int = F.REALTIME_SEQ_LEN,
                               lifelong_len: int = F.LIFELONG_SEQ_LEN) -> Dict[str, int]:
  """The transformed model-input shapes preprocessing_fn produces, without running Transform."""
  raw = {f.name: f.length for f in F.serving_raw_features(realtime_len, lifelong_len)}
  keys = [k for ks in P.SHARED_VOCABS.values() for k in ks] + P.ITEM_FEATURES + P.LENGTH_FEATURES
  keys += [F.ACTIVITY_LEVEL, F.HOUR_OF_DAY, F.SLOT_INDEX, F.DISPLAY_PRICES, F.HOST_FLASH_SALE,
           *F.HOST_STAT_KEYS]
  keys += [F.seq_key(p, f) for p in F.RT_PREFIXES
           for f in ("age_seconds", "stay_buckets", F.RT_IMPRESSIONS_SINCE, *F.RT_FLAG_FIELDS)]
  keys += [F.seq_key(F.LL, "age_days")] + [F.seq_key(F.LL, f) for f in F.LL_FLOAT_FIELDS]
  shapes = {xf(k): raw[k] for k in keys}
  shapes.update({xf(F.seq_key(p, F.RT_AGE_HOURS)): raw[F.seq_key(p, "age_seconds")]
                 for p in F.RT_PREFIXES})
  return shapes
