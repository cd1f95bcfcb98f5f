"""gRPC client for the ranking model, using only the official tensorflow-serving-api stubs.

    python -m serving.client --target 127.0.0.1:8500 --examples_file requests.tfrecord.gz
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


def without_labels(example: tf.train.Example) -> tf.train.Example:
  """A copy of ``example`` without label features (a serving request never carries them)."""
  out = tf.train.Example()
  out.CopyFrom(example)
  for key in F.LABEL_KEYS:
    if key in out.features.feature:
      del out.features.feature[key]
  return out


def candidate_requests(context: tf.train.Example, candidates: Sequence[tf.train.Example]
                       ) -> List[bytes]:
  """One request example per candidate room: the user's context with the room's features.

  Labels are dropped; a serving request never carries them.
  """
  out = []
  for cand in candidates:
    ex = without_labels(context)
    for key in F.HOST_SIDE_FEATURES:
      ex.features.feature[key].CopyFrom(cand.features.feature[key])
    out.append(ex.SerializeToString())
  return out


def read_tfrecord(path: str) -> List[bytes]:
  """Serialized records of a TFRecord file (gzip-compressed or not, by its extension)."""
  compression = "GZIP" if path.endswith(".gz") else ""
  return [bytes(x.numpy()) for x in tf.data.TFRecordDataset(path, compression_type=compression)]


def main(argv=None) -> None:
  """CLI: score the tf.Examples of a TFRecord file; prints one JSON object per example."""
  import argparse  # pylint: disable=import-outside-toplevel
  import json  # pylint: disable=import-outside-toplevel

  parser = argparse.ArgumentParser(description=__doc__)
  parser.add_argument("--target", default="127.0.0.1:8500", help="host:port of the model server.")
  parser.add_argument("--model_name", default="livestream-ranking")
  parser.add_argument("--examples_file", required=True,
                      help="TFRecord of serialized tf.Examples (labels are dropped before sending).")
  parser.add_argument("--signature_name", default="serving_default")
  args = parser.parse_args(argv)
  examples = [without_labels(tf.train.Example.FromString(raw)).SerializeToString()
              for raw in read_tfrecord(args.examples_file)]
  scores = predict(args.target, args.model_name, examples, args.signature_name)
  for i in range(len(examples)):
    print(json.dumps({k: float(v[i]) for k, v in scores.items()}))


if __name__ == "__main__":
  main()
