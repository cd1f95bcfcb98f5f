"""Reading, decoding and validating raw live-stream log lines, each inside a guard.

Every input line becomes a :class:`RawLine` (its file, 1-based line number and raw bytes) and then
either a clean record or a :class:`BadRecord` naming the field and value at fault. Nothing a line
holds can stop the run: invalid UTF-8, broken JSON, NaN/Infinity, integers beyond int64, times
outside the log's declared window and any unexpected exception in a validator all end as a
quarantined record with its reason and raw bytes. Nothing is dropped silently.
"""

from __future__ import annotations

import base64
import dataclasses
import gzip
import json
import math
import zlib
from typing import Any, Callable, Dict, Iterator, Tuple, Union

from data_gen import log_format as lf

# Log kinds and event names: the log format owns them (re-exported for the ExampleGen's modules).
ITEMS, HOSTS, USERS = lf.ITEMS, lf.HOSTS, lf.USERS
PURCHASES, DISPLAYS, EVENTS = lf.PURCHASES, lf.DISPLAYS, lf.EVENTS
LOG_KINDS = lf.LOG_KINDS
EVENT, IMPRESSION, LEAVE = lf.EVENT, lf.IMPRESSION, lf.LEAVE
LIKE, COMMENT, SHARE, FOLLOW = lf.LIKE, lf.COMMENT, lf.SHARE, lf.FOLLOW
ITEM_CLICK, ADD_TO_CART, PURCHASE = lf.ITEM_CLICK, lf.ADD_TO_CART, lf.PURCHASE
ACTION_EVENTS, EVENT_TYPES = lf.ACTION_EVENTS, lf.EVENT_TYPES
ACTIVITY_LEVELS = lf.ACTIVITY_LEVELS

INT64_MAX = (1 << 63) - 1
UTF8_BOM = b"\xef\xbb\xbf"
GZIP_MAGIC = b"\x1f\x8b"
# Timestamps and stays are logged to the millisecond; a leave's stay may differ from
# ``leave.ts - impression.ts`` by rounding only.
STAY_TOLERANCE_SECONDS = 0.01
# Line number of a quarantined record that stands for a whole file (e.g. a corrupt gzip stream).
WHOLE_FILE = 0


@dataclasses.dataclass(frozen=True)
class RawLine:
  """One input line: where it came from and its bytes (no line terminator)."""
  source: str  # log kind
  path: str
  line_no: int  # 1-based
  raw: bytes

  @property
  def where(self) -> str:
    return f"{self.path}:{self.line_no}"


@dataclasses.dataclass(frozen=True)
class BadRecord:
  """A quarantined input: where it came from, its raw bytes and why it was rejected."""
  source: str
  path: str
  line_no: int
  reason: str
  raw: bytes

  @classmethod
  def of(cls, line: RawLine, reason: str) -> BadRecord:
    return cls(line.source, line.path, line.line_no, reason, line.raw)

  def to_json(self) -> str:
    """One JSON line: the raw bytes base64-encoded (exact) and as lossy text (readable)."""
    return json.dumps({"source": self.source, "path": self.path, "line_no": self.line_no,
                       "reason": self.reason, "raw_b64": base64.b64encode(self.raw).decode(),
                       "raw_text": self.raw.decode("utf-8", errors="replace")})

  @classmethod
  def from_json(cls, text: str) -> BadRecord:
    d = json.loads(text)
    return cls(d["source"], d["path"], d["line_no"], d["reason"], base64.b64decode(d["raw_b64"]))


@dataclasses.dataclass(frozen=True)
class Parsed:
  """A clean record and the line it came from."""
  line: RawLine
  rec: Dict[str, Any]


class RecordError(ValueError):
  """Raised by validators; the message names the field and the bad value."""


# --- Reading files -------------------------------------------------------------------------------
def read_log_file(source: str, path: str, open_fn: Callable = open) -> Iterator[
    Union[RawLine, BadRecord]]:
  """Yields every line of one log file as a RawLine, never raising on content.

  Gzip content (by its magic bytes, whatever the file is called) is read as gzip; a gzip stream
  that breaks off yields one BadRecord for the rest of the file. A UTF-8 byte-order mark at the
  start of the file and CR of CRLF line ends are removed.

  Args:
    source: the log kind the file holds.
    path: the file.
    open_fn: opens ``path`` in binary mode (``tf.io.gfile.GFile`` for remote file systems).
  """
  with open_fn(path, "rb") as raw_file:
    head = raw_file.read(2)
  is_gzip = head == GZIP_MAGIC
  line_no = 0
  try:
    with open_fn(path, "rb") as raw_file:
      stream = gzip.GzipFile(fileobj=raw_file) if is_gzip else raw_file
      for line_no, raw in enumerate(stream, start=1):
        if line_no == 1 and raw.startswith(UTF8_BOM):
          raw = raw[len(UTF8_BOM):]
        yield RawLine(source, path, line_no, raw.rstrip(b"\n").rstrip(b"\r"))
  except (OSError, EOFError, zlib.error) as e:
    # Only a gzip stream can fail mid-way on content; the lines read so far stand.
    yield BadRecord(source, path, WHOLE_FILE,
                    f"gzip stream unreadable after line {line_no}: {type(e).__name__}: {e}", b"")


# --- Field validators ----------------------------------------------------------------------------
def _int(rec: Dict[str, Any], field: str, minimum: int, maximum: int = INT64_MAX) -> int:
  v = rec.get(field)
  if isinstance(v, bool) or not isinstance(v, int):
    raise RecordError(f"field {field!r} must be an integer, got {v!r}")
  if not minimum <= v <= maximum:
    raise RecordError(f"field {field!r} must be in [{minimum}, {maximum}], got {v!r}")
  return v


def _int_id(rec: Dict[str, Any], field: str) -> int:
  return _int(rec, field, 1)


def _number(rec: Dict[str, Any], field: str, minimum: float = 0.0) -> float:
  v = rec.get(field)
  if isinstance(v, bool) or not isinstance(v, (int, float)):
    raise RecordError(f"field {field!r} must be a number, got {v!r}")
  if isinstance(v, int) and abs(v) > INT64_MAX:
    raise RecordError(f"field {field!r} is out of range, got {v!r}")
  if not math.isfinite(v):
    raise RecordError(f"field {field!r} must be a finite number, got {v!r}")
  if v < minimum:
    raise RecordError(f"field {field!r} must be >= {minimum}, got {v!r}")
  return float(v)


def _timestamp(rec: Dict[str, Any], field: str, window: lf.Window) -> float:
  t = _number(rec, field, minimum=-math.inf)
  if not window[0] <= t < window[1]:
    raise RecordError(f"field {field!r} = {t!r} is outside the log's declared window "
                      f"[{window[0]!r}, {window[1]!r})")
  return t


def _id_list(rec: Dict[str, Any], field: str) -> list:
  v = rec.get(field)
  if not isinstance(v, list) or any(isinstance(x, bool) or not isinstance(x, int)
                                    or not 1 <= x <= INT64_MAX for x in v):
    raise RecordError(f"field {field!r} must be a list of integer ids, got {v!r}")
  return v


def _item(rec, windows):
  del windows
  return {"item_id": _int_id(rec, "item_id"), "category_id": _int_id(rec, "category_id"),
          "brand_id": _int_id(rec, "brand_id"), "shop_id": _int_id(rec, "shop_id"),
          "price": _number(rec, "price")}


def _host(rec, windows):
  del windows
  cats = _id_list(rec, "category_ids")
  if not cats:
    raise RecordError("field 'category_ids' must not be empty")
  return {"host_id": _int_id(rec, "host_id"), "shop_id": _int_id(rec, "shop_id"),
          "category_ids": cats}


def _user(rec, windows):
  del windows
  level = rec.get("activity_level")
  if not isinstance(level, str):
    raise RecordError(f"field 'activity_level' must be a string, got {level!r}")
  # An unexpected level is passed through: it is the curated schema's job to flag a new domain
  # value (ExampleValidator), not the parser's.
  return {"user_id": _int_id(rec, "user_id"), "activity_level": level}


def _purchase(rec, windows):
  out = _item(rec, windows)
  out.update(user_id=_int_id(rec, "user_id"), weight=_number(rec, "weight"),
             stay_seconds=_number(rec, "stay_seconds"),
             ts=_timestamp(rec, "ts", windows[lf.WINDOW_PURCHASES]))
  return out


def _optional_bool(rec: Dict[str, Any], field: str) -> bool:
  v = rec.get(field, False)
  if not isinstance(v, bool):
    raise RecordError(f"field {field!r} must be true or false, got {v!r}")
  return v


def _display(rec, windows):
  return {"host_id": _int_id(rec, "host_id"),
          "ts": _timestamp(rec, "ts", windows[lf.WINDOW_EVENTS]),
          "item_ids": _id_list(rec, "item_ids"),
          lf.DISPLAY_FLASH_SALE: _optional_bool(rec, lf.DISPLAY_FLASH_SALE)}


def _event(rec, windows):
  kind = rec.get(EVENT)
  if kind not in EVENT_TYPES:
    raise RecordError(f"field 'event' must be one of {EVENT_TYPES}, got {kind!r}")
  out = {EVENT: kind, "impression_id": _int_id(rec, "impression_id"),
         "user_id": _int_id(rec, "user_id"), "host_id": _int_id(rec, "host_id"),
         "ts": _timestamp(rec, "ts", windows[lf.WINDOW_EVENTS])}
  if kind == IMPRESSION:
    out.update(session_id=_int_id(rec, "session_id"), slot=_int(rec, "slot", 0),
               trigger_item_id=_int_id(rec, "trigger_item_id"),
               propensity=_number(rec, "propensity"))
    if not 0.0 < out["propensity"] <= 1.0:
      raise RecordError(f"field 'propensity' must be in (0, 1], got {out['propensity']!r}")
  elif kind == LEAVE:
    swipe = rec.get("swipe_down")
    if not isinstance(swipe, bool):
      raise RecordError(f"field 'swipe_down' must be a boolean, got {swipe!r}")
    out.update(stay_seconds=_number(rec, "stay_seconds"), swipe_down=swipe)
  elif kind == PURCHASE:
    out.update(item_id=_int_id(rec, "item_id"), gmv=_number(rec, "gmv"))
  return out


VALIDATORS: Dict[str, Callable[[Dict[str, Any], Dict[str, lf.Window]], Dict[str, Any]]] = {
    ITEMS: _item, HOSTS: _host, USERS: _user, PURCHASES: _purchase, DISPLAYS: _display,
    EVENTS: _event,
}

# What makes two records "the same" (exactly-once): reference records by their id, displays by
# room and refresh time, events by impression and kind (a like is logged once per impression;
# a purchase once per item), lifelong purchases by user, item and time.
IDENTITY: Dict[str, Tuple[str, ...]] = {
    ITEMS: ("item_id",), HOSTS: ("host_id",), USERS: ("user_id",),
    DISPLAYS: ("host_id", "ts"), PURCHASES: ("user_id", "item_id", "ts"),
    EVENTS: ("impression_id", EVENT, "item_id"),
}
# Reference tables: of conflicting definitions the earliest line of the file is kept (logs are
# appended; a later, different definition is a change we cannot verify). Facts (events,
# purchases, displays): the version with the smallest canonical content is kept, so the choice
# does not depend on line order.
REFERENCE_KINDS = (ITEMS, HOSTS, USERS)


def identity(source: str, rec: Dict[str, Any]) -> Tuple:
  """The key under which ``rec`` must be unique."""
  return tuple(rec.get(k) for k in IDENTITY[source])


def canonical(rec: Dict[str, Any]) -> str:
  """A stable text of a parsed record (sorted keys): equal content, equal text."""
  return json.dumps(rec, sort_keys=True, separators=(",", ":"))


def _nonfinite_constant(name: str):
  # NaN / Infinity parse to floats so the field validators can name the field they are in.
  return float(name)


def parse_line(line: RawLine, windows: Dict[str, lf.Window]) -> Union[Parsed, BadRecord]:
  """Decodes and validates one raw line; returns Parsed or a BadRecord, never raises on content.

  Args:
    line: the raw line.
    windows: the declared time windows (``log_format.parse_time_window``).
  """
  if line.source not in VALIDATORS:
    raise ValueError(f"unknown log source {line.source!r}; expected one of {LOG_KINDS}")
  try:
    text = line.raw.decode("utf-8")
  except UnicodeDecodeError as e:
    return BadRecord.of(line, f"not valid UTF-8 (byte {line.raw[e.start:e.start + 1]!r} at "
                              f"position {e.start})")
  try:
    rec = json.loads(text, parse_constant=_nonfinite_constant)
  except json.JSONDecodeError as e:
    return BadRecord.of(line, f"not valid JSON ({e.msg} at char {e.pos})")
  except (ValueError, RecursionError) as e:  # e.g. an integer literal too long to convert
    return BadRecord.of(line, f"not valid JSON ({type(e).__name__}: {e})")
  if not isinstance(rec, dict):
    return BadRecord.of(line, f"expected a JSON object, got {type(rec).__name__}")
  try:
    return Parsed(line, VALIDATORS[line.source](rec, windows))
  except RecordError as e:
    return BadRecord.of(line, str(e))
  except Exception as e:  # pylint: disable=broad-except
    # The guard: a validator bug or an input nobody foresaw quarantines this line with the
    # exception as its reason, and the run goes on; the count shows it.
    return BadRecord.of(line, f"unexpected {type(e).__name__} while validating: {e}")
