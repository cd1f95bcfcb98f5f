"""The demo's console: one line per step and per pipeline component; everything else in log files.

The Makefile runs each step of ``make demo`` through this module:

    python -m pipeline.console --name "quality report" --log work/console/quality.log -- CMD...

- default: the step's stdout (its results: the quality table, the ranked answer) goes to the
  console, its stderr (TensorFlow's and absl's logging) to the log file;
- ``--quiet``: stdout goes to the log file as well;
- ``--tfx``: for ``tfx run create``: all output goes to the log file, and the console gets one line
  per component as it finishes (seconds and the component's key figures), with a running timer
  on a terminal.

A step that fails prints the error from its log (the last traceback) and where the full log is,
and exits with the step's exit code.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import queue
import re
import subprocess
import sys
import threading
import time
from typing import Callable, Dict, List, Sequence, TextIO

RUNNING = re.compile(r"Component (\w+) is running\.")
CACHED = re.compile(r"A cached execution \d+ is used")
FINISHED = re.compile(r"Component (\w+) is finished\.")
TRACEBACK = "Traceback (most recent call last)"
MAX_ERROR_LINES = 40
NAME_WIDTH = 29  # fits latest_blessed_model_resolver


def _examplegen(m: re.Match) -> str:
  quarantined = sum(int(q) for q in re.findall(r"\d+/\d+/(\d+)", m.group(2)))
  return f"{m.group(1)}, {quarantined} records quarantined"


# Component -> (pattern in its log, how to show the match): the key figures of each stage.
DETAILS: Dict[str, Sequence[tuple]] = {
    "LiveLogExampleGen": ((re.compile(r"LiveLogExampleGen: (\d+ examples \([^)]*\)); (.*)$"),
                           _examplegen),),
    "AnomalyGate": ((re.compile(r"AnomalyGate: (.*)$"), lambda m: m.group(1)),),
    "Trainer": ((re.compile(r"trained (\S+) for (\d+) epochs"),
                 lambda m: f"{m.group(1)}, {m.group(2)} epochs"),),
    "Evaluator": ((re.compile(r"Blessing result (True|False)"),
                   lambda m: "blessed" if m.group(1) == "True" else "NOT blessed: not pushed"),),
    "Pusher": ((re.compile(r"Model version: (\d+)"), lambda m: f"pushed version {m.group(1)}"),),
}


@dataclasses.dataclass
class ComponentTracker:
  """Follows a ``tfx run create`` log, line by line, and reports each finished component."""
  report: Callable[[str], None]
  clock: Callable[[], float] = time.monotonic
  running: str | None = None
  started: float = 0.0
  details: Dict[str, List[str]] = dataclasses.field(default_factory=dict)
  finished: List[str] = dataclasses.field(default_factory=list)

  def feed(self, line: str) -> None:
    m = RUNNING.search(line)
    if m:
      self.running, self.started = m.group(1), self.clock()
      return
    m = FINISHED.search(line)
    if m:
      name = m.group(1)
      seconds = self.clock() - self.started if name == self.running else float("nan")
      extra = "; ".join(self.details.get(name, []))
      self.report(f"  {name:<{NAME_WIDTH}} {seconds:6.1f} s" + (f"  {extra}" if extra else ""))
      self.finished.append(name)
      self.running = None
      return
    if self.running and CACHED.search(line):
      self.details.setdefault(self.running, []).append("cached")
      return
    if self.running:
      for pattern, show in DETAILS.get(self.running, ()):
        found = pattern.search(line)
        if not found:
          continue
        detail, shown = show(found), self.details.setdefault(self.running, [])
        if detail not in shown:  # a line both logged and printed counts once
          shown.append(detail)

  def elapsed(self) -> float:
    return self.clock() - self.started if self.running else 0.0


def error_excerpt(lines: Sequence[str], max_lines: int = MAX_ERROR_LINES) -> List[str]:
  """The last traceback in a log (its last ``max_lines`` lines), else the log's last lines."""
  starts = [i for i, line in enumerate(lines) if TRACEBACK in line]
  tail = lines[starts[-1]:] if starts else lines[-max_lines // 2:]
  return list(tail[-max_lines:])


def _pump(stream: TextIO, log: TextIO, out: queue.Queue[str | None]) -> None:
  for line in stream:
    log.write(line)
    log.flush()
    out.put(line)
  out.put(None)


def run_step(name: str, cmd: Sequence[str], log_path: str, mode: str = "stdout",
             console: TextIO = sys.stdout) -> int:
  """Runs one demo step; returns its exit code.

  Args:
    name: what the console calls the step.
    cmd: the command.
    log_path: where its logs go (created, with its directory).
    mode: ``stdout`` (stdout to the console), ``quiet`` or ``tfx`` (see the module docstring).
    console: where the step's lines go.
  """
  if mode not in ("stdout", "quiet", "tfx"):
    raise ValueError(f"mode must be stdout, quiet or tfx, got {mode!r}")
  os.makedirs(os.path.dirname(os.path.abspath(log_path)), exist_ok=True)
  tty = console.isatty()
  say = lambda text: console.write(("\r\033[K" if tty else "") + text + "\n") or console.flush()  # noqa: E731
  tracker = ComponentTracker(report=say)
  start = time.monotonic()
  with open(log_path, "w") as log:
    proc = subprocess.Popen(list(cmd), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT if mode != "stdout" else log, text=True,
                            bufsize=1)
    lines: queue.Queue[str | None] = queue.Queue()
    threading.Thread(target=_pump, args=(proc.stdout, log, lines), daemon=True).start()
    while True:
      try:
        line = lines.get(timeout=1.0)
      except queue.Empty:  # nothing new: refresh the running component's timer on a terminal
        if tty and tracker.running:
          console.write(f"\r\033[K  {tracker.running:<{NAME_WIDTH}} {tracker.elapsed():6.0f} s ...")
          console.flush()
        continue
      if line is None:
        break
      if mode == "stdout":
        console.write(line)
        console.flush()
      elif mode == "tfx":
        tracker.feed(line)
    code = proc.wait()
  seconds = time.monotonic() - start
  if code == 0:
    say(f"[{name}] done in {seconds:.0f} s (log: {log_path})")
    return 0
  with open(log_path) as f:
    excerpt = error_excerpt(f.read().splitlines())
  failed = f" in {tracker.running}" if tracker.running else ""
  say(f"[{name}] FAILED{failed} (exit {code}) after {seconds:.0f} s; the error:")
  for line in excerpt:
    console.write(f"    {line}\n")
  console.write(f"[{name}] full log: {log_path}\n")
  console.flush()
  return code


def main(argv: Sequence[str] | None = None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--name", required=True, help="What the console calls the step.")
  parser.add_argument("--log", required=True, help="The step's log file.")
  group = parser.add_mutually_exclusive_group()
  group.add_argument("--quiet", action="store_true", help="Its stdout to the log too.")
  group.add_argument("--tfx", action="store_true", help="A `tfx run create`: one line per "
                                                        "component.")
  parser.add_argument("cmd", nargs=argparse.REMAINDER, help="-- the command")
  args = parser.parse_args(argv)
  cmd = args.cmd[1:] if args.cmd[:1] == ["--"] else args.cmd
  if not cmd:
    parser.error("no command given (after --)")
  mode = "tfx" if args.tfx else "quiet" if args.quiet else "stdout"
  return run_step(args.name, cmd, args.log, mode)


if __name__ == "__main__":
  sys.exit(main())
