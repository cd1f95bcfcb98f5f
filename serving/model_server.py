"""A small server that speaks TensorFlow Serving's gRPC protocol over a Pusher output directory.

TF Serving's binary cannot be installed on these machines, so this serves the same layout
(``<model_base_path>/<version>/saved_model.pb``) through the same protocol: PredictionService
(Predict, GetModelMetadata) and ModelService (GetModelStatus). Clients use only the official
``tensorflow-serving-api`` stubs, so they work unchanged against a real ``tensorflow/serving``.

    python -m serving.model_server --model_name livestream-ranking \
        --model_base_path work/serving/livestream-ranking --port 8500
"""

from __future__ import annotations

import os
import threading
from concurrent import futures
from typing import Dict, Tuple

import grpc
import tensorflow as tf
from absl import logging
from tensorflow.core.protobuf import saved_model_pb2
from tensorflow_serving.apis import (
  get_model_metadata_pb2,
  get_model_status_pb2,
  model_pb2,
  model_service_pb2_grpc,
  predict_pb2,
  prediction_service_pb2_grpc,
)

SIGNATURE_DEF_FIELD = "signature_def"
DEFAULT_SIGNATURE = "serving_default"


class RequestError(Exception):
  """A client error: becomes a gRPC status with ``code`` and this message."""

  def __init__(self, code: grpc.StatusCode, message: str):
    super().__init__(message)
    self.code = code


class LoadedModel:
  """One SavedModel version: its callable signatures and their SignatureDef protos."""

  def __init__(self, path: str, version: int):
    self.path, self.version = path, version
    self._loaded = tf.saved_model.load(path)
    self.signatures = dict(self._loaded.signatures)
    proto = saved_model_pb2.SavedModel()
    with tf.io.gfile.GFile(os.path.join(path, "saved_model.pb"), "rb") as f:
      proto.ParseFromString(f.read())
    graph = next(m for m in proto.meta_graphs if "serve" in m.meta_info_def.tags)
    self.signature_defs = dict(graph.signature_def)

  def predict(self, signature_name: str, inputs: Dict[str, tf.Tensor],
              output_filter) -> Dict[str, tf.Tensor]:
    name = signature_name or DEFAULT_SIGNATURE
    if name not in self.signatures:
      raise RequestError(grpc.StatusCode.INVALID_ARGUMENT,
                         f"unknown signature_name {name!r}; available: {sorted(self.signatures)}")
    fn = self.signatures[name]
    expected = fn.structured_input_signature[1]  # {name: TensorSpec}
    missing, extra = set(expected) - set(inputs), set(inputs) - set(expected)
    if missing or extra:
      raise RequestError(grpc.StatusCode.INVALID_ARGUMENT,
                         f"signature {name!r} takes inputs {sorted(expected)}; request has "
                         f"{sorted(inputs)} (missing {sorted(missing)}, unexpected {sorted(extra)})")
    for key, spec in expected.items():
      if inputs[key].dtype != spec.dtype:
        raise RequestError(grpc.StatusCode.INVALID_ARGUMENT,
                           f"input {key!r} must be {spec.dtype.name}, got {inputs[key].dtype.name}")
      if not spec.shape.is_compatible_with(inputs[key].shape):
        raise RequestError(grpc.StatusCode.INVALID_ARGUMENT,
                           f"input {key!r} must have shape {spec.shape}, got {inputs[key].shape}")
    try:
      outputs = fn(**inputs)
    except (tf.errors.InvalidArgumentError, ValueError) as e:
      raise RequestError(grpc.StatusCode.INVALID_ARGUMENT,
                         f"signature {name!r} rejected the input: {getattr(e, 'message', e)}"
                         ) from e
    if output_filter:
      unknown = set(output_filter) - set(outputs)
      if unknown:
        raise RequestError(grpc.StatusCode.INVALID_ARGUMENT,
                           f"output_filter names unknown outputs {sorted(unknown)}; available: "
                           f"{sorted(outputs)}")
      outputs = {k: v for k, v in outputs.items() if k in output_filter}
    return outputs


def _versions(base_path: str) -> Dict[int, str]:
  out = {}
  if tf.io.gfile.isdir(base_path):
    for name in tf.io.gfile.listdir(base_path):
      name = name.rstrip("/")
      path = os.path.join(base_path, name)
      if name.isdigit() and tf.io.gfile.exists(os.path.join(path, "saved_model.pb")):
        out[int(name)] = path
  return out


class ModelManager:
  """Serves the newest version under ``base_path``; ``poll`` picks up newer ones, as TF Serving."""

  def __init__(self, model_name: str, base_path: str):
    self.model_name, self.base_path = model_name, base_path
    self._lock = threading.Lock()
    self._current: LoadedModel | None = None

  def poll(self) -> int | None:
    """Loads the newest version if it is newer than the served one; returns the served version."""
    versions = _versions(self.base_path)
    if versions:
      newest = max(versions)
      if self._current is None or newest > self._current.version:
        model = LoadedModel(versions[newest], newest)  # load outside the lock
        with self._lock:
          self._current = model
        logging.info("serving %s version %d from %s", self.model_name, newest, versions[newest])
    return self._current.version if self._current else None

  def get(self, spec: model_pb2.ModelSpec) -> LoadedModel:
    if spec.name != self.model_name:
      raise RequestError(grpc.StatusCode.NOT_FOUND,
                         f"model {spec.name!r} not found; this server serves {self.model_name!r}")
    with self._lock:
      current = self._current
    if current is None:
      raise RequestError(grpc.StatusCode.UNAVAILABLE,
                         f"no version of {self.model_name!r} loaded yet from {self.base_path}")
    if spec.HasField("version") and spec.version.value != current.version:
      raise RequestError(grpc.StatusCode.NOT_FOUND,
                         f"version {spec.version.value} of {spec.name!r} is not served; "
                         f"serving version {current.version}")
    return current


def _abort_on_error(method):
  def wrapper(self, request, context):
    try:
      return method(self, request, context)
    except RequestError as e:
      context.abort(e.code, str(e))
  wrapper.__name__ = method.__name__
  return wrapper


class PredictionServicer(prediction_service_pb2_grpc.PredictionServiceServicer):

  def __init__(self, manager: ModelManager):
    self._manager = manager

  @_abort_on_error
  def Predict(self, request, context):
    model = self._manager.get(request.model_spec)
    inputs = {}
    for key, proto in request.inputs.items():
      try:
        inputs[key] = tf.constant(tf.make_ndarray(proto))
      except (TypeError, ValueError) as e:
        raise RequestError(grpc.StatusCode.INVALID_ARGUMENT,
                           f"input {key!r} is not a valid TensorProto: {e}") from e
    outputs = model.predict(request.model_spec.signature_name, inputs,
                            list(request.output_filter))
    resp = predict_pb2.PredictResponse()
    resp.model_spec.name = self._manager.model_name
    resp.model_spec.version.value = model.version
    resp.model_spec.signature_name = request.model_spec.signature_name or DEFAULT_SIGNATURE
    for key, value in outputs.items():
      resp.outputs[key].CopyFrom(tf.make_tensor_proto(value.numpy()))
    return resp

  @_abort_on_error
  def GetModelMetadata(self, request, context):
    model = self._manager.get(request.model_spec)
    fields = list(request.metadata_field)
    if fields != [SIGNATURE_DEF_FIELD]:
      raise RequestError(grpc.StatusCode.INVALID_ARGUMENT,
                         f"metadata_field must be ['{SIGNATURE_DEF_FIELD}'], got {fields}")
    resp = get_model_metadata_pb2.GetModelMetadataResponse()
    resp.model_spec.name = self._manager.model_name
    resp.model_spec.version.value = model.version
    sig_map = get_model_metadata_pb2.SignatureDefMap()
    for name, sig in model.signature_defs.items():
      sig_map.signature_def[name].CopyFrom(sig)
    resp.metadata[SIGNATURE_DEF_FIELD].Pack(sig_map)
    return resp


class ModelStatusServicer(model_service_pb2_grpc.ModelServiceServicer):

  def __init__(self, manager: ModelManager):
    self._manager = manager

  @_abort_on_error
  def GetModelStatus(self, request, context):
    model = self._manager.get(request.model_spec)
    resp = get_model_status_pb2.GetModelStatusResponse()
    status = resp.model_version_status.add()
    status.version = model.version
    status.state = get_model_status_pb2.ModelVersionStatus.AVAILABLE
    return resp


class ModelServer:
  """gRPC server + version watcher. ``start()`` binds; ``stop()`` shuts both down."""

  def __init__(self, model_name: str, model_base_path: str, port: int = 8500,
               host: str = "127.0.0.1", poll_seconds: float = 2.0, max_workers: int = 4):
    self.manager = ModelManager(model_name, model_base_path)
    self._server = grpc.server(futures.ThreadPoolExecutor(max_workers=max_workers),
                               options=[("grpc.max_receive_message_length", 64 << 20)])
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(
        PredictionServicer(self.manager), self._server)
    model_service_pb2_grpc.add_ModelServiceServicer_to_server(
        ModelStatusServicer(self.manager), self._server)
    self.port = self._server.add_insecure_port(f"{host}:{port}")
    if self.port == 0:
      raise OSError(f"could not bind {host}:{port}")
    self._poll_seconds = poll_seconds
    self._stop = threading.Event()
    self._watcher = threading.Thread(target=self._watch, daemon=True)

  def _watch(self) -> None:
    while not self._stop.wait(self._poll_seconds):
      try:
        self.manager.poll()
      except Exception:  # noqa: BLE001 - a bad new version must not take the server down
        logging.exception("failed to load a new version from %s", self.manager.base_path)

  def start(self) -> ModelServer:
    self.manager.poll()
    self._server.start()
    self._watcher.start()
    return self

  def stop(self) -> None:
    self._stop.set()
    self._server.stop(grace=None)

  def wait(self) -> None:
    self._server.wait_for_termination()


def address(server: ModelServer) -> Tuple[str, int]:
  return "127.0.0.1", server.port


def main(argv=None) -> None:
  import argparse  # pylint: disable=import-outside-toplevel

  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--model_name", default="livestream-ranking", help="Name clients ask for.")
  parser.add_argument("--model_base_path", required=True,
                      help="Directory holding <version>/ SavedModels.")
  parser.add_argument("--port", type=int, default=8500, help="gRPC port (0 picks a free one).")
  parser.add_argument("--host", default="127.0.0.1", help="Bind address; loopback by default.")
  parser.add_argument("--poll_seconds", type=float, default=2.0,
                      help="How often to look for new versions.")
  args = parser.parse_args(argv)
  logging.set_verbosity(logging.INFO)
  server = ModelServer(args.model_name, args.model_base_path, args.port, args.host,
                       args.poll_seconds).start()
  print(f"serving {args.model_name} version {server.manager.poll()} on {args.host}:{server.port}",
        flush=True)
  server.wait()


if __name__ == "__main__":
  main()
