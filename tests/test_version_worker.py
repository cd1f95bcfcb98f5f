"""Versions in worker processes (``ModelServer(version_processes=True)``), through the official stubs.

Each worker imports TensorFlow (~3 s), so one server walks through a version's life: load, a
newer version, a bad request, a rollback, a corrupt version, a killed worker, the shutdown.
"""

import os
import signal

import grpc
import numpy as np
import pytest
import tensorflow as tf
from tensorflow_serving.apis import get_model_status_pb2, model_service_pb2_grpc
from test_model_server import MODEL, _ex, _predict_request, _predict_spec, _save, _stub

from serving import client
from serving.model_server import ModelServer, VersionPolicy


def _status(target):
  req = get_model_status_pb2.GetModelStatusRequest()
  req.model_spec.name = MODEL
  stub = model_service_pb2_grpc.ModelServiceStub(grpc.insecure_channel(target))
  return {s.version: s for s in stub.GetModelStatus(req, timeout=30).model_version_status}


REQUEST_THREADS = 2  # the server's gRPC request threads


def _spec_request(x=1.0):
  return _predict_request({"examples": tf.make_tensor_proto([_ex(x)], dtype=tf.string)})


def _worker_pid(srv, version):
  req = _predict_request({})
  req.model_spec.version.value = version
  return srv.manager.get(req.model_spec).pid


def _exited(pid):
  """True once ``pid`` is gone or a zombie (it exited; reaping is its parent's business)."""
  try:
    with open(f"/proc/{pid}/stat") as f:
      return f.read().split(") ")[1].startswith("Z")
  except FileNotFoundError:
    return True


def test_each_version_is_served_by_a_worker_process_through_its_life(tmp_path):
  _save(tmp_path, 1, 2.0)
  srv = ModelServer(MODEL, str(tmp_path), port=0, poll_seconds=3600, max_workers=REQUEST_THREADS,
                    policy=VersionPolicy(latest=1), version_processes=True).start()
  target = f"127.0.0.1:{srv.port}"
  pids = []
  try:
    # Version 1 answers from its own process, with the scores an in-process load gives.
    np.testing.assert_allclose(client.predict(target, MODEL, [_ex(1.5), _ex(-1.0)])["score"],
                               [3.0, -2.0])
    pids.append(_worker_pid(srv, 1))
    assert pids[0] != os.getpid()
    assert client.signature_names(target, MODEL) == ["serving_default"]

    # A bad request gets the worker's one-line INVALID_ARGUMENT; the next good one succeeds.
    bad = _predict_request({"examples": tf.make_tensor_proto([1.0])})
    with pytest.raises(grpc.RpcError) as err:
      _stub(target).Predict(bad, timeout=30)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert err.value.details() == "input 'examples' must be string, got float32"
    assert _predict_spec(target, x=1.0).outputs["score"].float_val[0] == 2.0

    # A newer version loads in another process; the old one stays on standby for a rollback.
    _save(tmp_path, 2, 3.0)
    assert srv.manager.poll() == 2
    response = _predict_spec(target, x=1.0)
    assert (response.model_spec.version.value, response.outputs["score"].float_val[0]) == (2, 3.0)
    pids.append(_worker_pid(srv, 2))
    assert pids[1] not in (pids[0], os.getpid())
    assert srv.manager.standby_versions() == [1] and not _exited(pids[0])

    # Rollback: version 2's directory goes, version 1 serves again without a reload, and version
    # 2's process ends (its directory is gone, so it is not kept).
    import shutil
    shutil.rmtree(tmp_path / "2")
    assert srv.manager.poll() == 1
    assert _predict_spec(target).model_spec.version.value == 1 and _worker_pid(srv, 1) == pids[0]
    assert _exited(pids[1])

    # A corrupt version is reported with the worker's one line; version 1 keeps serving.
    (tmp_path / "3").mkdir()
    (tmp_path / "3" / "saved_model.pb").write_bytes(b"not a SavedModel")
    assert srv.manager.poll() == 1
    message = _status(target)[3].status.error_message
    assert "Cannot parse file" in message and "\n" not in message, message
    assert _predict_spec(target).model_spec.version.value == 1
    shutil.rmtree(tmp_path / "3")

    # A stopped worker: its requests end at their deadline and free the server's request
    # threads (as many as it has), so the server still answers; once the worker runs again, so
    # does the version.
    os.kill(pids[0], signal.SIGSTOP)
    try:
      # kill() returns before every thread has stopped (one thread takes the signal and then
      # stops the others), so a request sent at once could still be answered. The worker is this
      # process's child: wait for its stop to complete, leaving the event for anyone else.
      os.waitid(os.P_PID, pids[0], os.WSTOPPED | os.WNOWAIT)
      calls = [_stub(target).Predict.future(_spec_request(), timeout=1.0)
               for _ in range(REQUEST_THREADS)]
      for call in calls:
        assert call.exception().code() == grpc.StatusCode.DEADLINE_EXCEEDED
      assert _status(target)[1].state == get_model_status_pb2.ModelVersionStatus.AVAILABLE
    finally:
      os.kill(pids[0], signal.SIGCONT)
    assert _predict_spec(target, x=1.5).outputs["score"].float_val[0] == 3.0
    # And a call without a deadline (gRPC reports its time left as ~9e18 s) is answered.
    assert _stub(target).Predict(_spec_request(2.5)).outputs["score"].float_val[0] == 5.0

    # A worker that dies: its requests get UNAVAILABLE naming the version, the next poll loads
    # the version again in a new process, and it answers.
    os.kill(pids[0], signal.SIGKILL)
    os.waitpid(pids[0], 0)  # the server's Popen would reap it too; wait for the death here
    with pytest.raises(grpc.RpcError) as err:
      _predict_spec(target)
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "version 1's worker process" in err.value.details()
    assert srv.manager.poll() == 1
    assert _predict_spec(target, x=2.0).outputs["score"].float_val[0] == 4.0
    pids.append(_worker_pid(srv, 1))
    assert pids[2] != pids[0]
  finally:
    srv.stop()
  # The shutdown closes every worker: none is left behind.
  assert all(_exited(pid) for pid in pids)


class _FakeModel:
  """Answers with its version, or raises what it was given."""
  version = 7

  def __init__(self, error=None):
    self.error = error
    self.timeouts = []

  def respond(self, request, model_name, max_batch_size, timeout=None):
    from tensorflow_serving.apis import predict_pb2
    self.timeouts.append(timeout)
    if self.error is not None:
      raise self.error
    resp = predict_pb2.PredictResponse()
    resp.model_spec.name = model_name
    resp.model_spec.version.value = self.version
    resp.outputs["batch"].int64_val.append(max_batch_size)
    return resp


@pytest.mark.parametrize("error,code,message", [
    (None, None, None),
    ("request", "INVALID_ARGUMENT", "input 'x' must be string, got float32"),
    (RuntimeError("boom\nwith a trace"), "INTERNAL", "RuntimeError: boom"),
])
def test_the_worker_answers_each_frame_with_a_response_or_a_one_line_status(error, code,
                                                                          message):
  import json
  import socket
  import threading

  from tensorflow_serving.apis import predict_pb2

  from serving import version_worker
  from serving.model_server import RequestError
  if error == "request":
    error = RequestError(grpc.StatusCode.INVALID_ARGUMENT, message)
  model = _FakeModel(error)
  answering = version_worker._Answering(model, MODEL, 12)
  front, worker = socket.socketpair()
  thread = threading.Thread(target=answering._answer, args=(worker,))
  thread.start()
  try:
    # The connection stays usable after an answer of either kind; each request's deadline
    # reaches the model with it.
    for timeout in (2.5, None):
      version_worker.send_frame(front, version_worker.request_frame(_predict_request({}), timeout))
      reply = version_worker.read_frame(front)
      if code is None:
        assert reply[:1] == b"\0"
        resp = predict_pb2.PredictResponse.FromString(reply[1:])
        assert (resp.model_spec.name, resp.model_spec.version.value) == (MODEL, 7)
        assert list(resp.outputs["batch"].int64_val) == [12]
      else:
        assert json.loads(reply) == {"code": code, "message": message}
  finally:
    front.close()  # the worker's thread sees the connection close and ends
    thread.join(30)
  assert not thread.is_alive() and answering.drain(0.0)
  assert model.timeouts == [2.5, None]


def test_a_server_that_cannot_bind_leaves_no_worker_behind(tmp_path):
  _save(tmp_path, 1, 1.0)
  srv = ModelServer(MODEL, str(tmp_path), port=0, poll_seconds=3600).start()
  before = _children()
  try:
    with pytest.raises(OSError, match=f"cannot bind 127.0.0.1:{srv.port}: the port is already"):
      ModelServer(MODEL, str(tmp_path), port=srv.port, poll_seconds=3600, version_processes=True)
  finally:
    srv.stop()
  assert _children() == before  # the refused server's two workers were started and closed


def _children():
  """This process's live child processes (zombies are ended ones)."""
  ours = set()
  for entry in os.listdir("/proc"):
    if entry.isdigit():
      try:
        with open(f"/proc/{entry}/stat") as f:
          fields = f.read().rsplit(") ", 1)[1].split()
      except FileNotFoundError:
        continue
      if int(fields[1]) == os.getpid() and fields[0] != "Z":
        ours.add(int(entry))
  return ours
