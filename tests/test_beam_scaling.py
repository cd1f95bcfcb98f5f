"""bench.beam_scaling's pure parts: round summaries, failure records, output comparisons, the CPU
meter, and the DaskRunner-runnable stage (built and run in memory; dask is not needed)."""

import json
import os
import subprocess
import sys

import apache_beam as beam
import pytest
import tensorflow as tf

from bench import beam_graphs as bg
from bench import beam_scaling as bs
from components.live_example_gen import records as r
from data_gen import log_format as lf
from models import features as F

BURN = ("import sys, time\n"
        "t = time.process_time()\n"
        "while time.process_time() - t < {seconds}: pass\n"
        "print('done', flush=True)\n"
        "sys.stdin.read()\n")


class FakeMeter:
  """CPU readings 10, 13, 19, ...: each call to seconds() adds 3 more than the previous step."""

  def __init__(self):
    self.calls = []
    self._now, self._step = 10.0, 3.0

  def seconds(self, exclude=()):
    self.calls.append(list(exclude))
    now = self._now
    self._now += self._step
    self._step += 3.0
    return now


def _result(round_index, ok=True, wall=2.0, cpu=1.0, items=100, error=None, equal=True,
            phase=bs.EXAMPLEGEN, runner="in_memory"):
  return bs.RoundResult(phase, runner, round_index, ok, wall, cpu, items if ok else None, error,
                        {"equal": equal} if ok else None)


# --- Summaries and failures ------------------------------------------------------------------------
def test_summarize_rounds_by_hand():
  s = bs.summarize([4.0, 1.0, 2.0])
  assert (s["median"], s["min"], s["max"], s["n"]) == (2.0, 1.0, 4.0, 3)
  assert s["spread"] == pytest.approx(1.5)  # (4 - 1) / 2
  assert bs.summarize([]) == {"n": 0}


def test_aggregate_summarizes_only_ok_rounds_and_lists_failures():
  results = [
      _result(0, wall=2.0, cpu=1.0, items=100),
      _result(1, ok=False, wall=9.0, cpu=9.0, error="ValueError: lost a host part"),
      _result(2, wall=4.0, cpu=3.0, items=100, equal=False),
      _result(0, phase=bs.STAGE, runner="dask", ok=False, error="TypeError: placeholder"),
  ]
  eg, stage = bs.aggregate(results)
  assert (eg["phase"], eg["runner"], eg["unit"]) == (bs.EXAMPLEGEN, "in_memory", "examples")
  assert (eg["rounds"], eg["ok"]) == (3, 2)
  assert eg["failures"] == [{"round": 1, "error": "ValueError: lost a host part"}]
  # 100 items in 2 s and in 4 s: 50 and 25 items/s; the failed round's 9 s is not in it.
  assert eg["items_per_s"]["median"] == pytest.approx(37.5)
  assert (eg["wall_s"]["min"], eg["wall_s"]["max"]) == (2.0, 4.0)
  assert eg["cpu_s_per_1k"]["median"] == pytest.approx(20.0)  # 10 and 30 CPU-s per 1k
  assert eg["cores"]["median"] == pytest.approx(0.625)  # 0.5 and 0.75
  assert (eg["checked"], eg["equal"]) == (2, 1)
  assert (stage["ok"], stage["items_per_s"], stage["checked"]) == (0, {"n": 0}, 0)


def test_table_shows_each_distinct_failure_with_its_rounds():
  rows = bs.aggregate([_result(0), _result(1, ok=False, error="ValueError: a"),
                       _result(2, ok=False, error="ValueError: a"),
                       _result(3, ok=False, error="KeyError: b"),
                       _result(0, runner="dask", ok=False, error="TypeError: c")])
  table = bs.format_table(rows)
  assert " 1/4 " in table and " 0/1 " in table
  assert "examplegen / in_memory: rounds [1, 2]: ValueError: a" in table
  assert "examplegen / in_memory: rounds [3]: KeyError: b" in table
  assert "examplegen / dask: rounds [0]: TypeError: c" in table
  dask_line = next(line for line in table.splitlines() if line.split()[:2] == ["examplegen",
                                                                              "dask"])
  assert dask_line.split()[3:] == ["-"] * 5  # no ok round: no figures, nothing checked


def test_a_failing_run_is_recorded_not_raised_and_not_checked():
  meter, checked = FakeMeter(), []

  def run():
    raise ValueError("impression 89585: expected one user part and one host part, got 1 and 0 "
                     "[while running 'LogsToExamples/ToExample']")

  res = bs.measure(bs.EXAMPLEGEN, "multi_processing", 3, run,
                   lambda: checked.append(1) or (1, None), meter, exclude=[42])
  assert not res.ok and checked == []
  assert (res.phase, res.runner, res.round, res.items, res.check) == (
      bs.EXAMPLEGEN, "multi_processing", 3, None, None)
  assert res.error == ("ValueError: impression 89585: expected one user part and one host part, "
                       "got 1 and 0 [while running 'LogsToExamples/ToExample']")
  assert res.cpu_s == 3.0 and meter.calls == [[42], [42]]


def test_a_run_whose_output_cannot_be_read_fails_and_a_good_run_keeps_its_check():
  bad = bs.measure(bs.STAGE, "dask", 0, lambda: None,
                   lambda: (_ for _ in ()).throw(FileNotFoundError("no part files")), FakeMeter())
  assert not bad.ok and bad.error.startswith("reading its output: FileNotFoundError: no part files")
  good = bs.measure(bs.STAGE, "dask", 1, lambda: None, lambda: (7, {"equal": True}), FakeMeter())
  assert good.ok and (good.items, good.check, good.cpu_s) == (7, {"equal": True}, 3.0)


def test_error_line_takes_the_root_cause_out_of_a_wrapped_traceback():
  text = ("RuntimeError: Pipeline BeamApp failed in state FAILED: Traceback (most recent call "
          "last):\n  File \"apache_beam/runners/common.py\", line 1495, in process\n"
          "    raise ValueError(msg)\nValueError: impression 7: expected one user part and one "
          "host part, got 1 and 0 [while running 'LogsToExamples/ToExample']\n")
  assert bs.error_line(text) == ("ValueError: impression 7: expected one user part and one host "
                                 "part, got 1 and 0 [while running 'LogsToExamples/ToExample']")
  assert bs.error_line("x" * 50, limit=10) == "xxxxxxx..."


def _check_refs(rec, table):
  return rec in table


def test_error_line_says_where_when_beam_does_not():
  with pytest.raises(TypeError) as info:
    _check_refs(1, object())
  line = bs.error_line(info.value)
  assert line.startswith("TypeError: argument of type 'object' is not iterable (at ")
  assert line.endswith(f"test_beam_scaling.py:{_check_refs.__code__.co_firstlineno + 1} in "
                       "_check_refs)")


def test_rounds_rotate_the_runner_order():
  runners = ["a", "b", "c"]
  assert [bs.round_order(runners, k) for k in range(4)] == [
      ["a", "b", "c"], ["b", "c", "a"], ["c", "a", "b"], ["a", "b", "c"]]


# --- Comparing outputs -----------------------------------------------------------------------------
def _example(iid, value=1.0, reverse=False):
  feats = [(F.IMPRESSION_ID, iid), ("x", value)]
  ex = tf.train.Example()
  for name, v in reversed(feats) if reverse else feats:
    if isinstance(v, int):
      ex.features.feature[name].int64_list.value.append(v)
    else:
      ex.features.feature[name].float_list.value.append(v)
  return ex.SerializeToString()


def test_examples_equal_whatever_their_order_and_serialization():
  ref = {"train": [_example(1), _example(2)], "eval": [_example(3)]}
  got = {"train": [_example(2, reverse=True), _example(1, reverse=True)], "eval": [_example(3)]}
  out = bs.compare_examples(ref, got)
  assert out["equal"] and out["differences"] == []
  assert out["splits"]["train"] == {"reference": 2, "got": 2, "missing": 0, "extra": 0,
                                    "duplicated": 0, "differing": 0}


def test_examples_that_differ_are_counted_by_kind():
  ref = {"train": [_example(1), _example(2), _example(3)], "eval": [_example(4)]}
  got = {"train": [_example(1, value=2.0), _example(2), _example(2), _example(4)], "eval": []}
  out = bs.compare_examples(ref, got)
  assert not out["equal"]
  assert out["splits"]["train"] == {"reference": 3, "got": 4, "missing": 1, "extra": 1,
                                    "duplicated": 1, "differing": 1}
  # Example 4 moved from eval to train: missing in eval, extra in train.
  assert out["splits"]["eval"]["missing"] == 1
  assert "train: differing impression_id=1" in out["differences"]
  assert "eval: missing impression_id=4" in out["differences"]


def test_lines_compare_as_multisets():
  assert bs.compare_lines(["a", "b", "a"], ["a", "a", "b"])["equal"]
  out = bs.compare_lines(["a", "a", "b"], ["a", "b", "b"])
  assert (out["equal"], out["missing"], out["extra"]) == (False, 1, 1)
  assert out["differences"] == ["missing: a", "extra: b"]


# --- The CPU meter ---------------------------------------------------------------------------------
def test_cpu_meter_counts_children_that_ended_and_that_still_run():
  pytest.importorskip("psutil")
  meter = bs.CpuMeter()
  before = meter.seconds()
  subprocess.run([sys.executable, "-c", BURN.format(seconds=0.3)], input=b"", check=True,
                 stdout=subprocess.DEVNULL)
  assert meter.seconds() - before >= 0.25  # a reaped child
  child = subprocess.Popen([sys.executable, "-c", BURN.format(seconds=0.3)],
                           stdin=subprocess.PIPE, stdout=subprocess.PIPE)
  try:
    assert child.stdout.readline() == b"done\n"  # it has burnt its CPU and waits, alive
    assert child.pid in meter.descendants()
    assert meter.seconds() - meter.seconds(exclude=[child.pid]) >= 0.25
  finally:
    child.stdin.close()
    child.wait()


def test_cpu_meter_without_psutil_reads_getrusage():
  meter = bs.CpuMeter(use_psutil=False)
  assert meter.method.startswith("getrusage") and meter.descendants() == []
  before = meter.seconds()
  sum(i * i for i in range(300_000))
  assert meter.seconds() > before


# --- The graphs ------------------------------------------------------------------------------------
T0 = 1_767_260_000.0


def _logs(tmp_path):
  """A log directory: two users (one line twice, one line corrupt), one host, one item."""
  lines = {
      r.ITEMS: [dict(item_id=1, category_id=10, brand_id=100, shop_id=1, price=9.5)],
      r.HOSTS: [dict(host_id=1, shop_id=51, category_ids=[21, 30])],
      r.USERS: [dict(user_id=1, activity_level="high"), dict(user_id=2, activity_level="new"),
                dict(user_id=2, activity_level="new"), "{not json"],
      r.PURCHASES: [dict(user_id=1, item_id=1, category_id=10, brand_id=100, shop_id=1,
                         price=9.5, weight=1, stay_seconds=30.0, ts=T0 - 86400)],
      r.DISPLAYS: [],
      r.EVENTS: [],
  }
  for kind, rows in lines.items():
    with open(tmp_path / f"{kind}{lf.LOG_SUFFIX}", "w") as f:
      f.writelines((x if isinstance(x, str) else json.dumps(x)) + "\n" for x in rows)
  with open(tmp_path / lf.SUMMARY_FILE, "w") as f:
    json.dump({lf.TIME_WINDOW: {lf.WINDOW_EVENTS: [T0 - 1000, T0 + 86400],
                                lf.WINDOW_PURCHASES: [T0 - 400 * 86400, T0 + 86400]}}, f)
  return str(tmp_path)


def test_as_tagged_turns_tagged_outputs_into_pairs():
  def fn(x, k):
    yield beam.pvalue.TaggedOutput("bad", x)
    yield x * k

  assert list(bg.as_tagged(3, fn, 2)) == [("bad", 3), (bg.MAIN, 6)]
  assert list(bg.as_tagged(3, lambda x: None)) == []


def _what(line):
  """A stage line's kind of outcome and log kind, e.g. ``kept/users``."""
  what, rest = line.split("\t", 1)
  kind = json.loads(rest)["source"] if what == "quarantined" else rest.split("\t")[0]
  return f"{what}/{kind}"


def test_stage_runs_in_memory_with_every_line_accounted_for(tmp_path):
  (tmp_path / "logs").mkdir()
  logs, out = _logs(tmp_path / "logs"), str(tmp_path / "out")
  with beam.Pipeline() as p:
    bg.stage_graph(p, logs, out)
  lines = bg.read_lines(out)
  assert sorted(map(_what, lines)) == ["kept/hosts", "kept/items", "kept/users", "kept/users",
                                       "parsed/purchases", "quarantined/users",
                                       "quarantined/users"]
  bad = [json.loads(line.split("\t", 1)[1]) for line in lines if line.startswith("quarantined")]
  # The second copy of user 2 (line 3) is a duplicate; line 4 does not parse.
  assert sorted((b["line_no"], b["reason"].startswith("duplicate of")) for b in bad) == [
      (3, True), (4, False)]
  shards = sorted(os.listdir(out))
  assert 1 <= len(shards) <= bg.STAGE_SHARDS
  for shard in shards:
    with open(os.path.join(out, shard)) as f:
      part = f.read().splitlines()
    assert part == sorted(part)


def test_the_stage_is_what_the_dask_runner_can_run_and_the_examplegen_is_not(tmp_path):
  logs = _logs(tmp_path)
  stage, examplegen = beam.Pipeline(), beam.Pipeline()
  bg.stage_graph(stage, logs, str(tmp_path / "stage"))
  bg.examplegen_graph(examplegen, logs, str(tmp_path / "eg"))
  assert bg.dask_census(stage) == {}
  census = bg.dask_census(examplegen, show=1000)
  assert census["side_inputs"]["first"][0] == (
      "LogsToExamples/CheckRefs[purchases]/FlatMap(_check_refs)")
  assert census["tagged_outputs"]["first"][0].startswith("LogsToExamples/Parse[")
  assert any(label.startswith("WriteSplit[train]/") and "start_bundle" in label
             for label in census["dofn_lifecycle"]["first"])


def test_census_finds_each_kind_of_graph_the_dask_runner_cannot_run(tmp_path):
  class WithSetup(beam.DoFn):
    def setup(self):
      self.k = 2

    def process(self, x):
      yield x * self.k

  p = beam.Pipeline()
  nums = p | "Nums" >> beam.Create([1, 2])
  _ = (nums,) | "FlattenOne" >> beam.Flatten()
  _ = nums | "Setup" >> beam.ParDo(WithSetup())
  _ = nums | "Side" >> beam.Map(lambda x, s: x + s, beam.pvalue.AsSingleton(
      p | "One" >> beam.Create([1])))
  _ = nums | "Tags" >> beam.FlatMap(lambda x: [x]).with_outputs("odd", main="even")
  _ = p | "Read" >> beam.io.ReadFromText(str(tmp_path / "none*"), validate=False)
  census = bg.dask_census(p)
  assert {k: v["count"] for k, v in census.items()} == {
      "dofn_lifecycle": 1, "reads": 1, "side_inputs": 1, "single_input_flattens": 1,
      "tagged_outputs": 1}
  assert census["dofn_lifecycle"]["first"] == ["Setup (setup)"]
