"""Writes the curated raw-example schema from ``models/features.py``.

The checked-in ``schemas/schema.pbtxt`` is this script's output for the default sequence lengths;
ImportSchemaGen reads it, so the schema is reviewed in code, not inferred on every run. Regenerate
after changing features:  python -m schemas.make_schema [--realtime_len N --lifelong_len N]
"""

from __future__ import annotations

import argparse
import hashlib
import os
from typing import Dict

from tensorflow_metadata.proto.v0 import schema_pb2

from models import features as F

SCHEMA_PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "schema.pbtxt")
REGENERATE = "python -m schemas.make_schema --realtime_len {realtime} --lifelong_len {lifelong}"
TRAINING, SERVING = "TRAINING", "SERVING"
_BINARY_LABELS = tuple(k for k in F.LABEL_KEYS if k not in F.FLOAT_LABELS)
# ImportSchemaGen's cache key is its file's path, not the file's content, so an edited schema at
# the same path would be served from the cache (and ExampleValidator would stop the run on every
# new column). Both runners import a copy at a path named by the content: the local runner makes
# it under its work directory, the Dockerfile under BY_CONTENT_DIR (with `cut -c1-16`).
BY_CONTENT_DIR = "by_content"
DIGEST_CHARS = 16


def content_addressed_name(schema_path: str) -> str:
  """``<digest>/<file name>`` of ``schema_path``: the first DIGEST_CHARS hex digits of its
  sha256, so a copy there changes path exactly when the schema changes."""
  with open(schema_path, "rb") as f:
    digest = hashlib.sha256(f.read()).hexdigest()[:DIGEST_CHARS]
  return f"{digest}/{os.path.basename(schema_path)}"


def build_schema(realtime_len: int = F.REALTIME_SEQ_LEN,
                 lifelong_len: int = F.LIFELONG_SEQ_LEN) -> schema_pb2.Schema:
  """The curated schema: shapes (value counts for variable-length features), full presence,
  domains, labels absent at serving."""
  schema = schema_pb2.Schema()
  schema.default_environment.extend([TRAINING, SERVING])
  dtypes = {"int": schema_pb2.INT, "float": schema_pb2.FLOAT, "bytes": schema_pb2.BYTES}
  for spec in F.raw_features(realtime_len, lifelong_len):
    feat = schema.feature.add(name=spec.name, type=dtypes[spec.dtype])
    feat.presence.min_fraction = 1.0
    feat.presence.min_count = 1
    if spec.variable_length:  # parsed as a VarLenFeature; Transform pads it
      feat.value_count.min = 0
      feat.value_count.max = spec.length
    else:
      feat.shape.dim.add(size=spec.length)
    if spec.is_label:
      feat.not_in_environment.append(SERVING)
    if spec.name == F.ACTIVITY_LEVEL:
      feat.domain = F.ACTIVITY_LEVEL
    elif spec.dtype in ("int", "float"):  # the declared range (RawFeature.min/max_value)
      domain = feat.int_domain if spec.dtype == "int" else feat.float_domain
      cast = int if spec.dtype == "int" else float
      if spec.min_value is not None:
        domain.min = cast(spec.min_value)
      if spec.max_value is not None:
        domain.max = cast(spec.max_value)
      if spec.name in _BINARY_LABELS:
        feat.int_domain.is_categorical = True
  schema.string_domain.add(name=F.ACTIVITY_LEVEL, value=list(F.ACTIVITY_LEVELS))
  return schema


def sequence_lengths(schema: schema_pb2.Schema) -> Dict[str, int]:
  """The real-time and lifelong lengths a curated schema declares: the domain maximum of
  ``rt_pos_len`` and ``ll_len`` (what :func:`build_schema` wrote)."""
  domains = {f.name: f.int_domain.max for f in schema.feature if f.HasField("int_domain")}
  missing = [k for k in (F.len_key(F.RT_POS), F.len_key(F.LL)) if k not in domains]
  if missing:
    raise ValueError(f"schema declares no length domain for {missing}; regenerate it with "
                     f"python -m schemas.make_schema")
  return {"realtime_seq_len": int(domains[F.len_key(F.RT_POS)]),
          "lifelong_seq_len": int(domains[F.len_key(F.LL)])}


def check_schema_lengths(schema_path: str, realtime_len: int, lifelong_len: int) -> None:
  """Raises ValueError when the schema file was generated for other sequence lengths."""
  import tensorflow as tf  # pylint: disable=import-outside-toplevel  (gfile: local or gs://)
  from google.protobuf import text_format  # pylint: disable=import-outside-toplevel
  with tf.io.gfile.GFile(schema_path) as f:
    declared = sequence_lengths(text_format.Parse(f.read(), schema_pb2.Schema()))
  wanted = {"realtime_seq_len": realtime_len, "lifelong_seq_len": lifelong_len}
  if declared != wanted:
    raise ValueError(f"schema {schema_path} is for {declared}, the pipeline asks for {wanted}; "
                     f"regenerate it: " + REGENERATE.format(realtime=realtime_len,
                                                            lifelong=lifelong_len)
                     + f" --out {schema_path}")


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__)
  parser.add_argument("--realtime_len", type=int, default=F.REALTIME_SEQ_LEN)
  parser.add_argument("--lifelong_len", type=int, default=F.LIFELONG_SEQ_LEN)
  parser.add_argument("--out", default=SCHEMA_PATH)
  args = parser.parse_args()
  from google.protobuf import text_format  # pylint: disable=import-outside-toplevel
  with open(args.out, "w") as f:
    f.write("# Generated by `python -m schemas.make_schema`; edit features.py, then regenerate.\n")
    f.write(text_format.MessageToString(build_schema(args.realtime_len, args.lifelong_len)))
  print(f"wrote {args.out}")


if __name__ == "__main__":
  main()
