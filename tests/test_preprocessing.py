"""preprocessing_fn on three hand-built rows, against hand-computed outputs."""

import functools
import math

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_transform.beam as tft_beam
from tensorflow_transform.tf_metadata import dataset_metadata

from models import features as F
from models import preprocessing as P
from schemas.make_schema import build_schema

RT, LL = 2, 2
xf = F.transformed_name


def _row(**values):
  row = {}
  for spec in F.raw_features(RT, LL):
    if spec.dtype == "bytes":
      default = [b"high"]
    elif spec.variable_length:
      default = []
    else:
      default = [0.0 if spec.dtype == "float" else 0] * spec.length
    row[spec.name] = values.get(spec.name, default)
  return row


ROWS = [
    _row(host_id=[7], session_host_ids=[9] + [0] * 9, rt_pos_host_ids=[7, 5], rt_pos_len=[2],
         rt_pos_age_seconds=[30, 400], rt_pos_impressions_since=[1, 6], rt_pos_liked=[0, 1],
         rt_pos_purchased=[1, 0],
         host_shop_id=[11],
         host_category_ids=[4, 0, 0],
         activity_level=[b"new"], host_uv_10m=[0.0], display_len=[0], trigger_item_id=[0]),
    _row(host_id=[7], rt_neg_age_seconds=[5000, 5000], rt_neg_impressions_since=[4, 4],
         rt_neg_liked=[1, 1], rt_neg_purchased=[1, 1], rt_neg_len=[0], host_shop_id=[11],
         host_category_ids=[4, 6, 0], display_brand_ids=[3, 3, 0, 0, 0, 0], display_len=[2],
         display_prices=[9.0, 99.0, 0, 0, 0, 0], session_category_ids=[4] + [0] * 29,
         activity_level=[b"high"], host_uv_10m=[math.e - 1], trigger_item_id=[123],
         # One lifelong purchase, stored variable-length (no padding).
         ll_len=[1], ll_item_ids=[55], ll_category_ids=[6], ll_brand_ids=[3], ll_shop_ids=[11],
         ll_age_days=[2], ll_prices=[9.0], ll_stay_seconds=[30.0], ll_weights=[1.0]),
    _row(host_id=[9], host_shop_id=[12], host_category_ids=[6, 4, 0], display_len=[1],
         activity_level=[b"vip"], host_uv_10m=[math.e ** 2 - 1], label_effective_view=[1],
         trigger_item_id=[456]),
]


@pytest.fixture(scope="module")
def transformed(tmp_path_factory):
  metadata = dataset_metadata.DatasetMetadata(build_schema(RT, LL))
  with tft_beam.Context(temp_dir=str(tmp_path_factory.mktemp("tft"))):
    (out, _), _ = (ROWS, metadata) | tft_beam.AnalyzeAndTransformDataset(
        functools.partial(P.preprocessing_fn, custom_config={P.LIFELONG_SEQ_LEN_CONFIG: LL}),
        output_record_batches=False)
  return out


def test_shared_host_vocabulary_keeps_padding_zero(transformed):
  # Host 7 occurs 3 times, 9 twice, 5 once -> indices 1, 2, 3 (0 = padding).
  assert [list(r[xf(F.HOST_ID)]) for r in transformed] == [[1], [1], [2]]
  assert list(transformed[0][xf(F.seq_key(F.RT_POS, "host_ids"))]) == [1, 3]
  assert list(transformed[0][xf(F.SESSION_HOSTS)])[:2] == [2, 0]
  assert list(transformed[1][xf(F.seq_key(F.RT_POS, "host_ids"))]) == [0, 0]


def test_an_id_outside_the_vocabulary_maps_to_v_plus_one_and_padding_stays_zero(tmp_path):
  metadata = dataset_metadata.DatasetMetadata(build_schema(RT, LL))
  fn = functools.partial(P.preprocessing_fn, custom_config={P.LIFELONG_SEQ_LEN_CONFIG: LL})
  with tft_beam.Context(temp_dir=str(tmp_path)):
    transform_fn = (ROWS, metadata) | tft_beam.AnalyzeDataset(fn)
    # Hosts 5, 7, 9 (V = 3) and categories 4, 6 (V = 2) were seen; 999 and 77 were not.
    new = [_row(host_id=[999], host_category_ids=[77, 4, 0], rt_pos_host_ids=[7, 0])]
    out, _ = ((new, metadata), transform_fn) | tft_beam.TransformDataset(
        output_record_batches=False)
  (row,) = out
  # The seen ones keep their indices (the most frequent first), and padding stays 0.
  assert list(row[xf(F.HOST_ID)]) == [4]
  assert list(row[xf(F.seq_key(F.RT_POS, "host_ids"))]) == [1, 0]
  assert list(row[xf(F.HOST_CATEGORY_IDS)]) == [3, 1, 0]


def test_other_shared_vocabularies(transformed):
  assert [list(r[xf(F.HOST_SHOP_ID)]) for r in transformed] == [[1], [1], [2]]
  assert [list(r[xf(F.HOST_CATEGORY_IDS)]) for r in transformed] == [[1, 0, 0], [1, 2, 0],
                                                                      [2, 1, 0]]
  assert list(transformed[1][xf(F.DISPLAY_BRAND_IDS)])[:3] == [1, 1, 0]


def test_times_bucketized_only_where_the_sequence_is_valid(transformed):
  # 30 s < 60 -> bucket 1; 400 s in [300, 900) -> bucket 3. Row 1's negatives are padding.
  assert list(transformed[0][xf(F.seq_key(F.RT_POS, "age_seconds"))]) == [1, 3]
  assert list(transformed[1][xf(F.seq_key(F.RT_NEG, "age_seconds"))]) == [0, 0]
  # Ages in hours for the learned decays: exact on valid positions, 0 past the length.
  np.testing.assert_allclose(transformed[0][xf(F.seq_key(F.RT_POS, F.RT_AGE_HOURS))],
                             [30 / 3600, 400 / 3600], rtol=1e-6)
  assert list(transformed[1][xf(F.seq_key(F.RT_NEG, F.RT_AGE_HOURS))]) == [0.0, 0.0]
  # Impressions since each event, as floats for the position decays; 0 past the length.
  assert list(transformed[0][xf(F.seq_key(F.RT_POS, F.RT_IMPRESSIONS_SINCE))]) == [1.0, 6.0]
  assert list(transformed[1][xf(F.seq_key(F.RT_NEG, F.RT_IMPRESSIONS_SINCE))]) == [0.0, 0.0]
  # Liked and purchased flags pass through on valid positions; 0 past the length.
  assert list(transformed[0][xf(F.seq_key(F.RT_POS, F.RT_LIKED))]) == [0, 1]
  assert list(transformed[1][xf(F.seq_key(F.RT_NEG, F.RT_LIKED))]) == [0, 0]
  assert list(transformed[0][xf(F.seq_key(F.RT_POS, F.RT_PURCHASED))]) == [1, 0]
  assert list(transformed[1][xf(F.seq_key(F.RT_NEG, F.RT_PURCHASED))]) == [0, 0]


def test_counts_log_then_z_scored(transformed):
  # log1p -> [0, 1, 2]; mean 1, population std sqrt(2/3).
  got = [float(r[xf(F.host_stat_key("uv", "10m"))][0]) for r in transformed]
  s = math.sqrt(2 / 3)
  np.testing.assert_allclose(got, [-1 / s, 0.0, 1 / s], rtol=1e-5)


def test_activity_items_labels_and_mask(transformed):
  assert [int(r[xf(F.ACTIVITY_LEVEL)][0]) for r in transformed] == [0, 2, 3]
  items = [int(r[xf(F.TRIGGER_ITEM_ID)][0]) for r in transformed]
  assert items[0] == 0 and all(1 <= i < P.ITEM_HASH_BUCKETS for i in items[1:])
  assert items[1] != items[2]
  assert [float(r[F.BUY_MASK]) for r in transformed] == [0.0, 1.0, 1.0]
  assert [float(r[F.HEAD_EFFECTIVE_VIEW]) for r in transformed] == [0.0, 0.0, 1.0]


def test_model_input_spec_equals_what_preprocessing_produces(transformed):
  from models.spec import NON_INPUT_KEYS, ModelSpec
  produced = {k: np.asarray(v) for k, v in transformed[0].items() if k not in NON_INPUT_KEYS}
  spec = ModelSpec.without_transform(5, realtime_len=RT, lifelong_len=LL)
  assert set(spec.feature_shapes) == set(produced)
  assert {k: (v.size if v.ndim else 1) for k, v in produced.items()} == spec.feature_shapes
  inputs = spec.inputs()
  for k, v in produced.items():
    assert inputs[k].dtype.as_numpy_dtype == v.dtype, (k, inputs[k].dtype, v.dtype)


def test_session_categories_share_the_category_vocabulary_and_prices_are_logged(transformed):
  # Row 1's session category 4 gets the same index as host category 4.
  rows = list(ROWS)
  assert rows[0][F.SESSION_CATEGORY_IDS] == [0] * (F.SESSION_HOSTS_LEN * F.HOST_MAX_CATEGORIES)
  assert list(transformed[0][xf(F.SESSION_CATEGORY_IDS)]) == [0] * len(
      rows[0][F.SESSION_CATEGORY_IDS])
  cats = transformed[1][xf(F.HOST_CATEGORY_IDS)]  # [4, 6, 0] -> indices of 4 and 6
  assert transformed[1][xf(F.SESSION_CATEGORY_IDS)][0] == cats[0] > 0
  np.testing.assert_allclose(transformed[1][xf(F.DISPLAY_PRICES)],
                             np.log1p([9.0, 99.0, 0, 0, 0, 0]), rtol=1e-6)


def test_variable_length_lifelong_is_padded_to_the_configured_length(transformed):
  cats = transformed[1][xf(F.HOST_CATEGORY_IDS)]  # [4, 6, 0]: category 6's index is cats[1]
  assert list(transformed[1][xf(F.seq_key(F.LL, "category_ids"))]) == [cats[1], 0]
  assert list(transformed[1][xf(F.seq_key(F.LL, "age_days"))]) == [2, 0]  # [1, 3) -> bucket 2
  np.testing.assert_allclose(transformed[1][xf(F.seq_key(F.LL, "prices"))], [np.log1p(9.0), 0.0],
                             rtol=1e-6)
  assert list(transformed[0][xf(F.seq_key(F.LL, "item_ids"))]) == [0, 0]  # no purchases
  assert list(transformed[1][xf(F.len_key(F.LL))]) == [1]


def test_padded_truncates_and_pads_sparse_ragged_and_dense():
  sparse = tf.sparse.from_dense(tf.constant([[5, 6, 7], [8, 0, 0]], tf.int64))
  np.testing.assert_array_equal(P.padded(sparse, 2), [[5, 6], [8, 0]])
  np.testing.assert_array_equal(P.padded(sparse, 4), [[5, 6, 7, 0], [8, 0, 0, 0]])
  ragged = tf.ragged.constant([[1.5], []])
  np.testing.assert_array_equal(P.padded(ragged, 2), [[1.5, 0.0], [0.0, 0.0]])
  np.testing.assert_array_equal(P.padded(tf.constant([[1, 2, 3]]), 2), [[1, 2]])
  np.testing.assert_array_equal(P.padded(tf.constant([[1]]), 3), [[1, 0, 0]])


def test_padded_sparse_keeps_each_rows_first_values_whatever_overflows():
  # Rows of 4, 0 and 1 floats, read at length 2: the overflow of row 0 must not leak anywhere.
  sparse = tf.SparseTensor([[0, 0], [0, 1], [0, 2], [0, 3], [2, 0]],
                           [1.5, 2.5, 30.0, 40.0, 7.0], [3, 4])
  out = P.padded(sparse, 2)
  np.testing.assert_array_equal(out, [[1.5, 2.5], [0.0, 0.0], [7.0, 0.0]])
  empty = tf.SparseTensor(tf.zeros([0, 2], tf.int64), tf.zeros([0], tf.int64), [2, 0])
  np.testing.assert_array_equal(P.padded(empty, 3), np.zeros([2, 3]))

  @tf.function(input_signature=[tf.SparseTensorSpec([None, None], tf.float32)])
  def traced(x):
    return P.padded(x, 5)

  assert traced.get_concrete_function().structured_outputs.shape.as_list() == [None, 5]


def test_lifelong_length_comes_from_custom_config_and_is_checked():
  assert P.lifelong_seq_len({P.LIFELONG_SEQ_LEN_CONFIG: 1000}) == 1000
  with pytest.raises(ValueError, match="lifelong_seq_len"):
    P.lifelong_seq_len(None)
  with pytest.raises(ValueError, match="got 20000"):
    P.lifelong_seq_len({P.LIFELONG_SEQ_LEN_CONFIG: 20000})
