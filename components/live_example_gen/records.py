"""Parsing and validation of raw live-stream log lines.

Each log line is one JSON object. ``parse_line`` returns either a clean record or a
:class:`BadRecord` naming the field and value at fault; nothing is dropped silently.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any, Callable, Dict, Tuple, Union

# Log kinds (file stems) and their keys.
ITEMS = "items"
HOSTS = "hosts"
USERS = "users"
PURCHASES = "purchases"
DISPLAYS = "displays"
EVENTS = "events"
LOG_KINDS = (ITEMS, HOSTS, USERS, PURCHASES, DISPLAYS, EVENTS)

EVENT = "event"
IMPRESSION = "impression"
LEAVE = "leave"
LIKE = "like"
COMMENT = "comment"
SHARE = "share"
FOLLOW = "follow"
ITEM_CLICK = "item_click"
ADD_TO_CART = "add_to_cart"
PURCHASE = "purchase"
ACTION_EVENTS = (LIKE, COMMENT, SHARE, FOLLOW, ITEM_CLICK, ADD_TO_CART, PURCHASE)
EVENT_TYPES = (IMPRESSION, LEAVE) + ACTION_EVENTS

ACTIVITY_LEVELS = ("new", "low", "high")


@dataclasses.dataclass(frozen=True)
class BadRecord:
  """A quarantined input: where it came from, the raw line and why it was rejected."""
  source: str
  line: str
  reason: str

  def to_json(self) -> str:
    return json.dumps({"source": self.source, "reason": self.reason, "line": self.line})


class RecordError(ValueError):
  """Raised by validators; the message names the field and the bad value."""


def _int_id(rec: Dict[str, Any], field: str) -> int:
  v = rec.get(field)
  if isinstance(v, bool) or not isinstance(v, int):
    raise RecordError(f"field {field!r} must be an integer id, got {v!r}")
  if v < 1:
    raise RecordError(f"field {field!r} must be >= 1, got {v!r}")
  return v


def _number(rec: Dict[str, Any], field: str, minimum: float = 0.0) -> float:
  v = rec.get(field)
  if isinstance(v, bool) or not isinstance(v, (int, float)):
    raise RecordError(f"field {field!r} must be a number, got {v!r}")
  if v < minimum:
    raise RecordError(f"field {field!r} must be >= {minimum}, got {v!r}")
  return float(v)


def _id_list(rec: Dict[str, Any], field: str) -> list:
  v = rec.get(field)
  if not isinstance(v, list) or any(isinstance(x, bool) or not isinstance(x, int) or x < 1
                                    for x in v):
    raise RecordError(f"field {field!r} must be a list of integer ids, got {v!r}")
  return v


def _item(rec):
  return {"item_id": _int_id(rec, "item_id"), "category_id": _int_id(rec, "category_id"),
          "brand_id": _int_id(rec, "brand_id"), "shop_id": _int_id(rec, "shop_id"),
          "price": _number(rec, "price")}


def _host(rec):
  cats = _id_list(rec, "category_ids")
  if not cats:
    raise RecordError("field 'category_ids' must not be empty")
  return {"host_id": _int_id(rec, "host_id"), "shop_id": _int_id(rec, "shop_id"),
          "category_ids": cats}


def _user(rec):
  level = rec.get("activity_level")
  if not isinstance(level, str):
    raise RecordError(f"field 'activity_level' must be a string, got {level!r}")
  # An unexpected level is passed through: it is the curated schema's job to flag a new domain
  # value (ExampleValidator), not the parser's.
  return {"user_id": _int_id(rec, "user_id"), "activity_level": level}


def _purchase(rec):
  out = _item(rec)
  out.update(user_id=_int_id(rec, "user_id"), weight=_number(rec, "weight"),
             stay_seconds=_number(rec, "stay_seconds"), ts=_number(rec, "ts"))
  return out


def _display(rec):
  return {"host_id": _int_id(rec, "host_id"), "ts": _number(rec, "ts"),
          "item_ids": _id_list(rec, "item_ids")}


def _event(rec):
  kind = rec.get(EVENT)
  if kind not in EVENT_TYPES:
    raise RecordError(f"field 'event' must be one of {EVENT_TYPES}, got {kind!r}")
  out = {EVENT: kind, "impression_id": _int_id(rec, "impression_id"),
         "user_id": _int_id(rec, "user_id"), "host_id": _int_id(rec, "host_id"),
         "ts": _number(rec, "ts")}
  if kind == IMPRESSION:
    out.update(session_id=_int_id(rec, "session_id"), slot=int(_number(rec, "slot")),
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


VALIDATORS: Dict[str, Callable[[Dict[str, Any]], Dict[str, Any]]] = {
    ITEMS: _item, HOSTS: _host, USERS: _user, PURCHASES: _purchase, DISPLAYS: _display,
    EVENTS: _event,
}


def parse_line(source: str, line: str) -> Union[Tuple[str, Dict[str, Any]], BadRecord]:
  """Parses one raw line of log ``source``; returns (source, record) or a BadRecord."""
  if source not in VALIDATORS:
    raise ValueError(f"unknown log source {source!r}; expected one of {LOG_KINDS}")
  try:
    rec = json.loads(line)
  except json.JSONDecodeError as e:
    return BadRecord(source, line, f"not valid JSON ({e.msg} at char {e.pos})")
  if not isinstance(rec, dict):
    return BadRecord(source, line, f"expected a JSON object, got {type(rec).__name__}")
  try:
    return source, VALIDATORS[source](rec)
  except RecordError as e:
    return BadRecord(source, line, str(e))
