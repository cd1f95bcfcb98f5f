"""gRPC client for the ranking model, using only the official tensorflow-serving-api stubs.

    python -m serving.client --target 127.0.0.1:8500 --examples_file requests.tfrecord.gz
    python -m serving.client --target 127.0.0.1:8500 --elwc_file work/demo_request.elwc.tfrecord
"""

from __future__ import annotations

from typing import Callable, Dict, List, Mapping, Sequence

import grpc
import numpy as np
import tensorflow as tf
from tensorflow_serving.apis import (
  get_model_metadata_pb2,
  get_model_status_pb2,
  input_pb2,
  model_service_pb2_grpc,
  predict_pb2,
  prediction_service_pb2_grpc,
)

from models import features as F
from models import signatures as S
from pipeline.configs import PIPELINE_NAME

# The demo's ranking score, sum_h weight_h * score_h: expected engagement plus weighted
# conversion (the closed loop's ``greedy_weighted`` ranks by it too).
RANK_WEIGHTS = {F.HEAD_EFFECTIVE_VIEW: 1.0, F.HEAD_INTERACT: 0.5, F.HEAD_BUY: 2.0}


def wait_until_available(target: str, model_name: str, timeout: float = 60.0) -> int:
  """Blocks until the server answers GetModelStatus with an AVAILABLE version; returns it."""
  channel = grpc.insecure_channel(target)
  grpc.channel_ready_future(channel).result(timeout=timeout)
  stub = model_service_pb2_grpc.ModelServiceStub(channel)
  req = get_model_status_pb2.GetModelStatusRequest()
  req.model_spec.name = model_name
  resp = stub.GetModelStatus(req, timeout=timeout, wait_for_ready=True)
  return resp.model_version_status[0].version


def signature_names(target: str, model_name: str, timeout: float = 30.0) -> List[str]:
  """The served model's signature names (GetModelMetadata's ``signature_def`` field)."""
  req = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
  req.model_spec.name = model_name
  with grpc.insecure_channel(target) as channel:
    resp = prediction_service_pb2_grpc.PredictionServiceStub(channel).GetModelMetadata(
        req, timeout=timeout)
  sig_map = get_model_metadata_pb2.SignatureDefMap()
  resp.metadata["signature_def"].Unpack(sig_map)
  return sorted(sig_map.signature_def)


def predict_request(model_name: str, inputs: Mapping[str, Sequence[bytes]],
                    signature_name: str = S.SERVING_SIGNATURE) -> predict_pb2.PredictRequest:
  """A PredictRequest with one string tensor per signature input (serialized tf.Examples)."""
  req = predict_pb2.PredictRequest()
  req.model_spec.name = model_name
  req.model_spec.signature_name = signature_name
  for name, values in inputs.items():
    req.inputs[name].CopyFrom(tf.make_tensor_proto(list(values), dtype=tf.string))
  return req


def response_outputs(resp: predict_pb2.PredictResponse) -> Dict[str, np.ndarray]:
  return {k: tf.make_ndarray(v) for k, v in resp.outputs.items()}


def _call(target: str, req: predict_pb2.PredictRequest, timeout: float) -> Dict[str, np.ndarray]:
  with grpc.insecure_channel(target) as channel:
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    return response_outputs(stub.Predict(req, timeout=timeout))


def predict(target: str, model_name: str, serialized_examples: Sequence[bytes],
            signature_name: str = S.SERVING_SIGNATURE, timeout: float = 30.0
            ) -> Dict[str, np.ndarray]:
  """One Predict call with a batch of full serialized tf.Examples; returns every output."""
  req = predict_request(model_name, {S.EXAMPLES_INPUT: serialized_examples}, signature_name)
  return _call(target, req, timeout)


def without_labels(example: tf.train.Example) -> tf.train.Example:
  """A copy of ``example`` without label features (a serving request never carries them)."""
  return _only(example, lambda key: key not in F.LABEL_KEYS)


def _only(example: tf.train.Example, keep: Callable[[str], bool]) -> tf.train.Example:
  out = tf.train.Example()
  for key, feature in example.features.feature.items():
    if keep(key):
      out.features.feature[key].CopyFrom(feature)
  return out


def candidate_requests(context: tf.train.Example, candidates: Sequence[tf.train.Example]
                       ) -> List[bytes]:
  """One full request example per candidate room (``serving_default``): the user's context with
  the room's features. Labels are dropped; a serving request never carries them.
  """
  out = []
  for cand in candidates:
    ex = without_labels(context)
    for key in F.HOST_SIDE_FEATURES:
      ex.features.feature[key].CopyFrom(cand.features.feature[key])
    out.append(ex.SerializeToString())
  return out


def example_list_with_context(context: tf.train.Example, candidates: Sequence[tf.train.Example]
                              ) -> input_pb2.ExampleListWithContext:
  """TF Ranking's ELWC for one user and N rooms: the context keeps only the user-side features,
  each candidate only the room-side ones (:data:`models.features.HOST_SIDE_FEATURES`); no labels.
  """
  user_side = lambda key: key not in F.HOST_SIDE_FEATURES and key not in F.LABEL_KEYS  # noqa: E731
  elwc = input_pb2.ExampleListWithContext()
  elwc.context.CopyFrom(_only(context, user_side))
  for cand in candidates:
    elwc.examples.add().CopyFrom(_only(cand, lambda key: key in F.HOST_SIDE_FEATURES))
  return elwc


def context_request(model_name: str, elwc: input_pb2.ExampleListWithContext,
                    signature: str = S.CONTEXT_SIGNATURE) -> predict_pb2.PredictRequest:
  """The PredictRequest of an ELWC for a context signature (``rank_with_context`` or ``rank``):
  ``context`` <- ELWC.context, ``examples`` <- ELWC.examples in order (:mod:`models.signatures`).
  """
  return predict_request(model_name, {
      S.CONTEXT_INPUT: [elwc.context.SerializeToString()],
      S.EXAMPLES_INPUT: [ex.SerializeToString() for ex in elwc.examples]}, signature)


def rank(target: str, model_name: str, elwc: input_pb2.ExampleListWithContext,
         timeout: float = 30.0, signature: str = S.CONTEXT_SIGNATURE) -> Dict[str, np.ndarray]:
  """Ranks an ELWC's rooms for its user: through ``rank_with_context`` output i scores room i;
  through ``rank`` the outputs are the look-ahead's slate (:mod:`models.msc`)."""
  return _call(target, context_request(model_name, elwc, signature), timeout)


def read_tfrecord(path: str) -> List[bytes]:
  """Serialized records of a TFRecord file (gzip-compressed or not, by its extension)."""
  compression = "GZIP" if path.endswith(".gz") else ""
  return [bytes(x.numpy()) for x in tf.data.TFRecordDataset(path, compression_type=compression)]


def write_tfrecord(path: str, records: Sequence[bytes]) -> None:
  """Writes serialized records (gzip-compressed if ``path`` ends in .gz)."""
  options = tf.io.TFRecordOptions(compression_type="GZIP" if path.endswith(".gz") else "")
  with tf.io.TFRecordWriter(path, options) as writer:
    for record in records:
      writer.write(record)


def main(argv=None) -> None:
  """CLI: score full tf.Examples (serving_default) or ELWC lists (rank_with_context).

  Prints one JSON object per scored room; with ``--elwc_file`` each carries its list's index.
  """
  import argparse  # pylint: disable=import-outside-toplevel
  import json  # pylint: disable=import-outside-toplevel

  parser = argparse.ArgumentParser(description=__doc__)
  parser.add_argument("--target", default="127.0.0.1:8500", help="host:port of the model server.")
  parser.add_argument("--model_name", default=PIPELINE_NAME)
  source = parser.add_mutually_exclusive_group(required=True)
  source.add_argument("--examples_file",
                      help="TFRecord of full tf.Examples, one per room (labels are dropped).")
  source.add_argument("--elwc_file",
                      help="TFRecord of serialized ExampleListWithContext (TF Ranking's format): "
                           "one user's context and its candidate rooms per record.")
  args = parser.parse_args(argv)
  if args.examples_file:
    examples = [without_labels(tf.train.Example.FromString(raw)).SerializeToString()
                for raw in read_tfrecord(args.examples_file)]
    scores = predict(args.target, args.model_name, examples)
    for i in range(len(examples)):
      print(json.dumps({k: float(v[i]) for k, v in scores.items()}))
    return
  for list_index, raw in enumerate(read_tfrecord(args.elwc_file)):
    elwc = input_pb2.ExampleListWithContext.FromString(raw)
    scores = rank(args.target, args.model_name, elwc)
    for i in range(len(elwc.examples)):
      print(json.dumps({"list": list_index, **{k: float(v[i]) for k, v in scores.items()}}))


if __name__ == "__main__":
  main()
