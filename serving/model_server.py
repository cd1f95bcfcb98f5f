"""A small server that speaks TensorFlow Serving's gRPC protocol over a Pusher output directory.

TF Serving's binary cannot be installed on these machines, so this serves the same layout
(``<model_base_path>/<version>/saved_model.pb``) through the same protocol: PredictionService
(Predict, GetModelMetadata) and ModelService (GetModelStatus). Clients use only the official
``tensorflow-serving-api`` stubs, so they work unchanged against a real ``tensorflow/serving``.
From the command line each version is loaded and served by a worker process of its own
(:mod:`serving.version_worker`), so a load does not stall the requests on the served version.

    python -m serving.model_server --model_name livestream-ranking \
        --model_base_path work/serving/livestream-ranking --port 8500
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import signal
import threading
import time
from concurrent import futures
from typing import Callable, Dict, Iterable, Iterator, List, Mapping, Sequence, Set, Tuple

import grpc
import numpy as np
import tensorflow as tf
from absl import logging
from tensorflow.core.framework import tensor_pb2
from tensorflow.core.protobuf import config_pb2, rewriter_config_pb2
from tensorflow_serving.apis import (
  get_model_metadata_pb2,
  get_model_status_pb2,
  model_pb2,
  model_service_pb2_grpc,
  predict_pb2,
  prediction_service_pb2_grpc,
)

from models import request_checks, warmup
from pipeline.configs import PIPELINE_NAME
from serving import priority, version_worker

SIGNATURE_DEF_FIELD = "signature_def"
# Request limits: larger requests are refused with a message saying so (the byte limit by gRPC,
# RESOURCE_EXHAUSTED; the batch limit here, INVALID_ARGUMENT).
MAX_BATCH_SIZE = 10_000
MAX_REQUEST_BYTES = 64 << 20
DEFAULT_SIGNATURE = "serving_default"
# How often the model directory is listed (TF Serving's --file_system_poll_wait_seconds, whose
# default is 1 s). A listing costs microseconds; at 1 s the poll's phase was on average 0.5 s of
# a version change's ~5 s under load (BUILD_NOTES, issue 7).
POLL_SECONDS = 0.25
# How far below a loading version's thread the request threads run (serving.priority); the
# command line's default, measured in BUILD_NOTES (issue 7). Library use defaults to 0 (no change).
LOAD_NICE = 10


class RequestError(Exception):
  """A client error: becomes a gRPC status with ``code`` and this message."""

  def __init__(self, code: grpc.StatusCode, message: str):
    super().__init__(message)
    self.code = code


# Which typed TensorProto field holds each dtype's values (TF Serving fills these, not
# tensor_content, so a client reading e.g. ``float_val`` gets the scores).
_VALUE_FIELDS = {tf.float32: "float_val", tf.float64: "double_val", tf.int64: "int64_val",
                 tf.int32: "int_val", tf.int16: "int_val", tf.int8: "int_val",
                 tf.uint8: "int_val", tf.bool: "bool_val", tf.string: "string_val",
                 tf.float16: "half_val"}


def typed_tensor_proto(value: tf.Tensor) -> tensor_pb2.TensorProto:
  """A TensorProto with the values in the typed field of its dtype, as TF Serving answers."""
  if value.dtype not in _VALUE_FIELDS:
    raise RequestError(grpc.StatusCode.INTERNAL,
                       f"output dtype {value.dtype.name} has no TensorProto value field here")
  proto = tensor_pb2.TensorProto(dtype=value.dtype.as_datatype_enum,
                                 tensor_shape=tf.TensorShape(value.shape).as_proto())
  flat = value.numpy().reshape([-1])
  if value.dtype == tf.float16:
    flat = flat.view("uint16")
  getattr(proto, _VALUE_FIELDS[value.dtype]).extend(flat.tolist())
  return proto


def session_config() -> config_pb2.ConfigProto:
  """The sessions' Grappler settings: the default optimizers, less four that cost a new version's
  first run of each signature (when Grappler optimizes the signature's function) without making a
  CPU inference faster: the MLIR (TFG) passes, conditional code motion, the memory optimizer
  (swapping and recomputation, for accelerators) and the layout optimizer (NCHW for GPUs).
  Measured in BUILD_NOTES (issue 7): load and warm-up ~35% shorter, same request latency.
  """
  config = config_pb2.ConfigProto()
  rewrite = config.graph_options.rewrite_options
  rewrite.disable_tfg_optimizer = True
  rewrite.experimental_conditional_code_motion = rewriter_config_pb2.RewriterConfig.OFF
  rewrite.memory_optimization = rewriter_config_pb2.RewriterConfig.NO_MEM_OPT
  rewrite.layout_optimizer = rewriter_config_pb2.RewriterConfig.OFF
  return config


# gRPC reports a call without a deadline as ~9.2e18 s remaining; any longer than this is none.
NO_DEADLINE_SECONDS = 1e9


def request_timeout(context: grpc.ServicerContext) -> float | None:
  """Seconds left before a call's deadline; None if the client set none."""
  remaining = context.time_remaining()
  return None if remaining is None or remaining > NO_DEADLINE_SECONDS else remaining


def run_options(timeout: float | None) -> config_pb2.RunOptions | None:
  """A session run's options for a request with ``timeout`` seconds left (None: no deadline).

  At least 1 ms: a timeout of 0 would mean none, and a deadline already past fails at once.
  """
  if timeout is None:
    return None
  return config_pb2.RunOptions(timeout_in_ms=max(1, int(timeout * 1000)))


class LoadedModel:
  """One SavedModel version, loaded as TF Serving loads it: the serving MetaGraph in a session.

  Only the ``serve`` graph and its variables are restored (no Python objects rebuilt, unlike
  ``tf.saved_model.load``): a version loads in about half the time and holds the GIL far less,
  so loading a new version beside the served one does not starve the request threads.
  """

  def __init__(self, path: str, version: int):
    self.path, self.version = path, version
    start = time.perf_counter()
    self._session = tf.compat.v1.Session(graph=tf.Graph(), config=session_config())
    meta_graph = tf.compat.v1.saved_model.loader.load(
        self._session, [tf.saved_model.SERVING], path)
    # "__saved_model_init_op" and the like are loader internals, not callable signatures.
    self.signature_defs = {name: sig for name, sig in meta_graph.signature_def.items()
                           if not name.startswith("__")}
    loaded = time.perf_counter()
    # TF Serving's warm-up file, as TF Serving replays it: only the signatures it holds requests
    # for are warmed (the online ones, models.warmup); the others' first request pays the
    # executor's creation. A version without the file gets a dummy run of every signature.
    replays: Dict[str, List[predict_pb2.PredictRequest]] = {}
    for request in warmup.read_warmup_requests(path):
      replays.setdefault(request.model_spec.signature_name or DEFAULT_SIGNATURE, []).append(request)
    unknown = sorted(set(replays) - set(self.signature_defs))
    if unknown:
      raise ValueError(f"{warmup.WARMUP_FILE} has requests for signatures {unknown} the model "
                       f"does not have; it has {sorted(self.signature_defs)}")

    def warm_up(name: str) -> str:
      return self._replay(name, replays[name]) if replays else self._warm_up(name)

    warmed = sorted(replays) if replays else sorted(self.signature_defs)
    with futures.ThreadPoolExecutor(max(1, len(warmed))) as pool:
      for name, outcome in zip(warmed, pool.map(warm_up, warmed)):
        logging.info("version %d signature %r warmed up: %s", version, name, outcome)
    for name in sorted(set(self.signature_defs) - set(warmed)):
      logging.info("version %d signature %r not warmed up: %s has no request for it", version,
                   name, warmup.WARMUP_FILE)
    logging.info("version %d loaded in %.1f s, warmed up in %.1f s", version, loaded - start,
                 time.perf_counter() - loaded)

  def _replay(self, name: str, requests: Sequence[predict_pb2.PredictRequest]) -> str:
    """Runs a signature's warm-up requests as requests are run; a failing one fails the load, as
    in TF Serving (a version that cannot answer its own warm-up request is broken)."""
    for i, request in enumerate(requests):
      try:
        self.predict(name, request.inputs, request.output_filter, MAX_BATCH_SIZE)
      except RequestError as e:
        raise ValueError(f"warm-up request {i} of signature {name!r} ({warmup.WARMUP_FILE}) "
                         f"failed: {e}") from e
    return f"{len(requests)} request(s) from {warmup.WARMUP_FILE}"

  def _warm_up(self, name: str) -> str:
    """Runs a signature once on minimal inputs (empty strings / zeros, no rows where the batch is
    free), so its first request does not pay the session's one-off function instantiation
    (~3 s here; 12 s with 8 concurrent first requests). Building the executor is what counts,
    so an input the graph rejects (a context that must hold one example) warms up as well, but
    the branches after the rejection stay cold: a version with a warm-up file
    (:mod:`models.warmup`) runs valid requests instead. The outcome is returned for the log.
    """
    signature = self.signature_defs[name]
    feed = {}
    for info in signature.inputs.values():
      shape = [max(d.size, 0) for d in info.tensor_shape.dim]
      dtype = tf.dtypes.as_dtype(info.dtype)
      feed[info.name] = (np.full(shape, b"", dtype=object) if dtype == tf.string
                         else np.zeros(shape, dtype.as_numpy_dtype))
    try:
      self._session.run({k: v.name for k, v in signature.outputs.items()}, feed)
    except tf.errors.OpError as e:
      return f"ran; the dummy input was rejected ({first_line(e)})"
    return "ran"

  def predict(self, signature_name: str, input_protos: Mapping[str, tensor_pb2.TensorProto],
              output_filter: Sequence[str], max_batch_size: int,
              timeout: float | None = None) -> Dict[str, tf.Tensor]:
    """Checks a request against the signature (before converting or running anything), runs it.

    Every rejection is one line naming the input, what was expected and what was received.
    ``timeout`` (seconds, None for none) bounds the run as TF Serving bounds it by the request's
    deadline: a run still going then is cancelled (DEADLINE_EXCEEDED).
    """
    name = signature_name or DEFAULT_SIGNATURE
    if name not in self.signature_defs:
      raise RequestError(grpc.StatusCode.INVALID_ARGUMENT,
                         f"unknown signature_name {name!r}; available: "
                         f"{sorted(self.signature_defs)}")
    signature = self.signature_defs[name]
    expected = signature.inputs  # {name: TensorInfo}
    missing, extra = set(expected) - set(input_protos), set(input_protos) - set(expected)
    if missing or extra:
      raise RequestError(grpc.StatusCode.INVALID_ARGUMENT,
                         f"signature {name!r} takes inputs {sorted(expected)}; request has "
                         f"{sorted(input_protos)} (missing {sorted(missing)}, unexpected "
                         f"{sorted(extra)})")
    feed = {}
    for key, info in expected.items():
      proto = input_protos[key]
      if proto.dtype != info.dtype:
        raise RequestError(grpc.StatusCode.INVALID_ARGUMENT,
                           f"input {key!r} must be {_dtype_name(info.dtype)}, got "
                           f"{_dtype_name(proto.dtype)}")
      want = tf.TensorShape(info.tensor_shape)
      shape = tf.TensorShape([d.size for d in proto.tensor_shape.dim])
      if proto.tensor_shape.unknown_rank or not want.is_compatible_with(shape):
        raise RequestError(grpc.StatusCode.INVALID_ARGUMENT,
                           f"input {key!r} must have shape {tuple(want.as_list())}, got "
                           f"{tuple(shape.as_list())}")
      if shape.rank and shape[0] > max_batch_size:
        raise RequestError(grpc.StatusCode.INVALID_ARGUMENT,
                           f"input {key!r} has batch size {shape[0]}; at most {max_batch_size} "
                           "per request")
      try:
        feed[info.name] = tf.make_ndarray(proto)
      except (TypeError, ValueError) as e:
        raise RequestError(grpc.StatusCode.INVALID_ARGUMENT,
                           f"input {key!r} is not a valid TensorProto: {first_line(e)}") from e
    outputs = list(signature.outputs)
    if output_filter:
      unknown = set(output_filter) - set(outputs)
      if unknown:
        raise RequestError(grpc.StatusCode.INVALID_ARGUMENT,
                           f"output_filter names unknown outputs {sorted(unknown)}; available: "
                           f"{sorted(outputs)}")
      outputs = [k for k in outputs if k in output_filter]
    try:
      values = self._session.run({k: signature.outputs[k].name for k in outputs}, feed,
                                 options=run_options(timeout))
    except tf.errors.DeadlineExceededError as e:
      raise RequestError(grpc.StatusCode.DEADLINE_EXCEEDED,
                         f"signature {name!r} did not finish within the request's deadline "
                         f"({timeout:.3g} s)") from e
    except (tf.errors.InvalidArgumentError, ValueError) as e:
      raise RequestError(grpc.StatusCode.INVALID_ARGUMENT,
                         f"signature {name!r} rejected the input: {first_line(e)}") from e
    return {k: tf.constant(v) for k, v in values.items()}

  def respond(self, request: predict_pb2.PredictRequest, model_name: str,
              max_batch_size: int, timeout: float | None = None) -> predict_pb2.PredictResponse:
    """Answers a PredictRequest as TF Serving does: typed outputs, the version that answered;
    within ``timeout`` seconds (the request's deadline) or DEADLINE_EXCEEDED."""
    outputs = self.predict(request.model_spec.signature_name, request.inputs,
                           list(request.output_filter), max_batch_size, timeout)
    resp = predict_pb2.PredictResponse()
    resp.model_spec.name = model_name
    resp.model_spec.version.value = self.version
    resp.model_spec.signature_name = request.model_spec.signature_name or DEFAULT_SIGNATURE
    for key, value in outputs.items():
      resp.outputs[key].CopyFrom(typed_tensor_proto(value))
    return resp

  def alive(self) -> bool:
    """Always: an in-process version cannot die apart from its server."""
    return True

  def close(self) -> None:
    """Frees the session; called once no request uses this version any more."""
    self._session.close()


def _dtype_name(enum: int) -> str:
  try:
    return tf.dtypes.as_dtype(enum).name
  except TypeError:
    return f"unsupported dtype enum {enum}"


def first_line(error: BaseException) -> str:
  """The reason of a (TensorFlow) error without its graph trace: the first informative line."""
  text = getattr(error, "message", None) or str(error)
  lines = [line.strip() for line in text.splitlines() if line.strip()]
  for line in lines:  # an in-graph request check: "assertion failed: [<message>] [<value>]"
    if request_checks.FAILED_PREFIX in line:
      line = line[line.index(request_checks.FAILED_PREFIX):]
      return line.replace("] [", " ").rstrip("]")
  informative = [line for line in lines if not line.startswith(
      ("Graph execution error", "Detected at node", "<stack traces unavailable>", "[[", "File "))]
  line = (informative or lines or [type(error).__name__])[0]
  return line.replace("Name: <unknown>, ", "").split("\t [[")[0].strip()


def _versions(base_path: str) -> Dict[int, str]:
  out = {}
  if tf.io.gfile.isdir(base_path):
    for name in tf.io.gfile.listdir(base_path):
      name = name.rstrip("/")
      path = os.path.join(base_path, name)
      if name.isdigit() and tf.io.gfile.exists(os.path.join(path, "saved_model.pb")):
        out[int(name)] = path
  return out


def _fingerprint(path: str) -> Tuple[int, int] | None:
  """(mtime in ns, size) of a version's saved_model.pb (a rewritten version is a new one); None
  when it has gone since the directory was listed."""
  try:
    stat = tf.io.gfile.stat(os.path.join(path, "saved_model.pb"))
  except tf.errors.NotFoundError:
    return None
  return stat.mtime_nsec, stat.length


@dataclasses.dataclass(frozen=True)
class VersionPolicy:
  """Which versions on disk are served and what labels name, as TF Serving's model config.

  Attributes:
    latest: serve the newest ``latest`` versions (TF Serving's ``latest { num_versions }``).
    specific: serve exactly these versions when present (``specific { versions }``); overrides
      ``latest``.
    serve_all: serve every version on disk (``all {}``).
    labels: version label -> version (``version_labels``), e.g. stable / canary.
  """
  latest: int = 1
  specific: Tuple[int, ...] = ()
  serve_all: bool = False
  labels: Mapping[str, int] = dataclasses.field(default_factory=dict)

  def __post_init__(self):
    if self.latest < 1:
      raise ValueError(f"version policy latest must be >= 1, got {self.latest}")
    if self.specific and self.serve_all:
      raise ValueError("version policy: choose specific versions or all, not both")
    wanted = set(self.specific)
    for label, version in self.labels.items():
      if wanted and version not in wanted:
        raise ValueError(f"version label {label!r} names version {version}, which the policy "
                         f"(specific {sorted(wanted)}) never serves")

  def select(self, on_disk: Iterable[int]) -> Set[int]:
    """The versions to serve out of those on disk."""
    on_disk = sorted(on_disk)
    if self.serve_all:
      return set(on_disk)
    if self.specific:
      return set(self.specific) & set(on_disk)
    return set(on_disk[-self.latest:])

  @classmethod
  def parse(cls, policy: str, labels: str = "") -> VersionPolicy:
    """From the CLI: ``latest:N`` | ``all`` | ``specific:V1,V2``; labels ``stable=3,canary=5``."""
    kind, _, arg = policy.partition(":")
    try:
      label_map = {k: int(v) for k, v in (item.split("=") for item in labels.split(",") if item)}
      if kind == "latest":
        return cls(latest=int(arg or 1), labels=label_map)
      if kind == "all" and not arg:
        return cls(serve_all=True, labels=label_map)
      if kind == "specific" and arg:
        return cls(specific=tuple(int(v) for v in arg.split(",")), labels=label_map)
    except ValueError as e:
      raise ValueError(f"bad version policy {policy!r} / labels {labels!r}: {e}") from e
    raise ValueError(f"bad version policy {policy!r}: expected latest:N, all or specific:V1,V2")


@dataclasses.dataclass
class LoadFailure:
  """A version that failed to load: why, how often, and when to try again."""
  reason: str
  attempts: int
  next_try: float


class ModelManager:
  """Serves the versions a :class:`VersionPolicy` selects from ``base_path``, as TF Serving.

  ``poll`` loads newly selected versions (outside the lock: requests keep being answered by the
  served ones), then in one step makes them available and unloads versions no longer selected —
  e.g. the newest, when its directory is removed (a rollback). A version that fails to load is
  reported once, with a one-line reason (also in GetModelStatus), and retried with exponential
  back-off from ``retry_seconds`` up to ``max_retry_seconds``.

  With ``load_nice`` > 0, while a version loads beside served ones, the process's other threads
  (the request threads, gRPC's and TensorFlow's pools) run that far below the loading thread
  (:mod:`serving.priority`), so a new version on a busy machine is ready sooner while the served
  one keeps answering, slower; afterwards they are put back where the system permits.

  Unlike TF Serving, the last ``standby_versions`` unloaded versions whose directories are still
  there stay in memory, unserved and not reported: a rollback to one of them (its directory
  unchanged) goes live at the next poll instead of loading again, which on a busy 2-core
  machine took longer than the 20 s the load benchmark gave it. Each costs one model's memory.

  A loader returns a model with ``respond`` (a PredictRequest in, its response out),
  ``signature_defs``, ``version``, ``alive()`` and ``close()``: :class:`LoadedModel` in this process,
  or :class:`serving.version_worker.WorkerModel` in a process of its own. A model that leaves the
  served and standby sets is closed once the requests using it (:meth:`use`) have finished; a
  served model whose process died is dropped at the next poll and loaded again.
  """

  def __init__(self, model_name: str, base_path: str, policy: VersionPolicy | None = None,
               retry_seconds: float = 2.0, max_retry_seconds: float = 300.0,
               clock: Callable[[], float] = time.monotonic,
               loader: Callable[[str, int], LoadedModel] = LoadedModel,
               standby_versions: int = 1, load_nice: int = 0):
    if standby_versions < 0:
      raise ValueError(f"standby_versions must be >= 0, got {standby_versions}")
    self.load_nice = priority.check_nice(load_nice, "load_nice")
    self.model_name, self.base_path = model_name, base_path
    self.policy = policy or VersionPolicy()
    self._retry, self._max_retry, self._clock, self._loader = (
        retry_seconds, max_retry_seconds, clock, loader)
    self._lock = threading.Lock()
    self._poll_lock = threading.Lock()  # one poll at a time (watcher thread and callers)
    self._served: Dict[int, LoadedModel] = {}
    self.failures: Dict[int, LoadFailure] = {}
    self._standby_limit = standby_versions
    # version -> (model, its directory's fingerprint when it was loaded); oldest unloaded first.
    self._standby: Dict[int, Tuple[LoadedModel, Tuple[int, int]]] = {}
    self._fingerprints: Dict[int, Tuple[int, int]] = {}
    # Requests in flight per model (by id), and dropped models that close when theirs finish.
    self._in_use: Dict[int, int] = {}
    self._closing: Dict[int, LoadedModel] = {}

  def standby_versions(self) -> List[int]:
    """Unloaded versions kept in memory for a rollback (not served)."""
    return sorted(self._standby)

  def served_versions(self) -> List[int]:
    with self._lock:
      return sorted(self._served)

  def _load(self, version: int, path: str) -> LoadedModel | None:
    failure = self.failures.get(version)
    if failure and self._clock() < failure.next_try:
      return None
    try:
      # Nothing is served during the first load: no request threads to get ahead of.
      with priority.ahead_of_other_threads(self.load_nice if self._served else 0):
        model = self._loader(path, version)
    except Exception as e:  # noqa: BLE001 - any broken SavedModel is reported, never fatal
      attempts = failure.attempts + 1 if failure else 1
      wait = min(self._retry * 2 ** (attempts - 1), self._max_retry)
      self.failures[version] = LoadFailure(f"{type(e).__name__}: {first_line(e)}", attempts,
                                           self._clock() + wait)
      if attempts == 1:
        logging.warning("%s version %d failed to load (%s); retrying with back-off from %.0f s",
                        self.model_name, version, self.failures[version].reason, wait)
      return None
    self.failures.pop(version, None)
    return model

  def _from_standby(self, version: int, path: str) -> LoadedModel | None:
    """The standby copy of ``version`` if its directory has not changed since it was loaded."""
    model, fingerprint = self._standby.pop(version, (None, None))
    if model is not None and _fingerprint(path) == fingerprint:
      logging.info("%s version %d back from standby (no reload)", self.model_name, version)
      self._fingerprints[version] = fingerprint
      return model
    if model is not None:
      self._close(model)  # its directory changed: the copy in memory is stale
    return None

  def _close(self, model: LoadedModel) -> None:
    """Closes a model no longer served or on standby, now or when its last request finishes."""
    with self._lock:
      if self._in_use.get(id(model)):
        self._closing[id(model)] = model
        return
    model.close()

  def _retire(self, unloaded: Mapping[int, LoadedModel], on_disk: Mapping[int, str]) -> None:
    """Puts the unloaded versions still on disk on standby, keeping the most recently unloaded."""
    for version in sorted(unloaded):
      fingerprint = self._fingerprints.pop(version, None)
      if version in on_disk and fingerprint is not None and self._standby_limit:
        self._standby[version] = (unloaded[version], fingerprint)
      else:
        self._close(unloaded[version])
    for version in [v for v in self._standby if v not in on_disk]:
      self._close(self._standby.pop(version)[0])
    while len(self._standby) > self._standby_limit:
      self._close(self._standby.pop(next(iter(self._standby)))[0])

  def _drop_dead(self) -> None:
    """Drops served versions whose process has died, so this poll loads them again."""
    with self._lock:
      dead = {v: m for v, m in self._served.items() if not m.alive()}
      for version in dead:
        del self._served[version]
    for version, model in dead.items():
      logging.warning("%s version %d stopped answering (its process exited); loading it again",
                      self.model_name, version)
      self._fingerprints.pop(version, None)
      self._close(model)

  def poll(self) -> int | None:
    """Brings the served versions in line with the policy; returns the default version."""
    with self._poll_lock:
      self._drop_dead()
      on_disk = _versions(self.base_path)
      wanted = self.policy.select(on_disk)
      served = set(self.served_versions())
      loaded = {}
      for version in sorted(wanted - served):
        model = self._from_standby(version, on_disk[version])
        if model is None:
          fingerprint = _fingerprint(on_disk[version])
          model = self._load(version, on_disk[version])
          if model is not None and fingerprint is not None:
            self._fingerprints[version] = fingerprint
        if model is not None:
          loaded[version] = model
      for version in list(self.failures):
        if version not in on_disk:
          del self.failures[version]  # its directory is gone: nothing left to retry
      unloaded = {}
      with self._lock:
        self._served.update(loaded)
        # Availability first: unload only once a selected version serves in their place.
        if wanted & set(self._served):
          for version in set(self._served) - wanted:
            unloaded[version] = self._served.pop(version)
        now = sorted(self._served)
      self._retire(unloaded, on_disk)
      if now != sorted(served):
        logging.info("%s now serves versions %s (on disk %s)", self.model_name, now,
                     sorted(on_disk))
      return now[-1] if now else None

  def _check_name(self, spec: model_pb2.ModelSpec) -> None:
    if spec.name != self.model_name:
      raise RequestError(grpc.StatusCode.NOT_FOUND,
                         f"model {spec.name!r} not found; this server serves {self.model_name!r}")

  def _nothing_loaded(self) -> RequestError:
    return RequestError(grpc.StatusCode.UNAVAILABLE,
                        f"no version of {self.model_name!r} loaded yet from {self.base_path}")

  def get(self, spec: model_pb2.ModelSpec) -> LoadedModel:
    """The version a request's model spec asks for: by number, by label, or the newest."""
    self._check_name(spec)
    with self._lock:
      return self._resolve(spec, dict(self._served))

  @contextlib.contextmanager
  def use(self, spec: model_pb2.ModelSpec) -> Iterator[LoadedModel]:
    """:meth:`get`, holding the model open until the block ends (an unload waits for it)."""
    self._check_name(spec)
    with self._lock:
      model = self._resolve(spec, self._served)
      self._in_use[id(model)] = self._in_use.get(id(model), 0) + 1
    try:
      yield model
    finally:
      with self._lock:
        left = self._in_use.pop(id(model)) - 1
        if left:
          self._in_use[id(model)] = left
        closing = None if left else self._closing.pop(id(model), None)
      if closing is not None:
        closing.close()

  def close_all(self) -> None:
    """Closes every served and standby model (the server has stopped taking requests)."""
    with self._lock:
      models = list(self._served.values()) + [m for m, _ in self._standby.values()]
      self._served.clear()
      self._standby.clear()
    for model in models:
      self._close(model)

  def _resolve(self, spec: model_pb2.ModelSpec,
               served: Mapping[int, LoadedModel]) -> LoadedModel:
    if not served:
      raise self._nothing_loaded()
    if spec.HasField("version"):
      version = spec.version.value
    elif spec.version_label:
      if spec.version_label not in self.policy.labels:
        raise RequestError(grpc.StatusCode.NOT_FOUND,
                           f"version_label {spec.version_label!r} of {spec.name!r} is not "
                           f"defined; labels: {dict(self.policy.labels)}")
      version = self.policy.labels[spec.version_label]
    else:
      return served[max(served)]
    if version not in served:
      raise RequestError(grpc.StatusCode.NOT_FOUND,
                         f"version {version} of {spec.name!r} is not served; serving versions "
                         f"{sorted(served)}")
    return served[version]

  def status(self, spec: model_pb2.ModelSpec) -> List[Tuple[int, bool, str]]:
    """(version, available, error) for the asked version or every known one, newest first."""
    self._check_name(spec)
    rows = {v: (v, True, "") for v in self.served_versions()}
    rows.update({v: (v, False, f.reason) for v, f in self.failures.items() if v not in rows})
    if spec.HasField("version"):
      if spec.version.value not in rows:
        raise RequestError(grpc.StatusCode.NOT_FOUND,
                           f"version {spec.version.value} of {spec.name!r} is not known; "
                           f"versions {sorted(rows)}")
      return [rows[spec.version.value]]
    if not rows:
      raise self._nothing_loaded()
    return [rows[v] for v in sorted(rows, reverse=True)]


def _abort_on_error(method):
  def wrapper(self, request, context):
    try:
      return method(self, request, context)
    except RequestError as e:
      context.abort(e.code, str(e))
  wrapper.__name__ = method.__name__
  return wrapper


class PredictionServicer(prediction_service_pb2_grpc.PredictionServiceServicer):

  def __init__(self, manager: ModelManager, max_batch_size: int = MAX_BATCH_SIZE):
    self._manager = manager
    self._max_batch_size = max_batch_size

  @_abort_on_error
  def Predict(self, request, context):
    with self._manager.use(request.model_spec) as model:
      # As TF Serving: the client's deadline bounds the run (None when it set none).
      return model.respond(request, self._manager.model_name, self._max_batch_size,
                           request_timeout(context))

  @_abort_on_error
  def GetModelMetadata(self, request, context):
    with self._manager.use(request.model_spec) as model:
      signature_defs = model.signature_defs
      version = model.version
    fields = list(request.metadata_field)
    if fields != [SIGNATURE_DEF_FIELD]:
      raise RequestError(grpc.StatusCode.INVALID_ARGUMENT,
                         f"metadata_field must be ['{SIGNATURE_DEF_FIELD}'], got {fields}")
    resp = get_model_metadata_pb2.GetModelMetadataResponse()
    resp.model_spec.name = self._manager.model_name
    resp.model_spec.version.value = version
    sig_map = get_model_metadata_pb2.SignatureDefMap()
    for name, sig in signature_defs.items():
      sig_map.signature_def[name].CopyFrom(sig)
    resp.metadata[SIGNATURE_DEF_FIELD].Pack(sig_map)
    return resp


class ModelStatusServicer(model_service_pb2_grpc.ModelServiceServicer):

  def __init__(self, manager: ModelManager):
    self._manager = manager

  @_abort_on_error
  def GetModelStatus(self, request, context):
    """Every known version, newest first: AVAILABLE, or END with the reason it failed to load."""
    resp = get_model_status_pb2.GetModelStatusResponse()
    for version, available, error in self._manager.status(request.model_spec):
      status = resp.model_version_status.add()
      status.version = version
      if available:
        status.state = get_model_status_pb2.ModelVersionStatus.AVAILABLE
      else:
        status.state = get_model_status_pb2.ModelVersionStatus.END
        status.status.error_code = grpc.StatusCode.UNKNOWN.value[0]
        status.status.error_message = error
    return resp


class ModelServer:
  """gRPC server + version watcher. ``start()`` binds; ``stop()`` shuts both down.

  Binding refuses a port another process (or server) already listens on: without it, gRPC's
  SO_REUSEPORT lets a second server start silently and take half the connections.

  With ``version_processes``, each version is loaded and served by a worker process of its own
  (:mod:`serving.version_worker`) and this process routes the requests to it, so a load does not
  hold up the requests on the served version; ``load_nice`` then lowers the served versions'
  processes while a new one loads. Without it, versions load in this process (library default).
  """

  def __init__(self, model_name: str, model_base_path: str, port: int = 8500,
               host: str = "127.0.0.1", poll_seconds: float = POLL_SECONDS,
               max_workers: int = 4, policy: VersionPolicy | None = None,
               manager: ModelManager | None = None, max_batch_size: int = MAX_BATCH_SIZE,
               max_request_bytes: int = MAX_REQUEST_BYTES, standby_versions: int = 1,
               load_nice: int = 0, version_processes: bool = False):
    self._loader = None
    if manager is None and version_processes:
      self._loader = version_worker.WorkerLoader(model_name, max_batch_size, load_nice)
      manager = ModelManager(model_name, model_base_path, policy, loader=self._loader,
                             standby_versions=standby_versions)
    self.manager = manager or ModelManager(model_name, model_base_path, policy,
                                           standby_versions=standby_versions,
                                           load_nice=load_nice)
    self._server = grpc.server(futures.ThreadPoolExecutor(max_workers=max_workers),
                               options=[("grpc.max_receive_message_length", max_request_bytes),
                                        ("grpc.so_reuseport", 0)])
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(
        PredictionServicer(self.manager, max_batch_size), self._server)
    model_service_pb2_grpc.add_ModelServiceServicer_to_server(
        ModelStatusServicer(self.manager), self._server)
    try:
      self.port = self._server.add_insecure_port(f"{host}:{port}")
    except RuntimeError as e:  # newer grpcio raises where older ones return 0
      self.port, reason = 0, f" ({e})"
    else:
      reason = ""
    if self.port == 0:
      if self._loader is not None:
        self._loader.close()  # its workers have started: none is left behind
      raise OSError(f"cannot bind {host}:{port}: the port is already in use{reason}")
    self._poll_seconds = poll_seconds
    self._stop = threading.Event()
    self._watcher = threading.Thread(target=self._watch, daemon=True)

  def _watch(self) -> None:
    while not self._stop.wait(self._poll_seconds):
      self.manager.poll()  # load failures are handled (reported, retried) inside

  def start(self) -> ModelServer:
    self.manager.poll()
    if self._loader is not None:
      self._loader.wait_standby()
    self._server.start()
    self._watcher.start()
    return self

  def stop(self, grace: float | None = None) -> None:
    """Stops taking requests; in-flight ones get up to ``grace`` seconds to finish."""
    self._stop.set()
    self._server.stop(grace=grace).wait()
    if self._watcher.is_alive():
      self._watcher.join()  # a poll in progress ends first, so nothing loads after the close
    self.manager.close_all()
    if self._loader is not None:
      self._loader.close()

  def wait(self) -> None:
    self._server.wait_for_termination()


def address(server: ModelServer) -> Tuple[str, int]:
  return "127.0.0.1", server.port


def main(argv=None) -> None:
  import argparse  # pylint: disable=import-outside-toplevel

  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--model_name", default=PIPELINE_NAME, help="Name clients ask for.")
  parser.add_argument("--model_base_path", required=True,
                      help="Directory holding <version>/ SavedModels.")
  parser.add_argument("--port", type=int, default=8500, help="gRPC port (0 picks a free one).")
  parser.add_argument("--host", default="127.0.0.1", help="Bind address; loopback by default.")
  parser.add_argument("--poll_seconds", type=float, default=POLL_SECONDS,
                      help="How often to look for new versions.")
  parser.add_argument("--load_nice", type=int, default=LOAD_NICE,
                      help="While a version loads, the served version's threads run this much "
                           "lower "
                           f"(Linux nice, 0-{priority.MAX_NICE}; 0: no change).")
  parser.add_argument("--version_policy", default="latest:1",
                      help="Versions to serve: latest:N, all, or specific:V1,V2.")
  parser.add_argument("--version_labels", default="",
                      help="Labels for versions, e.g. stable=3,canary=5.")
  parser.add_argument("--standby_versions", type=int, default=1,
                      help="Unloaded versions kept in memory so a rollback needs no reload "
                           "(0: none, as TF Serving).")
  parser.add_argument("--version_processes", action=argparse.BooleanOptionalAction,
                      default=True,
                      help="Load and serve each version in a worker process of its own, so a "
                           "load does not stall the requests on the served version.")
  parser.add_argument("--grace_seconds", type=float, default=10.0,
                      help="On SIGTERM/SIGINT, how long in-flight requests may take to finish.")
  args = parser.parse_args(argv)
  logging.set_verbosity(logging.INFO)
  policy = VersionPolicy.parse(args.version_policy, args.version_labels)
  server = ModelServer(args.model_name, args.model_base_path, args.port, args.host,
                       args.poll_seconds, policy=policy,
                       standby_versions=args.standby_versions,
                       load_nice=args.load_nice,
                       version_processes=args.version_processes).start()
  print(f"serving {args.model_name} versions {server.manager.served_versions()} on "
        f"{args.host}:{server.port}", flush=True)
  stop = threading.Event()
  for sig in (signal.SIGTERM, signal.SIGINT):
    signal.signal(sig, lambda signum, frame: stop.set())
  stop.wait()
  server.stop(grace=args.grace_seconds)
  print(f"stopped {args.model_name} on {args.host}:{server.port}: in-flight requests drained "
        f"(grace {args.grace_seconds:.0f} s)", flush=True)


if __name__ == "__main__":
  main()
