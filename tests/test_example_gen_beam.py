"""LogsToExamples on hand-built events: point-in-time correctness, sequences, stats, quarantine."""

import glob
import json

import apache_beam as beam
import pytest
import tensorflow as tf
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to

from components.live_example_gen import beam_transforms as bt
from components.live_example_gen import point_in_time as pit
from components.live_example_gen import records as r
from data_gen import log_format as lf
from models import features as F

T0 = 1_767_260_000.0
RT_LEN, LL_LEN = 3, 2
WINDOWS = {lf.WINDOW_EVENTS: (T0 - 1000.0, T0 + 10 * 86400.0),
           lf.WINDOW_PURCHASES: (T0 - 400 * 86400.0, T0 + 10 * 86400.0)}


def raw_lines(kind, lines):
  """Text lines of one log kind -> RawLines as the reader makes them."""
  return [r.RawLine(kind, f"{kind}.jsonl", i, x.encode() if isinstance(x, str) else x)
          for i, x in enumerate(lines, start=1)]


def _line(**kw):
  return json.dumps(kw)


def _static_lines():
  return {
      r.ITEMS: [_line(item_id=i, category_id=10 + i % 2, brand_id=100 + i, shop_id=1, price=9.5)
                for i in (1, 2, 3)],
      r.HOSTS: [_line(host_id=h, shop_id=50 + h, category_ids=[20 + h, 30]) for h in (1, 2, 3)],
      r.USERS: [_line(user_id=1, activity_level="high"), _line(user_id=2, activity_level="new")],
      r.PURCHASES: [_line(user_id=1, item_id=i, category_id=10 + i % 2, brand_id=100 + i,
                          shop_id=1, price=float(i), weight=1, stay_seconds=30.0,
                          ts=T0 - 86400 * (4 - i)) for i in (1, 2, 3)]
      # Purchase after the first impression: must not appear in its lifelong sequence.
      + [_line(user_id=1, item_id=3, category_id=11, brand_id=103, shop_id=1, price=3.0,
               weight=2, stay_seconds=5.0, ts=T0 + 5)],
      r.DISPLAYS: [_line(host_id=1, ts=T0 - 100, item_ids=[1, 2]),
                   _line(host_id=1, ts=T0 + 150, item_ids=[3], flash_sale=True)],
  }


def _impression(iid, user, host, ts, stay, session=1, slot=0, actions=(), swipe=True):
  out = [_line(event="impression", impression_id=iid, user_id=user, host_id=host, ts=ts,
               session_id=session, slot=slot, trigger_item_id=1, propensity=0.5)]
  for a, off in actions:
    extra = {"item_id": 3, "gmv": 9.5} if a == "purchase" else {}
    out.append(_line(event=a, impression_id=iid, user_id=user, host_id=host, ts=ts + off,
                     **extra))
  out.append(_line(event="leave", impression_id=iid, user_id=user, host_id=host, ts=ts + stay,
                   stay_seconds=stay, swipe_down=swipe))
  return out


def _run(events, out_dir, eval_days=1):
  """Runs LogsToExamples; returns (examples by impression id, quarantine, counts)."""
  lines = dict(_static_lines(), **{r.EVENTS: events})
  with TestPipeline() as p:
    pcolls = {k: p | f"Create[{k}]" >> beam.Create(raw_lines(k, v)) for k, v in lines.items()}
    out = pcolls | bt.LogsToExamples(windows=WINDOWS, realtime_len=RT_LEN, lifelong_len=LL_LEN,
                                     eval_days=eval_days)
    _ = (out[bt.EXAMPLES] | "Ser" >> beam.Map(lambda se: se[1])
         | "WriteEx" >> beam.io.WriteToTFRecord(str(out_dir / "ex")))
    _ = (out[bt.QUARANTINE] | "BadJson" >> beam.Map(r.BadRecord.to_json)
         | "WriteBad" >> beam.io.WriteToText(str(out_dir / "bad")))
    _ = (out[bt.COUNTS] | "CountJson" >> beam.Map(json.dumps)
         | "WriteCounts" >> beam.io.WriteToText(str(out_dir / "counts")))
  by_id = {}
  for s in _read(out_dir, "ex", tfrecord=True):
    ex = tf.train.Example.FromString(s)
    by_id[ex.features.feature[F.IMPRESSION_ID].int64_list.value[0]] = ex.features.feature
  bad = [r.BadRecord.from_json(x) for x in _read(out_dir, "bad")]
  counts = dict(json.loads(x) for x in _read(out_dir, "counts"))
  return by_id, bad, counts


def _read(out_dir, prefix, tfrecord=False):
  out = []
  for path in sorted(glob.glob(str(out_dir / f"{prefix}-*"))):
    if tfrecord:
      out += [bytes(x.numpy()) for x in tf.data.TFRecordDataset(path)]
    else:
      with open(path) as f:
        out += [line for line in f.read().splitlines() if line]
  return out


def _ints(feats, name):
  return list(feats[name].int64_list.value)


def _floats(feats, name):
  return list(feats[name].float_list.value)


# User 1: imp 1 long stay with a like (positive), imp 2 quick swipe (negative), imp 3 mid stay
# (neither), imp 4 at a later time. User 2 on host 1 provides other-user stats.
EVENTS = (
    _impression(1, 1, 1, T0, 30.0, actions=[("like", 5.0), ("item_click", 8.0)])
    + _impression(2, 1, 2, T0 + 31, 1.5, slot=1)
    + _impression(3, 1, 3, T0 + 33.5, 6.0, slot=2)
    + _impression(4, 1, 1, T0 + 200, 12.0, session=2,
                  actions=[("add_to_cart", 3.0), ("purchase", 4.0)])
    + _impression(5, 2, 1, T0 + 10, 40.0, session=3, actions=[("like", 1.0), ("follow", 2.0)])
)


@pytest.fixture(scope="module")
def clean_run(tmp_path_factory):
  return _run(EVENTS, tmp_path_factory.mktemp("clean"))


def test_one_example_per_impression_and_accounting(clean_run):
  by_id, bad, counts = clean_run
  assert sorted(by_id) == [1, 2, 3, 4, 5]
  assert bad == []
  assert counts[bt.EXAMPLES_OUT] == 5
  assert counts[bt.LINES_IN.format(r.EVENTS)] == len(EVENTS) == counts[
      bt.ACCEPTED.format(r.EVENTS)]
  assert bt.check_accounting(counts) == []


def test_labels(clean_run):
  by_id, _, _ = clean_run
  f1, f4 = by_id[1], by_id[4]
  assert _ints(f1, F.INTERACT) == [1] and _ints(f1, F.ITEM_CLICK) == [1]
  assert _ints(f1, F.EFFECTIVE_VIEW) == [1] and _ints(f1, F.BUY) == [0]
  assert _ints(by_id[2], F.EFFECTIVE_VIEW) == [0]
  assert _ints(f4, F.BUY) == [1] and _ints(f4, F.PURCHASE) == [1] and _ints(f4, F.INTERACT) == [0]
  assert _floats(f4, F.GMV) == [9.5] and _floats(f1, F.GMV) == [0.0]


def test_positive_negative_split_most_recent_first(clean_run):
  by_id, _, _ = clean_run
  f4 = by_id[4]
  # Positive: imp 1 (stay 30 + like). Negative: imp 2 (1.5 s). Imp 3 (6 s) is in neither.
  assert _ints(f4, F.seq_key(F.RT_POS, "host_ids")) == [1, 0, 0]
  assert _ints(f4, F.len_key(F.RT_POS)) == [1]
  assert _ints(f4, F.seq_key(F.RT_NEG, "host_ids")) == [2, 0, 0]
  # Every category of the past room (HOST_MAX_CATEGORIES per position, 0-padded).
  width = F.HOST_MAX_CATEGORIES
  assert _ints(f4, F.seq_key(F.RT_NEG, "category_ids")) == [22, 30] + [0] * (RT_LEN * width - 2)
  assert _ints(f4, F.seq_key(F.RT_NEG, "shop_ids")) == [52, 0, 0]
  assert _ints(f4, F.seq_key(F.RT_NEG, "stay_buckets")) == [pit.stay_bucket(1.5), 0, 0]
  # Age is measured from the end of the past stay: T0+200 - (T0+31+1.5) = 167.
  assert _ints(f4, F.seq_key(F.RT_NEG, "age_seconds")) == [167, 0, 0]


def test_no_leakage_of_feedback_not_finished_before_the_impression(clean_run):
  by_id, _, _ = clean_run
  # Imp 2 starts at T0+31, imp 1's stay ended at T0+30: imp 1 is visible to imp 2...
  assert _ints(by_id[2], F.len_key(F.RT_POS)) == [1]
  # ...but nothing is visible to imp 1 itself, and its own like is not in any feature.
  assert _ints(by_id[1], F.len_key(F.RT_POS)) == [0]
  assert _ints(by_id[1], F.len_key(F.RT_NEG)) == [0]
  # Host 1 stats for imp 1 at T0: nothing before. Imp 4 at T0+200 sees imp 1 and imp 5 views
  # (2 users), likes from imp 1 (T0+5) and imp 5 (T0+11), one follow; not its own cart/purchase.
  assert _floats(by_id[1], F.host_stat_key("uv", "10m")) == [0.0]
  assert _floats(by_id[1], F.host_stat_key("likes", "10m")) == [0.0]
  assert _floats(by_id[4], F.host_stat_key("uv", "10m")) == [2.0]
  assert _floats(by_id[4], F.host_stat_key("likes", "10m")) == [2.0]
  assert _floats(by_id[4], F.host_stat_key("follows", "60m")) == [1.0]
  assert _floats(by_id[4], F.host_stat_key("item_clicks", "10m")) == [1.0]
  # Imp 5 at T0+10 (other user) sees imp 1's view at T0 and its like at T0+5, not the click at T0+8?
  # The click at T0+8 is before T0+10, so it counts; imp 1's leave (T0+30) does not matter here.
  assert _floats(by_id[5], F.host_stat_key("likes", "10m")) == [1.0]
  assert _floats(by_id[5], F.host_stat_key("item_clicks", "10m")) == [1.0]


def test_display_and_lifelong_point_in_time(clean_run):
  by_id, _, _ = clean_run
  assert _ints(by_id[1], F.DISPLAY_ITEM_IDS)[:3] == [1, 2, 0]
  assert _ints(by_id[1], F.DISPLAY_LEN) == [2]
  assert _ints(by_id[4], F.DISPLAY_ITEM_IDS)[:2] == [3, 0]  # refreshed at T0+150
  # ... with a flash sale from then on (an older display record without the flag: none).
  assert _ints(by_id[1], F.HOST_FLASH_SALE) == [0] and _ints(by_id[4], F.HOST_FLASH_SALE) == [1]
  # Lifelong: purchases of items 3, 2, 1 before T0 (most recent first), truncated to 2; the
  # purchase at T0+5 is after impression 1 but before impression 4.
  assert _ints(by_id[1], F.seq_key(F.LL, "item_ids")) == [3, 2]
  assert _ints(by_id[1], F.len_key(F.LL)) == [2]
  assert _ints(by_id[1], F.seq_key(F.LL, "age_days")) == [1, 2]
  assert _floats(by_id[4], F.seq_key(F.LL, "weights")) == [2.0, 1.0]
  assert _ints(by_id[5], F.len_key(F.LL)) == [0]  # user 2 has no purchases
  # Variable-length: no padding, and the empty list is present (not a missing feature).
  assert _ints(by_id[5], F.seq_key(F.LL, "item_ids")) == []
  assert by_id[5][F.seq_key(F.LL, "item_ids")].WhichOneof("kind") == "int64_list"


def test_truncation_keeps_most_recent(tmp_path):
  events = list(EVENTS)
  for k in range(5):  # five more quick swipes for user 1 before imp at T0+1000
    events += _impression(10 + k, 1, 2 + k % 2, T0 + 300 + 10 * k, 1.0, session=4, slot=k)
  events += _impression(20, 1, 3, T0 + 1000, 2.0, session=4, slot=5)
  by_id, bad, _ = _run(events, tmp_path)
  assert bad == []
  neg = _ints(by_id[20], F.seq_key(F.RT_NEG, "host_ids"))
  assert _ints(by_id[20], F.len_key(F.RT_NEG)) == [RT_LEN]
  assert neg == [2 + 4 % 2, 2 + 3 % 2, 2 + 2 % 2]  # imps 14, 13, 12
  assert _ints(by_id[20], F.SESSION_HOSTS)[:6] == [2, 3, 2, 3, 2, 0]  # imps 14..10
  # Their categories, HOST_MAX_CATEGORIES per shown room (host h: 20 + h and 30).
  session_cats = _ints(by_id[20], F.SESSION_CATEGORY_IDS)
  assert session_cats[:6] == [22, 30, 0, 23, 30, 0]
  assert len(session_cats) == F.SESSION_HOSTS_LEN * F.HOST_MAX_CATEGORIES
  assert session_cats[5 * F.HOST_MAX_CATEGORIES:] == [0] * ((F.SESSION_HOSTS_LEN - 5)
                                                            * F.HOST_MAX_CATEGORIES)


def test_bad_records_are_quarantined_with_reasons_and_counted(tmp_path):
  bad_lines = [
      '{"event": "impression", "impression_id": 9',  # truncated
      _line(event="leave", impression_id=1, user_id="user-1", host_id=1, ts=T0 + 30,
            stay_seconds=30.0, swipe_down=True),  # wrong type
      _line(event="like", impression_id=5, user_id=2, host_id=999, ts=T0 + 12),  # unknown id
      _line(event="leave", impression_id=3, user_id=1, host_id=3, ts=T0 - 500, stay_seconds=6.0,
            swipe_down=True),  # before its impression
      _line(event="leave", impression_id=77, user_id=1, host_id=3, ts=T0, stay_seconds=6.0,
            swipe_down=True),  # orphan
  ]
  by_id, bad, counts = _run(list(EVENTS) + bad_lines, tmp_path)
  assert sorted(by_id) == [1, 2, 3, 4, 5]  # good records all still there
  reasons = sorted(b.reason for b in bad)
  assert len(bad) == 5
  assert any("not valid JSON" in x for x in reasons)
  assert any("'user_id' must be an integer, got 'user-1'" in x for x in reasons)
  assert any("unknown host_id 999" in x for x in reasons)
  assert any("is before impression 3's ts" in x for x in reasons)
  assert any("no impression event for impression_id 77" in x for x in reasons)
  assert counts[bt.QUARANTINED.format(r.EVENTS)] == 5
  assert counts[bt.LINES_IN.format(r.EVENTS)] == len(EVENTS) + 5
  assert bt.check_accounting(counts) == []


def test_check_accounting_reports_imbalance():
  counts = {bt.LINES_IN.format(r.EVENTS): 10, bt.ACCEPTED.format(r.EVENTS): 7,
            bt.QUARANTINED.format(r.EVENTS): 2, bt.IMPRESSIONS_IN: 3, bt.EXAMPLES_OUT: 3,
            bt.EXAMPLES_SPLIT.format(bt.TRAIN_SPLIT): 2, bt.EXAMPLES_SPLIT.format(bt.EVAL_SPLIT): 0}
  assert bt.check_accounting(counts) == [
      "events: 10 lines in != 7 accepted + 2 quarantined",
      "2 examples in splits != 3 examples out"]


def test_assemble_reasons_with_assert_that():
  """The event-join step alone, checked inside the pipeline with assert_that."""
  events = _impression(1, 1, 1, T0, 5.0)
  # A second leave 4 s later whose stay agrees with its time: a conflicting version, not a copy.
  conflicting = _line(event="leave", impression_id=1, user_id=1, host_id=1, ts=T0 + 9.0,
                      stay_seconds=9.0, swipe_down=True)
  keyed = [(1, r.parse_line(raw, WINDOWS)) for raw in raw_lines(r.EVENTS, events + [conflicting])]
  with TestPipeline() as p:
    out = (p | beam.Create(keyed) | beam.GroupByKey()
           | beam.FlatMap(lambda kv: bt.assemble_impression(*kv)).with_outputs(
               bt._ACCEPTED, main="main"))  # pylint: disable=protected-access
    reasons = out.main | beam.Map(lambda x: x.reason if isinstance(x, r.BadRecord)
                                  else f"impression {x.impression_id} stay {x.stay_seconds}")
    assert_that(reasons, equal_to([
        "impression 1 stay 5.0",
        "conflicting definition of events {'impression_id': 1, 'event': 'leave', 'item_id': "
        "None}: kept events.jsonl:2 = " + r.canonical(keyed[1][1].rec)]))
    assert_that(out[bt._ACCEPTED], equal_to([(bt.ACCEPTED.format(r.EVENTS), 2)]),  # pylint: disable=protected-access
                label="used")


def test_sorted_facts_orders_by_time_then_content_in_both_directions():
  recs = [{"ts": 5.0, "item_id": 2}, {"ts": 1.0, "item_id": 9}, {"ts": 5.0, "item_id": 1},
          {"ts": 3.0, "item_id": 4}, {"ts": 5.0, "item_id": 3}]
  parsed = [r.Parsed(r.RawLine(r.PURCHASES, "p.jsonl", i, b""), rec)
            for i, rec in enumerate(recs, start=1)]
  items = lambda ps: [p.rec["item_id"] for p in ps]  # noqa: E731
  assert items(bt.sorted_facts(parsed)) == [9, 4, 1, 2, 3]
  assert items(bt.sorted_facts(parsed, reverse=True)) == [3, 2, 1, 4, 9]
  want = sorted(parsed, key=lambda p: (p.rec["ts"], r.canonical(p.rec)), reverse=True)
  assert bt.sorted_facts(reversed(parsed), reverse=True) == want


def test_lines_are_spread_over_workers_only_when_there_are_several():
  from apache_beam.options.pipeline_options import PipelineOptions

  from components.live_example_gen import executor as eg

  assert not eg.spreads_work(PipelineOptions(["--direct_running_mode=in_memory",
                                              "--direct_num_workers=1"]))
  assert eg.spreads_work(PipelineOptions(["--direct_running_mode=multi_processing",
                                          "--direct_num_workers=2"]))
  assert eg.spreads_work(PipelineOptions(["--runner=DataflowRunner"]))


# --- Serialized parts ------------------------------------------------------------------------------
def _values_for(specs):
  """Valid values for every feature of ``specs`` (variable-length ones: two values)."""
  feats = {}
  for spec in specs:
    n = 2 if spec.variable_length else spec.length
    feats[spec.name] = ([b"high"] * n if spec.dtype == "bytes" else
                        [0.5] * n if spec.dtype == "float" else [1] * n)
  for spec in specs:
    if spec.variable_length:
      feats[spec.length_key] = [2]
  return feats


def test_parts_split_the_features_and_join_to_one_example():
  specs = F.raw_features(RT_LEN, LL_LEN)
  parts = bt.part_specs(specs)
  host_names = {s.name for s in parts[bt.HOST_PART]}
  user_names = {s.name for s in parts[bt.USER_PART]}
  assert host_names == set(F.HOST_SIDE_FEATURES)
  assert host_names | user_names == {s.name for s in specs} and not host_names & user_names
  user_feats, host_feats = _values_for(parts[bt.USER_PART]), _values_for(parts[bt.HOST_PART])
  host_feats[F.HOST_ID] = [7]
  user_feats[F.USER_ID] = [3]
  split, joined = bt._join_parts((5, {
      bt.USER_PART: [("eval", bt.to_example(user_feats, parts[bt.USER_PART]).SerializeToString())],
      bt.HOST_PART: [bt.to_example(host_feats, parts[bt.HOST_PART]).SerializeToString()]}))
  assert split == "eval"
  # Equal, as a message, to the example built from both halves at once...
  whole = bt.to_example(dict(user_feats, **host_feats), specs)
  assert tf.train.Example.FromString(joined) == whole
  # ...and TensorFlow's own parser reads every feature of both halves from the joined bytes.
  parsed = tf.io.parse_single_example(joined, {
      F.HOST_ID: tf.io.FixedLenFeature([1], tf.int64),
      F.USER_ID: tf.io.FixedLenFeature([1], tf.int64),
      F.seq_key(F.LL, "item_ids"): tf.io.VarLenFeature(tf.int64)})
  assert parsed[F.HOST_ID].numpy().tolist() == [7] and parsed[F.USER_ID].numpy().tolist() == [3]
  assert parsed[F.seq_key(F.LL, "item_ids")].values.numpy().tolist() == [1, 1]


def test_join_needs_one_part_of_each():
  with pytest.raises(ValueError, match="impression 9: expected one user part and one host part, "
                                       "got 1 and 0"):
    bt._join_parts((9, {bt.USER_PART: [("train", b"")], bt.HOST_PART: []}))


def _one_by_one(rows, specs):
  return [bt.to_example(row, specs).SerializeToString() for row in rows]


# The two encoders of a part: one row in Python, many rows through Arrow and tfx_bsl.
ENCODERS = pytest.mark.parametrize("encode", [_one_by_one, bt.to_examples],
                                   ids=["to_example", "to_examples"])


@ENCODERS
def test_an_encoder_names_a_missing_unexpected_or_wrongly_sized_feature(encode):
  specs = bt.part_specs(F.raw_features(RT_LEN, LL_LEN))[bt.HOST_PART]
  good = _values_for(specs)

  def bad(**change):  # a good row, then the bad one
    return encode([good, dict(good, **change)], specs)

  with pytest.raises(ValueError, match=f"feature '{F.HOST_SHOP_ID}' is missing"):
    encode([good, {k: v for k, v in good.items() if k != F.HOST_SHOP_ID}], specs)
  with pytest.raises(ValueError, match=rf"features \['{F.USER_ID}'\] are not among"):
    bad(**{F.USER_ID: [1]})
  with pytest.raises(ValueError, match=f"feature '{F.HOST_CATEGORY_IDS}' has 1 values, "
                                       f"expected {F.HOST_MAX_CATEGORIES}"):
    bad(**{F.HOST_CATEGORY_IDS: [1]})
  with pytest.raises(TypeError, match=f"feature '{F.HOST_ID}' \\(int\\) has a value of the "
                                      "wrong type"):
    bad(**{F.HOST_ID: ["x"]})
  with pytest.raises(TypeError, match=f"feature '{F.HOST_ID}' \\(int\\) has a value of the "
                                      "wrong type"):
    bad(**{F.HOST_ID: [1.5]})  # no silent truncation to 1
  with pytest.raises(TypeError, match=f"feature '{F.DISPLAY_PRICES}' \\(float\\) has a value "
                                      "of the wrong type"):
    bad(**{F.DISPLAY_PRICES: ["x"] * F.DISPLAY_TOP_N})
  user_specs = bt.part_specs(F.raw_features(RT_LEN, LL_LEN))[bt.USER_PART]
  user = _values_for(user_specs)
  with pytest.raises(TypeError, match=f"feature '{F.ACTIVITY_LEVEL}' \\(bytes\\) has a value "
                                      "of the wrong type"):
    encode([user, dict(user, **{F.ACTIVITY_LEVEL: ["new"]})], user_specs)  # str, not bytes


@ENCODERS
def test_an_encoder_checks_a_variable_length_against_its_length_feature(encode):
  specs = bt.part_specs(F.raw_features(RT_LEN, LL_LEN))[bt.USER_PART]
  good = _values_for(specs)
  items = F.seq_key(F.LL, "item_ids")
  with pytest.raises(ValueError, match=f"feature '{items}' has 1 values, expected 2"):
    encode([good, dict(good, **{items: [5]})], specs)
  too_long = {k: [1] * (LL_LEN + 1) for k in good if k.startswith(F.seq_key(F.LL, ""))}
  too_long[F.len_key(F.LL)] = [LL_LEN + 1]
  with pytest.raises(ValueError, match=f"expected {LL_LEN + 1} \\(at most {LL_LEN}\\)"):
    encode([dict(good, **too_long)], specs)


def test_the_batch_encoder_writes_what_the_row_encoder_writes():
  specs = F.raw_features(RT_LEN, LL_LEN)
  full = _values_for(specs)
  # Empty variable-length lists (present with no values), ints in a float feature, a float
  # that float32 rounds, and an int beyond 32 bits.
  empty = dict(full, **{k: [] for k in full if k.startswith(F.seq_key(F.LL, ""))})
  empty[F.len_key(F.LL)] = [0]
  odd = dict(full, **{F.DISPLAY_PRICES: [1] * F.DISPLAY_TOP_N, F.PROPENSITY: [0.1],
                      F.USER_ID: [1 << 40]})
  rows = [full, empty, odd]
  batch = bt.to_examples(rows, specs)
  assert len(batch) == 3 and bt.to_examples([], specs) == []
  for got, want in zip(batch, _one_by_one(rows, specs)):
    assert tf.train.Example.FromString(got) == tf.train.Example.FromString(want)
  ll_items = tf.train.Example.FromString(batch[1]).features.feature[F.seq_key(F.LL, "item_ids")]
  assert ll_items.WhichOneof("kind") == "int64_list" and not ll_items.int64_list.value


def test_a_variable_length_feature_must_share_its_length_part():
  stray = F.RawFeature(F.HOST_ID, "int", 4, length_key=F.len_key(F.LL))
  with pytest.raises(ValueError, match=f"feature '{F.HOST_ID}' is in the host part but its "
                                       f"length '{F.len_key(F.LL)}' is not"):
    bt.part_specs([stray] + [s for s in F.raw_features(RT_LEN, LL_LEN) if s.name != F.HOST_ID])


# --- Per-user indexes ------------------------------------------------------------------------------
def _record(iid, leave_ts, stay, host=1, actions=()):
  return pit.ImpressionRecord(
      impression_id=iid, session_id=1, user_id=1, host_id=host, ts=leave_ts - stay, slot=0,
      trigger_item_id=1, propensity=1.0, leave_ts=leave_ts, stay_seconds=stay, swipe_down=True,
      actions=list(actions))


def test_feedback_index_reads_what_sorting_the_whole_history_gives_at_every_time():
  hosts = {1: {"shop_id": 51, "category_ids": [21, 30]}, 2: {"shop_id": 52, "category_ids": [22]}}
  # Long stays (positive), quick swipes (negative), an interaction and a middling stay (neither);
  # three stays end at the same time (T0 + 20), so the impression id orders them.
  history = [_record(1, T0 + 10, 40.0), _record(2, T0 + 20, 1.0, host=2),
             _record(3, T0 + 20, 50.0, host=2, actions=[(r.PURCHASE, T0 + 15)]),
             _record(4, T0 + 20, 2.0),
             _record(5, T0 + 30, 3.0, actions=[(r.LIKE, T0 + 29)]), _record(6, T0 + 40, 5.0),
             _record(7, T0 + 50, 60.0)]
  index = pit.FeedbackIndex(list(reversed(history)), hosts)
  for ts in (T0, T0 + 10, T0 + 15, T0 + 20, T0 + 20.5, T0 + 45, T0 + 99):
    done = sorted((h for h in history if h.leave_ts < ts),
                  key=lambda h: (h.leave_ts, h.impression_id), reverse=True)
    got = index.sequences(ts, 2)
    for prefix, keep in ((F.RT_POS, pit.is_positive), (F.RT_NEG, pit.is_negative)):
      want = [h for h in done if keep(h)][:2]
      assert got[F.len_key(prefix)] == [len(want)], (ts, prefix)
      assert got[F.seq_key(prefix, "host_ids")] == [h.host_id for h in want] + [0] * (
          2 - len(want)), (ts, prefix)
      assert got[F.seq_key(prefix, "age_seconds")][:len(want)] == [
          int(ts - h.leave_ts) for h in want], (ts, prefix)
      # Every impression that ended after the event and before ts, positive, negative or neither.
      assert got[F.seq_key(prefix, F.RT_IMPRESSIONS_SINCE)] == [
          sum(h.leave_ts < other.leave_ts < ts for other in history) for h in want] + [0] * (
          2 - len(want)), (ts, prefix)
      assert got[F.seq_key(prefix, F.RT_LIKED)] == [int(h.has(r.LIKE)) for h in want] + [0] * (
          2 - len(want)), (ts, prefix)
      assert got[F.seq_key(prefix, F.RT_PURCHASED)] == [
          int(h.has(r.PURCHASE)) for h in want] + [0] * (2 - len(want)), (ts, prefix)
  # Hand-checked at T0 + 20.5: positives 3 (50 s) then 1 (40 s); negatives 4 then 2 (the same
  # end, the larger id first); each room's categories padded to its own slot.
  at = index.sequences(T0 + 20.5, 2)
  assert at[F.seq_key(F.RT_NEG, "host_ids")] == [1, 2]
  pad = F.HOST_MAX_CATEGORIES
  assert at[F.seq_key(F.RT_NEG, "category_ids")] == [21, 30] + [0] * (pad - 2) + [22] + [0] * (
      pad - 1)
  assert at[F.seq_key(F.RT_POS, "host_ids")] == [2, 1]
  assert at[F.seq_key(F.RT_POS, "shop_ids")] == [52, 51]
  assert at[F.seq_key(F.RT_POS, F.RT_PURCHASED)] == [1, 0]  # the user bought in room 2 (id 3)
  # The three stays that end together are not after one another; 1 (at +10) has those three
  # after it.
  assert at[F.seq_key(F.RT_NEG, F.RT_IMPRESSIONS_SINCE)] == [0, 0]
  assert at[F.seq_key(F.RT_POS, F.RT_IMPRESSIONS_SINCE)] == [0, 3]
  # At +45: positives 5 (the like, ended +30) then 3 (+20); 6 (middling, +40) counts for both.
  later = index.sequences(T0 + 45, 2)
  assert later[F.seq_key(F.RT_POS, "host_ids")] == [1, 2]
  assert later[F.seq_key(F.RT_POS, F.RT_IMPRESSIONS_SINCE)] == [1, 2]
  assert later[F.seq_key(F.RT_POS, F.RT_LIKED)] == [1, 0]


def test_purchase_index_reads_purchases_strictly_before_a_time_most_recent_first():
  purchases_desc = [{"ts": T0 - d * 86400.0, "item_id": 10 + d, "category_id": 1, "brand_id": 2,
                     "shop_id": 3, "price": 9, "stay_seconds": 5, "weight": 1}
                    for d in (0, 1, 1, 3)]  # two on the same day-old time
  index = pit.PurchaseIndex(purchases_desc)
  at = index.sequence(T0, 2)  # the purchase at exactly T0 is not before T0
  assert at[F.len_key(F.LL)] == [2]
  assert at[F.seq_key(F.LL, "item_ids")] == [11, 11]
  assert at[F.seq_key(F.LL, "age_days")] == [1, 1]
  assert at[F.seq_key(F.LL, "prices")] == [9.0, 9.0]
  assert index.sequence(T0 + 1, 10)[F.seq_key(F.LL, "item_ids")] == [10, 11, 11, 13]
  assert index.sequence(T0 + 1, 10)[F.seq_key(F.LL, "age_days")] == [0, 1, 1, 3]
  empty = index.sequence(T0 - 3 * 86400.0, 10)
  assert empty[F.len_key(F.LL)] == [0] and empty[F.seq_key(F.LL, "weights")] == []
