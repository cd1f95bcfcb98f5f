"""The CPU for a version's loader ahead of the threads that answer requests (Linux).

A new version's load and warm-up (graph import, variable restore, Grappler and the first run of
each warmed signature) is a few CPU-seconds of mostly one thread. On a machine the clients keep
busy, that thread got the share of one thread among many request threads, so a version change
took about three times its idle time (BUILD_NOTES, issue 7). Linux keeps a nice value per thread
and lets any process raise its own threads' values: before it loads, the loader raises every
other thread of the process to a higher nice value than its own, so the scheduler runs the loader
first and the request threads share what is left. Threads the loader starts (its warm-up
threads; TensorFlow's pools when the loader creates the process's first session) inherit its
priority.

Raising a nice value cannot be undone without privilege, so the request threads stay at the
higher value afterwards: they compete with each other as before, and yield to the next load.
"""

from __future__ import annotations

import os
import threading

TASK_DIR = "/proc/self/task"  # one entry per thread of this process (Linux)
MAX_NICE = 19


def check_nice(nice: int, name: str = "nice") -> int:
  """``nice`` if it is a nice-value offset this module accepts (0 to 19).

  Raises:
    ValueError: naming ``name`` and the value.
  """
  if not 0 <= nice <= MAX_NICE:
    raise ValueError(f"{name} must be in [0, {MAX_NICE}], got {nice}")
  return nice


def deprioritize_other_threads(nice: int) -> int:
  """Raises every other thread of this process to at least the caller's nice value + ``nice``.

  Args:
    nice: how far below the calling thread the others run, in [0, 19]; 0 changes nothing.

  Returns:
    How many threads were changed; 0 where the platform has no per-thread nice values (no
    ``/proc/self/task``).

  Raises:
    ValueError: ``nice`` outside [0, 19].
  """
  if check_nice(nice) == 0 or not os.path.isdir(TASK_DIR):
    return 0
  me = threading.get_native_id()
  target = min(MAX_NICE, os.getpriority(os.PRIO_PROCESS, me) + nice)
  changed = 0
  for entry in os.listdir(TASK_DIR):
    tid = int(entry)
    if tid == me:
      continue
    try:
      if os.getpriority(os.PRIO_PROCESS, tid) < target:
        os.setpriority(os.PRIO_PROCESS, tid, target)
        changed += 1
    except ProcessLookupError:  # the thread ended after the listing: nothing to lower
      continue
  return changed
