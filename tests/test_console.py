"""The demo console: one line per component with its key figures; errors shown, logs kept."""

import io
import sys

from pipeline import console

TFX_LOG = [
    "INFO:absl:Component LiveLogExampleGen is running.",
    "INFO:absl:LiveLogExampleGen: 100 examples (train 75, eval 25); lines in/accepted/quarantined: "
    "items 6/6/0, events 30/27/3, purchases 9/8/1",
    "LiveLogExampleGen: 100 examples (train 75, eval 25); lines in/accepted/quarantined: "
    "items 6/6/0, events 30/27/3, purchases 9/8/1",
    "INFO:absl:Component LiveLogExampleGen is finished.",
    "INFO:absl:Component Trainer is running.",
    "INFO:absl:trained baseline for 5 epochs; eval loss by epoch [1.3, 1.2]",
    "INFO:absl:Component Trainer is finished.",
    "INFO:absl:Component Transform is running.",
    "INFO:absl:A cached execution 22 is used.",
    "INFO:absl:Component Transform is finished.",
    "INFO:absl:Component Evaluator is running.",
    "INFO:absl:Blessing result False written to /w/blessing/8.",
    "INFO:absl:Component Evaluator is finished.",
]


def test_tracker_reports_each_component_with_seconds_and_key_figures():
  ticks = iter([0.0, 12.5, 20.0, 81.0, 85.0, 85.0, 90.0, 91.5])
  lines = []
  tracker = console.ComponentTracker(report=lines.append, clock=lambda: next(ticks))
  for line in TFX_LOG:
    tracker.feed(line)
  assert lines == [
      f"  {'LiveLogExampleGen':<29}   12.5 s  100 examples (train 75, eval 25), 4 records "
      "quarantined",
      f"  {'Trainer':<29}   61.0 s  baseline, 5 epochs",
      f"  {'Transform':<29}    0.0 s  cached",
      f"  {'Evaluator':<29}    1.5 s  NOT blessed: not pushed",
  ]
  assert tracker.finished == ["LiveLogExampleGen", "Trainer", "Transform", "Evaluator"]


def test_error_excerpt_is_the_last_traceback():
  log = ["a", "Traceback (most recent call last):", "old", "ValueError: old",
         "b", "Traceback (most recent call last):", '  File "x.py"', "ValueError: impression 7"]
  assert console.error_excerpt(log) == log[5:]
  assert console.error_excerpt(["x"] * 50 + ["last"], max_lines=4) == ["x", "last"]


def _python(code):
  return [sys.executable, "-c", code]


def test_step_prints_stdout_keeps_stderr_in_the_log(tmp_path):
  out, log = io.StringIO(), tmp_path / "logs" / "step.log"
  code = console.run_step("gen", _python("import sys; print('result'); "
                                         "sys.stderr.write('noise\\n')"), str(log), console=out)
  assert code == 0
  printed = out.getvalue().splitlines()
  assert printed[0] == "result" and printed[1].startswith("[gen] done in ")
  assert len(printed) == 2 and "noise" in log.read_text()


def test_tfx_step_prints_component_lines_only(tmp_path):
  out, log = io.StringIO(), tmp_path / "run.log"
  script = "\n".join(f"print({line!r})" for line in TFX_LOG) + "\nprint('x' * 5000)"
  assert console.run_step("pipeline", _python(script), str(log), mode="tfx", console=out) == 0
  printed = out.getvalue().splitlines()
  assert [p.split()[0] for p in printed] == ["LiveLogExampleGen", "Trainer", "Transform",
                                             "Evaluator", "[pipeline]"]
  assert "x" * 5000 in log.read_text()


def test_failed_step_shows_the_error_and_returns_its_exit_code(tmp_path):
  out, log = io.StringIO(), tmp_path / "run.log"
  script = ("print('INFO:absl:Component Transform is running.', flush=True)\n"
            "raise ValueError('feature x has 3 values')")
  assert console.run_step("pipeline", _python(script), str(log), mode="tfx", console=out) == 1
  text = out.getvalue()
  assert "[pipeline] FAILED in Transform (exit 1)" in text
  assert "    ValueError: feature x has 3 values" in text
  assert f"[pipeline] full log: {log}" in text
