"""gRPC client for the ranking model, using only the official tensorflow-serving-api stubs.

    python -m serving.client --port 8500 --examples_file request.tfrecord
"""

from __future__ import annotations

from typing import Dict, List, Sequence

import grpc
import numpy as np
import tensorflow as tf
from tensorflow_serving.apis import (
  get_model_status_pb2,
  model_service_pb2_grpc,
  predict_pb2,
  prediction_service_pb2_grpc,
)

from models import features as F


def wait_until_available(target: str, model_name: str, timeout: float = 60.0) -> int:
  """Blocks until the server answers GetModelStatus with an AVAILABLE version; returns it."""
  channel = grpc.insecure_channel(target)
  grpc.channel_ready_future(channel).result(timeout=timeout)
  stub = model_service_pb2_grpc.ModelServiceStub(channel)
  req = get_model_status_pb2.GetModelStatusRequest()
  req.model_spec.name = model_name
  resp = stub.GetModelStatus(req, timeout=timeout, wait_for_ready=True)
  return resp.model_version_status[0].version


def predict(target: str, model_name: str, serialized_examples: Sequence[bytes],
            signature_name: str = "serving_default", timeout: float = 30.0
            ) -> Dict[str, np.ndarray]:
  """One Predict call with a batch of serialized tf.Examples; returns every output."""
  with grpc.insecure_channel(target) as channel:
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    req = predict_pb2.PredictRequest()
    req.model_spec.name = model_name
    req.model_spec.signature_name = signature_name
    req.inputs["examples"].CopyFrom(tf.make_tensor_proto(list(serialized_examples),
                                                         dtype=tf.string))
    resp = stub.Predict(req, timeout=timeout)
  return {k: tf.make_ndarray(v) for k, v in resp.outputs.items()}


def candidate_requests(context: tf.train.Example, candidates: Sequence[tf.train.Example]
                       ) -> List[bytes]:
  """One request example per candidate room: the user's context with the room's features.

  Labels are dropped; a serving request never carries them.
  """
  out = []
  for cand in candidates:
    ex = tf.train.Example()
    ex.CopyFrom(context)
    for key in F.LABEL_KEYS:
      del ex.features.feature[key]
    for key in F.HOST_SIDE_FEATURES:
      ex.features.feature[key].CopyFrom(cand.features.feature[key])
    out.append(ex.SerializeToString())
  return out
