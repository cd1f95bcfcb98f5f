"""Point-in-time feature computation, as pure functions over one user's or one host's events.

Every function takes the impression time ``ts`` and uses only events strictly before it: a past
impression's feedback counts once its ``leave`` event (the end of the stay) is before ``ts``; a host
statistic counts actions whose own timestamp is before ``ts``; a display counts from its refresh time.
"""

from __future__ import annotations

import bisect
import dataclasses
from typing import Dict, List, Sequence, Tuple

from components.live_example_gen import records as r
from data_gen import log_format as lf
from models import features as F


@dataclasses.dataclass
class ImpressionRecord:
  """One impression joined with its own feedback events (its labels)."""
  impression_id: int
  session_id: int
  user_id: int
  host_id: int
  ts: float
  slot: int
  trigger_item_id: int
  propensity: float
  leave_ts: float
  stay_seconds: float
  swipe_down: bool
  actions: List[Tuple[str, float]]  # (event kind, ts)
  gmv: float = 0.0

  def has(self, kind: str) -> bool:
    return any(k == kind for k, _ in self.actions)

  @property
  def interacted(self) -> bool:
    return any(k in (r.LIKE, r.COMMENT, r.SHARE, r.FOLLOW) for k, _ in self.actions)


def stay_bucket(stay_seconds: float) -> int:
  """1-based stay-time bucket (0 is padding)."""
  return bisect.bisect_right(F.STAY_BUCKET_BOUNDARIES, stay_seconds) + 1


def is_positive(imp: ImpressionRecord) -> bool:
  """High-pass filter: a long stay or any interaction."""
  return imp.stay_seconds >= F.POSITIVE_STAY_SECONDS or imp.interacted


def is_negative(imp: ImpressionRecord) -> bool:
  """Low-pass filter: a quick swipe-away without interaction."""
  return imp.stay_seconds < F.NEGATIVE_STAY_SECONDS and not imp.interacted


def labels(imp: ImpressionRecord) -> Dict[str, float]:
  cart, purchase = imp.has(r.ADD_TO_CART), imp.has(r.PURCHASE)
  return {
      F.STAY_SECONDS: imp.stay_seconds,
      F.EFFECTIVE_VIEW: int(imp.stay_seconds >= F.EFFECTIVE_VIEW_SECONDS),
      F.INTERACT: int(imp.interacted), F.LIKE: int(imp.has(r.LIKE)),
      F.COMMENT: int(imp.has(r.COMMENT)), F.SHARE: int(imp.has(r.SHARE)),
      F.FOLLOW: int(imp.has(r.FOLLOW)), F.ITEM_CLICK: int(imp.has(r.ITEM_CLICK)),
      F.ADD_TO_CART: int(cart), F.PURCHASE: int(purchase), F.BUY: int(cart or purchase),
      F.GMV: imp.gmv, F.SWIPE_DOWN: int(imp.swipe_down),
  }


def _pad(values: Sequence, length: int, pad=0) -> list:
  values = list(values[:length])
  return values + [pad] * (length - len(values))


class FeedbackIndex:
  """One user's positive and negative feedback, ordered by the end of its stay.

  Built once per user; ``sequences`` then reads the sequences as of any time with a bisection,
  instead of sorting and filtering the user's whole history for every impression.

  Args:
    history: the impressions whose feedback may enter the sequences, any order.
    host_info: host_id -> {"shop_id", "category_ids"}.
  """

  def __init__(self, history: Sequence[ImpressionRecord], host_info: Dict[int, dict]):
    done = sorted(history, key=lambda h: (h.leave_ts, h.impression_id))
    self._all_leave_ts = [h.leave_ts for h in done]  # every impression, for impressions_since
    self._leave_ts: Dict[str, List[float]] = {}
    self._records: Dict[str, List[ImpressionRecord]] = {}
    self._categories: Dict[int, list] = {}
    for prefix, keep in ((F.RT_POS, is_positive), (F.RT_NEG, is_negative)):
      kept = [h for h in done if keep(h)]
      self._leave_ts[prefix] = [h.leave_ts for h in kept]
      self._records[prefix] = kept
      for h in kept:
        if h.host_id not in self._categories:
          self._categories[h.host_id] = _all_categories([h.host_id], host_info)
    self._host_info = host_info

  def sequences(self, ts: float, seq_len: int) -> Dict[str, list]:
    """Positive and negative sequences of feedback completed strictly before ``ts``, most recent
    first (ties: the larger impression id first), each padded to ``seq_len``; each event with the
    number of the index's impressions that ended after it and before ``ts``, and whether it was
    liked and whether the user bought in it."""
    out: Dict[str, list] = {}
    ended = bisect.bisect_left(self._all_leave_ts, ts)  # the user's impressions ended before ts
    for prefix in (F.RT_POS, F.RT_NEG):
      end = bisect.bisect_left(self._leave_ts[prefix], ts)  # the stays that ended before ts
      seq = self._records[prefix][max(0, end - seq_len):end][::-1]
      cols = {
          "host_ids": [h.host_id for h in seq],
          "category_ids": [c for h in seq for c in self._categories[h.host_id]],
          "shop_ids": [self._host_info[h.host_id]["shop_id"] for h in seq],
          "stay_buckets": [stay_bucket(h.stay_seconds) for h in seq],
          "age_seconds": [int(ts - h.leave_ts) for h in seq],
          # Impressions that ended after this one (a tie in end time is not after) and before ts.
          F.RT_IMPRESSIONS_SINCE: [ended - bisect.bisect_right(self._all_leave_ts, h.leave_ts)
                                   for h in seq],
          F.RT_LIKED: [int(h.has(r.LIKE)) for h in seq],
          F.RT_PURCHASED: [int(h.has(r.PURCHASE)) for h in seq],
      }
      for field in F.RT_FIELDS:
        out[F.seq_key(prefix, field)] = _pad(cols[field], F.rt_field_length(field, seq_len))
      out[F.len_key(prefix)] = [len(seq)]
    return out


def _all_categories(host_ids: Sequence[int], host_info: Dict[int, dict]) -> list:
  """Every category of each room, HOST_MAX_CATEGORIES per room (0-padded), position-major."""
  return [c for h in host_ids for c in _pad(host_info[h]["category_ids"], F.HOST_MAX_CATEGORIES)]


def session_hosts(history: Sequence[ImpressionRecord], session_id: int, ts: float,
                  host_info: Dict[int, dict]) -> Dict[str, list]:
  """Rooms already shown in this session before ``ts`` and their categories, most recent first."""
  shown = sorted((h for h in history if h.session_id == session_id and h.ts < ts),
                 key=lambda h: (h.ts, h.impression_id), reverse=True)[:F.SESSION_HOSTS_LEN]
  ids = [h.host_id for h in shown]
  return {F.SESSION_HOSTS: _pad(ids, F.SESSION_HOSTS_LEN),
          F.SESSION_CATEGORY_IDS: _pad(_all_categories(ids, host_info),
                                       F.SESSION_HOSTS_LEN * F.HOST_MAX_CATEGORIES),
          F.SESSION_HOSTS_LEN_KEY: [len(shown)]}


class PurchaseIndex:
  """One user's lifelong purchases, most recent first, as columns: ``sequence`` reads the
  purchases before any time with a bisection and slices.

  Args:
    purchases_desc: the user's purchases sorted by ``ts`` descending (ties in a stable order).
  """

  def __init__(self, purchases_desc: Sequence[dict]):
    self._neg_ts = [-p["ts"] for p in purchases_desc]  # ascending, for the bisection
    self._columns = {
        "item_ids": [p["item_id"] for p in purchases_desc],
        "category_ids": [p["category_id"] for p in purchases_desc],
        "brand_ids": [p["brand_id"] for p in purchases_desc],
        "shop_ids": [p["shop_id"] for p in purchases_desc],
        "prices": [float(p["price"]) for p in purchases_desc],
        "stay_seconds": [float(p["stay_seconds"]) for p in purchases_desc],
        "weights": [float(p["weight"]) for p in purchases_desc],
    }

  def sequence(self, ts: float, seq_len: int) -> Dict[str, list]:
    """Purchases strictly before ``ts``, most recent first, at most ``seq_len``.

    Variable-length (``RawFeature.length_key``): each field holds exactly ``ll_len`` values, no
    padding; Transform pads to the length the model reads.
    """
    start = bisect.bisect_right(self._neg_ts, -ts)  # the first purchase with p.ts < ts
    end = start + seq_len
    out = {F.seq_key(F.LL, field): values[start:end] for field, values in self._columns.items()}
    out[F.seq_key(F.LL, "age_days")] = [int((ts + t) // 86400) for t in self._neg_ts[start:end]]
    out[F.len_key(F.LL)] = [min(end, len(self._neg_ts)) - start]
    return out


# Host action kinds counted per window, by statistic.
_STAT_EVENT = {"likes": r.LIKE, "follows": r.FOLLOW, "comments": r.COMMENT, "shares": r.SHARE,
               "item_clicks": r.ITEM_CLICK}


class HostTimeline:
  """All users' events on one host, indexed by time, for window statistics as of any ``ts``."""

  def __init__(self, impressions: Sequence[ImpressionRecord], displays: Sequence[dict]):
    views = sorted((imp.ts, imp.user_id) for imp in impressions)
    self._view_ts = [t for t, _ in views]
    self._view_user = [u for _, u in views]
    self._action_ts: Dict[str, List[float]] = {k: [] for k in _STAT_EVENT.values()}
    for imp in impressions:
      for kind, t in imp.actions:
        if kind in self._action_ts:
          self._action_ts[kind].append(t)
    for v in self._action_ts.values():
      v.sort()
    disp = sorted(displays, key=lambda d: d["ts"])
    self._display_ts = [d["ts"] for d in disp]
    self._display_items = [d["item_ids"] for d in disp]
    self._display_flash_sale = [bool(d.get(lf.DISPLAY_FLASH_SALE, False)) for d in disp]

  @staticmethod
  def _count(sorted_ts: List[float], lo: float, hi: float) -> int:
    """Events with lo <= t < hi."""
    return bisect.bisect_left(sorted_ts, hi) - bisect.bisect_left(sorted_ts, lo)

  def stats(self, ts: float) -> Dict[str, list]:
    out = {}
    for window, seconds in F.HOST_STAT_WINDOWS:
      lo = ts - seconds
      a, b = bisect.bisect_left(self._view_ts, lo), bisect.bisect_left(self._view_ts, ts)
      out[F.host_stat_key("uv", window)] = [float(len(set(self._view_user[a:b])))]
      for kind, event in _STAT_EVENT.items():
        out[F.host_stat_key(kind, window)] = [float(self._count(self._action_ts[event], lo, ts))]
    return out

  def displayed(self, ts: float) -> List[int]:
    """Item ids on display as of ``ts`` (the latest refresh strictly before it)."""
    i = bisect.bisect_left(self._display_ts, ts)
    return list(self._display_items[i - 1]) if i > 0 else []

  def flash_sale(self, ts: float) -> int:
    """1 if the room's latest display record strictly before ``ts`` says a flash sale is on."""
    i = bisect.bisect_left(self._display_ts, ts)
    return int(self._display_flash_sale[i - 1]) if i > 0 else 0


def user_side_features(imp, activity_level: str, history: Sequence[ImpressionRecord],
                       feedback: FeedbackIndex, purchases: PurchaseIndex,
                       items: Dict[int, dict], hosts: Dict[int, dict], realtime_len: int,
                       lifelong_len: int) -> Dict[str, list]:
  """Every user-side feature of one impression (no labels): context and sequences as of its time.

  The ExampleGen and the closed loop (``serving/policy.py``) both build a request's user side
  with this function, so a model is served exactly the features it was trained on.

  Args:
    imp: the impression being scored: an :class:`ImpressionRecord` or a :class:`SlotImpression`
      (its id, session, time, slot, trigger item and propensity are read).
    activity_level: the user's activity level.
    history: the user's impressions, any order (the session's earlier rooms come from it).
    feedback: the impressions whose feedback may enter the real-time sequences, indexed.
    purchases: the user's lifelong purchases, indexed.
    items: item_id -> item record.
    hosts: host_id -> {"shop_id", "category_ids"}.
    realtime_len: padded length of each real-time sequence.
    lifelong_len: the most lifelong purchases kept.
  """
  feats = {
      F.IMPRESSION_ID: [imp.impression_id], F.SESSION_ID: [imp.session_id],
      F.TIMESTAMP: [int(imp.ts)], F.PROPENSITY: [imp.propensity], F.USER_ID: [imp.user_id],
      F.ACTIVITY_LEVEL: [activity_level.encode()], F.HOUR_OF_DAY: [int(imp.ts % 86400) // 3600],
      F.SLOT_INDEX: [imp.slot], F.TRIGGER_ITEM_ID: [imp.trigger_item_id],
      F.TRIGGER_CATEGORY_ID: [items[imp.trigger_item_id]["category_id"]],
  }
  feats.update(session_hosts(history, imp.session_id, imp.ts, hosts))
  feats.update(feedback.sequences(imp.ts, realtime_len))
  feats.update(purchases.sequence(imp.ts, lifelong_len))
  return feats


@dataclasses.dataclass(frozen=True)
class SlotImpression:
  """An impression about to be shown: what is known of it before the user responds."""
  impression_id: int
  session_id: int
  user_id: int
  ts: float
  slot: int
  trigger_item_id: int
  propensity: float = 1.0


def host_side_features(host_id: int, info: dict, timeline: HostTimeline, ts: float,
                       items: Dict[int, dict]) -> Dict[str, list]:
  """Every room-side feature (``F.HOST_SIDE_FEATURES``) of showing ``host_id`` at ``ts``.

  Args:
    host_id: the room.
    info: its host record ({"shop_id", "category_ids"}).
    timeline: its events and displays (statistics count only what happened before ``ts``).
    ts: the impression time.
    items: item_id -> item record.
  """
  cats = info["category_ids"][:F.HOST_MAX_CATEGORIES]
  feats = {F.HOST_ID: [host_id], F.HOST_SHOP_ID: [info["shop_id"]],
           F.HOST_CATEGORY_IDS: cats + [0] * (F.HOST_MAX_CATEGORIES - len(cats))}
  feats.update(timeline.stats(ts))
  feats.update(display_features(timeline.displayed(ts), items))
  feats[F.HOST_FLASH_SALE] = [timeline.flash_sale(ts)]
  return feats


def display_features(item_ids: Sequence[int], items: Dict[int, dict]) -> Dict[str, list]:
  n = F.DISPLAY_TOP_N
  ids = list(item_ids)[:n]
  return {
      F.DISPLAY_ITEM_IDS: _pad(ids, n),
      F.DISPLAY_CATEGORY_IDS: _pad([items[i]["category_id"] for i in ids], n),
      F.DISPLAY_BRAND_IDS: _pad([items[i]["brand_id"] for i in ids], n),
      F.DISPLAY_PRICES: _pad([items[i]["price"] for i in ids], n, 0.0),
      F.DISPLAY_LEN: [len(ids)],
  }
