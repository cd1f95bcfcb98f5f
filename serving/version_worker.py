"""Each model version in a process of its own, behind the server's gRPC front (issue 7).

Loading a SavedModel in the serving process holds Python's GIL inside single C++ calls
(``TF_GraphImportGraphDefWithResults`` ~0.4 s of a load), so every request in flight on the served
version waited them out: the load benchmark's p99 while a version loaded was 5-7x steady state
(BUILD_NOTES, "A finding about the swap window's p99"). With ``--version_processes`` the server
(:mod:`serving.model_server`) keeps only the routing (version policy, labels, status, request
limits) and forwards each request, with the official stubs over a Unix socket, to the process
that holds the version asked for. A load runs in its own process and interpreter, and the
scheduler can run it ahead of the served processes (``load_nice``).

A worker is started ahead of need (TensorFlow's import, a few CPU-seconds, is paid before a
version appears, at low priority), waits as a *standby*, then loads one version and serves it
until the front closes it. The front and a worker talk in JSON lines over the worker's stdin
and a private copy of its stdout (anything else the worker prints goes to stderr):

  worker -> front, at start:   {"state": "standby"}
  front -> worker:             {"load": path, "version": v, "model_name": ..., "max_batch_size":
                               ..., "max_request_bytes": ..., "socket": path}
  worker -> front:             {"state": "serving"}, or {"state": "failed", "reason": one line}
  front closes stdin:          the worker stops taking requests, drains them, exits.

A worker whose front dies sees its stdin close and exits too. Requests reach a worker only
through :class:`WorkerModel`, which the front's :class:`~serving.model_server.ModelManager`
holds like an in-process :class:`~serving.model_server.LoadedModel`.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
from concurrent import futures
from typing import Dict, List, Mapping

import grpc
from absl import logging
from tensorflow_serving.apis import (
  get_model_metadata_pb2,
  predict_pb2,
  prediction_service_pb2_grpc,
)

from serving import priority

STANDBY, SERVING, FAILED = "standby", "serving", "failed"
# How long a closed worker lets requests already sent to it finish (the front only closes a
# version once none of its requests is in flight, so this is a backstop).
DRAIN_SECONDS = 10.0
# gRPC's default message limits are 4 MB; the front enforces the request limit, so the hop to the
# worker takes what the front accepted.
_UNLIMITED = [("grpc.max_send_message_length", -1), ("grpc.max_receive_message_length", -1)]


class WorkerError(RuntimeError):
  """A worker process that could not start or load: the message is one line."""


def _set_own_nice(nice: int) -> None:
  """Every thread of this process to ``nice`` (a standby waits lowered, then loads at 0)."""
  for entry in os.listdir(priority.TASK_DIR):
    try:
      os.setpriority(os.PRIO_PROCESS, int(entry), nice)
    except ProcessLookupError:
      continue
    except OSError as e:
      logging.warning("could not set this worker's threads to nice %d (%s); it loads at its "
                      "current priority", nice, e)
      return


class WorkerProcess:
  """The front's handle on one worker process, from standby to closed."""

  def __init__(self, nice: int = 0):
    # A new session: a Ctrl-C in the terminal reaches the front, which drains and then closes
    # its workers, instead of killing the versions under the requests still in flight.
    self._proc = subprocess.Popen(
        [sys.executable, "-u", "-m", "serving.version_worker", "--nice",
         str(priority.check_nice(nice, "nice"))],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, start_new_session=True)
    self._lock = threading.Lock()

  @property
  def pid(self) -> int:
    return self._proc.pid

  def _read(self) -> Dict:
    line = self._proc.stdout.readline()
    if not line:
      code = self._proc.wait()
      raise WorkerError(f"worker process {self.pid} exited with code {code} (its log is on the "
                        "server's stderr)")
    return json.loads(line)

  def load(self, path: str, version: int, model_name: str, max_batch_size: int,
           max_request_bytes: int, socket_path: str) -> None:
    """Waits for the standby state, has the worker load ``path`` and serve it on ``socket_path``.

    Raises:
      WorkerError: the worker failed to load the version (its one-line reason) or exited.
    """
    message = self._read()
    if message.get("state") != STANDBY:
      raise WorkerError(f"worker process {self.pid} said {message} instead of {STANDBY!r}")
    self._proc.stdin.write(json.dumps({
        "load": path, "version": version, "model_name": model_name,
        "max_batch_size": max_batch_size, "max_request_bytes": max_request_bytes,
        "socket": socket_path}) + "\n")
    self._proc.stdin.flush()
    message = self._read()
    if message.get("state") != SERVING:
      self.close()
      raise WorkerError(message.get("reason") or f"worker process {self.pid} said {message}")

  def alive(self) -> bool:
    return self._proc.poll() is None

  def thread_ids(self) -> List[int]:
    """The worker's threads (for lowering them while another version loads); [] once it ended."""
    try:
      return [int(t) for t in os.listdir(f"/proc/{self.pid}/task")]
    except FileNotFoundError:
      return []

  def close(self, timeout: float = DRAIN_SECONDS + 30) -> int:
    """Closes the worker's stdin (it drains and exits) and waits; kills it if it does not.

    Returns:
      The worker's exit code.
    """
    with self._lock:
      if self._proc.stdin and not self._proc.stdin.closed:
        try:
          self._proc.stdin.close()
        except BrokenPipeError:  # it has already exited
          pass
      try:
        return self._proc.wait(timeout)
      except subprocess.TimeoutExpired:
        logging.warning("worker process %d did not exit within %.0f s; killing it", self.pid,
                        timeout)
        self._proc.kill()
        return self._proc.wait()


class WorkerModel:
  """A version served by a :class:`WorkerProcess`, as the front's model manager holds it."""

  def __init__(self, process: WorkerProcess, socket_path: str, path: str, version: int,
               model_name: str):
    self.path, self.version, self._process = path, version, process
    self._channel = grpc.insecure_channel(f"unix:{socket_path}", options=_UNLIMITED)
    self._stub = prediction_service_pb2_grpc.PredictionServiceStub(self._channel)
    request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
    request.model_spec.name = model_name
    sig_map = get_model_metadata_pb2.SignatureDefMap()
    self._stub.GetModelMetadata(request, timeout=60).metadata["signature_def"].Unpack(sig_map)
    self.signature_defs = dict(sig_map.signature_def)

  @property
  def pid(self) -> int:
    return self._process.pid

  def respond(self, request: predict_pb2.PredictRequest, model_name: str,
              max_batch_size: int) -> predict_pb2.PredictResponse:
    """Forwards the request to the worker; its gRPC error becomes the same status here."""
    from serving.model_server import RequestError  # pylint: disable=import-outside-toplevel
    del model_name, max_batch_size  # the worker was started with both
    try:
      return self._stub.Predict(request)
    except grpc.RpcError as e:
      if not self.alive():
        raise RequestError(grpc.StatusCode.UNAVAILABLE,
                           f"version {self.version}'s worker process {self.pid} exited; it is "
                           "being loaded again") from e
      raise RequestError(e.code(), e.details()) from e

  def alive(self) -> bool:
    return self._process.alive()

  def thread_ids(self) -> List[int]:
    return self._process.thread_ids()

  def close(self) -> None:
    self._channel.close()
    code = self._process.close()
    logging.info("version %d's worker process %d exited (code %d)", self.version, self.pid, code)


class WorkerLoader:
  """A :class:`~serving.model_server.ModelManager` loader that loads each version in a worker.

  One standby worker is kept started. It begins ``load_nice`` below normal priority, so its
  TensorFlow import does not compete with the served versions, and returns to normal priority
  when it is given a version. While a version loads beside served ones, the served workers' threads
  run ``load_nice`` lower, so the new version is ready sooner (as ``priority`` does for threads
  in one process); afterwards they are put back where permitted.
  """

  def __init__(self, model_name: str, max_batch_size: int, max_request_bytes: int,
               load_nice: int = 0):
    self._model_name, self._max_batch_size, self._max_request_bytes = (
        model_name, max_batch_size, max_request_bytes)
    self._load_nice = priority.check_nice(load_nice, "load_nice")
    self._socket_dir = tempfile.mkdtemp(prefix="versions.")
    self._models: Dict[int, WorkerModel] = {}  # by pid: every worker serving or on standby
    self._count = 0
    self._standby: WorkerProcess | None = WorkerProcess(nice=0)  # the first load waits on it

  def __call__(self, path: str, version: int) -> WorkerModel:
    process, self._standby = self._standby or WorkerProcess(nice=0), None
    self._count += 1
    socket_path = os.path.join(self._socket_dir, f"v{version}.{self._count}.sock")
    served = [m for m in self._models.values() if m.alive()]
    threads = [t for m in served for t in m.thread_ids()]
    changed = priority.lower_threads(threads, self._load_nice) if served else {}
    try:
      process.load(path, version, self._model_name, self._max_batch_size,
                   self._max_request_bytes, socket_path)
      model = WorkerModel(process, socket_path, path, version, self._model_name)
    except grpc.RpcError as e:
      process.close()
      raise WorkerError(f"worker process {process.pid} loaded version {version} but did not "
                        f"answer: {e.code().name}") from e
    finally:
      priority.restore(changed)
      self._standby = WorkerProcess(nice=self._load_nice)  # ready for the next version
    self._models = {m.pid: m for m in self._models.values() if m.alive()}
    self._models[model.pid] = model
    logging.info("version %d serves from worker process %d", version, model.pid)
    return model

  def close(self) -> None:
    """Stops the standby worker and removes the socket directory (models are closed by the
    manager)."""
    if self._standby is not None:
      self._standby.close()
      self._standby = None
    shutil.rmtree(self._socket_dir, ignore_errors=True)


def _serve(message: Mapping, out) -> None:
  """The worker's side: load the version, serve it on the socket until stdin closes."""
  # pylint: disable=import-outside-toplevel
  from serving import model_server
  try:
    model = model_server.LoadedModel(message["load"], message["version"])
  except Exception as e:  # noqa: BLE001 - any broken SavedModel is reported to the front
    out.write(json.dumps({"state": FAILED,
                          "reason": f"{type(e).__name__}: {model_server.first_line(e)}"}) + "\n")
    out.flush()
    return
  server = grpc.server(futures.ThreadPoolExecutor(max_workers=4),
                       options=[("grpc.max_receive_message_length",
                                 message["max_request_bytes"]), ("grpc.so_reuseport", 0)])
  prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(
      model_server.PredictionServicer(_OneVersion(message["model_name"], model),
                                      message["max_batch_size"]), server)
  server.add_insecure_port(f"unix:{message['socket']}")
  server.start()
  out.write(json.dumps({"state": SERVING}) + "\n")
  out.flush()
  sys.stdin.read()  # until the front closes it (or dies)
  server.stop(grace=DRAIN_SECONDS).wait()


class _OneVersion:
  """The model manager's interface over one version (the front has already routed)."""

  def __init__(self, model_name: str, model):
    self.model_name, self._model = model_name, model

  def use(self, spec):
    del spec
    return contextlib.nullcontext(self._model)


def main(argv: List[str] | None = None) -> None:
  import argparse  # pylint: disable=import-outside-toplevel
  parser = argparse.ArgumentParser(description="A model version's worker process (started by "
                                               "serving.model_server --version_processes).")
  parser.add_argument("--nice", type=int, default=0, help="Priority while on standby.")
  args = parser.parse_args(argv)
  # The protocol gets a private copy of stdout; fd 1 then points at stderr, so whatever
  # TensorFlow or a library prints cannot corrupt it.
  out = os.fdopen(os.dup(1), "w")
  os.dup2(2, 1)
  os.nice(priority.check_nice(args.nice, "nice"))
  # TensorFlow's import (a few CPU-seconds) happens here, on standby and at low priority.
  from serving import model_server  # noqa: F401  pylint: disable=import-outside-toplevel,unused-import
  logging.set_verbosity(logging.INFO)
  out.write(json.dumps({"state": STANDBY}) + "\n")
  out.flush()
  line = sys.stdin.readline()
  if not line:
    return  # closed while on standby
  if args.nice:
    _set_own_nice(0)
  _serve(json.loads(line), out)


if __name__ == "__main__":
  main()
