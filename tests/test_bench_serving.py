"""The serving benchmarks' pure parts: the load report's arithmetic and the synthetic rows."""

import pytest

from bench import load, serving_latency, synthetic_model
from models import features as F
from models import signatures as S


def _outcomes():
  out = []
  for i in range(30):  # steady: 10 ms, version 1
    out.append(load.Outcome(start=i * 0.3, latency_ms=10.0, code="OK", version=1))
  # Version 2 pushed at 9 s; it answers from 11 s; one request fails at 10 s.
  out.append(load.Outcome(start=9.5, latency_ms=40.0, code="OK", version=1))
  out.append(load.Outcome(start=10.0, latency_ms=5.0, code="UNAVAILABLE", version=0))
  out += [load.Outcome(start=11.0 + i * 0.5, latency_ms=12.0, code="OK", version=2)
          for i in range(10)]
  # Rolled back at 18 s; version 1 answers from 18.5 s.
  out += [load.Outcome(start=18.5 + i * 0.5, latency_ms=11.0, code="OK", version=1)
          for i in range(4)]
  return out


def test_load_summary_counts_errors_change_times_and_windows():
  report = load.summarize(_outcomes(), swap_at=9.0, rollback_at=18.0, seconds=21.0, window=10.0)
  assert report["requests"] == 46
  assert report["errors_by_code"] == {"UNAVAILABLE": 1}
  assert report["swap_answered_after_s"] == pytest.approx(2.0)
  assert report["rollback_answered_after_s"] == pytest.approx(0.5)
  assert report["version_2_after_rollback"] == 0
  assert report["steady_p99_ms"] == pytest.approx(10.0)
  # The 40 ms request sent during the swap is in the change window, not the steady state.
  assert report["change_p99_ms"] > 30.0
  assert report["change_to_steady_p99"] == pytest.approx(report["change_p99_ms"] / 10.0)
  # While version 2 loaded (9 to 11 s) one request answered: the 40 ms one (the failure is not a
  # latency).
  assert report["loading_p99_ms"] == pytest.approx(40.0)
  assert report["loading_to_steady_p99"] == pytest.approx(4.0)
  assert "while version 2 loaded 40.0 ms (4.00x)" in load.format_report(report)
  first, second, third = report["windows"]
  assert first["requests"] == 31 and first["errors"] == 0 and first["versions"] == {"1": 31}
  assert second["errors"] == 1 and second["versions"] == {"2": 10, "1": 3}
  assert third["versions"] == {"1": 1}


def test_load_summary_reports_memory_before_the_push_at_its_peak_and_at_the_end():
  # Two processes (front, version 1's worker) before the push at 9 s, four while version 2 loads
  # beside a standby, three after the rollback.
  memory = [load.MemorySample(at=t, pss_mb=mb, processes=n) for t, mb, n in (
      (1.0, 900.0, 2), (8.0, 950.0, 2), (10.0, 1500.0, 4), (12.0, 1800.0, 4), (19.0, 1300.0, 3))]
  report = load.summarize(_outcomes(), swap_at=9.0, rollback_at=18.0, seconds=21.0, window=10.0,
                          memory=memory)
  assert report["memory"] == {"steady_pss_mb": 950.0, "steady_processes": 2,
                              "peak_pss_mb": 1800.0, "peak_at_s": 12.0, "peak_processes": 4,
                              "end_pss_mb": 1300.0, "end_processes": 3, "samples": 5}
  assert [(w["pss_mb_max"], w["processes_max"]) for w in report["windows"]] == [
      (950.0, 2), (1800.0, 4), (None, None)]
  assert ("memory (PSS, server and workers): 950 MB in 2 processes before the push, peak 1800 MB "
          "at 12 s (up to 4 processes), 1300 MB in 3 at the end") in load.format_report(report)
  # Without samples (an older report) there is no memory line.
  assert "memory" not in load.format_report(load.summarize(
      _outcomes(), swap_at=9.0, rollback_at=18.0, seconds=21.0, window=10.0)).split("\n")[-1]


def test_rollback_counts_from_after_the_last_answer_of_the_removed_version():
  # Version 2 is removed at 20 s while still loading: 1 keeps answering, 2 goes live at 22 s
  # for a second, then the rollback puts 1 back at 23.5 s.
  out = [load.Outcome(start=i * 0.5, latency_ms=10.0, code="OK", version=1) for i in range(44)]
  out += [load.Outcome(start=22.0 + i * 0.5, latency_ms=10.0, code="OK", version=2)
          for i in range(3)]
  out += [load.Outcome(start=23.5 + i * 0.5, latency_ms=10.0, code="OK", version=1)
          for i in range(4)]
  report = load.summarize(out, swap_at=10.0, rollback_at=20.0, seconds=26.0, window=10.0)
  assert report["swap_answered_after_s"] == pytest.approx(12.0)
  assert report["rollback_answered_after_s"] == pytest.approx(3.5)
  assert report["version_2_after_rollback"] == 3


def test_load_summary_reports_a_change_that_never_answered():
  steady = [load.Outcome(start=i * 0.5, latency_ms=10.0, code="OK", version=1) for i in range(40)]
  report = load.summarize(steady, swap_at=5.0, rollback_at=15.0, seconds=20.0, window=10.0)
  assert report["swap_answered_after_s"] is None  # version 2 never served a request
  assert "version 2 answered None s after the push" in load.format_report(report)


def test_synthetic_rows_respect_every_declared_range_and_fill_the_sequences():
  row = synthetic_model.synthetic_row(5, realtime_len=3, lifelong_len=7)
  for spec in F.raw_features(3, 7):
    values = row[spec.name]
    assert len(values) == spec.length, spec.name
    if spec.dtype == "bytes":
      continue
    if spec.min_value is not None:
      assert min(values) >= spec.min_value, spec.name
    if spec.max_value is not None:
      assert max(values) <= spec.max_value, spec.name
  assert row[F.len_key(F.LL)] == [7] and row[F.len_key(F.RT_POS)] == [3]


def test_latency_table_has_rank_only_for_models_that_export_it():
  assert serving_latency.model_signatures("stcrank") == [
      S.SERVING_SIGNATURE, S.CONTEXT_SIGNATURE, S.RANK_SIGNATURE]
  assert serving_latency.model_signatures("baseline") == [S.SERVING_SIGNATURE,
                                                           S.CONTEXT_SIGNATURE]
  stats = {"p50_ms": 1.0, "p90_ms": 2.0, "p99_ms": 4.0, "request_bytes": 2_000_000,
           "server_cpu_s_per_1k_candidates": {"median": 0.5}}
  row = {"model": "baseline", "lifelong_len": 1000, "candidates": 200,
         S.SERVING_SIGNATURE: stats, S.CONTEXT_SIGNATURE: dict(stats, p99_ms=2.0),
         "p99_ratio_rank_with_context_to_default": 0.5}
  line = serving_latency.format_row(row)
  assert "not exported" in line and line.endswith(" 0.50   -  ")
  assert "4.0" in line and "2.000" in line  # p99 and request MB of serving_default
