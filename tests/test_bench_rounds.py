"""The benchmarks' shared timing: interleaved rounds, medians, spreads and CPU time."""

import pytest

from bench.common import grouped_bars, pyplot, spread_summary, timed_rounds


def test_spread_summary_by_hand():
  s = spread_summary([4.0, 1.0, 2.0, 3.0, 10.0])
  assert s == {"median": 3.0, "min": 1.0, "max": 10.0, "spread": 3.0, "n": 5}
  with pytest.raises(ValueError, match="at least one"):
    spread_summary([])


def test_rounds_interleave_cases_and_count_examples_and_cpu():
  order = []

  def case(name, n, work):
    def run():
      order.append(name)
      sum(i * i for i in range(work))  # CPU work this process does
      return n
    return run

  out = timed_rounds({"a": case("a", 100, 200_000), "b": case("b", 50, 0)}, rounds=3,
                     progress=False)
  assert order == ["a", "b"] * 3  # interleaved, not a,a,a,b,b,b
  assert out["a"]["examples"] == [100, 100, 100]
  assert out["a"]["examples_per_s"]["n"] == 3
  # The case that computes costs more CPU per example than the one that does nothing.
  assert out["a"]["cpu_s_per_1k"]["median"] > out["b"]["cpu_s_per_1k"]["median"]
  assert all(c > 0 for c in out["a"]["cpu_s"])
  with pytest.raises(ValueError, match="rounds must be >= 1, got 0"):
    timed_rounds({"a": lambda: 1}, rounds=0)


def test_process_cpu_seconds_reads_a_process_cpu_time():
  import os
  import time

  from bench.common import process_cpu_seconds
  before = process_cpu_seconds(os.getpid())
  start = time.process_time()
  while time.process_time() - start < 0.2:  # burn 0.2 CPU-seconds in this process
    pass
  used = process_cpu_seconds(os.getpid()) - before
  assert 0.15 <= used <= 1.0


def test_process_cpu_seconds_counts_a_child_process_s_cpu_time():
  import os
  import subprocess
  import sys

  from bench.common import process_cpu_seconds
  before = process_cpu_seconds(os.getpid())
  # A child that burns 0.3 CPU-seconds, says so, and waits for its stdin to close: the time is
  # counted while it lives (a version's worker process) and once it has been waited for.
  child = subprocess.Popen(
      [sys.executable, "-c", "import sys, time\nstart = time.process_time()\n"
       "while time.process_time() - start < 0.3: pass\nprint('done', flush=True)\n"
       "sys.stdin.read()"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
  try:
    assert child.stdout.readline() == "done\n"
    live = process_cpu_seconds(os.getpid()) - before
  finally:
    child.stdin.close()
    child.wait()
  ended = process_cpu_seconds(os.getpid()) - before
  assert 0.25 <= live <= 2.0 and 0.25 <= ended <= 2.0, (live, ended)


def test_process_tree_memory_counts_a_child_process_s_pages():
  import os
  import subprocess
  import sys

  from bench.common import process_tree_memory_mb
  before = process_tree_memory_mb(os.getpid())
  # A child that writes 200 MB (so the pages are resident), says so, and waits for its stdin.
  child = subprocess.Popen(
      [sys.executable, "-c", "import sys\nheld = b'x' * (200 << 20)\nprint('ready', flush=True)\n"
       "sys.stdin.read()"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
  try:
    assert child.stdout.readline() == "ready\n"
    during = process_tree_memory_mb(os.getpid())
  finally:
    child.stdin.close()
    child.wait()
  after = process_tree_memory_mb(os.getpid())
  assert during["processes"] == before["processes"] + 1 == after["processes"] + 1
  grew = during["pss_mb"] - before["pss_mb"]
  assert 195 <= grew <= 260, grew  # the 200 MB, plus an interpreter's own few MB
  assert during["rss_mb"] >= during["pss_mb"]
  assert abs(after["pss_mb"] - before["pss_mb"]) < 50, (before, after)


def test_median_and_range_gives_bar_heights_and_error_bars():
  from bench.common import median_and_range
  meds, err = median_and_range([spread_summary([1.0, 2.0, 6.0]), spread_summary([5.0])])
  assert meds == [2.0, 5.0]
  assert err == [[1.0, 0.0], [4.0, 0.0]]


def test_grouped_bars_centres_each_group_and_draws_every_series():
  plt = pyplot()
  fig, ax = plt.subplots()
  centres = grouped_bars(ax, ["view", "buy"], {"a": [0.7, 0.6], "b": [0.5, 0.4]},
                         errors={"b": [0.01, 0.02]})
  assert list(centres) == [0.0, 1.0]
  bars = sorted(ax.patches, key=lambda r: r.get_x())
  # Two series share 0.8 of each group: 0.4 wide, the first left of the centre.
  assert [round(r.get_x(), 6) for r in bars] == [-0.4, 0.0, 0.6, 1.0]
  assert [r.get_height() for r in bars] == [0.7, 0.5, 0.6, 0.4]
  assert [t.get_text() for t in ax.get_xticklabels()] == ["view", "buy"]
  from matplotlib.container import BarContainer  # pylint: disable=import-outside-toplevel
  by_label = {c.get_label(): c for c in ax.containers if isinstance(c, BarContainer)}
  assert by_label["a"].errorbar is None
  (b_errors,) = by_label["b"].errorbar.lines[2]  # vertical segments, one per group
  assert [seg[:, 1].tolist() for seg in b_errors.get_segments()] == [
      pytest.approx([0.49, 0.51]), pytest.approx([0.38, 0.42])]
  plt.close(fig)


def test_grouped_bars_names_a_series_of_the_wrong_length():
  plt = pyplot()
  fig, ax = plt.subplots()
  with pytest.raises(ValueError, match="series 'a' has 1 values for 2 groups"):
    grouped_bars(ax, ["view", "buy"], {"a": [0.7]})
  plt.close(fig)
