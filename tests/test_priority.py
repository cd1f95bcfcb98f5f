"""serving.priority: a loading thread runs ahead of the process's other threads (Linux).

A raised nice value can only be lowered again with privilege, so every check that changes one
runs in a child process: the test process's own threads keep their priority.
"""

import json
import os
import subprocess
import sys
import threading

import pytest

from serving import priority

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Runs in a child: an idle thread, then a "loader" thread that lowers the others (directly, then
# through ModelManager with a loader that records the priorities it sees) and starts a thread.
CHILD = r"""
import json, os, threading, types
from serving import priority
from serving.model_server import ModelManager

def nice(tid):
  return os.getpriority(os.PRIO_PROCESS, tid)

main_tid = threading.get_native_id()
ready, done = threading.Event(), threading.Event()
def idle():
  ready.set()
  done.wait()
idle_thread = threading.Thread(target=idle)
idle_thread.start()
ready.wait()
out = {"base": nice(main_tid)}

def loader():
  me = threading.get_native_id()
  with priority.ahead_of_other_threads(int(os.environ["NICE"])) as changed:
    out["changed"] = len(changed)
    out["changed_again"] = len(priority.deprioritize_other_threads(int(os.environ["NICE"])))
    out["during"] = [nice(idle_thread.native_id), nice(main_tid)]
    out["loader"] = nice(me)
    started = []
    child = threading.Thread(target=lambda: started.append(nice(threading.get_native_id())))
    child.start()
    child.join()
    out["started_by_loader"] = started[0]
  out["after"] = [nice(idle_thread.native_id), nice(main_tid)]
loader_thread = threading.Thread(target=loader)
loader_thread.start()
loader_thread.join()

# Through ModelManager: the first load (nothing served) leaves priorities alone; the second one
# lowers the idle thread while it loads and puts it back after.
seen = []
def record(path, version):
  seen.append(nice(idle_thread.native_id))
  return types.SimpleNamespace(alive=lambda: True, close=lambda: None)  # what the manager calls
base_path = os.environ["BASE"]
def add_version(v):
  os.makedirs(os.path.join(base_path, str(v)))
  open(os.path.join(base_path, str(v), "saved_model.pb"), "w").close()
manager = ModelManager("m", base_path, loader=record, load_nice=int(os.environ["NICE"]) + 3)
def two_loads():
  add_version(1)
  manager.poll()
  add_version(2)
  manager.poll()
manager_thread = threading.Thread(target=two_loads)
manager_thread.start()
manager_thread.join()
out["manager"] = {"during_loads": seen, "after": nice(idle_thread.native_id)}
done.set()
idle_thread.join()
print(json.dumps(out))
"""


@pytest.mark.skipif(not os.path.isdir(priority.TASK_DIR), reason="no per-thread nice values")
def test_while_loading_the_other_threads_run_lower_and_are_put_back_after(tmp_path):
  env = dict(os.environ, NICE="4", BASE=str(tmp_path / "models"),
             PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
  run = subprocess.run([sys.executable, "-c", CHILD], env=env, cwd=ROOT, capture_output=True,
                       text=True, timeout=300, check=False)
  assert run.returncode == 0, run.stderr[-2000:]
  out = json.loads(run.stdout.strip().splitlines()[-1])
  base = out["base"]
  if base > 12:
    pytest.skip(f"the test process runs at nice {base}: too low to lower its threads by 7")
  assert out["during"] == [base + 4, base + 4]  # the idle and the main thread
  assert out["changed"] >= 2 and out["changed_again"] == 0  # already there: nothing to do
  assert out["loader"] == out["started_by_loader"] == base  # the loader and its threads keep
  # ModelManager (load_nice 7): version 1 loads with nothing served (no change), version 2 with
  # the idle thread 7 lower.
  assert out["manager"]["during_loads"] == [base, base + 7]
  if os.geteuid() == 0:  # may lower nice values again: everything put back
    assert out["after"] == [base, base] and out["manager"]["after"] == base
  else:  # without CAP_SYS_NICE the threads stay lowered (and a warning says so)
    assert out["after"] == [base + 4, base + 4] and out["manager"]["after"] == base + 7


def test_a_refused_priority_change_is_reported_and_loading_goes_on(monkeypatch, caplog):
  """A sandbox that forbids setpriority: a warning with the reason, nothing raised."""
  def refuse(*args):
    raise PermissionError(1, "Operation not permitted")
  monkeypatch.setattr(priority.os, "setpriority", refuse)
  caplog.set_level("WARNING", logger="absl")
  if os.path.isdir(priority.TASK_DIR):
    # Another thread, so there is something to lower.
    ready, done = threading.Event(), threading.Event()
    other = threading.Thread(target=lambda: (ready.set(), done.wait()))
    other.start()
    ready.wait()
    try:
      with priority.ahead_of_other_threads(5) as changed:
        assert changed == {}
    finally:
      done.set()
      other.join()
    assert any("could not lower thread" in r.getMessage() and "not permitted" in r.getMessage()
               for r in caplog.records)
  caplog.clear()
  assert priority.restore({threading.get_native_id(): 0}) == 0
  assert any("stay lowered" in r.getMessage() for r in caplog.records)


def test_lower_threads_lowers_another_process_s_threads_and_restore_puts_them_back():
  """What the worker loader does to the served versions' processes while another one loads."""
  child = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"],
                           stdin=subprocess.PIPE)
  try:
    threads = [int(t) for t in os.listdir(f"/proc/{child.pid}/task")]
    base = os.getpriority(os.PRIO_PROCESS, threads[0])
    assert priority.lower_threads(threads, 0) == {}  # 0 changes nothing
    changed = priority.lower_threads(threads, min(base + 6, priority.MAX_NICE))
    assert changed == {t: base for t in threads}
    assert [os.getpriority(os.PRIO_PROCESS, t) for t in threads] == [base + 6] * len(threads)
    assert priority.lower_threads(threads, base + 6) == {}  # already there
    if os.geteuid() == 0:
      assert priority.restore(changed) == len(threads)
      assert [os.getpriority(os.PRIO_PROCESS, t) for t in threads] == [base] * len(threads)
  finally:
    child.stdin.close()
    child.wait()
  with pytest.raises(ValueError, match="nice must be in \\[0, 19\\], got 20"):
    priority.lower_threads([], 20)


def test_the_server_hands_load_nice_to_its_manager(tmp_path):
  from serving.model_server import ModelServer
  server = ModelServer("m", str(tmp_path), port=0, load_nice=3)
  try:
    assert server.manager.load_nice == 3
  finally:
    server.stop()


@pytest.mark.parametrize("nice", [-1, 20])
def test_a_nice_outside_0_to_19_is_refused_with_its_value(nice):
  with pytest.raises(ValueError, match=f"nice must be in \\[0, 19\\], got {nice}"):
    priority.deprioritize_other_threads(nice)


def test_a_load_nice_outside_0_to_19_is_refused_by_the_manager(tmp_path):
  from serving.model_server import ModelManager
  with pytest.raises(ValueError, match="load_nice must be in \\[0, 19\\], got 25"):
    ModelManager("m", str(tmp_path), load_nice=25)


def test_nice_0_changes_nothing():
  assert priority.deprioritize_other_threads(0) == {}
