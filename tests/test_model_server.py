"""The TF-Serving-compatible server, exercised only through the official tensorflow-serving-api stubs."""

import json

import grpc
import numpy as np
import pytest
import tensorflow as tf
from tensorflow_serving.apis import (
  get_model_metadata_pb2,
  get_model_status_pb2,
  model_service_pb2_grpc,
  predict_pb2,
  prediction_service_pb2_grpc,
)

from serving import client
from serving.model_server import ModelServer, VersionPolicy

MODEL = "toy"


class _Toy(tf.Module):
  """Reads float feature 'x' from serialized examples; returns x * scale."""

  def __init__(self, scale):
    super().__init__()
    self.scale = tf.constant(scale)

  @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="examples")])
  def serve(self, examples):
    x = tf.io.parse_example(examples, {"x": tf.io.FixedLenFeature([1], tf.float32)})["x"]
    return {"score": tf.reshape(x, [-1]) * self.scale}


class _Slow(tf.Module):
  """Scores x as x, after a loop of x steps (~2.5 µs each here): x = 1e7 runs for ~25 s."""

  @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="examples")])
  def serve(self, examples):
    x = tf.io.parse_example(examples, {"x": tf.io.FixedLenFeature([1], tf.float32)})["x"]
    steps = tf.while_loop(lambda i: i < tf.cast(tf.reduce_max(x), tf.int64), lambda i: i + 1,
                          [tf.constant(0, tf.int64)])
    return {"score": tf.reshape(x, [-1]) + 0.0 * tf.cast(steps, tf.float32)}


def _save(base, version, scale):
  m = _Toy(scale)
  tf.saved_model.save(m, str(base / str(version)), signatures={"serving_default": m.serve})


def _ex(x):
  return tf.train.Example(features=tf.train.Features(feature={
      "x": tf.train.Feature(float_list=tf.train.FloatList(value=[x]))})).SerializeToString()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
  base = tmp_path_factory.mktemp("models")
  _save(base, 1, 2.0)
  srv = ModelServer(MODEL, str(base), port=0, poll_seconds=3600).start()
  yield srv, base, f"127.0.0.1:{srv.port}"
  srv.stop()


def _predict_request(inputs, signature="serving_default", model=MODEL):
  req = predict_pb2.PredictRequest()
  req.model_spec.name = model
  req.model_spec.signature_name = signature
  for k, v in inputs.items():
    req.inputs[k].CopyFrom(v)
  return req


def _stub(target):
  return prediction_service_pb2_grpc.PredictionServiceStub(grpc.insecure_channel(target))


def test_predict_returns_the_models_scores(server):
  _, _, target = server
  assert client.wait_until_available(target, MODEL) == 1
  out = client.predict(target, MODEL, [_ex(1.5), _ex(-2.0)])
  np.testing.assert_allclose(out["score"], [3.0, -4.0])


@pytest.mark.parametrize("inputs,signature,model,code,fragment", [
    ({"wrong_name": tf.make_tensor_proto([b"x"])}, "serving_default", MODEL,
     grpc.StatusCode.INVALID_ARGUMENT, "unexpected ['wrong_name']"),
    ({"examples": tf.make_tensor_proto([1.0, 2.0])}, "serving_default", MODEL,
     grpc.StatusCode.INVALID_ARGUMENT, "input 'examples' must be string, got float32"),
    ({"examples": tf.make_tensor_proto([b"not a tf.Example"])}, "serving_default", MODEL,
     grpc.StatusCode.INVALID_ARGUMENT, "rejected the input"),
    ({"examples": tf.make_tensor_proto([[b"a"]])}, "serving_default", MODEL,
     grpc.StatusCode.INVALID_ARGUMENT, "must have shape"),
    ({"examples": tf.make_tensor_proto([b""])}, "nope", MODEL,
     grpc.StatusCode.INVALID_ARGUMENT, "unknown signature_name 'nope'"),
    ({"examples": tf.make_tensor_proto([b""])}, "serving_default", "other",
     grpc.StatusCode.NOT_FOUND, "model 'other' not found"),
])
def test_bad_requests_get_clear_errors_and_server_keeps_serving(server, inputs, signature, model,
                                                                code, fragment):
  _, _, target = server
  with pytest.raises(grpc.RpcError) as err:
    _stub(target).Predict(_predict_request(inputs, signature, model), timeout=30)
  assert err.value.code() == code
  assert fragment in err.value.details()
  np.testing.assert_allclose(client.predict(target, MODEL, [_ex(1.0)])["score"], [2.0])


def test_metadata_and_status(server):
  _, _, target = server
  channel = grpc.insecure_channel(target)
  req = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
  req.model_spec.name = MODEL
  resp = prediction_service_pb2_grpc.PredictionServiceStub(channel).GetModelMetadata(req)
  sigs = get_model_metadata_pb2.SignatureDefMap()
  resp.metadata["signature_def"].Unpack(sigs)
  assert "examples" in sigs.signature_def["serving_default"].inputs
  assert "score" in sigs.signature_def["serving_default"].outputs
  sreq = get_model_status_pb2.GetModelStatusRequest()
  sreq.model_spec.name = MODEL
  status = model_service_pb2_grpc.ModelServiceStub(channel).GetModelStatus(sreq)
  assert status.model_version_status[0].state == get_model_status_pb2.ModelVersionStatus.AVAILABLE


def test_picks_up_a_newer_version(tmp_path):
  _save(tmp_path, 3, 1.0)
  srv = ModelServer(MODEL, str(tmp_path), port=0, poll_seconds=3600).start()
  try:
    target = f"127.0.0.1:{srv.port}"
    np.testing.assert_allclose(client.predict(target, MODEL, [_ex(2.0)])["score"], [2.0])
    _save(tmp_path, 10, 5.0)  # version 10 > 3 numerically, though "10" < "3" as text
    assert srv.manager.poll() == 10
    np.testing.assert_allclose(client.predict(target, MODEL, [_ex(2.0)])["score"], [10.0])
  finally:
    srv.stop()


def test_client_cli_scores_a_tfrecord_file(server, tmp_path, capsys):
  _, _, target = server
  path = str(tmp_path / "req.tfrecord.gz")
  with tf.io.TFRecordWriter(path, options="GZIP") as w:
    for x in (0.5, 4.0):
      w.write(_ex(x))
  client.main(["--target", target, "--model_name", MODEL, "--examples_file", path])
  lines = capsys.readouterr().out.strip().splitlines()
  assert [json.loads(line)["score"] for line in lines] == [1.0, 8.0]


# --- TF Serving semantics: one conformance test per point, requests through the official stubs.

def _status(target, version=None):
  req = get_model_status_pb2.GetModelStatusRequest()
  req.model_spec.name = MODEL
  if version is not None:
    req.model_spec.version.value = version
  stub = model_service_pb2_grpc.ModelServiceStub(grpc.insecure_channel(target))
  return stub.GetModelStatus(req, timeout=30).model_version_status


def _predict_spec(target, x=1.0, version=None, label=None):
  req = _predict_request({"examples": tf.make_tensor_proto([_ex(x)], dtype=tf.string)})
  if version is not None:
    req.model_spec.version.value = version
  if label is not None:
    req.model_spec.version_label = label
  return _stub(target).Predict(req, timeout=30)


@pytest.fixture()
def serve(tmp_path):
  servers = []

  def start(policy=None, **kwargs):
    srv = ModelServer(MODEL, str(tmp_path), port=0, poll_seconds=3600, policy=policy,
                      **kwargs).start()
    servers.append(srv)
    return srv, f"127.0.0.1:{srv.port}"
  yield start
  for srv in servers:
    srv.stop()


def test_version_policy_latest_n_specific_versions_and_labels(tmp_path, serve):
  for version, scale in ((1, 1.0), (2, 2.0), (3, 3.0)):
    _save(tmp_path, version, scale)
  policy = VersionPolicy(latest=2, labels={"stable": 2, "canary": 3})
  srv, target = serve(policy)
  assert srv.manager.served_versions() == [2, 3]
  assert [s.version for s in _status(target)] == [3, 2]
  resp = _predict_spec(target)  # no version: the newest
  assert resp.model_spec.version.value == 3 and list(resp.outputs["score"].float_val) == [3.0]
  assert _predict_spec(target, version=2).model_spec.version.value == 2
  assert _predict_spec(target, label="stable").model_spec.version.value == 2
  assert _predict_spec(target, label="canary").outputs["score"].float_val[0] == 3.0
  for kwargs, fragment in (({"version": 1}, "version 1 of 'toy' is not served; serving "
                                            "versions [2, 3]"),
                           ({"label": "beta"}, "version_label 'beta' of 'toy' is not defined")):
    with pytest.raises(grpc.RpcError) as err:
      _predict_spec(target, **kwargs)
    assert err.value.code() == grpc.StatusCode.NOT_FOUND and fragment in err.value.details()
  assert VersionPolicy.parse("specific:1,3").select([1, 2, 3, 4]) == {1, 3}
  assert VersionPolicy.parse("all", "stable=2").labels == {"stable": 2}
  with pytest.raises(ValueError, match="bad version policy 'newest:2'"):
    VersionPolicy.parse("newest:2")
  with pytest.raises(ValueError, match="label 'stable' names version 9"):
    VersionPolicy(specific=(1, 2), labels={"stable": 9})


def test_removing_the_newest_version_rolls_back(tmp_path, serve):
  import shutil
  _save(tmp_path, 1, 1.0)
  _save(tmp_path, 2, 2.0)
  srv, target = serve()
  assert [s.version for s in _status(target)] == [2]
  shutil.rmtree(tmp_path / "2")
  assert srv.manager.poll() == 1
  assert [s.version for s in _status(target)] == [1]
  assert _predict_spec(target, x=2.0).outputs["score"].float_val[0] == 2.0


def test_a_rollback_to_a_standby_version_needs_no_reload(tmp_path, serve):
  import os
  import shutil

  from serving.model_server import LoadedModel, ModelManager
  loads = []

  def counting_loader(path, version):
    loads.append(version)
    return LoadedModel(path, version)

  _save(tmp_path, 1, 1.0)
  manager = ModelManager(MODEL, str(tmp_path), loader=counting_loader)
  _, target = serve(manager=manager)
  _save(tmp_path, 2, 2.0)
  assert manager.poll() == 2 and manager.standby_versions() == [1] and loads == [1, 2]
  shutil.rmtree(tmp_path / "2")
  assert manager.poll() == 1 and loads == [1, 2]  # back from standby, not loaded again
  assert [s.version for s in _status(target)] == [1]
  resp = _predict_spec(target, x=3.0)
  assert resp.model_spec.version.value == 1 and resp.outputs["score"].float_val[0] == 3.0
  assert manager.standby_versions() == []  # version 2's directory is gone: not kept
  _save(tmp_path, 2, 2.0)  # a new version 2: loaded; version 1 goes on standby again
  assert manager.poll() == 2 and loads == [1, 2, 2] and manager.standby_versions() == [1]
  # A version rewritten while on standby is a new model: it is loaded again.
  shutil.rmtree(tmp_path / "1")
  _save(tmp_path, 1, 5.0)
  pb = tmp_path / "1" / "saved_model.pb"
  os.utime(pb, ns=(pb.stat().st_atime_ns, pb.stat().st_mtime_ns + 10**9))
  shutil.rmtree(tmp_path / "2")
  assert manager.poll() == 1 and loads == [1, 2, 2, 1]
  assert _predict_spec(target, x=1.0).outputs["score"].float_val[0] == 5.0
  # Without standby (TF Serving's behaviour) every rollback loads.
  plain = ModelManager(MODEL, str(tmp_path), loader=counting_loader, standby_versions=0)
  plain.poll()
  _save(tmp_path, 2, 2.0)
  assert plain.poll() == 2 and plain.standby_versions() == []
  with pytest.raises(ValueError, match="standby_versions must be >= 0, got -1"):
    ModelManager(MODEL, str(tmp_path), standby_versions=-1)


def test_outputs_fill_the_typed_value_fields_as_tf_serving_does(serve, tmp_path):
  _save(tmp_path, 1, 2.0)
  _, target = serve()
  out = _predict_spec(target, x=1.5).outputs["score"]
  assert out.dtype == tf.float32.as_datatype_enum and out.tensor_content == b""
  assert list(out.float_val) == [3.0] and [d.size for d in out.tensor_shape.dim] == [1]
  from serving.model_server import typed_tensor_proto
  for value, field in ((tf.constant([[1, 2]], tf.int64), "int64_val"),
                       (tf.constant([b"a"]), "string_val"), (tf.constant([True]), "bool_val")):
    proto = typed_tensor_proto(value)
    np.testing.assert_array_equal(tf.make_ndarray(proto), value.numpy())
    assert getattr(proto, field) and proto.tensor_content == b""


def test_a_second_server_refuses_a_port_in_use(serve, tmp_path):
  _save(tmp_path, 1, 1.0)
  srv, target = serve()
  with pytest.raises(OSError, match=f"cannot bind 127.0.0.1:{srv.port}: the port is already"):
    ModelServer(MODEL, str(tmp_path), port=srv.port, poll_seconds=3600)
  assert _predict_spec(target).outputs["score"].float_val[0] == 1.0


def test_corrupt_version_is_reported_once_and_retried_with_back_off(tmp_path, caplog):
  from serving.model_server import ModelManager
  _save(tmp_path, 1, 1.0)
  (tmp_path / "2").mkdir()
  (tmp_path / "2" / "saved_model.pb").write_bytes(b"not a SavedModel")
  now = [0.0]
  manager = ModelManager(MODEL, str(tmp_path), VersionPolicy(latest=2), retry_seconds=2.0,
                         clock=lambda: now[0])
  srv = ModelServer(MODEL, str(tmp_path), port=0, poll_seconds=3600, manager=manager).start()
  try:
    target = f"127.0.0.1:{srv.port}"
    assert _predict_spec(target).model_spec.version.value == 1  # still serving the good one
    rows = {s.version: s for s in _status(target)}
    assert rows[2].state == get_model_status_pb2.ModelVersionStatus.END
    message = rows[2].status.error_message
    assert message.startswith("OSError: Cannot parse file") and "saved_model.pb" in message
    assert "\n" not in message and "Traceback" not in message
    assert rows[1].state == get_model_status_pb2.ModelVersionStatus.AVAILABLE
    manager.poll()  # within the back-off: not retried
    assert manager.failures[2].attempts == 1
    now[0] = 2.5  # past the first back-off (2 s): retried, next wait doubled
    manager.poll()
    assert manager.failures[2].attempts == 2 and manager.failures[2].next_try == 2.5 + 4.0
    warnings = [r for r in caplog.records if "failed to load" in r.getMessage()]
    assert len(warnings) == 1 and "version 2" in warnings[0].getMessage()
    _save(tmp_path, 3, 3.0)  # a good newer version still goes live
    assert manager.poll() == 3
  finally:
    srv.stop()


def test_loading_a_new_version_does_not_stall_requests_on_the_served_one(tmp_path, serve):
  import threading

  from serving.model_server import LoadedModel, ModelManager
  _save(tmp_path, 1, 1.0)
  loading, release = threading.Event(), threading.Event()

  def slow_loader(path, version):
    if version == 2:
      loading.set()
      release.wait(60)
    return LoadedModel(path, version)

  manager = ModelManager(MODEL, str(tmp_path), loader=slow_loader)
  srv, target = serve(manager=manager)
  _save(tmp_path, 2, 2.0)
  poller = threading.Thread(target=manager.poll)
  poller.start()
  assert loading.wait(60)
  # Version 2 is mid-load: requests are answered by version 1 meanwhile.
  assert _predict_spec(target).model_spec.version.value == 1
  release.set()
  poller.join(60)
  assert _predict_spec(target).model_spec.version.value == 2


def test_stop_drains_in_flight_requests_within_the_grace_period(tmp_path, serve, monkeypatch):
  import threading

  from serving.model_server import LoadedModel
  _save(tmp_path, 1, 1.0)
  srv, target = serve()
  entered, release = threading.Event(), threading.Event()
  original = LoadedModel.predict

  def held_predict(self, *args):
    entered.set()
    release.wait(60)
    return original(self, *args)

  monkeypatch.setattr(LoadedModel, "predict", held_predict)
  result = {}
  request = threading.Thread(target=lambda: result.update(resp=_predict_spec(target, x=4.0)))
  request.start()
  assert entered.wait(60)
  stopper = threading.Thread(target=srv.stop, kwargs={"grace": 30})
  stopper.start()
  release.set()  # the in-flight request finishes inside the grace period
  request.join(60)
  stopper.join(60)
  assert result["resp"].outputs["score"].float_val[0] == 4.0
  with pytest.raises(grpc.RpcError) as err:  # stopped: new requests are refused
    _predict_spec(target)
  assert err.value.code() == grpc.StatusCode.UNAVAILABLE


def test_a_run_past_the_requests_deadline_is_cancelled_and_frees_its_thread(tmp_path, serve):
  from serving.model_server import LoadedModel, RequestError
  m = _Slow()
  tf.saved_model.save(m, str(tmp_path / "1"), signatures={"serving_default": m.serve})
  slow = _predict_request({"examples": tf.make_tensor_proto([_ex(1e7)], dtype=tf.string)})
  # The run is cancelled at the deadline, with one line saying so.
  with pytest.raises(RequestError) as err:
    LoadedModel(str(tmp_path / "1"), 1).respond(slow, MODEL, 10, timeout=0.2)
  assert err.value.code == grpc.StatusCode.DEADLINE_EXCEEDED
  assert str(err.value) == ("signature 'serving_default' did not finish within the request's "
                            "deadline (0.2 s)")
  # Through the stubs, the client's deadline bounds the run: as many slow requests as the
  # server has threads end at theirs, and the threads answer the next requests (without the
  # deadline they would run each loop to its end, ~25 s, and the status request would time out).
  srv, target = serve(max_workers=2)
  calls = [_stub(target).Predict.future(slow, timeout=1.0) for _ in range(2)]
  for call in calls:
    assert call.exception().code() == grpc.StatusCode.DEADLINE_EXCEEDED
  req = get_model_status_pb2.GetModelStatusRequest()
  req.model_spec.name = MODEL
  status = model_service_pb2_grpc.ModelServiceStub(grpc.insecure_channel(target)).GetModelStatus(
      req, timeout=10)
  assert [s.version for s in status.model_version_status] == [1]
  assert _predict_spec(target, x=3.0).outputs["score"].float_val[0] == 3.0
  # A call without a deadline runs unbounded (gRPC reports its time left as ~9e18 s).
  fast = _predict_request({"examples": tf.make_tensor_proto([_ex(2.0)], dtype=tf.string)})
  assert _stub(target).Predict(fast).outputs["score"].float_val[0] == 2.0


def test_sigterm_and_sigint_stop_the_server_process_cleanly(tmp_path):
  import signal
  import subprocess
  import sys
  _save(tmp_path, 1, 1.0)
  for sig in (signal.SIGTERM, signal.SIGINT):
    proc = subprocess.Popen([sys.executable, "-m", "serving.model_server", "--model_name", MODEL,
                             "--model_base_path", str(tmp_path), "--port", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
      first = proc.stdout.readline()
      assert first.startswith(f"serving {MODEL} versions [1] on 127.0.0.1:"), first
      target = first.split(" on ")[1].strip()
      assert _predict_spec(target).outputs["score"].float_val[0] == 1.0
      proc.send_signal(sig)
      assert proc.wait(timeout=60) == 0
      assert proc.stdout.read().startswith(f"stopped {MODEL}")
    finally:
      proc.kill()


def test_a_version_replays_its_warm_up_file_before_it_serves(tmp_path, serve, caplog):
  from models import warmup
  _save(tmp_path, 1, 2.0)
  good = _predict_request({"examples": tf.make_tensor_proto([_ex(1.0), _ex(2.0)], dtype=tf.string)})
  warmup.write_warmup_requests(str(tmp_path / "1"), [good, good])
  assert [r.model_spec.signature_name for r in warmup.read_warmup_requests(str(tmp_path / "1"))] \
      == ["serving_default", "serving_default"]
  caplog.set_level("INFO", logger="absl")
  _, target = serve()
  np.testing.assert_allclose(client.predict(target, MODEL, [_ex(1.5)])["score"], [3.0])
  replayed = [r.getMessage() for r in caplog.records if "warmed up" in r.getMessage()]
  assert any("'serving_default'" in m and f"2 request(s) from {warmup.WARMUP_FILE}" in m
             for m in replayed), replayed


def test_only_the_signatures_the_warm_up_file_holds_are_warmed_up_as_in_tf_serving(tmp_path,
                                                                                     caplog):
  """With a warm-up file a version replays it and nothing else (the other signatures are left
  to their first call); without one every signature gets a dummy run. Both answer either way."""
  from models import warmup
  from serving.model_server import LoadedModel
  for version in (1, 2):
    m = _Toy(2.0)
    tf.saved_model.save(m, str(tmp_path / str(version)),
                        signatures={"serving_default": m.serve, "batch": m.serve})
  good = _predict_request({"examples": tf.make_tensor_proto([_ex(1.0)], dtype=tf.string)})
  warmup.write_warmup_requests(str(tmp_path / "1"), [good])
  caplog.set_level("INFO", logger="absl")
  inputs = {"examples": tf.make_tensor_proto([_ex(1.5)], dtype=tf.string)}
  for version in (1, 2):
    caplog.clear()
    model = LoadedModel(str(tmp_path / str(version)), version)
    lines = sorted(m for m in (r.getMessage() for r in caplog.records)
                   if "signature" in m and "warmed up" in m)
    if version == 1:
      assert lines == [
          f"version 1 signature 'batch' not warmed up: {warmup.WARMUP_FILE} has no request for it",
          f"version 1 signature 'serving_default' warmed up: 1 request(s) from "
          f"{warmup.WARMUP_FILE}"]
    else:
      assert lines == ["version 2 signature 'batch' warmed up: ran",
                       "version 2 signature 'serving_default' warmed up: ran"]
    for name in ("serving_default", "batch"):
      np.testing.assert_allclose(model.predict(name, inputs, (), 10)["score"], [3.0])


@pytest.mark.parametrize("request_,fragment", [
    (_predict_request({"x": tf.make_tensor_proto([b""])}),
     "warm-up request 0 of signature 'serving_default'"),
    (_predict_request({"examples": tf.make_tensor_proto([b"not a tf.Example"])}),
     "warm-up request 0 of signature 'serving_default'"),
    (_predict_request({"examples": tf.make_tensor_proto([_ex(1.0)], dtype=tf.string)}, "rank"),
     "has requests for signatures ['rank'] the model does not have"),
])
def test_a_failing_warm_up_request_fails_the_load_with_one_line(tmp_path, request_, fragment):
  from models import warmup
  from serving.model_server import ModelManager
  _save(tmp_path, 1, 1.0)
  _save(tmp_path, 2, 2.0)
  warmup.write_warmup_requests(str(tmp_path / "2"), [request_])
  manager = ModelManager(MODEL, str(tmp_path), VersionPolicy(latest=2))
  srv = ModelServer(MODEL, str(tmp_path), port=0, poll_seconds=3600, manager=manager).start()
  try:
    target = f"127.0.0.1:{srv.port}"
    assert _predict_spec(target).model_spec.version.value == 1  # the good one still serves
    message = {s.version: s for s in _status(target)}[2].status.error_message
    assert message.startswith("ValueError: ") and fragment in message, message
    assert "\n" not in message
  finally:
    srv.stop()
