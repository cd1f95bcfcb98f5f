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
from serving.model_server import ModelServer

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
