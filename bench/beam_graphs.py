"""The Beam graphs ``bench/beam_scaling.py`` runs under each runner, and readers of their outputs.

A module of its own (not the benchmark's ``__main__``) so that the multi-processing and Dask
workers unpickle its functions by reference.

- ``examplegen_graph``: the LiveLogExampleGen's own graph (``Executor.GenerateExamplesByBeam``)
  and TFX's ``WriteSplit``, as the component runs it.
- ``stage_graph``: that graph up to its first side input (read, parse, dedupe of the reference
  tables), built from the same functions with tagged outputs routed as (tag, value) pairs: the
  part of the ExampleGen the DaskRunner of Beam 2.59 can run (``DASK_LIMITS``).
- ``statistics_graph`` / ``transform_graph``: the StatisticsGen's and the Transform's work.

``dask_census`` lists what in a graph the DaskRunner cannot run, without running it.
"""

from __future__ import annotations

import collections
import functools
import os
import zlib
from typing import Any, Callable, Dict, List, Sequence

import apache_beam as beam
import tensorflow as tf
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions
from apache_beam.pipeline import PipelineVisitor
from tfx.types import standard_component_specs as sc

from components.live_example_gen import beam_transforms as bt
from components.live_example_gen import executor as ex
from components.live_example_gen import records as r
from models import features as F

SPLIT_DIR = "Split-{}"  # TFX's split directory names
MAIN = "main"  # the tag of a DoFn's main output in ``as_tagged``'s pairs
STAGE_SHARDS = 4

# What the DaskRunner of Beam 2.59 (with dask/distributed 2024.8.0) cannot do, found here; the
# bench works around the first two (they stop every pipeline) and records the rest as failures.
DASK_LIMITS = [
    "--runner=...DaskRunner in the options (how beam_presets' `dask` preset and TFX's "
    "beam_pipeline_args name it) fails before any work: DaskRunner.run_pipeline passes every "
    "non-default option to distributed.Client, so `ValueError: Unexpected keyword arguments: "
    "['runner']`. Worked around here by passing DaskRunner() as an object and the other options "
    "as flags; TFX builds its beam.Pipeline from the flags alone, so the `dask` preset cannot "
    "run a TFX component on Beam 2.59.",
    "DaskRunnerResult.wait_until_finish calls client.wait_for_workers() without n_workers, which "
    "distributed 2024.8 requires (dask/distributed PR 8192): `TypeError: "
    "Client.wait_for_workers() missing 1 required positional argument: 'n_workers'`. Worked "
    "around by doing the rest of it here: gather every future, errors raised.",
    "Side inputs are not materialised: the DoFn gets Beam's ArgumentPlaceholder, so the "
    "ExampleGen fails at its first side input, CheckRefs (AsDict of the reference tables): "
    "`TypeError: argument of type 'ArgumentPlaceholder' is not iterable`. CombineGlobally with "
    "a default and the file sinks' finalize fail the same way (both read side inputs).",
    "Tagged outputs are not split: every consumer of a ParDo's outputs gets all of them, main "
    "values and TaggedOutput wrappers alike (silently wrong, no error).",
    "DoFn.setup/start_bundle/finish_bundle are never called (process only), so DoFns that "
    "prepare state there (file sinks, TFDV, tf.Transform) fail or misbehave.",
    "A Flatten of a single PCollection fails while the pipeline is translated: "
    "`TypeError: 'PCollection' object is not iterable`.",
    "Only Create, ParDo/Map, GroupByKey and Flatten are translated. A beam.io Read (TFXIO's "
    "TFRecord read under StatisticsGen and Transform; TFXIO's one-pattern read also has a "
    "single-input Flatten, which fails first) becomes no bag: `AttributeError: 'NoneType' "
    "object has no attribute 'map'` at the next ParDo. Reshuffle is a no-op, so a log file read "
    "by one task stays one partition (parallel only across files and after a GroupByKey).",
    "Every intermediate PCollection is computed as a Dask bag and gathered to the client "
    "(client.compute of all bags), so the client holds every stage's data.",
]


# --- Pipelines -------------------------------------------------------------------------------------
def make_pipeline(args: Sequence[str]) -> beam.Pipeline:
  """A beam.Pipeline for a preset's arguments (``bp.beam_args``).

  The DaskRunner is passed as an object, without its ``--runner`` flag: given as a flag, Beam
  2.59's DaskRunner hands it to ``distributed.Client`` (``DASK_LIMITS``).
  """
  runner = PipelineOptions(list(args)).view_as(StandardOptions).runner or ""
  if runner.endswith("DaskRunner"):
    from apache_beam.runners.dask import dask_runner  # pylint: disable=import-outside-toplevel
    rest = [a for a in args if not a.startswith("--runner=")]
    return beam.Pipeline(runner=dask_runner.DaskRunner(), options=PipelineOptions(rest))
  return beam.Pipeline(options=PipelineOptions(list(args)))


def run_pipeline(pipeline: beam.Pipeline, timeout_s: float | None = None) -> None:
  """Runs ``pipeline`` to the end; raises its error.

  A DaskRunner result is waited on through its futures (its own ``wait_until_finish`` fails on
  distributed 2024.8: ``DASK_LIMITS``) and its client closed, so rounds do not pile up clients.
  """
  try:
    result = pipeline.run()
  except Exception:
    if type(pipeline.runner).__name__ == "DaskRunner":
      _close_current_dask_client()
    raise
  client = getattr(result, "client", None)
  if client is None:
    result.wait_until_finish()
    return
  from dask import distributed  # pylint: disable=import-outside-toplevel
  try:
    # What wait_until_finish does after its broken wait_for_workers call: gather every bag's
    # result (errors raised here); waiting first bounds the time.
    distributed.wait(result.futures, timeout=timeout_s)
    client.gather(result.futures, errors="raise")
  finally:
    client.cancel(result.futures)  # after a timeout: release what still runs or waits
    client.close()


def _close_current_dask_client() -> None:
  # The DaskRunner opens its Client before it translates the graph; a graph that fails to
  # translate leaves that client open (and reconnecting, noisily, once the cluster is gone).
  from dask import distributed  # pylint: disable=import-outside-toplevel
  try:
    distributed.Client.current().close()
  except ValueError:  # no client
    pass


def as_tagged(element, fn: Callable, *args):
  """``fn(element, *args)``'s outputs as (tag, value) pairs; a main output is (``MAIN``, value).

  The DaskRunner sends all of a ParDo's outputs, TaggedOutput wrappers included, to each of its
  consumers; plain pairs filtered by tag route the same on every runner.
  """
  for out in fn(element, *args) or ():
    if isinstance(out, beam.pvalue.TaggedOutput):
      yield out.tag, out.value
    else:
      yield MAIN, out


def _route(tagged: beam.PCollection, tag: str, label: str) -> beam.PCollection:
  return tagged | label >> beam.FlatMap(lambda tv, t=tag: [tv[1]] if tv[0] == t else [])


def _write_shard(shard_and_lines, out_dir: str) -> None:
  shard, lines = shard_and_lines
  tf.io.gfile.makedirs(out_dir)
  with tf.io.gfile.GFile(os.path.join(out_dir, f"part-{shard:05d}.txt"), "w") as f:
    f.write("".join(line + "\n" for line in sorted(lines)))


@beam.ptransform_fn
def WriteLines(lines: beam.PCollection, out_dir: str, shards: int = STAGE_SHARDS):
  """Text lines -> ``shards`` sorted files, keyed by a stable hash (Create/Map/GroupByKey only)."""
  return (lines
          | "Shard" >> beam.Map(lambda s, n=shards: (zlib.crc32(s.encode()) % n, s))
          | "GroupShards" >> beam.GroupByKey()
          | "Write" >> beam.Map(_write_shard, out_dir))


def read_lines(out_dir: str) -> List[str]:
  """Every line ``WriteLines`` wrote under ``out_dir``."""
  lines: List[str] = []
  for path in sorted(tf.io.gfile.glob(os.path.join(out_dir, "part-*.txt"))):
    with tf.io.gfile.GFile(path) as f:
      lines += f.read().splitlines()
  return lines


def _exec_properties(logs: str, quarantine_dir: str) -> Dict[str, Any]:
  # What the pipeline gives the LiveLogExampleGen (pipeline/pipeline.py's defaults).
  return {sc.INPUT_BASE_KEY: logs, ex.REALTIME_SEQ_LEN_KEY: F.REALTIME_SEQ_LEN,
          ex.LIFELONG_SEQ_LEN_KEY: F.LIFELONG_SEQ_LEN, ex.EVAL_DAYS_KEY: 1,
          ex.QUARANTINE_DIR_KEY: quarantine_dir}


def examplegen_graph(pipeline: beam.Pipeline, logs: str, out_dir: str) -> None:
  """The ExampleGen component's Beam graph: ``GenerateExamplesByBeam`` then TFX's WriteSplit."""
  from tfx.components.example_gen import write_split  # pylint: disable=import-outside-toplevel
  splits = ex.Executor().GenerateExamplesByBeam(
      pipeline, _exec_properties(logs, os.path.join(out_dir, "quarantine")))
  for split, examples in splits.items():
    _ = examples | f"WriteSplit[{split}]" >> write_split.WriteSplit(
        os.path.join(out_dir, "examples", SPLIT_DIR.format(split)), "")


def read_examples(examples_dir: str) -> Dict[str, List[bytes]]:
  """split -> serialized tf.Examples of a ``examplegen_graph`` run (gzipped TFRecords)."""
  out = {}
  for split in bt.SPLIT_NAMES:
    files = sorted(tf.io.gfile.glob(os.path.join(examples_dir, SPLIT_DIR.format(split), "*")))
    out[split] = [x.numpy() for x in tf.data.TFRecordDataset(files, compression_type="GZIP")]
  return out


def _stage_line(what: str, kind: str, p: r.Parsed) -> str:
  return f"{what}\t{kind}\t{p.line.where}\t{r.canonical(p.rec)}"


def stage_graph(pipeline: beam.Pipeline, logs: str, out_dir: str) -> None:
  """The ExampleGen's graph up to its first side input: read, parse, dedupe the reference tables.

  Built from the ExampleGen's own functions (``read_logs``, the parse DoFn, ``_dedupe_group``),
  with their tagged outputs routed by ``as_tagged``. Writes one line per input line: ``kept``
  (a reference table's deduplicated record), ``parsed`` (a fact record, deduplicated later
  in the real graph) or ``quarantined`` (the BadRecord's JSON).
  """
  windows = ex.time_windows({sc.INPUT_BASE_KEY: logs})
  lines = ex.read_logs(pipeline, ex.log_paths(logs))
  parse = bt._ParseFn(windows)  # pylint: disable=protected-access
  outputs = []
  for kind in r.LOG_KINDS:
    parsed = lines[kind] | f"Parse[{kind}]" >> beam.FlatMap(as_tagged, parse.process)
    bad = [_route(parsed, bt._BAD, f"ParseBad[{kind}]")]  # pylint: disable=protected-access
    good = _route(parsed, MAIN, f"ParseGood[{kind}]")
    if kind in r.REFERENCE_KINDS:
      deduped = (good
                 | f"KeyId[{kind}]" >> beam.Map(lambda p, k=kind: (r.identity(k, p.rec), p))
                 | f"GroupId[{kind}]" >> beam.GroupByKey()
                 | f"Dedupe[{kind}]" >> beam.FlatMap(
                     as_tagged, bt._dedupe_group, kind))  # pylint: disable=protected-access
      bad.append(_route(deduped, bt._BAD, f"DedupeBad[{kind}]"))  # pylint: disable=protected-access
      good, what = _route(deduped, MAIN, f"DedupeGood[{kind}]"), "kept"
    else:
      what = "parsed"
    outputs.append(good | f"GoodLine[{kind}]" >> beam.Map(
        lambda p, w=what, k=kind: _stage_line(w, k, p)))
    outputs += [b | f"BadLine[{kind}/{i}]" >> beam.Map(lambda b: f"quarantined\t{b.to_json()}")
                for i, b in enumerate(bad)]
  _ = outputs | "AllLines" >> beam.Flatten() | "WriteLines" >> WriteLines(out_dir)


def statistics_graph(pipeline: beam.Pipeline, examples_dir: str, out_dir: str) -> None:
  """The StatisticsGen's graph per split: TFXIO read, GenerateStatistics, the binary stats file."""
  import tensorflow_data_validation as tfdv  # pylint: disable=import-outside-toplevel
  from tfx_bsl.public import tfxio  # pylint: disable=import-outside-toplevel
  for split in bt.SPLIT_NAMES:
    source = tfxio.TFExampleRecord(
        os.path.join(examples_dir, SPLIT_DIR.format(split), "*"),
        telemetry_descriptors=["bench", "beam_scaling"])  # no schema, as the pipeline's
    _ = (pipeline
         | f"TFXIORead[{split}]" >> source.BeamSource()
         | f"GenerateStatistics[{split}]" >> tfdv.GenerateStatistics(tfdv.StatsOptions())
         | f"WriteStats[{split}]" >> tfdv.WriteStatisticsToBinaryFile(
             os.path.join(out_dir, split, "FeatureStats.pb")))


def read_statistics_counts(out_dir: str) -> Dict[str, int]:
  """split -> the example count in a ``statistics_graph`` run's statistics."""
  import tensorflow_data_validation as tfdv  # pylint: disable=import-outside-toplevel
  return {split: int(tfdv.load_stats_binary(
      os.path.join(out_dir, split, "FeatureStats.pb")).datasets[0].num_examples)
          for split in bt.SPLIT_NAMES}


def _load_schema(path: str):
  from google.protobuf import text_format  # pylint: disable=import-outside-toplevel
  from tensorflow_metadata.proto.v0 import schema_pb2  # pylint: disable=import-outside-toplevel
  with tf.io.gfile.GFile(path) as f:
    return text_format.Parse(f.read(), schema_pb2.Schema())


def transform_graph(pipeline: beam.Pipeline, examples_dir: str, out_dir: str,
                    schema_path: str) -> None:
  """The Transform component's work: analyze + transform train, transform eval, write both.

  ``preprocessing_fn`` gets the lifelong length through ``custom_config`` as the pipeline's
  Transform passes it; outputs are encoded and written by the component's own transform.
  Call inside ``tft_beam.Context``.
  """
  import tensorflow_transform.beam as tft_beam  # pylint: disable=import-outside-toplevel
  from tfx.components.transform import labels  # pylint: disable=import-outside-toplevel
  from tfx.components.transform.executor import (  # pylint: disable=import-outside-toplevel
      TransformProcessor,
  )
  from tfx_bsl.public import tfxio  # pylint: disable=import-outside-toplevel

  from models import preprocessing as P  # pylint: disable=import-outside-toplevel
  schema = _load_schema(schema_path)
  fn = functools.partial(P.preprocessing_fn,
                         custom_config={P.LIFELONG_SEQ_LEN_CONFIG: F.LIFELONG_SEQ_LEN})
  sources = {split: tfxio.TFExampleRecord(
      os.path.join(examples_dir, SPLIT_DIR.format(split), "*"), schema=schema,
      telemetry_descriptors=["bench", "beam_scaling"]) for split in bt.SPLIT_NAMES}
  train = pipeline | "ReadTrain" >> sources[bt.TRAIN_SPLIT].BeamSource()
  (train_out, metadata), transform_fn = (
      (train, sources[bt.TRAIN_SPLIT].TensorAdapterConfig())
      | "AnalyzeAndTransform" >> tft_beam.AnalyzeAndTransformDataset(
          fn, output_record_batches=True))
  evals = pipeline | "ReadEval" >> sources[bt.EVAL_SPLIT].BeamSource()
  eval_out, _ = (((evals, sources[bt.EVAL_SPLIT].TensorAdapterConfig()), transform_fn)
                 | "TransformEval" >> tft_beam.TransformDataset(output_record_batches=True))
  for split, data in ((bt.TRAIN_SPLIT, train_out), (bt.EVAL_SPLIT, eval_out)):
    _ = data | f"EncodeAndWrite[{split}]" >> TransformProcessor._EncodeAndWrite(  # pylint: disable=protected-access
        metadata.schema, labels.FORMAT_TFRECORD,
        os.path.join(out_dir, "transformed", SPLIT_DIR.format(split), "transformed_examples"))
  _ = transform_fn | "WriteTransformFn" >> tft_beam.WriteTransformFn(
      os.path.join(out_dir, "transform_graph"))


def count_records(pattern: str) -> int:
  """Records in the gzipped TFRecord files matching ``pattern``."""
  files = tf.io.gfile.glob(pattern)
  return int(sum(1 for _ in tf.data.TFRecordDataset(files, compression_type="GZIP")))



# --- What the DaskRunner cannot run ----------------------------------------------------------------
_LIFECYCLE = ("setup", "start_bundle", "finish_bundle", "teardown")


class _DaskCensus(PipelineVisitor):
  """Collects the transforms of a graph that Beam 2.59's DaskRunner cannot run (``DASK_LIMITS``)."""

  def __init__(self):
    self.found: Dict[str, List[str]] = collections.defaultdict(list)
    self._inside_read = 0

  def enter_composite_transform(self, node) -> None:
    if isinstance(node.transform, beam.io.Read):
      self.found["reads"].append(node.full_label)
      self._inside_read += 1

  def leave_composite_transform(self, node) -> None:
    if isinstance(node.transform, beam.io.Read):
      self._inside_read -= 1

  def visit_transform(self, node) -> None:
    t = node.transform
    if self._inside_read:
      return
    if isinstance(t, beam.Flatten) and len(node.inputs) < 2:
      self.found["single_input_flattens"].append(node.full_label)
    if not isinstance(t, beam.ParDo):
      return
    if t.side_inputs:
      self.found["side_inputs"].append(node.full_label)
    if len(node.outputs) > 1:
      self.found["tagged_outputs"].append(node.full_label)
    overridden = [m for m in _LIFECYCLE
                  if getattr(type(t.fn), m, None) is not getattr(beam.DoFn, m)]
    if overridden:
      self.found["dofn_lifecycle"].append(f"{node.full_label} ({', '.join(overridden)})")


def dask_census(pipeline: beam.Pipeline, show: int = 3) -> Dict[str, Any]:
  """What in ``pipeline``'s graph the DaskRunner of Beam 2.59 cannot run, by kind.

  Kinds: ``side_inputs`` (ParDos with side inputs: not materialised), ``tagged_outputs``
  (multi-output ParDos: not split), ``dofn_lifecycle`` (DoFns that override setup/start_bundle/
  finish_bundle/teardown: never called, harmless only where they do nothing the DoFn needs, e.g.
  a CombinePerKey of ``sum``), ``single_input_flattens`` (fail translation) and
  ``reads`` (beam.io.Read: not translated).

  Returns:
    kind -> {"count": n, "first": the first ``show`` transform labels}; kinds with none are left
    out (an empty dict: nothing found).
  """
  census = _DaskCensus()
  pipeline.visit(census)
  return {kind: {"count": len(labels), "first": labels[:show]}
          for kind, labels in sorted(census.found.items())}
