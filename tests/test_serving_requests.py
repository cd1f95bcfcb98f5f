"""Strict requests: a real exported ranking model behind the server, bad requests through the
official stubs. Each bad request gets one line naming what is wrong (the feature, what was expected
and what was received) and the right status code; the next good request still succeeds."""

import json

import grpc
import numpy as np
import pytest
import tensorflow as tf
from tensorflow.core.framework import tensor_pb2, types_pb2
from tensorflow.core.protobuf import saved_model_pb2
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

from bench import synthetic_model
from models import features as F
from models import signatures as S
from serving import client
from serving.model_server import ModelServer

RT, LL = 3, 4
MODEL = "ranker"
MAX_BATCH = 50
MAX_BYTES = 1 << 20


def _row(seed: int) -> dict:
  """One raw example with valid values everywhere (ids >= 1 where a sequence is filled)."""
  rng = np.random.default_rng(seed)
  row = {}
  for spec in F.raw_features(RT, LL):
    if spec.dtype == "bytes":
      row[spec.name] = [b"low"]
    elif spec.dtype == "float":
      row[spec.name] = rng.uniform(0, 1, spec.length).round(3).tolist()
    else:
      high = 3 if spec.max_value is None else min(3, int(spec.max_value))  # within the domain
      row[spec.name] = rng.integers(1, high + 1, spec.length).tolist()
  for key, n in ((F.len_key(F.RT_POS), RT), (F.len_key(F.RT_NEG), 1), (F.len_key(F.LL), LL),
                 (F.DISPLAY_LEN, 2), (F.SESSION_HOSTS_LEN_KEY, 2), (F.HOST_FLASH_SALE, 1),
                 (F.HOUR_OF_DAY, 20)):
    row[key] = [n]
  for key in F.LABEL_KEYS:
    row[key] = [1] if key not in F.FLOAT_LABELS else [3.0]
  return row


def _example(row: dict, drop=(), override=None) -> bytes:
  row = dict(row, **(override or {}))
  ex = tf.train.Example()
  for spec in F.serving_raw_features(RT, LL):
    if spec.name in drop:
      continue
    values, feat = row[spec.name], ex.features.feature[spec.name]
    if spec.dtype == "bytes":
      feat.bytes_list.value.extend(values)
    elif spec.dtype == "float" or any(isinstance(v, float) for v in values):
      feat.float_list.value.extend(values)
    else:
      feat.int64_list.value.extend(values)
  return ex.SerializeToString()


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
  """A baseline model trained on nothing, exported with a real Transform graph: its base path."""
  base = tmp_path_factory.mktemp("models")
  synthetic_model.export_model([_row(s) for s in range(4)], RT, LL, str(base / "1"),
                               embedding_dim=4, work_dir=str(tmp_path_factory.mktemp("tft")))
  return base


@pytest.fixture(scope="module")
def target(exported):
  """The exported model, served."""
  server = ModelServer(MODEL, str(exported), port=0, poll_seconds=3600, max_batch_size=MAX_BATCH,
                       max_request_bytes=MAX_BYTES).start()
  yield f"127.0.0.1:{server.port}"
  server.stop()


GOOD = _row(100)


def _request(examples=None, tensor=None, model=MODEL, signature="serving_default", version=None,
             label=None, output_filter=(), input_name="examples"):
  req = predict_pb2.PredictRequest()
  req.model_spec.name = model
  req.model_spec.signature_name = signature
  if version is not None:
    req.model_spec.version.value = version
  if label is not None:
    req.model_spec.version_label = label
  if tensor is None:
    tensor = tf.make_tensor_proto(examples if examples is not None else [_example(GOOD)],
                                  dtype=tf.string)
  req.inputs[input_name].CopyFrom(tensor)
  req.output_filter.extend(output_filter)
  return req


def _context_request(context=None, examples=None, inputs=(S.CONTEXT_INPUT, S.EXAMPLES_INPUT)):
  """A rank_with_context request; by default the good row as context and two rooms."""
  values = {S.CONTEXT_INPUT: context if context is not None else [_example(GOOD)],
            S.EXAMPLES_INPUT: examples if examples is not None else [_example(_row(101)),
                                                                     _example(_row(102))]}
  return client.predict_request(MODEL, {k: values[k] for k in inputs}, S.CONTEXT_SIGNATURE)


def _bad_value(feature, value, fragment=None):
  """A request whose one feature holds a bad value; the error must name the feature."""
  n = next(f.length for f in F.serving_raw_features(RT, LL) if f.name == feature)
  values = [value] + GOOD[feature][1:] if n > 1 else [value]
  return (f"{feature}={value}", _request([_example(GOOD, override={feature: values})]),
          grpc.StatusCode.INVALID_ARGUMENT, [f"feature {feature}: {fragment}"])


INVALID = grpc.StatusCode.INVALID_ARGUMENT
CASES = [
    _bad_value(F.host_stat_key("likes", "10m"), float("nan"), "expected finite values, got"),
    _bad_value(F.DISPLAY_PRICES, float("inf"), "expected finite values, got"),
    _bad_value(F.seq_key(F.LL, "prices"), float("-inf"), "expected finite values"),
    _bad_value(F.host_stat_key("uv", "60m"), -1.0, "expected values >= 0, got -1"),
    _bad_value(F.seq_key(F.LL, "stay_seconds"), -5.0, "expected values >= 0, got -5"),
    _bad_value(F.len_key(F.RT_POS), -1, "expected values >= 0, got -1"),
    _bad_value(F.len_key(F.RT_POS), RT + 1, f"expected values <= {RT}, got {RT + 1}"),
    _bad_value(F.len_key(F.RT_NEG), 99, f"expected values <= {RT}, got 99"),
    _bad_value(F.len_key(F.LL), LL + 1, f"expected values <= {LL}, got {LL + 1}"),
    _bad_value(F.DISPLAY_LEN, F.DISPLAY_TOP_N + 1, f"expected values <= {F.DISPLAY_TOP_N}"),
    _bad_value(F.SESSION_HOSTS_LEN_KEY, -3, "expected values >= 0, got -3"),
    _bad_value(F.HOST_ID, -7, "expected values >= 0, got -7"),
    _bad_value(F.DISPLAY_ITEM_IDS, -2, "expected values >= 0, got -2"),
    _bad_value(F.seq_key(F.LL, "category_ids"), -1, "expected values >= 0"),
    _bad_value(F.HOUR_OF_DAY, 24, "expected values <= 23, got 24"),
    _bad_value(F.seq_key(F.RT_NEG, "stay_buckets"), F.MAX_STAY_BUCKET + 1,
               f"expected values <= {F.MAX_STAY_BUCKET}, got {F.MAX_STAY_BUCKET + 1}"),
    _bad_value(F.HOST_FLASH_SALE, 2, "expected values <= 1, got 2"),
    _bad_value(F.SLOT_INDEX, -1, "expected values >= 0, got -1"),
    _bad_value(F.PROPENSITY, 1.5, "expected values <= 1, got 1.5"),
    _bad_value(F.TIMESTAMP, -100, "expected values >= 0, got -100"),
    ("missing feature", _request([_example(GOOD, drop=(F.HOST_ID,))]), INVALID,
     [f"Feature: {F.HOST_ID} (data type: int64) is required but could not be found"]),
    ("wrong length", _request([_example(GOOD, override={F.DISPLAY_ITEM_IDS: [1, 2]})]), INVALID,
     [f"Key: {F.DISPLAY_ITEM_IDS}", f"Values size: 2 but output shape: [{F.DISPLAY_TOP_N}]"]),
    ("float where int", _request([_example(GOOD, override={F.HOST_ID: [1.5]})]), INVALID,
     [f"Key: {F.HOST_ID}", "Data type: float but expected type: int64"]),
    ("not a tf.Example", _request([b"\x00garbage"]), INVALID, ["rejected the input"]),
    ("input dtype", _request(tensor=tf.make_tensor_proto([1.0, 2.0])), INVALID,
     ["input 'examples' must be string, got float32"]),
    ("unsupported dtype", _request(tensor=tensor_pb2.TensorProto(dtype=types_pb2.DT_COMPLEX64)),
     INVALID, ["must be string, got complex64"]),
    ("input rank", _request(tensor=tf.make_tensor_proto([[b"a"]])), INVALID,
     ["input 'examples' must have shape (None,), got (1, 1)"]),
    ("input name", _request(input_name="rows"), INVALID, ["unexpected ['rows']"]),
    ("signature", _request(signature="rank"), INVALID, ["unknown signature_name 'rank'"]),
    ("output filter", _request(output_filter=["ctr"]), INVALID,
     ["output_filter names unknown outputs ['ctr']"]),
    ("model name", _request(model="other"), grpc.StatusCode.NOT_FOUND, ["model 'other' not found"]),
    ("version", _request(version=7), grpc.StatusCode.NOT_FOUND, ["version 7 of 'ranker'"]),
    ("version label", _request(label="canary"), grpc.StatusCode.NOT_FOUND,
     ["version_label 'canary'"]),
    ("batch size", _request([_example(GOOD)] * (MAX_BATCH + 1)), INVALID,
     [f"batch size {MAX_BATCH + 1}; at most {MAX_BATCH}"]),
    ("request bytes", _request([b"x" * (MAX_BYTES + 10)]), grpc.StatusCode.RESOURCE_EXHAUSTED,
     ["larger than max"]),
    ("context: two contexts", _context_request(context=[_example(GOOD)] * 2), INVALID,
     [f"input '{S.CONTEXT_INPUT}' must have shape (1,), got (2,)"]),
    ("context: no context", _context_request(inputs=(S.EXAMPLES_INPUT,)), INVALID,
     [f"missing ['{S.CONTEXT_INPUT}']"]),
    ("context: user feature missing", _context_request(context=[_example(GOOD, drop=(F.USER_ID,))]),
     INVALID, [f"Feature: {F.USER_ID} (data type: int64) is required"]),
    ("context: room feature missing",
     _context_request(examples=[_example(GOOD, drop=(F.DISPLAY_LEN,))]), INVALID,
     [f"Feature: {F.DISPLAY_LEN} (data type: int64) is required"]),
    ("context: bad lifelong length",
     _context_request(context=[_example(GOOD, override={F.len_key(F.LL): [-1]})]), INVALID,
     [f"feature {F.len_key(F.LL)}: expected values >= 0, got -1"]),
    ("lifelong values fewer than its length",
     _request([_example(GOOD, override={F.seq_key(F.LL, "item_ids"):
                                        GOOD[F.seq_key(F.LL, "item_ids")][:1]})]), INVALID,
     [f"feature {F.seq_key(F.LL, 'item_ids')}: expected as many values as {F.len_key(F.LL)} "
      f"says (at most {LL}), got 1 values where {F.len_key(F.LL)} is {LL}"]),
    ("context: lifelong values more than its length",
     _context_request(context=[_example(GOOD, override={F.seq_key(F.LL, "prices"):
                                                        GOOD[F.seq_key(F.LL, "prices")] + [1.0]})]),
     INVALID, [f"feature {F.seq_key(F.LL, 'prices')}: expected as many values as "
               f"{F.len_key(F.LL)} says", f"got {LL + 1} values"]),
    ("context: NaN room statistic",
     _context_request(examples=[_example(GOOD, override={
         F.host_stat_key("shares", "60m"): [float("nan")]})]), INVALID,
     [f"feature {F.host_stat_key('shares', '60m')}: expected finite values"]),
]


def test_request_checks_are_assert_ops_without_branch_functions(exported):
  """Each check is one Assert op in the signature's function, not ``tf.debugging.Assert``'s
  ``cond`` guard: every guard is an If with two branch functions, which the server instantiated
  on a new version's first run (seconds of a version change)."""
  saved = saved_model_pb2.SavedModel()
  saved.ParseFromString((exported / "1" / "saved_model.pb").read_bytes())
  functions = saved.meta_graphs[0].graph_def.library.function
  nodes = [(f.signature.name, n) for f in functions for n in f.node_def]
  asserts = {n.name.split("/")[-1] for _, n in nodes if n.op == "Assert"}
  declared = F.serving_raw_features(RT, LL)
  float_features = [f.name for f in declared if f.dtype == "float"]
  assert {f"check_finite_{name}" for name in float_features} <= asserts
  assert f"check_min_{F.len_key(F.LL)}" in asserts
  assert [f for f in functions if "check_" in f.signature.name] == []
  assert [n.name for _, n in nodes if n.op in ("If", "StatelessIf") and "check_" in n.name] == []


def test_the_export_carries_a_valid_warm_up_request_for_every_online_signature(exported, target):
  """TF Serving's warm-up file (models.warmup): one request per exported online signature
  (this baseline export: rank_with_context), which the served model answers through the
  official stubs; the batch signatures are left to their first call."""
  from models import warmup
  requests = warmup.read_warmup_requests(str(exported / "1"))
  metadata = client.signature_names(target, MODEL)
  assert S.SERVING_SIGNATURE in metadata and S.TRANSFORM_SIGNATURE in metadata
  assert [r.model_spec.signature_name for r in requests] == [S.CONTEXT_SIGNATURE]
  stub = prediction_service_pb2_grpc.PredictionServiceStub(grpc.insecure_channel(target))
  for request in requests:
    request.model_spec.name = MODEL
    response = stub.Predict(request, timeout=60)
    n = warmup.WARMUP_CANDIDATES
    shapes = {k: [d.size for d in v.tensor_shape.dim] for k, v in response.outputs.items()}
    assert {head: shapes[head] for head in F.HEADS} == {head: [n] for head in F.HEADS}, shapes


def test_warm_up_requests_for_the_batch_signatures_are_valid_too(target):
  """models.warmup still builds a valid request for serving_default and transform_features
  (for a deployment whose live traffic calls them), answered through the official stubs."""
  from models import warmup
  names = [S.SERVING_SIGNATURE, S.TRANSFORM_SIGNATURE]
  stub = prediction_service_pb2_grpc.PredictionServiceStub(grpc.insecure_channel(target))
  n = warmup.WARMUP_CANDIDATES
  for request in warmup.warmup_requests(names, RT, LL):
    request.model_spec.name = MODEL
    response = stub.Predict(request, timeout=60)
    shapes = {k: [d.size for d in v.tensor_shape.dim] for k, v in response.outputs.items()}
    if request.model_spec.signature_name == S.TRANSFORM_SIGNATURE:
      assert shapes and all(shape[0] == n for shape in shapes.values()), shapes
    else:
      assert {head: shapes[head] for head in F.HEADS} == {head: [n] for head in F.HEADS}, shapes


def test_the_table_has_at_least_25_kinds_of_bad_request():
  assert len({name for name, *_ in CASES}) >= 25


@pytest.mark.parametrize("name,request_,code,fragments", CASES, ids=[c[0] for c in CASES])
def test_bad_request_gets_one_clear_line_and_the_server_keeps_serving(target, name, request_,
                                                                       code, fragments):
  stub = prediction_service_pb2_grpc.PredictionServiceStub(grpc.insecure_channel(target))
  with pytest.raises(grpc.RpcError) as err:
    stub.Predict(request_, timeout=60)
  details = err.value.details()
  assert err.value.code() == code, details
  for fragment in fragments:
    assert fragment in details, details
  assert "\n" not in details and "[[" not in details and "Traceback" not in details, details
  good = stub.Predict(_request([_example(GOOD), _example(_row(101))]), timeout=60)
  scores = good.outputs[F.HEAD_EFFECTIVE_VIEW].float_val
  assert len(scores) == 2 and all(0.0 < s < 1.0 for s in scores)


def _rooms(n: int):
  return [tf.train.Example.FromString(_example(_row(200 + i))) for i in range(n)]


def test_context_signature_scores_equal_one_full_example_per_room(target):
  context = tf.train.Example.FromString(_example(GOOD))
  rooms = _rooms(6)
  ranked = client.rank(target, MODEL, client.example_list_with_context(context, rooms))
  full = client.predict(target, MODEL, client.candidate_requests(context, rooms))
  assert set(ranked) == set(full)
  for head in F.HEADS:
    assert ranked[head].shape == (6,)
    np.testing.assert_allclose(ranked[head], full[head], rtol=1e-5, atol=1e-6)
  # Different rooms get different scores (the rooms are not all scored as the first one).
  assert len(set(np.round(ranked[F.HEAD_EFFECTIVE_VIEW], 6))) > 1


def _short_history(row: dict, n: int) -> dict:
  """``row`` with only its ``n`` most recent lifelong purchases: variable-length, no padding."""
  short = {f.name: row[f.name][:n] for f in F.raw_features(RT, LL) if f.variable_length}
  return dict(row, **short, **{F.len_key(F.LL): [n]})


def test_short_and_empty_lifelong_histories_are_served_without_padding(target):
  stub = prediction_service_pb2_grpc.PredictionServiceStub(grpc.insecure_channel(target))
  rows = [_short_history(GOOD, 1), _short_history(GOOD, 0), GOOD]
  served = client.response_outputs(stub.Predict(_request([_example(r) for r in rows]), timeout=60))
  scores = served[F.HEAD_EFFECTIVE_VIEW]
  assert scores.shape == (3,) and len(set(np.round(scores, 6))) == 3  # the history is read
  for row, expected in zip(rows, scores):
    context = tf.train.Example.FromString(_example(row))
    ranked = client.rank(target, MODEL, client.example_list_with_context(context, [context]))
    np.testing.assert_allclose(ranked[F.HEAD_EFFECTIVE_VIEW], [expected], rtol=1e-5)


def test_context_signature_ignores_features_on_the_wrong_side(target):
  """Full examples in both inputs score as the clean ELWC: a room's copy of user features and
  the context's copy of room features are not read."""
  context, rooms = _example(GOOD), [_example(_row(300)), _example(_row(301))]
  stub = prediction_service_pb2_grpc.PredictionServiceStub(grpc.insecure_channel(target))
  full_inputs = client.response_outputs(stub.Predict(_context_request([context], rooms), timeout=60))
  elwc = client.example_list_with_context(tf.train.Example.FromString(context),
                                          [tf.train.Example.FromString(r) for r in rooms])
  clean = client.response_outputs(stub.Predict(client.context_request(MODEL, elwc), timeout=60))
  for head in F.HEADS:
    np.testing.assert_allclose(full_inputs[head], clean[head], rtol=1e-6)


def test_context_signature_with_no_rooms_answers_empty_scores(target):
  out = client.rank(target, MODEL, client.example_list_with_context(
      tf.train.Example.FromString(_example(GOOD)), []))
  assert {k: v.shape for k, v in out.items() if k in F.HEADS} == {h: (0,) for h in F.HEADS}


def test_elwc_puts_user_features_in_the_context_and_room_features_in_the_examples():
  full = tf.train.Example.FromString(_example(GOOD))
  full.features.feature[F.BUY].int64_list.value.append(1)  # a label must never travel
  elwc = client.example_list_with_context(full, [full, full])
  context_keys = set(elwc.context.features.feature)
  assert context_keys == {f.name for f in F.serving_raw_features(RT, LL)} - set(
      F.HOST_SIDE_FEATURES)
  assert len(elwc.examples) == 2
  for room in elwc.examples:
    assert set(room.features.feature) == set(F.HOST_SIDE_FEATURES)
  assert (elwc.context.features.feature[F.len_key(F.LL)].int64_list.value
          == full.features.feature[F.len_key(F.LL)].int64_list.value)
  request = client.context_request(MODEL, elwc)
  assert request.model_spec.signature_name == S.CONTEXT_SIGNATURE
  assert [d.size for d in request.inputs[S.CONTEXT_INPUT].tensor_shape.dim] == [1]
  assert [d.size for d in request.inputs[S.EXAMPLES_INPUT].tensor_shape.dim] == [2]


def test_cli_replays_an_elwc_tfrecord_with_the_scores_of_rank(target, tmp_path, capsys):
  context = tf.train.Example.FromString(_example(GOOD))
  elwc = client.example_list_with_context(context, _rooms(3))
  path = str(tmp_path / "request.elwc.tfrecord")
  client.write_tfrecord(path, [elwc.SerializeToString()] * 2)
  client.main(["--target", target, "--model_name", MODEL, "--elwc_file", path])
  lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
  assert [line["list"] for line in lines] == [0, 0, 0, 1, 1, 1]
  expected = client.rank(target, MODEL, elwc)[F.HEAD_BUY]
  np.testing.assert_allclose([line[F.HEAD_BUY] for line in lines[:3]], expected, rtol=1e-6)
