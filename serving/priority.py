"""The CPU for a version's loader ahead of the threads that answer requests (Linux).

A new version's load and warm-up (graph import, variable restore, Grappler and the first run of
each warmed signature) is a few CPU-seconds, mostly in the loading thread. On a machine the
clients keep busy, that thread got the share of one thread among many request threads, so a
version change took about three times its idle time (BUILD_NOTES, issue 7). Linux keeps a nice
value per thread and lets any process raise its own threads' values: while a version loads, every
other thread of the process runs at a higher nice value than the loader, so the scheduler runs
the loader's own work (graph import, Grappler, executor creation) first. Threads it starts
inherit its priority; TensorFlow's shared pools, which also run its restore and warm-up ops, are
lowered with the rest.

Afterwards the threads are put back. Lowering a nice value again needs CAP_SYS_NICE or a
RLIMIT_NICE allowance; without either, the threads stay lowered (a warning says so). They then
still compete with each other as before, but they lose to other processes' threads at normal
priority in the same scheduling group.
"""

from __future__ import annotations

import contextlib
import os
import threading
from typing import Dict, Iterable, Iterator

from absl import logging

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


def deprioritize_other_threads(nice: int) -> Dict[int, int]:
  """Raises every other thread of this process to at least the caller's nice value + ``nice``.

  A thread that ends meanwhile is skipped. If the system refuses a change (e.g. a sandbox that
  forbids setpriority), a warning names the reason and the threads changed so far stay changed:
  the caller goes on at normal priority rather than failing.

  Args:
    nice: how far below the calling thread the others run, in [0, 19]; 0 changes nothing.

  Returns:
    thread id -> its nice value before, for each thread changed (what :func:`restore` takes);
    empty where the platform has no per-thread nice values (no ``/proc/self/task``).

  Raises:
    ValueError: ``nice`` outside [0, 19].
  """
  if check_nice(nice) == 0 or not os.path.isdir(TASK_DIR):
    return {}
  me = threading.get_native_id()
  own = os.getpriority(os.PRIO_PROCESS, me)
  target = min(MAX_NICE, own + nice)
  if target - own < nice:
    logging.warning("this thread runs at nice %d: the others can only go %d lower, not %d", own,
                    target - own, nice)
  return _raise_to([int(t) for t in os.listdir(TASK_DIR) if int(t) != me], target)


def lower_threads(thread_ids: Iterable[int], nice: int) -> Dict[int, int]:
  """Raises the given threads (of any process of this user) to at least nice ``nice``.

  For a loader in another process at normal priority (nice 0): the threads that answer requests
  elsewhere yield to it. Same warnings and return value as :func:`deprioritize_other_threads`.

  Raises:
    ValueError: ``nice`` outside [0, 19].
  """
  return _raise_to(thread_ids, check_nice(nice)) if nice else {}


def _raise_to(thread_ids: Iterable[int], target: int) -> Dict[int, int]:
  changed: Dict[int, int] = {}
  for tid in thread_ids:
    try:
      before = os.getpriority(os.PRIO_PROCESS, tid)
      if before < target:
        os.setpriority(os.PRIO_PROCESS, tid, target)
        changed[tid] = before
    except ProcessLookupError:  # the thread ended after the listing: nothing to lower
      continue
    except OSError as e:
      logging.warning("could not lower thread %d's priority (%s); loading without priority",
                      tid, e)
      break
  return changed


def restore(changed: Dict[int, int]) -> int:
  """Puts each thread of ``changed`` back to its nice value; returns how many were put back.

  Where lowering a nice value is not permitted (no CAP_SYS_NICE, no RLIMIT_NICE allowance) a
  warning says the threads stay lowered; threads that ended are skipped.
  """
  restored = 0
  for tid, before in changed.items():
    try:
      os.setpriority(os.PRIO_PROCESS, tid, before)
      restored += 1
    except ProcessLookupError:
      continue
    except OSError as e:
      logging.warning("could not put %d thread(s) back to their priority (%s): they stay lowered",
                      len(changed) - restored, e)
      break
  return restored


@contextlib.contextmanager
def ahead_of_other_threads(nice: int) -> Iterator[Dict[int, int]]:
  """While the block runs, the process's other threads run ``nice`` below the calling thread;
  afterwards they are put back where permitted (:func:`restore`). Yields what was changed."""
  changed = deprioritize_other_threads(nice)
  try:
    yield changed
  finally:
    restore(changed)
