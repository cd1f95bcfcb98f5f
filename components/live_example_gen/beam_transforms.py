"""Beam logic of the live-log ExampleGen: raw event logs -> point-in-time tf.Examples.

``LogsToExamples`` takes one PCollection of raw lines per log kind and returns the examples (each
tagged with its forward-in-time split), the quarantined records (with reasons) and counters. The
joins are keyed: events by impression (labels), impressions + purchases by user (real-time and
lifelong sequences), impressions + displays by host (window statistics, displayed products), then
user part + host part by impression. Duplicates are resolved inside those same groups, so
exactly-once costs no extra shuffle of the large logs.

Accounting: every input line ends in exactly one place, ``accepted/<kind>`` (passed every check
and went into the joins) or ``quarantined/<kind>``; each is counted where it happens, and
``check_accounting`` verifies ``lines_in = accepted + quarantined`` per kind.
"""

from __future__ import annotations

import collections
import itertools
import math
from typing import Dict, Iterable, List, Sequence, Tuple

import apache_beam as beam
import numpy as np
import pyarrow as pa
import tensorflow as tf
from tfx_bsl.coders import example_coder

from components.live_example_gen import point_in_time as pit
from components.live_example_gen import records as r
from data_gen import log_format as lf
from models import features as F

EXAMPLES = "examples"  # (split name, serialized tf.train.Example)
QUARANTINE = "quarantine"
COUNTS = "counts"

TRAIN_SPLIT = "train"
EVAL_SPLIT = "eval"
SPLIT_NAMES = (TRAIN_SPLIT, EVAL_SPLIT)

# Counter names (keys of counts.json).
LINES_IN = "lines_in/{}"
ACCEPTED = "accepted/{}"
QUARANTINED = "quarantined/{}"
IMPRESSIONS_IN = "impressions_in"
EXAMPLES_OUT = "examples_out"
EXAMPLES_SPLIT = "examples_out/{}"

_BAD = "bad"
_ACCEPTED = "accepted"
# The two halves of an example, built apart and joined by impression.
USER_PART, HOST_PART = "user", "host"


# --- Exactly-once ----------------------------------------------------------------------------------
def sorted_facts(parsed: Iterable[r.Parsed], reverse: bool = False) -> List[r.Parsed]:
  """Fact records by time, ties by canonical content; ascending, or descending with ``reverse``.

  The canonical content (a JSON dump, most of a sort's cost) is computed only for records that
  share a timestamp.
  """
  ts = lambda p: p.rec.get("ts", 0.0)  # noqa: E731
  out: List[r.Parsed] = []
  for _, run in itertools.groupby(sorted(parsed, key=ts, reverse=reverse), key=ts):
    run = list(run)
    out += sorted(run, key=lambda p: r.canonical(p.rec), reverse=reverse) if len(run) > 1 else run
  return out


def _reference_order(p: r.Parsed) -> Tuple:
  return (p.line.path, p.line.line_no)


def dedupe(source: str, parsed: Iterable[r.Parsed]) -> Tuple[List[r.Parsed], List[r.BadRecord]]:
  """Keeps one record per identity (``records.IDENTITY``); quarantines the others with a reason.

  Exact copies are quarantined as duplicates. Conflicting versions are quarantined with the kept
  version in the reason (so both are in the quarantine output); which one is kept follows a fixed
  rule: for reference tables the earliest line, for facts the earliest time then the smallest
  canonical content (independent of line order).

  Returns:
    (kept records in identity order, quarantined duplicates).
  """
  reference = source in r.REFERENCE_KINDS
  groups: Dict[Tuple, List[r.Parsed]] = collections.defaultdict(list)
  for p in parsed:
    groups[r.identity(source, p.rec)].append(p)
  kept, bad = [], []
  for key in sorted(groups, key=repr):
    if len(groups[key]) == 1:  # the usual case: nothing to order or compare
      kept.append(groups[key][0])
      continue
    versions = (sorted(groups[key], key=_reference_order) if reference
                else sorted_facts(groups[key]))
    winner = versions[0]
    kept.append(winner)
    ident = dict(zip(r.IDENTITY[source], key))
    for p in versions[1:]:
      if r.canonical(p.rec) == r.canonical(winner.rec):
        bad.append(r.BadRecord.of(p.line, f"duplicate of {winner.line.where} ({source} {ident})"))
      else:
        bad.append(r.BadRecord.of(
            p.line, f"conflicting definition of {source} {ident}: kept {winner.line.where} = "
                    f"{r.canonical(winner.rec)}"))
  return kept, bad


def _dedupe_group(kv, source: str):
  """GroupByKey output (identity, [Parsed]) -> kept Parsed on main, BadRecords on ``bad``."""
  kept, bad = dedupe(source, kv[1])
  for b in bad:
    yield beam.pvalue.TaggedOutput(_BAD, b)
  yield from kept


# --- Parsing and references ------------------------------------------------------------------------
class _ParseFn(beam.DoFn):
  """RawLine -> Parsed on the main output; BadRecord (also the reader's) on ``bad``."""

  def __init__(self, windows: Dict[str, lf.Window]):
    self._windows = windows

  def process(self, item):
    parsed = item if isinstance(item, r.BadRecord) else r.parse_line(item, self._windows)
    if isinstance(parsed, r.BadRecord):
      yield beam.pvalue.TaggedOutput(_BAD, parsed)
    else:
      yield parsed


def unknown_reference(rec: dict, users: dict, hosts: dict, items: dict) -> str | None:
  """Why ``rec`` refers to an id missing from the reference tables (None: it does not)."""
  for field, table in (("user_id", users), ("host_id", hosts), ("item_id", items)):
    if field in rec and rec[field] not in table:
      return f"unknown {field} {rec[field]!r}"
  for item in rec.get("item_ids", []) + ([rec["trigger_item_id"]] if "trigger_item_id" in rec
                                         else []):
    if item not in items:
      return f"unknown item id {item!r}"
  return None


def _check_refs(p: r.Parsed, users: dict, hosts: dict, items: dict):
  """Quarantines records whose ids are not in the reference tables."""
  reason = unknown_reference(p.rec, users, hosts, items)
  if reason:
    yield beam.pvalue.TaggedOutput(_BAD, r.BadRecord.of(p.line, reason))
  else:
    yield p


# --- Events -> impressions -------------------------------------------------------------------------
def _event_problem(e: dict, imp: dict, impression_id: int) -> str | None:
  """Why a non-impression event cannot belong to its impression (None when it can)."""
  if (e["user_id"], e["host_id"]) != (imp["user_id"], imp["host_id"]):
    return (f"user_id/host_id ({e['user_id']}, {e['host_id']}) differ from impression "
            f"{impression_id}'s ({imp['user_id']}, {imp['host_id']})")
  if e["ts"] < imp["ts"]:
    return f"{e[r.EVENT]} ts {e['ts']} is before impression {impression_id}'s ts {imp['ts']}"
  if e[r.EVENT] == r.LEAVE:
    gap = e["ts"] - imp["ts"]
    if abs(gap - e["stay_seconds"]) > r.STAY_TOLERANCE_SECONDS:
      return (f"stay_seconds {e['stay_seconds']} disagrees with leave ts - impression ts = "
              f"{gap:.3f} for impression_id {impression_id}")
  return None


def assemble_impression(impression_id: int, events: Iterable[r.Parsed]):
  """Joins one impression's events; yields an ImpressionRecord and BadRecords for the rest.

  Rules, in order: one impression event (copies and conflicting versions are quarantined by
  ``dedupe``); every other event shares its user and host, is at or after it, and a leave's stay
  agrees with the two times; of the valid events, one per identity (``dedupe``: one leave, one
  like, ...); actions fall inside the stay. The accepted line count goes to ``accepted``.
  """
  events = list(events)
  imps, imp_bad = dedupe(r.EVENTS, [p for p in events if p.rec[r.EVENT] == r.IMPRESSION])
  yield from imp_bad
  others = [p for p in events if p.rec[r.EVENT] != r.IMPRESSION]
  if not imps:
    for p in others:
      yield r.BadRecord.of(p.line, f"no impression event for impression_id {impression_id}")
    return
  imp_p = imps[0]
  imp = imp_p.rec
  valid = []
  for p in others:
    problem = _event_problem(p.rec, imp, impression_id)
    if problem:
      yield r.BadRecord.of(p.line, problem)
    else:
      valid.append(p)
  valid, dup_bad = dedupe(r.EVENTS, valid)
  yield from dup_bad
  leaves = [p for p in valid if p.rec[r.EVENT] == r.LEAVE]  # at most one after dedupe
  actions = sorted_facts(p for p in valid if p.rec[r.EVENT] != r.LEAVE)
  if not leaves:
    yield r.BadRecord.of(imp_p.line, f"impression {impression_id} has no valid leave event")
    for p in actions:
      yield r.BadRecord.of(p.line, f"impression {impression_id} has no valid leave event")
    return
  leave = leaves[0].rec
  kept = []
  for p in actions:
    e = p.rec
    if e["ts"] > leave["ts"]:
      yield r.BadRecord.of(p.line, f"{e[r.EVENT]} ts {e['ts']} is after the leave ts "
                           f"{leave['ts']} of impression {impression_id}")
    else:
      kept.append(e)
  yield beam.pvalue.TaggedOutput(_ACCEPTED, (ACCEPTED.format(r.EVENTS), 2 + len(kept)))
  yield pit.ImpressionRecord(
      impression_id=impression_id, session_id=imp["session_id"], user_id=imp["user_id"],
      host_id=imp["host_id"], ts=imp["ts"], slot=imp["slot"],
      trigger_item_id=imp["trigger_item_id"], propensity=imp["propensity"],
      leave_ts=leave["ts"], stay_seconds=leave["stay_seconds"], swipe_down=leave["swipe_down"],
      actions=[(e[r.EVENT], e["ts"]) for e in kept],
      gmv=sum(e.get("gmv", 0.0) for e in kept if e[r.EVENT] == r.PURCHASE))


# --- Forward-in-time split -------------------------------------------------------------------------
def session_starts(history: Iterable[pit.ImpressionRecord]) -> Dict[int, float]:
  """session_id -> time of the session's first impression."""
  starts: Dict[int, float] = {}
  for imp in history:
    starts[imp.session_id] = min(imp.ts, starts.get(imp.session_id, math.inf))
  return starts


def split_of(session_start: float, eval_start: float) -> str:
  """A whole session goes to eval when it starts at or after ``eval_start``."""
  return EVAL_SPLIT if session_start >= eval_start else TRAIN_SPLIT


def eval_start_time(last_impression_ts: float, window_start: float, eval_days: int) -> float:
  """Start of the eval period: midnight (relative to the log window) of the last ``eval_days``.

  The last day is the day of the latest impression, counted from the declared window's start.
  """
  if eval_days < 1:
    raise ValueError(f"eval_days must be >= 1, got {eval_days}")
  last_day = math.floor((last_impression_ts - window_start) / lf.SECONDS_PER_DAY)
  return window_start + (last_day - eval_days + 1) * lf.SECONDS_PER_DAY


# --- Per-user and per-host parts -------------------------------------------------------------------
def user_parts(user_id: int, grouped: Dict[str, list], users: dict, items: dict, hosts: dict,
               realtime_len: int, lifelong_len: int, eval_start: float,
               specs: Sequence[F.RawFeature]):
  """Per user: split, context, labels, real-time and lifelong sequences of each impression.

  Yields ``(impression_id, (split, serialized partial tf.Example of the user-side ``specs``))``;
  the user's lifelong purchases are deduplicated here (counts to ``accepted``, duplicates to
  ``bad``). A training example's real-time sequences only ever hold training sessions'
  impressions.
  """
  purchases, bad = dedupe(r.PURCHASES, grouped["purchases"])
  for b in bad:
    yield beam.pvalue.TaggedOutput(_BAD, b)
  if purchases:
    yield beam.pvalue.TaggedOutput(_ACCEPTED, (ACCEPTED.format(r.PURCHASES), len(purchases)))
  history: List[pit.ImpressionRecord] = sorted(grouped["impressions"],
                                               key=lambda i: (i.ts, i.impression_id))
  if not history:
    return
  # Most recent first; ties broken by content so shuffled input gives identical sequences.
  purchase_index = pit.PurchaseIndex([p.rec for p in sorted_facts(purchases, reverse=True)])
  starts = session_starts(history)
  split = {s: split_of(t, eval_start) for s, t in starts.items()}
  feedback = {TRAIN_SPLIT: pit.FeedbackIndex(
                  [h for h in history if split[h.session_id] == TRAIN_SPLIT], hosts),
              EVAL_SPLIT: pit.FeedbackIndex(history, hosts)}
  level = users[user_id]["activity_level"]
  rows = []
  for imp in history:
    feats = pit.user_side_features(imp, level, history, feedback[split[imp.session_id]],
                                   purchase_index, items, hosts, realtime_len, lifelong_len)
    feats.update({k: [v] for k, v in pit.labels(imp).items()})
    rows.append(feats)
  for imp, example in zip(history, to_examples(rows, specs)):
    yield imp.impression_id, (split[imp.session_id], example)


def host_parts(host_id: int, grouped: Dict[str, list], hosts: dict, items: dict,
               specs: Sequence[F.RawFeature]):
  """Per host: static room features, window statistics and displayed products per impression.

  Yields ``(impression_id, serialized partial tf.Example of the room-side ``specs``)``.
  """
  displays, bad = dedupe(r.DISPLAYS, grouped["displays"])
  for b in bad:
    yield beam.pvalue.TaggedOutput(_BAD, b)
  if displays:
    yield beam.pvalue.TaggedOutput(_ACCEPTED, (ACCEPTED.format(r.DISPLAYS), len(displays)))
  impressions = list(grouped["impressions"])
  if not impressions:
    return
  timeline = pit.HostTimeline(impressions, [p.rec for p in displays])
  rows = [pit.host_side_features(host_id, hosts[host_id], timeline, imp.ts, items)
          for imp in impressions]
  for imp, example in zip(impressions, to_examples(rows, specs)):
    yield imp.impression_id, example


def part_specs(specs: Sequence[F.RawFeature]) -> Dict[str, List[F.RawFeature]]:
  """The features of each part: ``HOST_PART`` the room side (``F.HOST_SIDE_FEATURES``),
  ``USER_PART`` every other one; each variable-length feature in its length's part."""
  host_side = set(F.HOST_SIDE_FEATURES)
  parts = {HOST_PART: [s for s in specs if s.name in host_side],
           USER_PART: [s for s in specs if s.name not in host_side]}
  for part, part_features in parts.items():
    names = {s.name for s in part_features}
    for spec in part_features:
      if spec.variable_length and spec.length_key not in names:
        raise ValueError(f"feature {spec.name!r} is in the {part} part but its length "
                         f"{spec.length_key!r} is not")
  return parts


def _check_names(feats: Dict[str, list], specs: Sequence[F.RawFeature], declared: set) -> None:
  """Raises ValueError unless ``feats`` has exactly the features ``declared`` (``specs``' names):
  an unexpected one is named first, then the first missing one in ``specs``' order."""
  if feats.keys() == declared:
    return
  unexpected = sorted(set(feats) - declared)
  if unexpected:
    raise ValueError(f"features {unexpected} are not among the declared ones")
  missing = next(spec.name for spec in specs if spec.name not in feats)
  raise ValueError(f"feature {missing!r} is missing")


# Arrow value types a feature's values may arrive as (inferred from the Python values), by dtype;
# empty lists infer as null. Anything else (a float in an int feature, a str in a float one) is
# refused, as tf.train.Example's own setters refuse it (a str in a bytes feature too).
_ACCEPTED_ARROW_TYPES = {
    "int": (pa.int64(), pa.null()),
    "float": (pa.float64(), pa.int64(), pa.null()),
    "bytes": (pa.binary(), pa.null()),
}
_ARROW_TYPE = {"int": pa.int64(), "float": pa.float32(), "bytes": pa.large_binary()}


def _feature_column(spec: F.RawFeature, values: List[list]) -> pa.Array:
  """One feature's values of every row as a large_list Arrow array of its dtype."""
  try:
    inferred = pa.array(values)
  except (pa.ArrowException, OverflowError) as e:
    raise TypeError(f"feature {spec.name!r} ({spec.dtype}) has a value of the wrong type: "
                    f"{e}") from e
  value_type = getattr(inferred.type, "value_type", None)
  # Arrow infers str mixed with bytes as binary; bytes features are few and short.
  mixed_str = spec.dtype == "bytes" and any(isinstance(v, str) for row in values for v in row)
  if value_type not in _ACCEPTED_ARROW_TYPES[spec.dtype] or mixed_str:
    raise TypeError(f"feature {spec.name!r} ({spec.dtype}) has a value of the wrong type: "
                    f"{inferred.type}")
  # int64 -> float32 rounds as tf.train.FloatList does; nothing else is converted.
  return inferred.cast(pa.large_list(_ARROW_TYPE[spec.dtype]), safe=spec.dtype != "float")


def to_examples(rows: Sequence[Dict[str, list]], specs: Sequence[F.RawFeature]) -> List[bytes]:
  """Serialized tf.Examples, one per row, of exactly ``specs``' features, every length checked.

  The rows are encoded together: each feature's values become one Arrow column and tfx_bsl's C++
  encoder writes the examples (building the protos value by value in Python was a quarter of
  the ExampleGen's time). An empty variable-length feature is present with zero values.

  Raises:
    ValueError: a row misses a feature of ``specs`` or has one not in ``specs``, or a feature has
      the wrong number of values (the message names the feature and the row).
    TypeError: a value has the wrong type for its feature.
  """
  declared = {spec.name for spec in specs}
  for row in rows:
    _check_names(row, specs, declared)
  if not rows:
    return []
  columns = {spec.name: _feature_column(spec, [row[spec.name] for row in rows]) for spec in specs}
  # Fixed lengths first: a length feature is read only after its own length is checked.
  for spec in sorted(specs, key=lambda s: s.variable_length):
    lengths = columns[spec.name].value_lengths().to_numpy(zero_copy_only=False)  # [rows]
    expected = (columns[spec.length_key].flatten().to_numpy(zero_copy_only=False)
                if spec.variable_length else np.full(len(rows), spec.length))
    bad = np.flatnonzero((lengths != expected) | (lengths > spec.length))
    if bad.size:
      i = int(bad[0])
      raise ValueError(f"feature {spec.name!r} has {lengths[i]} values, expected {expected[i]} "
                       f"(at most {spec.length}) in row {i}")
  return example_coder.RecordBatchToExamples(pa.RecordBatch.from_pydict(columns))


def to_example(feats: Dict[str, list], specs: Sequence[F.RawFeature]) -> tf.train.Example:
  """A tf.Example of exactly ``specs``' features, checking every feature's length.

  One row, built in Python (for a single example this is ~10x faster than ``to_examples``'
  Arrow encoder, whose cost is per column); ``to_examples`` checks and encodes many rows alike.

  Raises:
    ValueError: a feature of ``specs`` is missing, one not in ``specs`` is present, or a
      feature has the wrong number of values.
    TypeError: a value has the wrong type for its feature.
  """
  _check_names(feats, specs, {spec.name for spec in specs})
  ex = tf.train.Example()
  for spec in specs:
    values = feats[spec.name]
    expected = feats[spec.length_key][0] if spec.variable_length else spec.length
    if len(values) != expected or len(values) > spec.length:
      raise ValueError(f"feature {spec.name!r} has {len(values)} values, expected {expected} "
                       f"(at most {spec.length})")
    feat = ex.features.feature[spec.name]
    # The list kind is set even when empty: an empty variable-length feature is present, with
    # zero values, not missing. ``extend`` takes the list whole (a per-value conversion was a
    # quarter of the ExampleGen's time) and still rejects a value of the wrong type.
    values_list = (feat.int64_list if spec.dtype == "int" else
                   feat.float_list if spec.dtype == "float" else feat.bytes_list)
    values_list.SetInParent()
    try:
      values_list.value.extend(values)
    except TypeError as e:
      raise TypeError(f"feature {spec.name!r} ({spec.dtype}) has a value of the wrong type: "
                      f"{e}") from e
  return ex


def _join_parts(kv):
  """(impression_id, {USER_PART: [(split, bytes)], HOST_PART: [bytes]}) -> (split, bytes).

  The parts travel serialized (Beam passes bytes as they are; encoding and decoding the feature
  dicts with their lifelong lists between stages was the ExampleGen's largest single cost), and
  two serialized tf.Examples concatenated are, by the protobuf wire format, one tf.Example with
  both parts' features.
  """
  impression_id, grouped = kv
  users, hosts = list(grouped[USER_PART]), list(grouped[HOST_PART])
  if len(users) != 1 or len(hosts) != 1:
    raise ValueError(f"impression {impression_id}: expected one user part and one host part, "
                     f"got {len(users)} and {len(hosts)}")
  split, user_part = users[0]
  return split, user_part + hosts[0]


def _count(pcoll, label: str, name: str):
  return pcoll | label >> beam.Map(lambda _, n=name: (n, 1))


@beam.ptransform_fn
def LogsToExamples(lines: Dict[str, beam.PCollection], windows: Dict[str, lf.Window],
                   realtime_len: int = F.REALTIME_SEQ_LEN,
                   lifelong_len: int = F.LIFELONG_SEQ_LEN, eval_days: int = 1):
  """Raw log lines per kind -> {EXAMPLES, QUARANTINE, COUNTS}.

  Args:
    lines: PCollections of ``records.RawLine`` (or the reader's ``BadRecord``) keyed by log kind
      (``records.LOG_KINDS``).
    windows: the log's declared time windows (``log_format.parse_time_window``).
    realtime_len: padded length of the positive and negative real-time sequences.
    lifelong_len: the most purchases a lifelong sequence keeps (stored variable-length).
    eval_days: sessions that start in the last ``eval_days`` days of the logs form the eval split.

  Returns:
    A dict with ``EXAMPLES`` ((split name, serialized tf.train.Example)), ``QUARANTINE``
    (records.BadRecord) and ``COUNTS`` ((counter name, count) pairs).
  """
  missing = set(r.LOG_KINDS) - set(lines)
  if missing:
    raise ValueError(f"LogsToExamples needs lines for every log kind; missing {sorted(missing)}")
  if eval_days < 1:
    raise ValueError(f"eval_days must be >= 1, got {eval_days}")
  specs = part_specs(F.raw_features(realtime_len, lifelong_len))
  good, bad, counts = {}, [], []
  for kind in r.LOG_KINDS:
    parsed = lines[kind] | f"Parse[{kind}]" >> beam.ParDo(_ParseFn(windows)).with_outputs(
        _BAD, main="good")
    good[kind] = parsed.good
    bad.append(parsed[_BAD])
    counts.append(_count(lines[kind], f"CountIn[{kind}]", LINES_IN.format(kind)))

  tables = {}
  for kind in r.REFERENCE_KINDS:
    deduped = (good[kind]
               | f"KeyId[{kind}]" >> beam.Map(lambda p, k=kind: (r.identity(k, p.rec), p))
               | f"GroupId[{kind}]" >> beam.GroupByKey()
               | f"Dedupe[{kind}]" >> beam.FlatMap(_dedupe_group, kind).with_outputs(
                   _BAD, main="good"))
    bad.append(deduped[_BAD])
    counts.append(_count(deduped.good, f"CountAccepted[{kind}]", ACCEPTED.format(kind)))
    tables[kind] = beam.pvalue.AsDict(
        deduped.good | f"Table[{kind}]" >> beam.Map(
            lambda p, k=kind: (r.identity(k, p.rec)[0], p.rec)))
  users, hosts, items = tables[r.USERS], tables[r.HOSTS], tables[r.ITEMS]

  checked = {}
  for kind in (r.PURCHASES, r.DISPLAYS, r.EVENTS):
    res = good[kind] | f"CheckRefs[{kind}]" >> beam.FlatMap(
        _check_refs, users, hosts, items).with_outputs(_BAD, main="good")
    checked[kind] = res.good
    bad.append(res[_BAD])

  assembled = (
      checked[r.EVENTS]
      | "KeyByImpression" >> beam.Map(lambda p: (p.rec["impression_id"], p))
      | "GroupByImpression" >> beam.GroupByKey()
      | "Assemble" >> beam.FlatMap(lambda kv: assemble_impression(*kv)).with_outputs(
          _ACCEPTED, main="impressions"))
  impressions = assembled.impressions | "OnlyImpressions" >> beam.Filter(
      lambda x: isinstance(x, pit.ImpressionRecord))
  bad.append(assembled.impressions | "AssemblyBad" >> beam.Filter(
      lambda x: isinstance(x, r.BadRecord)))
  counts.append(assembled[_ACCEPTED])

  # The eval period starts at the first midnight of the last ``eval_days`` days of the logs.
  eval_start = beam.pvalue.AsSingleton(
      impressions
      | "ImpressionTs" >> beam.Map(lambda i: i.ts)
      | "LastTs" >> beam.CombineGlobally(max).without_defaults()
      | "EvalStart" >> beam.Map(eval_start_time, windows[lf.WINDOW_EVENTS][0], eval_days),
      default_value=math.inf)  # no impressions at all: nothing to split

  user_out = (
      {"impressions": impressions | "ImpByUser" >> beam.Map(lambda i: (i.user_id, i)),
       "purchases": checked[r.PURCHASES] | "PurByUser" >> beam.Map(
           lambda p: (p.rec["user_id"], p))}
      | "GroupByUser" >> beam.CoGroupByKey()
      | "UserParts" >> beam.FlatMap(
          lambda kv, u, i, h, t: user_parts(*kv, u, i, h, realtime_len, lifelong_len, t,
                                            specs[USER_PART]),
          users, items, hosts, eval_start).with_outputs(_BAD, _ACCEPTED, main="parts"))
  host_out = (
      {"impressions": impressions | "ImpByHost" >> beam.Map(lambda i: (i.host_id, i)),
       "displays": checked[r.DISPLAYS] | "DispByHost" >> beam.Map(
           lambda p: (p.rec["host_id"], p))}
      | "GroupByHost" >> beam.CoGroupByKey()
      | "HostParts" >> beam.FlatMap(lambda kv, h, i: host_parts(*kv, h, i, specs[HOST_PART]),
                                    hosts, items).with_outputs(_BAD, _ACCEPTED, main="parts"))
  bad += [user_out[_BAD], host_out[_BAD]]
  counts += [user_out[_ACCEPTED], host_out[_ACCEPTED]]
  examples = ({USER_PART: user_out.parts, HOST_PART: host_out.parts}
              | "JoinParts" >> beam.CoGroupByKey()
              | "ToExample" >> beam.Map(_join_parts))

  quarantine = bad | "FlattenBad" >> beam.Flatten()
  counts += [
      quarantine | "CountBad" >> beam.Map(lambda b: (QUARANTINED.format(b.source), 1)),
      impressions | "CountImpIn" >> beam.Map(lambda _: (IMPRESSIONS_IN, 1)),
      examples | "CountOut" >> beam.Map(lambda _: (EXAMPLES_OUT, 1)),
      examples | "CountSplit" >> beam.Map(lambda se: (EXAMPLES_SPLIT.format(se[0]), 1)),
  ]
  all_counts = counts | "FlattenCounts" >> beam.Flatten() | "SumCounts" >> beam.CombinePerKey(sum)
  return {EXAMPLES: examples, QUARANTINE: quarantine, COUNTS: all_counts}


def check_accounting(counts: Dict[str, int]) -> List[str]:
  """Violations of the record accounting in a counts dict (empty when it balances).

  Per log kind every line in is either accepted or quarantined; every accepted impression
  becomes exactly one example; every example is in exactly one split.
  """
  problems = []
  c = collections.defaultdict(int, counts)
  for kind in r.LOG_KINDS:
    n_in, n_ok, n_bad = (c[LINES_IN.format(kind)], c[ACCEPTED.format(kind)],
                         c[QUARANTINED.format(kind)])
    if n_in != n_ok + n_bad:
      problems.append(f"{kind}: {n_in} lines in != {n_ok} accepted + {n_bad} quarantined")
  if c[IMPRESSIONS_IN] != c[EXAMPLES_OUT]:
    problems.append(f"{c[IMPRESSIONS_IN]} accepted impressions != {c[EXAMPLES_OUT]} examples out")
  split_total = sum(c[EXAMPLES_SPLIT.format(s)] for s in SPLIT_NAMES)
  if split_total != c[EXAMPLES_OUT]:
    problems.append(f"{split_total} examples in splits != {c[EXAMPLES_OUT]} examples out")
  return problems


def examples_of_split(examples: beam.PCollection, split: str,
                      label: str | None = None) -> beam.PCollection:
  """The serialized tf.Examples of one split from ``EXAMPLES``."""
  return examples | (label or f"Only[{split}]") >> beam.FlatMap(
      lambda se: [se[1]] if se[0] == split else [])


def summary_line(counts: Dict[str, int], kinds: Sequence[str] = r.LOG_KINDS) -> str:
  """One console line: lines in / accepted / quarantined per kind, and examples per split."""
  c = collections.defaultdict(int, counts)
  per_kind = ", ".join(f"{k} {c[LINES_IN.format(k)]}/{c[ACCEPTED.format(k)]}/"
                       f"{c[QUARANTINED.format(k)]}" for k in kinds)
  splits = ", ".join(f"{s} {c[EXAMPLES_SPLIT.format(s)]}" for s in SPLIT_NAMES)
  return (f"LiveLogExampleGen: {c[EXAMPLES_OUT]} examples ({splits}); lines in/accepted/"
          f"quarantined: {per_kind}")
