"""AnomalyGate: stops the run when ExampleValidator found schema anomalies in any split.

TFX 1.16's ExampleValidator records anomalies and a per-split ``blessed`` property but does not
stop the pipeline; Transform runs after this gate, so anomalous data never reaches training.
"""


import os
from typing import List

import tensorflow as tf
from absl import logging
from tensorflow_metadata.proto.v0 import anomalies_pb2
from tfx import v1 as tfx
from tfx.types import artifact_utils

ANOMALIES_FILE = "SchemaDiff.pb"


def anomaly_descriptions(anomalies_uri: str, split: str) -> List[str]:
  """'feature: short description' for every anomaly of one split."""
  path = os.path.join(anomalies_uri, f"Split-{split}", ANOMALIES_FILE)
  proto = anomalies_pb2.Anomalies()
  proto.ParseFromString(tf.io.gfile.GFile(path, "rb").read())
  return [f"{name}: {info.short_description} ({info.description})"
          for name, info in sorted(proto.anomaly_info.items())]


@tfx.dsl.components.component
def AnomalyGate(anomalies: tfx.dsl.components.InputArtifact[
    tfx.types.standard_artifacts.ExampleAnomalies]) -> None:
  """Raises with the list of anomalies if any split has them."""
  problems = []
  splits = artifact_utils.decode_split_names(anomalies.split_names)
  for split in splits:
    found = anomaly_descriptions(anomalies.uri, split)
    problems += [f"[{split}] {d}" for d in found]
  if problems:
    raise RuntimeError("ExampleValidator found schema anomalies; stopping before Transform:\n  "
                       + "\n  ".join(problems))
  logging.info("AnomalyGate: no schema anomalies in %s", ", ".join(splits))
