"""Data integrity of the live-log ExampleGen, through the real executor on small generated logs.

Each corrupt case adds bad input to a clean log set; the run must finish, quarantine the bad input
with its reason (and raw bytes), balance its accounting per file, and write every clean example
exactly as the clean run does. Plus: shuffled input with tied times gives identical examples, and
the train/eval split is forward in time.
"""

import collections
import gzip
import json
import os
import random
import shutil

import pytest
import tensorflow as tf
from google.protobuf import json_format
from tfx.types import standard_artifacts
from tfx.types import standard_component_specs as sc

from components.live_example_gen import beam_transforms as bt
from components.live_example_gen import component as eg
from components.live_example_gen import executor
from components.live_example_gen import records as r
from components.live_example_gen.log_tables import read_log_tables
from data_gen import log_format as lf
from data_gen import simulator
from models import features as F
from serving import client, policy

SMALL = simulator.load_config("tiny", seed=5, n_users=40, days=2)


def run_example_gen(log_dir, out_dir, **component_kwargs):
  """Runs the LiveLogExampleGen executor; returns (examples by split, quarantine, counts)."""
  comp = eg.LiveLogExampleGen(input_base=str(log_dir), **component_kwargs)
  props = dict(comp.exec_properties)
  for key in (sc.INPUT_CONFIG_KEY, sc.OUTPUT_CONFIG_KEY):
    if not isinstance(props[key], str):
      props[key] = json_format.MessageToJson(props[key])
  examples = standard_artifacts.Examples()
  examples.uri = os.path.join(out_dir, "examples")
  quarantine = eg.QuarantinedRecords()
  quarantine.uri = os.path.join(out_dir, "quarantine")
  executor.Executor().Do({}, {"examples": [examples], "quarantine": [quarantine]}, props)
  by_split = {}
  for split in bt.SPLIT_NAMES:
    files = tf.io.gfile.glob(os.path.join(examples.uri, f"Split-{split}", "*.gz"))
    by_split[split] = {}
    for raw in tf.data.TFRecordDataset(files, compression_type="GZIP"):
      ex = tf.train.Example.FromString(raw.numpy())
      iid = ex.features.feature[F.IMPRESSION_ID].int64_list.value[0]
      by_split[split][iid] = ex.SerializeToString(deterministic=True)
  return (by_split, executor.read_quarantine(quarantine.uri),
          executor.read_counts(quarantine.uri))


@pytest.fixture(scope="module")
def clean(tmp_path_factory):
  root = tmp_path_factory.mktemp("clean")
  simulator.generate_logs(SMALL, str(root / "logs"), progress=False)
  by_split, bad, counts = run_example_gen(root / "logs", str(root / "out"))
  assert bad == [] and counts["accounting_problems"] == []
  assert len(by_split["train"]) > 50 and len(by_split["eval"]) > 50
  return root / "logs", by_split, counts


def test_closed_loop_requests_rebuild_the_examples_of_logged_impressions(clean):
  """The closed loop's request builder, fed the same logs, rebuilds every eval example (labels
  aside) byte for byte: training and serving features come from one code path."""
  log_dir, by_split, _ = clean
  tables = read_log_tables(str(log_dir))
  assert tables.quarantined_count == 0
  builder = policy.RequestBuilder(tables)
  by_user = collections.defaultdict(list)
  for imp in tables.impressions:
    by_user[imp.user_id].append(imp)
  compared = 0
  for imp in tables.impressions:
    if imp.impression_id not in by_split["eval"]:
      continue
    request = tf.train.Example()
    request.MergeFrom(builder.context(imp, by_user[imp.user_id]))
    request.MergeFrom(builder.candidate(imp.host_id, imp.ts))
    logged = client.without_labels(
        tf.train.Example.FromString(by_split["eval"][imp.impression_id]))
    assert (request.SerializeToString(deterministic=True)
            == logged.SerializeToString(deterministic=True)), imp.impression_id
    compared += 1
  assert compared == len(by_split["eval"])
  # The lifelong purchases and real-time feedback are in the comparison, not all empty.
  assert any(ex_len > 0 for ex_len in (
      tf.train.Example.FromString(x).features.feature[F.len_key(F.RT_POS)].int64_list.value[0]
      for x in by_split["eval"].values()))


def _lines(log_dir, kind):
  with open(os.path.join(log_dir, kind + lf.LOG_SUFFIX), "rb") as f:
    return f.read().splitlines()


def _first(log_dir, kind, pred=lambda d: True):
  for raw in _lines(log_dir, kind):
    d = json.loads(raw)
    if pred(d):
      return d
  raise AssertionError(f"no {kind} record matches")


def _dump(d):
  return json.dumps(d, separators=(",", ":")).encode()


def _append(kind, make_bytes):
  """A corruption that appends one line (made from the clean logs) to ``kind``'s file."""
  def apply(log_dir):
    raw = make_bytes(log_dir)
    path = os.path.join(log_dir, kind + lf.LOG_SUFFIX)
    with open(path, "ab") as f:
      f.write(raw + b"\n")
    return kind, raw
  return apply


def _event(event, **kw):
  return lambda d: _dump(dict(_first(d, r.EVENTS, lambda e: e["event"] == event), **kw))


def _copy(kind, pred=lambda d: True):
  return lambda d: _dump(_first(d, kind, pred))


def _changed(kind, **kw):
  return lambda d: _dump(dict(_first(d, kind), **kw))


def _is(event):
  return lambda e: e["event"] == event


# (case, corruption, reason substring). Every case adds input; nothing clean is modified.
CASES = [
    ("invalid utf-8", _append(r.ITEMS, lambda d: b'{"item_id": 9\xff9, "price": 1}'),
     "not valid UTF-8"),
    ("truncated json", _append(r.EVENTS, lambda d: _event(r.IMPRESSION)(d)[:25]),
     "not valid JSON"),
    ("blank line", _append(r.USERS, lambda d: b""), "not valid JSON"),
    ("json array", _append(r.HOSTS, lambda d: b"[1, 2]"), "expected a JSON object"),
    ("5 MB line", _append(r.EVENTS, lambda d: b'{"event": "' + b"x" * 5_000_000 + b'"}'),
     "field 'event' must be one of"),
    ("huge integer literal", _append(r.ITEMS, lambda d: b'{"item_id": ' + b"9" * 5000 + b"}"),
     "not valid JSON"),
    ("NaN slot", _append(r.EVENTS, lambda d: _event(r.IMPRESSION)(d).replace(
        b'"slot":0', b'"slot":NaN')), "field 'slot' must be an integer, got nan"),
    ("Infinity impression ts", _append(r.EVENTS, lambda d: _dump(dict(
        _first(d, r.EVENTS, _is(r.IMPRESSION)), impression_id=10**9)).replace(
            b'"ts":', b'"ts":Infinity,"x":')), "field 'ts' must be a finite number"),
    ("NaN lifelong ts", _append(r.PURCHASES, lambda d: _copy(r.PURCHASES)(d).replace(
        b'"ts":', b'"ts":NaN,"x":')), "field 'ts' must be a finite number"),
    ("NaN lifelong price", _append(r.PURCHASES, lambda d: _copy(r.PURCHASES)(d).replace(
        b'"price":', b'"price":NaN,"x":')), "field 'price' must be a finite number"),
    ("Infinity lifelong stay", _append(r.PURCHASES, lambda d: _copy(r.PURCHASES)(d).replace(
        b'"stay_seconds":', b'"stay_seconds":Infinity,"x":')),
     "field 'stay_seconds' must be a finite number"),
    ("NaN purchase gmv", _append(r.EVENTS, lambda d: _copy(r.EVENTS, _is(r.PURCHASE))(d).replace(
        b'"gmv":', b'"gmv":NaN,"x":')), "field 'gmv' must be a finite number"),
    ("id beyond int64", _append(r.EVENTS, _event(r.LIKE, user_id=2**64)),
     "field 'user_id' must be in [1, 9223372036854775807]"),
    ("ts beyond int64", _append(r.EVENTS, _event(r.LIKE, ts=2**70)), "field 'ts' is out of range"),
    ("negative price", _append(r.ITEMS, _changed(r.ITEMS, item_id=10**6, price=-1.0)),
     "field 'price' must be >= 0.0"),
    ("impression in 1970", _append(r.EVENTS, _event(r.IMPRESSION, impression_id=10**9, ts=5.0)),
     "outside the log's declared window"),
    ("event in 2100", _append(r.EVENTS, _event(r.LIKE, ts=4_102_444_800.0)),
     "outside the log's declared window"),
    ("stay disagrees with leave time", _append(r.EVENTS, lambda d: _dump(dict(
        _first(d, r.EVENTS, _is(r.LEAVE)), stay_seconds=999.0))), "disagrees with leave ts"),
    ("duplicate purchase event", _append(r.EVENTS, _copy(r.EVENTS, _is(r.PURCHASE))),
     "duplicate of"),
    ("duplicate like", _append(r.EVENTS, _copy(r.EVENTS, _is(r.LIKE))), "duplicate of"),
    ("duplicate impression", _append(r.EVENTS, _copy(r.EVENTS, _is(r.IMPRESSION))),
     "duplicate of"),
    ("duplicate lifelong purchase", _append(r.PURCHASES, _copy(r.PURCHASES)), "duplicate of"),
    ("conflicting item", _append(r.ITEMS, lambda d: _dump(dict(
        _first(d, r.ITEMS), price=_first(d, r.ITEMS)["price"] + 1))),
     "conflicting definition of items"),
    ("conflicting user", _append(r.USERS, lambda d: _dump(dict(
        _first(d, r.USERS), activity_level="other"))), "conflicting definition of users"),
    ("conflicting host", _append(r.HOSTS, lambda d: _dump(dict(
        _first(d, r.HOSTS), shop_id=_first(d, r.HOSTS)["shop_id"] + 1))),
     "conflicting definition of hosts"),
    ("conflicting display", _append(r.DISPLAYS, lambda d: _dump(dict(
        _first(d, r.DISPLAYS, lambda x: x["item_ids"]), item_ids=[]))),
     "conflicting definition of displays"),
    ("wrong type", _append(r.EVENTS, _event(r.LIKE, user_id="user-1")),
     "field 'user_id' must be an integer"),
    ("unknown id", _append(r.EVENTS, _event(r.LIKE, host_id=10**7)), "unknown host_id"),
    ("missing key", _append(r.DISPLAYS, lambda d: b'{"host_id": 1}'), "field 'ts' must be"),
    ("flash sale not a boolean", _append(r.DISPLAYS, lambda d: _dump(dict(
        _first(d, r.DISPLAYS), flash_sale="yes"))), "field 'flash_sale' must be true or false"),
    ("orphan event", _append(r.EVENTS, _event(r.LIKE, impression_id=10**9)),
     "no impression event for impression_id"),
]


@pytest.mark.parametrize("case,corrupt,reason", CASES, ids=[c[0] for c in CASES])
def test_corrupt_input_is_quarantined_and_clean_examples_are_unchanged(clean, tmp_path, case,
                                                                       corrupt, reason):
  log_dir, clean_examples, clean_counts = clean
  logs = tmp_path / "logs"
  shutil.copytree(log_dir, logs)
  kind, raw = corrupt(str(logs))
  by_split, bad, counts = run_example_gen(logs, str(tmp_path / "out"))
  assert counts["accounting_problems"] == []
  assert counts[bt.LINES_IN.format(kind)] == clean_counts[bt.LINES_IN.format(kind)] + 1
  assert counts[bt.QUARANTINED.format(kind)] == 1, [b.reason for b in bad]
  assert len(bad) == 1
  assert reason in bad[0].reason, bad[0].reason
  assert bad[0].raw == raw and bad[0].source == kind
  assert bad[0].line_no == len(_lines(logs, kind))  # the appended (last) line
  assert by_split == clean_examples, case


def _rewrite(log_dir, kind, transform):
  path = os.path.join(log_dir, kind + lf.LOG_SUFFIX)
  with open(path, "rb") as f:
    data = f.read()
  with open(path, "wb") as f:
    f.write(transform(data))


@pytest.mark.parametrize("case,transform", [
    ("gzip content named .jsonl", gzip.compress),
    ("utf-8 byte-order mark", lambda b: r.UTF8_BOM + b),
    ("CRLF line ends", lambda b: b.replace(b"\n", b"\r\n")),
], ids=["gzip", "bom", "crlf"])
def test_file_encodings_are_read_without_loss(clean, tmp_path, case, transform):
  log_dir, clean_examples, clean_counts = clean
  logs = tmp_path / "logs"
  shutil.copytree(log_dir, logs)
  for kind in (r.USERS, r.EVENTS):
    _rewrite(logs, kind, transform)
  by_split, bad, counts = run_example_gen(logs, str(tmp_path / "out"))
  assert bad == [], case
  assert counts == clean_counts
  assert by_split == clean_examples


def test_a_broken_gzip_stream_is_quarantined_as_a_file(clean, tmp_path):
  log_dir, _, _ = clean
  logs = tmp_path / "logs"
  shutil.copytree(log_dir, logs)
  _rewrite(logs, r.DISPLAYS, lambda b: gzip.compress(b)[:-200])  # cut off the end
  by_split, bad, counts = run_example_gen(logs, str(tmp_path / "out"))
  assert counts["accounting_problems"] == []
  assert [b.line_no for b in bad] == [r.WHOLE_FILE]
  assert "gzip stream unreadable after line" in bad[0].reason
  assert sum(len(v) for v in by_split.values()) == counts[bt.EXAMPLES_OUT] > 0


def test_shuffled_input_with_tied_times_gives_identical_examples(clean, tmp_path):
  log_dir, _, _ = clean
  tied = tmp_path / "tied"
  shutil.copytree(log_dir, tied)
  # Tie a user's lifelong purchases of different items in pairs (same millisecond).
  purchases = [json.loads(x) for x in _lines(tied, r.PURCHASES)]
  n_tied = 0
  for a, b in zip(purchases[::2], purchases[1::2]):
    if a["user_id"] == b["user_id"] and a["item_id"] != b["item_id"]:
      b["ts"] = a["ts"]
      n_tied += 1
  assert n_tied > 100
  _rewrite(tied, r.PURCHASES, lambda _: b"\n".join(map(_dump, purchases)) + b"\n")
  ordered, bad, _ = run_example_gen(tied, str(tmp_path / "out1"))
  assert bad == []
  rng = random.Random(0)
  for kind in r.LOG_KINDS:
    lines = _lines(tied, kind)
    rng.shuffle(lines)
    _rewrite(tied, kind, lambda _, ls=lines: b"\n".join(ls) + b"\n")
  shuffled, bad, _ = run_example_gen(tied, str(tmp_path / "out2"))
  assert bad == []
  assert shuffled == ordered


def _feature(serialized, name):
  f = tf.train.Example.FromString(serialized).features.feature[name]
  return list(f.int64_list.value) or list(f.float_list.value)


def test_split_is_forward_in_time(clean):
  _, by_split, counts = clean
  assert counts[bt.EXAMPLES_SPLIT.format("eval")] == len(by_split["eval"])
  rows = {split: [(_feature(s, F.USER_ID)[0], _feature(s, F.SESSION_ID)[0],
                   _feature(s, F.TIMESTAMP)[0], s) for s in exs.values()]
          for split, exs in by_split.items()}
  train_sessions = {x[1] for x in rows["train"]}
  assert not train_sessions & {x[1] for x in rows["eval"]}  # sessions are never cut
  # Eval sessions start on the last day; no eval impression is earlier than a train one of the
  # same user, nor than the eval period's start.
  window = lf.read_time_window(str(clean[0]))[lf.WINDOW_EVENTS]
  eval_start = window[0] + (SMALL.days - 1) * lf.SECONDS_PER_DAY
  assert min(x[2] for x in rows["eval"]) >= eval_start
  last_train = {}
  for user, _, ts, _ in rows["train"]:
    last_train[user] = max(ts, last_train.get(user, 0))
  assert all(ts >= last_train.get(user, 0) for user, _, ts, _ in rows["eval"])
  # Train examples' real-time sequences hold only feedback that ended before the eval period.
  for *_, s in rows["train"]:
    ts = _feature(s, F.TIMESTAMP)[0]
    for prefix in F.RT_PREFIXES:
      n = _feature(s, F.len_key(prefix))[0]
      ages = _feature(s, F.seq_key(prefix, "age_seconds"))[:n]
      assert all(ts - age < eval_start for age in ages)


def test_time_window_can_be_configured_and_is_checked_when_built(clean, tmp_path):
  log_dir, _, _ = clean
  with pytest.raises(ValueError, match="time_window.events must be"):
    eg.LiveLogExampleGen(input_base=str(log_dir), time_window={"events": [5, 1],
                                                               "purchases": [0, 1]})
  with pytest.raises(ValueError, match="eval_days must be >= 1, got 0"):
    eg.LiveLogExampleGen(input_base=str(log_dir), eval_days=0)
  window = lf.read_time_window(str(log_dir))
  narrow = {lf.WINDOW_EVENTS: list(window[lf.WINDOW_EVENTS]),
            lf.WINDOW_PURCHASES: [window[lf.WINDOW_EVENTS][0] - 1.0,
                                  window[lf.WINDOW_EVENTS][1]]}
  _, bad, counts = run_example_gen(log_dir, str(tmp_path / "out"), time_window=narrow)
  # Every lifelong purchase predates that window: all quarantined, none lost from the count.
  assert counts[bt.QUARANTINED.format(r.PURCHASES)] == counts[bt.LINES_IN.format(r.PURCHASES)]
  assert all("outside the log's declared window" in b.reason for b in bad)
  assert counts["accounting_problems"] == []
