"""serving.priority: a loading thread runs ahead of the process's other threads (Linux).

A raised nice value cannot be lowered again without privilege, so every check runs in a child
process: the test process's own threads keep their priority.
"""

import json
import os
import subprocess
import sys

import pytest

from serving import priority

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Runs in a child: an idle thread, then a "loader" thread that lowers the others (directly, then
# through ModelManager with a loader that records the priorities it sees) and starts a thread.
CHILD = r"""
import json, os, threading
from serving import priority
from serving.model_server import ModelManager

def nice(tid):
  return os.getpriority(os.PRIO_PROCESS, tid)

ready, done = threading.Event(), threading.Event()
def idle():
  ready.set()
  done.wait()
idle_thread = threading.Thread(target=idle)
idle_thread.start()
ready.wait()
out = {"base": nice(threading.get_native_id())}

def loader():
  me = threading.get_native_id()
  out["changed"] = priority.deprioritize_other_threads(int(os.environ["NICE"]))
  out["changed_again"] = priority.deprioritize_other_threads(int(os.environ["NICE"]))
  out["loader"] = nice(me)
  started = []
  child = threading.Thread(target=lambda: started.append(nice(threading.get_native_id())))
  child.start()
  child.join()
  out["started_by_loader"] = started[0]
loader_thread = threading.Thread(target=loader)
loader_thread.start()
loader_thread.join()
out["idle"] = nice(idle_thread.native_id)
out["main"] = nice(threading.get_native_id())

# ModelManager lowers the other threads before it loads: the idle thread, seen from the loader.
seen = {}
def record(path, version):
  seen["idle"], seen["loader"] = nice(idle_thread.native_id), nice(threading.get_native_id())
  return object()
os.makedirs(os.path.join(os.environ["BASE"], "1"))
open(os.path.join(os.environ["BASE"], "1", "saved_model.pb"), "w").close()
manager_thread = threading.Thread(target=lambda: ModelManager(
    "m", os.environ["BASE"], loader=record, load_nice=int(os.environ["NICE"]) + 3).poll())
manager_thread.start()
manager_thread.join()
out["manager"] = seen
done.set()
idle_thread.join()
print(json.dumps(out))
"""


@pytest.mark.skipif(not os.path.isdir(priority.TASK_DIR), reason="no per-thread nice values")
def test_the_loader_runs_ahead_of_the_other_threads_and_its_own_keep_its_priority(tmp_path):
  env = dict(os.environ, NICE="4", BASE=str(tmp_path / "models"),
             PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
  run = subprocess.run([sys.executable, "-c", CHILD], env=env, cwd=ROOT, capture_output=True,
                       text=True, timeout=300, check=False)
  assert run.returncode == 0, run.stderr[-2000:]
  out = json.loads(run.stdout.strip().splitlines()[-1])
  base = out["base"]
  assert base <= 8, "the child already runs too low to see a change"
  assert out["idle"] == out["main"] == base + 4  # every other thread lowered by 4
  assert out["changed"] >= 2 and out["changed_again"] == 0  # already there: nothing to do
  assert out["loader"] == out["started_by_loader"] == base  # the loader and its threads keep
  # Through ModelManager (load_nice 7) on a thread the lowered main thread started (base + 4):
  # before the load the idle thread went 7 below it; the loading thread kept its own.
  assert out["manager"] == {"idle": base + 11, "loader": base + 4}


@pytest.mark.parametrize("nice", [-1, 20])
def test_a_nice_outside_0_to_19_is_refused_with_its_value(nice):
  with pytest.raises(ValueError, match=f"nice must be in \\[0, 19\\], got {nice}"):
    priority.deprioritize_other_threads(nice)


def test_a_load_nice_outside_0_to_19_is_refused_by_the_manager(tmp_path):
  from serving.model_server import ModelManager
  with pytest.raises(ValueError, match="load_nice must be in \\[0, 19\\], got 25"):
    ModelManager("m", str(tmp_path), load_nice=25)


def test_nice_0_changes_nothing():
  assert priority.deprioritize_other_threads(0) == 0
