"""Finding a local run's outputs through ML Metadata, on a store built by hand."""

import os

import pytest
from ml_metadata import metadata_store
from ml_metadata.proto import metadata_store_pb2 as pb

from pipeline import run_outputs as ro

PIPELINE = "p"
Execution = pb.Execution


def _store(work: str) -> metadata_store.MetadataStore:
  path = ro.metadata_path(work, PIPELINE)
  os.makedirs(os.path.dirname(path))
  config = pb.ConnectionConfig()
  config.sqlite.filename_uri = path
  return metadata_store.MetadataStore(config)


class _Recorder:
  """Writes executions of components with their output artifacts, as TFX records them."""

  def __init__(self, store: metadata_store.MetadataStore):
    self.store = store
    self.artifact_type = store.put_artifact_type(pb.ArtifactType(name="Examples"))
    self.execution_type = store.put_execution_type(pb.ExecutionType(name="Component"))
    self.node_type = store.put_context_type(pb.ContextType(name=ro.NODE_CONTEXT_TYPE))
    self.contexts = {}

  def artifact(self, uri: str) -> pb.Artifact:
    return pb.Artifact(type_id=self.artifact_type, uri=uri, state=pb.Artifact.LIVE)

  def execution(self, component: str, state, outputs):
    """outputs: [(output key, artifact)]; an artifact with an id is reused (a cache hit)."""
    if component not in self.contexts:
      self.contexts[component] = pb.Context(type_id=self.node_type,
                                            name=f"{PIPELINE}.{component}")
    context = self.contexts[component]
    pairs = []
    for key, artifact in outputs:
      event = pb.Event(type=pb.Event.OUTPUT)
      event.path.steps.add().key = key
      event.path.steps.add().index = 0
      pairs.append((artifact, event))
    _, artifact_ids, (context_id,) = self.store.put_execution(
        Execution(type_id=self.execution_type, last_known_state=state), pairs, [context],
        reuse_context_if_already_exist=True)
    context.id = context_id
    for (_, artifact), artifact_id in zip(outputs, artifact_ids):
      artifact.id = artifact_id
    return artifact_ids


def test_the_newest_finished_execution_wins_and_failed_ones_are_skipped(tmp_path):
  work = str(tmp_path)
  rec = _Recorder(_store(work))
  first = rec.artifact("/runs/ExampleGen/examples/1")
  rec.execution(ro.EXAMPLE_GEN, Execution.COMPLETE, [("examples", first)])
  second = rec.artifact("/runs/ExampleGen/examples/2")
  rec.execution(ro.EXAMPLE_GEN, Execution.COMPLETE,
                [("examples", second), ("quarantine", rec.artifact("/runs/q/2"))])
  rec.execution(ro.EXAMPLE_GEN, Execution.FAILED, [("examples", rec.artifact("/runs/x/3"))])
  rec.execution(ro.TRANSFORM, Execution.COMPLETE, [("transform_graph", rec.artifact("/t/4"))])
  store = ro.open_store(ro.metadata_path(work, PIPELINE))
  assert ro.latest_outputs(store, PIPELINE, ro.EXAMPLE_GEN) == {
      "examples": ["/runs/ExampleGen/examples/2"], "quarantine": ["/runs/q/2"]}
  assert ro.latest_outputs(store, PIPELINE, ro.TRANSFORM) == {"transform_graph": ["/t/4"]}
  # A cache hit publishes the earlier run's artifact again: that one is the newest output.
  rec.execution(ro.EXAMPLE_GEN, Execution.CACHED, [("examples", first)])
  assert ro.latest_output_dir(work, PIPELINE, ro.EXAMPLE_GEN, "examples") == (
      "/runs/ExampleGen/examples/1")


def test_what_is_missing_is_named(tmp_path):
  work = str(tmp_path)
  with pytest.raises(FileNotFoundError, match="no ML Metadata store at .*metadata.db"):
    ro.latest_output_dir(work, PIPELINE, ro.EXAMPLE_GEN, "examples")
  rec = _Recorder(_store(work))
  rec.execution(ro.TRANSFORM, Execution.RUNNING, [("transform_graph", rec.artifact("/t/1"))])
  with pytest.raises(FileNotFoundError, match=r"no finished execution of p\.LiveLogExampleGen"):
    ro.latest_output_dir(work, PIPELINE, ro.EXAMPLE_GEN, "examples")
  with pytest.raises(FileNotFoundError, match=r"no finished execution of p\.Transform"):
    ro.latest_output_dir(work, PIPELINE, ro.TRANSFORM, "transform_graph")
  rec.execution(ro.TRANSFORM, Execution.COMPLETE,
                [("transform_graph", rec.artifact("/t/2")), ("transform_graph",
                                                              rec.artifact("/t/3"))])
  with pytest.raises(FileNotFoundError, match=r"no output 'transformed_examples' \(it has "
                                              r"\['transform_graph'\]\)"):
    ro.latest_output_dir(work, PIPELINE, ro.TRANSFORM, "transformed_examples")
  with pytest.raises(ValueError, match="'transform_graph' holds 2 artifacts, expected 1"):
    ro.latest_output_dir(work, PIPELINE, ro.TRANSFORM, "transform_graph")
