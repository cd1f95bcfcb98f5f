"""The raw log format: one home for what the simulator writes and the ExampleGen reads.

File kinds, event kinds, activity levels, the behavioural thresholds that define the labels, and
the time window a log set declares in its ``summary.json``. The simulator (producer), the
ExampleGen (consumer) and ``models/features.py`` (labels) import these names instead of spelling
them again, so the oracle's ground truth and the training labels can never drift apart.
"""

from __future__ import annotations

import json
import os
from typing import Dict, Tuple

# --- Files (``<kind>.jsonl``, one JSON object per line). ------------------------------------------
ITEMS = "items"
HOSTS = "hosts"
USERS = "users"
PURCHASES = "purchases"  # lifelong main-site purchases
DISPLAYS = "displays"
EVENTS = "events"
LOG_KINDS = (ITEMS, HOSTS, USERS, PURCHASES, DISPLAYS, EVENTS)
LOG_SUFFIX = ".jsonl"
GROUND_TRUTH_FILE = "ground_truth.jsonl"
SUMMARY_FILE = "summary.json"

# --- Events. ----------------------------------------------------------------------------------------
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
INTERACTIONS = (LIKE, COMMENT, SHARE, FOLLOW)
ACTION_EVENTS = INTERACTIONS + (ITEM_CLICK, ADD_TO_CART, PURCHASE)
EVENT_TYPES = (IMPRESSION, LEAVE) + ACTION_EVENTS

ACTIVITY_LEVELS = ("new", "low", "high")

# --- Displays (``displays.jsonl``): a room's displayed top-N products from ``ts`` on. ------------
# True while the room runs a flash sale (optional; absent means false). A room announces its
# display again when a flash sale starts and ends, so the flag is exact at every moment.
DISPLAY_FLASH_SALE = "flash_sale"

# --- Behavioural thresholds (seconds). --------------------------------------------------------------
# A stay of at least this long is an effective view (a label, and in the simulator what raises the
# user's real-time appetite for the room's categories).
EFFECTIVE_VIEW_SECONDS = 10.0
# A stay shorter than this is a quick swipe-away (in the simulator what lowers the appetite).
QUICK_SWIPE_SECONDS = 3.0

# --- Declared time window (``summary.json`` -> "time_window"). ---------------------------------------
TIME_WINDOW = "time_window"
WINDOW_EVENTS = "events"  # impressions, feedback events and displays: [start, end)
WINDOW_PURCHASES = "purchases"  # lifelong purchases: [start, end)
SECONDS_PER_DAY = 86_400

Window = Tuple[float, float]


def read_time_window(log_dir: str) -> Dict[str, Window]:
  """The time windows a log set declares in its ``summary.json``.

  Raises:
    FileNotFoundError: the directory has no summary.json.
    ValueError: the summary declares no valid window (names the bad value).
  """
  path = os.path.join(log_dir, SUMMARY_FILE)
  with open(path, encoding="utf-8") as f:
    summary = json.load(f)
  return parse_time_window(summary.get(TIME_WINDOW), path)


def parse_time_window(raw, where: str = "time_window") -> Dict[str, Window]:
  """Validates ``{"events": [start, end], "purchases": [start, end]}``."""
  if not isinstance(raw, dict):
    raise ValueError(f"{where}: {TIME_WINDOW!r} must be an object with {WINDOW_EVENTS!r} and "
                     f"{WINDOW_PURCHASES!r} windows, got {raw!r}")
  out = {}
  for key in (WINDOW_EVENTS, WINDOW_PURCHASES):
    w = raw.get(key)
    if (not isinstance(w, (list, tuple)) or len(w) != 2
        or not all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in w)
        or not w[0] < w[1]):
      raise ValueError(f"{where}: {TIME_WINDOW}.{key} must be [start, end] with start < end, "
                       f"got {w!r}")
    out[key] = (float(w[0]), float(w[1]))
  return out
