"""Where a local run's outputs are: ML Metadata's record of each component's newest execution.

The pipeline root holds every run's output directories, including those of failed runs and of
runs whose artifacts were never published; their modification times say nothing about which one
a component last produced. ML Metadata does: the newest execution of the component that finished
(or was served from the cache) and the artifacts it output, by output key.
"""

from __future__ import annotations

import os
from typing import Dict, List, Sequence

from ml_metadata import metadata_store
from ml_metadata.proto import metadata_store_pb2

# Component ids, shared by the pipeline (``with_id``) and the readers of its outputs.
EXAMPLE_GEN = "LiveLogExampleGen"
TRANSFORM = "Transform"

# TFX records each component as a context of this type, named "<pipeline>.<component id>".
NODE_CONTEXT_TYPE = "node"
_FINISHED = (metadata_store_pb2.Execution.COMPLETE, metadata_store_pb2.Execution.CACHED)


def metadata_path(work: str, pipeline_name: str) -> str:
  """The SQLite ML Metadata store of the local runs under ``work``."""
  return os.path.join(work, "tfx", "metadata", pipeline_name, "metadata.db")


def open_store(path: str) -> metadata_store.MetadataStore:
  """A read-only connection to the SQLite store at ``path``.

  Raises:
    FileNotFoundError: there is no store at ``path`` (no local run yet).
  """
  if not os.path.isfile(path):
    raise FileNotFoundError(f"no ML Metadata store at {path}: run the pipeline first")
  config = metadata_store_pb2.ConnectionConfig()
  config.sqlite.filename_uri = path
  config.sqlite.connection_mode = metadata_store_pb2.SqliteMetadataSourceConfig.READONLY
  return metadata_store.MetadataStore(config)


def latest_outputs(store: metadata_store.MetadataStore, pipeline_name: str,
                   component_id: str) -> Dict[str, List[str]]:
  """The output URIs of the component's newest finished execution, by output key.

  Args:
    store: an ML Metadata store (``open_store``).
    pipeline_name: the pipeline's name.
    component_id: the component's id in the pipeline (e.g. :data:`EXAMPLE_GEN`).

  Returns:
    ``{output key: [uri, ...]}`` of the newest execution (by creation time, then id) that
    completed or was served from the cache; failed and running executions are skipped.

  Raises:
    FileNotFoundError: the component never finished in this store.
  """
  node = f"{pipeline_name}.{component_id}"
  context = store.get_context_by_type_and_name(NODE_CONTEXT_TYPE, node)
  executions = ([e for e in store.get_executions_by_context(context.id)
                 if e.last_known_state in _FINISHED] if context else [])
  if not executions:
    raise FileNotFoundError(f"no finished execution of {node} in ML Metadata")
  newest = max(executions, key=lambda e: (e.create_time_since_epoch, e.id))
  events = [ev for ev in store.get_events_by_execution_ids([newest.id])
            if ev.type == metadata_store_pb2.Event.OUTPUT]
  uris = {a.id: a.uri for a in store.get_artifacts_by_id([ev.artifact_id for ev in events])}
  out: Dict[str, List[str]] = {}
  for ev in events:
    key = next(step.key for step in ev.path.steps if step.HasField("key"))
    out.setdefault(key, []).append(uris[ev.artifact_id])
  return out


def latest_output_dirs(work: str, pipeline_name: str, component_id: str,
                       output_keys: Sequence[str]) -> Dict[str, str]:
  """The one artifact URI per output key that the component's newest finished execution wrote.

  All keys come from the same execution (e.g. Transform's graph and the examples it made).

  Raises:
    FileNotFoundError: no store, no finished execution, or no such output.
    ValueError: an output holds more than one artifact.
  """
  outputs = latest_outputs(open_store(metadata_path(work, pipeline_name)), pipeline_name,
                           component_id)
  out = {}
  for key in output_keys:
    if key not in outputs:
      raise FileNotFoundError(f"{pipeline_name}.{component_id}'s newest execution has no output "
                              f"{key!r} (it has {sorted(outputs)})")
    if len(outputs[key]) != 1:
      raise ValueError(f"{pipeline_name}.{component_id} output {key!r} holds "
                       f"{len(outputs[key])} artifacts, expected 1")
    out[key] = outputs[key][0]
  return out


def latest_output_dir(work: str, pipeline_name: str, component_id: str, output_key: str) -> str:
  """:func:`latest_output_dirs` for one output key."""
  return latest_output_dirs(work, pipeline_name, component_id, [output_key])[output_key]
