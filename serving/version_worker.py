"""Each model version in a process of its own, behind the server's gRPC front (issue 7).

Loading a SavedModel in the serving process holds Python's GIL inside single C++ calls
(``TF_GraphImportGraphDefWithResults`` ~0.4 s of a load), so every request in flight on the served
version waited them out: the load benchmark's p99 while a version loaded was 5-7x steady state
(BUILD_NOTES, "A finding about the swap window's p99"). With ``--version_processes`` the server
(:mod:`serving.model_server`) keeps only the routing (version policy, labels, status, request
limits) and forwards each request over a Unix socket to the process that holds the version asked
for. A load runs in its own process and interpreter, and the scheduler can run it ahead of the
served processes (``load_nice``).

The hop is a serialized PredictRequest in a length-prefixed frame (after the seconds left before
its deadline, which bound the worker's run as they bound TF Serving's), and the serialized
PredictResponse (or the status code and one-line message of a rejection) back. A gRPC hop cost
~0.5 ms and ~0.6 CPU-ms per request on this machine, about 2 CPU-ms with the server around it,
which lowered the busy server's throughput by a third; a frame on a Unix socket costs tens of
microseconds (BUILD_NOTES, issue 7).

A worker is started ahead of need (TensorFlow's import, a few CPU-seconds, is paid before a
version appears, at low priority), waits as a *standby*, then loads one version and serves it
until the front closes it. The front and a worker talk in JSON lines over the worker's stdin
and a private copy of its stdout (anything else the worker prints goes to stderr):

  worker -> front, at start:   {"state": "standby"}
  front -> worker:             {"load": path, "version": v, "model_name": ...,
                               "max_batch_size": ..., "socket": path}
  worker -> front:             {"state": "serving", "signature_defs": base64 SignatureDefMap},
                               or {"state": "failed", "reason": one line}
  front closes stdin:          the worker stops taking requests, drains them, exits.

A worker whose front dies sees its stdin close and exits too. Requests reach a worker only
through :class:`WorkerModel`, which the front's :class:`~serving.model_server.ModelManager`
holds like an in-process :class:`~serving.model_server.LoadedModel`.
"""

from __future__ import annotations

import base64
import json
import math
import os
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from typing import Dict, List, Mapping, Tuple

import grpc
from absl import logging
from tensorflow_serving.apis import get_model_metadata_pb2, predict_pb2

from serving import priority

STANDBY, SERVING, FAILED = "standby", "serving", "failed"
# How long a closed worker lets requests already sent to it finish (the front only closes a
# version once none of its requests is in flight, so this is a backstop).
DRAIN_SECONDS = 10.0
_LENGTH = struct.Struct("<Q")  # a frame: its length, then the bytes
# A request frame: the seconds left before the request's deadline (infinity: none), then the
# request.
_TIMEOUT = struct.Struct("<d")
# How much longer than a request's deadline the front waits for its worker's reply: the worker's
# run is cancelled at the deadline and says so; a worker that cannot even say so is not answering.
REPLY_GRACE_SECONDS = 1.0
_OK = b"\0"  # a reply frame's first byte: the response follows, or else a JSON status


class WorkerError(RuntimeError):
  """A worker process that could not start or load: the message is one line."""


def _read_exactly(conn: socket.socket, size: int) -> bytes:
  data = bytearray(size)
  view, got = memoryview(data), 0
  while got < size:
    n = conn.recv_into(view[got:])
    if not n:
      raise EOFError("connection closed")
    got += n
  return bytes(data)


def send_frame(conn: socket.socket, payload: bytes) -> None:
  conn.sendall(_LENGTH.pack(len(payload)) + payload)


def request_frame(request: predict_pb2.PredictRequest, timeout: float | None) -> bytes:
  """A request frame's bytes: ``timeout`` (seconds left before the deadline; None: none), then
  the serialized request."""
  return _TIMEOUT.pack(math.inf if timeout is None else timeout) + request.SerializeToString()


def parse_request_frame(payload: bytes) -> Tuple[predict_pb2.PredictRequest, float | None]:
  """The request and its timeout from a :func:`request_frame`'s bytes."""
  (timeout,) = _TIMEOUT.unpack_from(payload)
  request = predict_pb2.PredictRequest.FromString(payload[_TIMEOUT.size:])
  return request, None if math.isinf(timeout) else timeout


def read_frame(conn: socket.socket) -> bytes:
  """One frame's bytes; EOFError if the other side closed the connection."""
  (size,) = _LENGTH.unpack(_read_exactly(conn, _LENGTH.size))
  return _read_exactly(conn, size)


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
    self._ready = False

  @property
  def pid(self) -> int:
    return self._proc.pid

  def wait_standby(self) -> None:
    """Blocks until the worker has imported TensorFlow and waits for a version.

    Raises:
      WorkerError: it exited or said something else.
    """
    if not self._ready:
      message = self._read()
      if message.get("state") != STANDBY:
        raise WorkerError(f"worker process {self.pid} said {message} instead of {STANDBY!r}")
      self._ready = True

  def _read(self) -> Dict:
    line = self._proc.stdout.readline()
    if not line:
      code = self._proc.wait()
      raise WorkerError(f"worker process {self.pid} exited with code {code} (its log is on the "
                        "server's stderr)")
    return json.loads(line)

  def load(self, path: str, version: int, model_name: str, max_batch_size: int,
           socket_path: str) -> Dict[str, object]:
    """Waits for the standby state, has the worker load ``path`` and serve it on ``socket_path``.

    Returns:
      The version's SignatureDefs by name.

    Raises:
      WorkerError: the worker failed to load the version (its one-line reason) or exited.
    """
    self.wait_standby()
    self._proc.stdin.write(json.dumps({
        "load": path, "version": version, "model_name": model_name,
        "max_batch_size": max_batch_size, "socket": socket_path}) + "\n")
    self._proc.stdin.flush()
    message = self._read()
    if message.get("state") != SERVING:
      self.close()
      raise WorkerError(message.get("reason") or f"worker process {self.pid} said {message}")
    signature_defs = get_model_metadata_pb2.SignatureDefMap.FromString(
        base64.b64decode(message["signature_defs"]))
    return dict(signature_defs.signature_def)

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
  """A version served by a :class:`WorkerProcess`, as the front's model manager holds it.

  Each request borrows an idle connection to the worker (or opens one), so as many requests run
  at once as the front's request threads allow.
  """

  def __init__(self, process: WorkerProcess, socket_path: str, path: str, version: int,
               signature_defs: Mapping[str, object]):
    self.path, self.version, self._process = path, version, process
    self.signature_defs = dict(signature_defs)
    self._socket_path = socket_path
    self._idle: List[socket.socket] = []
    self._lock = threading.Lock()

  @property
  def pid(self) -> int:
    return self._process.pid

  def _connection(self) -> socket.socket:
    with self._lock:
      if self._idle:
        return self._idle.pop()
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    conn.connect(self._socket_path)
    return conn

  def respond(self, request: predict_pb2.PredictRequest, model_name: str,
              max_batch_size: int, timeout: float | None = None) -> predict_pb2.PredictResponse:
    """Forwards the request to the worker; its rejection becomes the same status here.

    ``timeout`` (seconds, None for none) goes with the request: the worker's run is cancelled
    at it. A worker that has not replied :data:`REPLY_GRACE_SECONDS` later (stopped, or stuck)
    gets DEADLINE_EXCEEDED, and the request's thread is free again.
    """
    # model_server imports this module, so its names are imported where they are used.
    from serving.model_server import RequestError  # pylint: disable=import-outside-toplevel
    del model_name, max_batch_size  # the worker was started with both
    try:
      conn = self._connection()
      try:
        conn.settimeout(None if timeout is None else max(timeout, 0.0) + REPLY_GRACE_SECONDS)
        send_frame(conn, request_frame(request, timeout))
        reply = read_frame(conn)
        conn.settimeout(None)
      except BaseException:
        conn.close()  # a half-read frame would leave the connection out of step
        raise
    except TimeoutError as e:  # before OSError, of which it is one
      raise RequestError(grpc.StatusCode.DEADLINE_EXCEEDED,
                         f"version {self.version}'s worker process {self.pid} did not answer "
                         f"within the request's deadline ({timeout:.3g} s)") from e
    except (OSError, EOFError) as e:
      state = "exited" if not self.alive() else "did not answer"
      raise RequestError(grpc.StatusCode.UNAVAILABLE,
                         f"version {self.version}'s worker process {self.pid} {state} "
                         f"({type(e).__name__}); it is loaded again at the next poll") from e
    with self._lock:
      self._idle.append(conn)
    if reply[:1] == _OK:
      return predict_pb2.PredictResponse.FromString(reply[1:])
    status = json.loads(reply)
    raise RequestError(grpc.StatusCode[status["code"]], status["message"])

  def alive(self) -> bool:
    return self._process.alive()

  def thread_ids(self) -> List[int]:
    return self._process.thread_ids()

  def close(self) -> None:
    with self._lock:
      idle, self._idle = self._idle, []
    for conn in idle:
      conn.close()
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

  def __init__(self, model_name: str, max_batch_size: int, load_nice: int = 0):
    self._model_name, self._max_batch_size = model_name, max_batch_size
    self._load_nice = priority.check_nice(load_nice, "load_nice")
    self._socket_dir = tempfile.mkdtemp(prefix="versions.")
    self._models: Dict[int, WorkerModel] = {}  # by pid: every worker serving or on standby
    self._count = 0
    # Two at once: the first version's, and the standby for the next, which then imports
    # TensorFlow beside the first rather than beside the requests (see wait_standby).
    self._first: WorkerProcess | None = WorkerProcess(nice=0)
    self._standby: WorkerProcess | None = WorkerProcess(nice=load_nice)

  def __call__(self, path: str, version: int) -> WorkerModel:
    if self._first is not None:
      process, self._first = self._first, None
    else:
      process, self._standby = self._standby or WorkerProcess(nice=0), None
    self._count += 1
    socket_path = os.path.join(self._socket_dir, f"v{version}.{self._count}.sock")
    served = [m for m in self._models.values() if m.alive()]
    threads = [t for m in served for t in m.thread_ids()]
    changed = priority.lower_threads(threads, self._load_nice) if served else {}
    try:
      signature_defs = process.load(path, version, self._model_name, self._max_batch_size,
                                    socket_path)
    finally:
      priority.restore(changed)
      if self._standby is None:
        self._standby = WorkerProcess(nice=self._load_nice)  # ready for the next version
    model = WorkerModel(process, socket_path, path, version, signature_defs)
    self._models = {m.pid: m for m in self._models.values() if m.alive()}
    self._models[model.pid] = model
    logging.info("version %d serves from worker process %d", version, model.pid)
    return model

  def wait_standby(self) -> None:
    """Blocks until the standby worker is ready for the next version (its import done), so a
    server that has started has no start-up work left running beside its requests."""
    if self._standby is not None:
      self._standby.wait_standby()

  def close(self) -> None:
    """Stops the unused workers and removes the socket directory (models are closed by the
    manager)."""
    for process in (self._first, self._standby):
      if process is not None:
        process.close()
    self._first = self._standby = None
    shutil.rmtree(self._socket_dir, ignore_errors=True)


def _serve(message: Mapping, out) -> None:
  """The worker's side: load the version, answer frames on the socket until stdin closes."""
  # pylint: disable=import-outside-toplevel
  from serving import model_server
  wall, cpu = time.perf_counter(), time.process_time()
  try:
    model = model_server.LoadedModel(message["load"], message["version"])
    # This process does nothing else yet: its CPU time is the load's (all threads).
    logging.info("version %d: load and warm-up %.1f s, %.1f CPU-s in worker process %d",
                 message["version"], time.perf_counter() - wall, time.process_time() - cpu,
                 os.getpid())
  except Exception as e:  # noqa: BLE001 - any broken SavedModel is reported to the front
    out.write(json.dumps({"state": FAILED,
                          "reason": f"{type(e).__name__}: {model_server.first_line(e)}"}) + "\n")
    out.flush()
    return
  listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
  listener.bind(message["socket"])
  listener.listen()
  answering = _Answering(model, message["model_name"], message["max_batch_size"])
  threading.Thread(target=answering.accept, args=(listener,), daemon=True).start()
  signature_defs = get_model_metadata_pb2.SignatureDefMap(signature_def=model.signature_defs)
  out.write(json.dumps({"state": SERVING, "signature_defs": base64.b64encode(
      signature_defs.SerializeToString()).decode("ascii")}) + "\n")
  out.flush()
  sys.stdin.read()  # until the front closes it (or dies)
  listener.close()
  answering.drain(DRAIN_SECONDS)


class _Answering:
  """The worker's request loop: a thread per connection from the front, one frame at a time."""

  def __init__(self, model, model_name: str, max_batch_size: int):
    self._model, self._model_name, self._max_batch_size = model, model_name, max_batch_size
    self._busy = 0
    self._idle = threading.Condition()

  def accept(self, listener: socket.socket) -> None:
    while True:
      try:
        conn, _ = listener.accept()
      except OSError:  # the listener was closed: no new connections
        return
      threading.Thread(target=self._answer, args=(conn,), daemon=True).start()

  def _answer(self, conn: socket.socket) -> None:
    with conn:
      while True:
        try:
          payload = read_frame(conn)
        except (OSError, EOFError):  # the front closed the connection
          return
        with self._idle:
          self._busy += 1
        try:
          send_frame(conn, self._reply(payload))
        except OSError:
          return
        finally:
          with self._idle:
            self._busy -= 1
            self._idle.notify_all()

  def _reply(self, payload: bytes) -> bytes:
    # pylint: disable=import-outside-toplevel
    from serving.model_server import RequestError, first_line
    try:
      request, timeout = parse_request_frame(payload)
      return _OK + self._model.respond(request, self._model_name, self._max_batch_size,
                                       timeout).SerializeToString()
    except RequestError as e:
      code, text = e.code, str(e)
    except Exception as e:  # noqa: BLE001 - the front answers INTERNAL; the worker keeps serving
      logging.exception("version %d failed a request", self._model.version)
      code, text = grpc.StatusCode.INTERNAL, f"{type(e).__name__}: {first_line(e)}"
    return json.dumps({"code": code.name, "message": text}).encode()

  def drain(self, timeout: float) -> bool:
    """Waits until no request is being answered (up to ``timeout`` s); True if none is."""
    with self._idle:
      return self._idle.wait_for(lambda: self._busy == 0, timeout)


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
