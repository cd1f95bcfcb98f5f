"""Valid requests made from the feature declarations, and TF Serving's SavedModel warm-up file.

TF Serving replays the PredictionLogs in ``<version>/assets.extra/tf_serving_warmup_requests``
when it loads a version, before the version serves, and fails the load if one of them fails
(TF Serving's "SavedModel Warmup" guide: the records should be representative of the live
traffic). The Trainer writes one request per exported online signature
(:data:`models.signatures.ONLINE_SIGNATURES`), built from :func:`models.features.raw_features`
with every value inside its declared range, so both a real ``tensorflow/serving`` and
``serving.model_server`` run every function of those signatures (nested branches included, which
a rejected dummy input never reaches) before the version answers its first request.
"""

from __future__ import annotations

import os
from typing import Dict, Iterable, List, Sequence

import numpy as np
import tensorflow as tf
from tensorflow_serving.apis import predict_pb2, prediction_log_pb2

from models import features as F
from models import signatures as S

# TF Serving's fixed location and record limit.
WARMUP_FILE = os.path.join("assets.extra", "tf_serving_warmup_requests")
MAX_WARMUP_RECORDS = 1000
ID_RANGE = 40  # ids drawn from [1, ID_RANGE]: small vocabularies, many matches
WARMUP_CANDIDATES = 2


def synthetic_row(seed: int, realtime_len: int, lifelong_len: int) -> Dict[str, list]:
  """One raw example (labels included) with every sequence full and every value inside its
  declared range."""
  rng = np.random.default_rng(seed)
  row = {}
  for spec in F.raw_features(realtime_len, lifelong_len):
    if spec.dtype == "bytes":
      row[spec.name] = [F.ACTIVITY_LEVELS[seed % len(F.ACTIVITY_LEVELS)].encode()]
    elif spec.dtype == "float":
      row[spec.name] = rng.uniform(0, 1 if spec.max_value == 1 else 50, spec.length).tolist()
    else:
      high = int(spec.max_value) if spec.max_value is not None else ID_RANGE
      row[spec.name] = rng.integers(min(1, high), high + 1, spec.length).tolist()
  lengths = {F.len_key(F.RT_POS): realtime_len, F.len_key(F.RT_NEG): realtime_len,
             F.len_key(F.LL): lifelong_len, F.DISPLAY_LEN: F.DISPLAY_TOP_N,
             F.SESSION_HOSTS_LEN_KEY: F.SESSION_HOSTS_LEN}
  row.update({k: [n] for k, n in lengths.items()})
  return row


def to_example(row: Dict[str, list], features: Sequence[F.RawFeature]) -> tf.train.Example:
  """The tf.Example holding ``features`` of a raw row."""
  ex = tf.train.Example()
  for spec in features:
    feature = ex.features.feature[spec.name]
    if spec.dtype == "bytes":
      feature.bytes_list.value.extend(row[spec.name])
    elif spec.dtype == "float":
      feature.float_list.value.extend(row[spec.name])
    else:
      feature.int64_list.value.extend(row[spec.name])
  return ex


def warmup_requests(signature_names: Iterable[str], realtime_len: int,
                    lifelong_len: int) -> List[predict_pb2.PredictRequest]:
  """One valid request per signature of :mod:`models.signatures`: the context signatures get
  one user and :data:`WARMUP_CANDIDATES` rooms, the others that many examples (with labels for
  ``transform_features``, which parses them).

  Raises:
    ValueError: a signature this module does not know how to feed.
  """
  rows = [synthetic_row(seed, realtime_len, lifelong_len) for seed in range(WARMUP_CANDIDATES)]
  serving = [to_example(r, F.serving_raw_features(realtime_len, lifelong_len)).SerializeToString()
             for r in rows]
  # A full example is a valid context and a valid room: each side parses only its keys.
  context_inputs = {S.CONTEXT_INPUT: serving[:1], S.EXAMPLES_INPUT: serving}
  inputs_by_signature = {
      S.SERVING_SIGNATURE: {S.EXAMPLES_INPUT: serving},
      S.CONTEXT_SIGNATURE: context_inputs,
      S.RANK_SIGNATURE: context_inputs,
      S.TRANSFORM_SIGNATURE: {S.EXAMPLES_INPUT: [
          to_example(r, F.raw_features(realtime_len, lifelong_len)).SerializeToString()
          for r in rows]},
  }
  requests = []
  for name in signature_names:
    if name not in inputs_by_signature:
      raise ValueError(f"no warm-up request for signature {name!r}; known: "
                       f"{sorted(inputs_by_signature)}")
    request = predict_pb2.PredictRequest()
    request.model_spec.signature_name = name
    for key, values in inputs_by_signature[name].items():
      request.inputs[key].CopyFrom(tf.make_tensor_proto(values, dtype=tf.string))
    requests.append(request)
  return requests


def write_warmup_requests(export_dir: str,
                          requests: Sequence[predict_pb2.PredictRequest]) -> str:
  """Writes ``requests`` as TF Serving's warm-up file of ``export_dir``; returns its path."""
  if len(requests) > MAX_WARMUP_RECORDS:
    raise ValueError(f"{len(requests)} warm-up requests; TF Serving reads at most "
                     f"{MAX_WARMUP_RECORDS}")
  path = os.path.join(export_dir, WARMUP_FILE)
  tf.io.gfile.makedirs(os.path.dirname(path))
  with tf.io.TFRecordWriter(path) as writer:
    for request in requests:
      log = prediction_log_pb2.PredictionLog(
          predict_log=prediction_log_pb2.PredictLog(request=request))
      writer.write(log.SerializeToString())
  return path


def read_warmup_requests(model_dir: str) -> List[predict_pb2.PredictRequest]:
  """The Predict requests of a version's warm-up file (none when it has no file).

  Raises:
    ValueError: more than :data:`MAX_WARMUP_RECORDS` records, or a record that is not a
      PredictionLog of a Predict request.
  """
  path = os.path.join(model_dir, WARMUP_FILE)
  if not tf.io.gfile.exists(path):
    return []
  requests = []
  for i, record in enumerate(tf.data.TFRecordDataset(path).as_numpy_iterator()):
    if i >= MAX_WARMUP_RECORDS:
      raise ValueError(f"{path} holds more than {MAX_WARMUP_RECORDS} warm-up records")
    log = prediction_log_pb2.PredictionLog.FromString(record)
    if log.WhichOneof("log_type") != "predict_log":
      raise ValueError(f"{path} record {i} is a {log.WhichOneof('log_type')}, not a predict_log")
    requests.append(log.predict_log.request)
  return requests
