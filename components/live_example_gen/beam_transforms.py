"""Beam logic of the live-log ExampleGen: raw event logs -> point-in-time tf.Examples.

``LogsToExamples`` takes one PCollection of raw lines per log kind and returns the examples, the
quarantined records (with reasons) and counters. The joins are keyed: events by impression (labels),
impressions + purchases by user (real-time and lifelong sequences), impressions + displays by host
(window statistics, displayed products), then user part + host part by impression.
"""

from __future__ import annotations

import collections
from typing import Dict, Iterable, List, Tuple

import apache_beam as beam
import tensorflow as tf

from components.live_example_gen import point_in_time as pit
from components.live_example_gen import records as r
from models import features as F

EXAMPLES = "examples"
QUARANTINE = "quarantine"
COUNTS = "counts"

# Counter names (keys of counts.json).
LINES_IN = "lines_in/{}"
QUARANTINED = "quarantined/{}"
EVENT_LINES_USED = "event_lines_used"
IMPRESSIONS_IN = "impressions_in"
EXAMPLES_OUT = "examples_out"

_BAD = "bad"


class _ParseFn(beam.DoFn):
  """line -> (line, record) on the main output, BadRecord on ``bad``."""

  def __init__(self, source: str):
    self._source = source

  def process(self, line: str):
    parsed = r.parse_line(self._source, line)
    if isinstance(parsed, r.BadRecord):
      yield beam.pvalue.TaggedOutput(_BAD, parsed)
    else:
      yield line, parsed[1]


def _check_refs(source: str, line_rec: Tuple[str, dict], users: dict, hosts: dict, items: dict):
  """Quarantines records whose ids are not in the reference tables."""
  line, rec = line_rec
  refs = [("user_id", users), ("host_id", hosts), ("item_id", items)]
  for field, table in refs:
    if field in rec and rec[field] not in table:
      yield beam.pvalue.TaggedOutput(
          _BAD, r.BadRecord(source, line, f"unknown {field} {rec[field]!r}"))
      return
  for item in rec.get("item_ids", []) + ([rec["trigger_item_id"]] if "trigger_item_id" in rec
                                         else []):
    if item not in items:
      yield beam.pvalue.TaggedOutput(_BAD, r.BadRecord(source, line, f"unknown item id {item!r}"))
      return
  yield line_rec


def assemble_impression(impression_id: int, events: Iterable[Tuple[str, dict]]):
  """Joins one impression's events; yields an ImpressionRecord and BadRecords for the rest.

  Rules: exactly one impression event; every other event shares its user and host; the leave event
  is at or after the impression; actions fall inside the stay. A second valid leave is a duplicate.
  """
  events = sorted(events, key=lambda lr: (lr[1]["ts"], lr[1][r.EVENT] != r.IMPRESSION))
  imps = [(ln, e) for ln, e in events if e[r.EVENT] == r.IMPRESSION]
  others = [(ln, e) for ln, e in events if e[r.EVENT] != r.IMPRESSION]
  if not imps:
    for ln, _ in events:
      yield r.BadRecord(r.EVENTS, ln, f"no impression event for impression_id {impression_id}")
    return
  imp_line, imp = imps[0]
  for ln, _ in imps[1:]:
    yield r.BadRecord(r.EVENTS, ln, f"duplicate impression event for impression_id "
                      f"{impression_id}")
  leave, actions, used = None, [], [imp_line]
  for ln, e in others:
    if (e["user_id"], e["host_id"]) != (imp["user_id"], imp["host_id"]):
      yield r.BadRecord(r.EVENTS, ln, f"user_id/host_id ({e['user_id']}, {e['host_id']}) differ "
                        f"from impression {impression_id}'s ({imp['user_id']}, {imp['host_id']})")
    elif e["ts"] < imp["ts"]:
      yield r.BadRecord(r.EVENTS, ln, f"{e[r.EVENT]} ts {e['ts']} is before impression "
                        f"{impression_id}'s ts {imp['ts']}")
    elif e[r.EVENT] == r.LEAVE:
      if leave is None:
        leave = e
        used.append(ln)
      else:
        yield r.BadRecord(r.EVENTS, ln, f"duplicate leave event for impression_id {impression_id}")
    else:
      actions.append((ln, e))
  if leave is None:
    yield r.BadRecord(r.EVENTS, imp_line, f"impression {impression_id} has no valid leave event")
    for ln, _ in actions:
      yield r.BadRecord(r.EVENTS, ln, f"impression {impression_id} has no valid leave event")
    return
  kept = []
  for ln, e in actions:
    if e["ts"] > leave["ts"]:
      yield r.BadRecord(r.EVENTS, ln, f"{e[r.EVENT]} ts {e['ts']} is after the leave ts "
                        f"{leave['ts']} of impression {impression_id}")
    else:
      kept.append(e)
      used.append(ln)
  yield beam.pvalue.TaggedOutput(EVENT_LINES_USED, len(used))
  yield pit.ImpressionRecord(
      impression_id=impression_id, session_id=imp["session_id"], user_id=imp["user_id"],
      host_id=imp["host_id"], ts=imp["ts"], slot=imp["slot"],
      trigger_item_id=imp["trigger_item_id"], propensity=imp["propensity"],
      leave_ts=leave["ts"], stay_seconds=leave["stay_seconds"], swipe_down=leave["swipe_down"],
      actions=[(e[r.EVENT], e["ts"]) for e in kept],
      gmv=sum(e.get("gmv", 0.0) for e in kept if e[r.EVENT] == r.PURCHASE))


def user_parts(user_id: int, grouped: Dict[str, list], users: dict, items: dict, hosts: dict,
               realtime_len: int, lifelong_len: int):
  """Per user: context, labels, real-time and lifelong sequences of each impression."""
  history: List[pit.ImpressionRecord] = grouped["impressions"]
  purchases = sorted(grouped["purchases"], key=lambda p: p["ts"], reverse=True)
  level = users[user_id]["activity_level"]
  for imp in history:
    feats = {
        F.IMPRESSION_ID: [imp.impression_id], F.SESSION_ID: [imp.session_id],
        F.TIMESTAMP: [int(imp.ts)], F.PROPENSITY: [imp.propensity], F.USER_ID: [user_id],
        F.ACTIVITY_LEVEL: [level.encode()], F.HOUR_OF_DAY: [int(imp.ts % 86400) // 3600],
        F.SLOT_INDEX: [imp.slot], F.TRIGGER_ITEM_ID: [imp.trigger_item_id],
        F.TRIGGER_CATEGORY_ID: [items[imp.trigger_item_id]["category_id"]],
    }
    feats.update({k: [v] for k, v in pit.labels(imp).items()})
    feats.update(pit.session_hosts(history, imp.session_id, imp.ts))
    feats.update(pit.realtime_sequences(history, imp.ts, realtime_len, hosts))
    feats.update(pit.lifelong_sequence(purchases, imp.ts, lifelong_len))
    yield imp.impression_id, feats


def host_parts(host_id: int, grouped: Dict[str, list], hosts: dict, items: dict):
  """Per host: static room features, window statistics and displayed products per impression."""
  timeline = pit.HostTimeline(grouped["impressions"], grouped["displays"])
  info = hosts[host_id]
  cats = info["category_ids"][:F.HOST_MAX_CATEGORIES]
  static = {F.HOST_ID: [host_id], F.HOST_SHOP_ID: [info["shop_id"]],
            F.HOST_CATEGORY_IDS: cats + [0] * (F.HOST_MAX_CATEGORIES - len(cats))}
  for imp in grouped["impressions"]:
    feats = dict(static)
    feats.update(timeline.stats(imp.ts))
    feats.update(pit.display_features(timeline.displayed(imp.ts), items))
    yield imp.impression_id, feats


def to_example(parts: Dict[str, dict], specs: List[F.RawFeature]) -> tf.train.Example:
  """Merges the user and host parts into a tf.Example, checking every feature's length."""
  merged = dict(parts["user"])
  merged.update(parts["host"])
  ex = tf.train.Example()
  for spec in specs:
    values = merged[spec.name]
    if len(values) != spec.length:
      raise ValueError(f"feature {spec.name!r} has {len(values)} values, expected {spec.length}")
    feat = ex.features.feature[spec.name]
    if spec.dtype == "int":
      feat.int64_list.value.extend(int(v) for v in values)
    elif spec.dtype == "float":
      feat.float_list.value.extend(float(v) for v in values)
    else:
      feat.bytes_list.value.extend(values)
  return ex


def _join_parts(kv, specs):
  impression_id, grouped = kv
  users, hosts = list(grouped["user"]), list(grouped["host"])
  if len(users) != 1 or len(hosts) != 1:
    raise ValueError(f"impression {impression_id}: expected one user part and one host part, "
                     f"got {len(users)} and {len(hosts)}")
  return to_example({"user": users[0], "host": hosts[0]}, specs)


@beam.ptransform_fn
def LogsToExamples(lines: Dict[str, beam.PCollection], realtime_len: int = F.REALTIME_SEQ_LEN,
                   lifelong_len: int = F.LIFELONG_SEQ_LEN):
  """Raw log lines per kind -> {EXAMPLES, QUARANTINE, COUNTS}.

  Args:
    lines: PCollections of raw JSON lines keyed by log kind (``records.LOG_KINDS``).
    realtime_len: padded length of the positive and negative real-time sequences.
    lifelong_len: padded length of the lifelong purchase sequence.

  Returns:
    A dict with ``EXAMPLES`` (tf.train.Example), ``QUARANTINE`` (records.BadRecord) and
    ``COUNTS`` ((counter name, count) pairs; lines in = used + quarantined per kind).
  """
  missing = set(r.LOG_KINDS) - set(lines)
  if missing:
    raise ValueError(f"LogsToExamples needs lines for every log kind; missing {sorted(missing)}")
  specs = F.raw_features(realtime_len, lifelong_len)
  good, bad, counts = {}, [], []
  for kind in r.LOG_KINDS:
    parsed = lines[kind] | f"Parse[{kind}]" >> beam.ParDo(_ParseFn(kind)).with_outputs(
        _BAD, main="good")
    good[kind] = parsed.good
    bad.append(parsed[_BAD])
    counts.append(lines[kind] | f"CountIn[{kind}]" >> beam.Map(
        lambda _, k=kind: (LINES_IN.format(k), 1)))

  def table(kind, key):
    return beam.pvalue.AsDict(good[kind] | f"Key[{kind}]" >> beam.Map(lambda lr: (lr[1][key],
                                                                                   lr[1])))
  users, hosts, items = table(r.USERS, "user_id"), table(r.HOSTS, "host_id"), table(r.ITEMS,
                                                                                   "item_id")
  checked = {}
  for kind in (r.PURCHASES, r.DISPLAYS, r.EVENTS):
    res = good[kind] | f"CheckRefs[{kind}]" >> beam.FlatMap(
        lambda lr, u, h, i, k=kind: _check_refs(k, lr, u, h, i), users, hosts, items
    ).with_outputs(_BAD, main="good")
    checked[kind] = res.good
    bad.append(res[_BAD])

  assembled = (
      checked[r.EVENTS]
      | "KeyByImpression" >> beam.Map(lambda lr: (lr[1]["impression_id"], lr))
      | "GroupByImpression" >> beam.GroupByKey()
      | "Assemble" >> beam.FlatMapTuple(assemble_impression).with_outputs(
          EVENT_LINES_USED, main="impressions"))
  impressions = assembled.impressions | "OnlyImpressions" >> beam.Filter(
      lambda x: isinstance(x, pit.ImpressionRecord))
  bad.append(assembled.impressions | "AssemblyBad" >> beam.Filter(
      lambda x: isinstance(x, r.BadRecord)))
  counts.append(assembled[EVENT_LINES_USED] | "CountUsed" >> beam.Map(
      lambda n: (EVENT_LINES_USED, n)))

  by_user = (
      {"impressions": impressions | "ImpByUser" >> beam.Map(lambda i: (i.user_id, i)),
       "purchases": checked[r.PURCHASES] | "PurByUser" >> beam.Map(
           lambda lr: (lr[1]["user_id"], lr[1]))}
      | "GroupByUser" >> beam.CoGroupByKey()
      | "UserParts" >> beam.FlatMap(lambda kv, u, i, h: user_parts(*kv, u, i, h, realtime_len,
                                                                   lifelong_len),
                                    users, items, hosts))
  by_host = (
      {"impressions": impressions | "ImpByHost" >> beam.Map(lambda i: (i.host_id, i)),
       "displays": checked[r.DISPLAYS] | "DispByHost" >> beam.Map(
           lambda lr: (lr[1]["host_id"], lr[1]))}
      | "GroupByHost" >> beam.CoGroupByKey()
      | "DropIdleHosts" >> beam.Filter(lambda kv: len(list(kv[1]["impressions"])) > 0)
      | "HostParts" >> beam.FlatMap(lambda kv, h, i: host_parts(*kv, h, i), hosts, items))
  examples = ({"user": by_user, "host": by_host}
              | "JoinParts" >> beam.CoGroupByKey()
              | "ToExample" >> beam.Map(_join_parts, specs))

  quarantine = bad | "FlattenBad" >> beam.Flatten()
  counts += [
      quarantine | "CountBad" >> beam.Map(lambda b: (QUARANTINED.format(b.source), 1)),
      checked[r.EVENTS] | "CountImpIn" >> beam.FlatMap(
          lambda lr: [(IMPRESSIONS_IN, 1)] if lr[1][r.EVENT] == r.IMPRESSION else []),
      examples | "CountOut" >> beam.Map(lambda _: (EXAMPLES_OUT, 1)),
  ]
  all_counts = counts | "FlattenCounts" >> beam.Flatten() | "SumCounts" >> beam.CombinePerKey(sum)
  return {EXAMPLES: examples, QUARANTINE: quarantine, COUNTS: all_counts}


def check_accounting(counts: Dict[str, int]) -> List[str]:
  """Violations of 'in = used + quarantined' in a counts dict (empty when it balances)."""
  problems = []
  c = collections.defaultdict(int, counts)
  for kind in r.LOG_KINDS:
    n_in, n_bad = c[LINES_IN.format(kind)], c[QUARANTINED.format(kind)]
    used = c[EVENT_LINES_USED] if kind == r.EVENTS else n_in - n_bad
    if n_in != used + n_bad:
      problems.append(f"{kind}: {n_in} lines in != {used} used + {n_bad} quarantined")
  return problems
