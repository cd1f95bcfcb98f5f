"""Runs sessions in the live-stream world: writes event logs, or evaluates a policy in closed loop.

Log layout written by :func:`generate_logs` (JSON lines, one record per line)::

    <out>/items.jsonl        item_id, category_id, brand_id, shop_id, price
    <out>/hosts.jsonl        host_id, shop_id, category_ids
    <out>/users.jsonl        user_id, activity_level
    <out>/purchases.jsonl    lifelong main-site purchases: user_id, item_id, category_id, brand_id,
                             shop_id, price, weight, stay_seconds, ts
    <out>/displays.jsonl     host_id, ts, item_ids (a room's displayed top-N from ts on)
    <out>/events.jsonl       impression / like / comment / share / follow / item_click /
                             add_to_cart / purchase / leave events, in time order per day
    <out>/ground_truth.jsonl impression_id -> the simulator's true probabilities (never a feature)
                             and the reachable ceilings (GROUND_TRUTH_FIELDS)
    <out>/summary.json       what was written
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import sys
import time
from typing import Dict, Iterator, List, TextIO

import numpy as np

from data_gen import behaviour as bh
from data_gen import log_format as lf
from data_gen import reachable as rc
from data_gen import retention
from data_gen import world as world_lib
from data_gen.world import ACTIVITY_LEVELS, DAY, EPOCH, World, WorldConfig

LOG_FILES = lf.LOG_KINDS
GROUND_TRUTH_FILE = lf.GROUND_TRUTH_FILE
SUMMARY_FILE = lf.SUMMARY_FILE
ACTION_EVENTS = lf.ACTION_EVENTS
# Lifelong main-site purchases are drawn over the year before the simulation starts.
LIFELONG_HISTORY_DAYS = 366
TRUTH_FIELDS = ("p_effective_view", "p_interact", "p_item_click", "p_add_to_cart", "p_purchase",
                "p_buy", "p_swipe_down", "e_stay_seconds", "e_gmv")
# Every column of ground_truth.jsonl besides impression_id: the oracle (``Truth`` attributes), then
# the reachable ceilings (``data_gen/reachable.py``).
GROUND_TRUTH_FIELDS = TRUTH_FIELDS + rc.REACHABLE_FIELDS


@dataclasses.dataclass
class SessionResult:
  """Outcome of one session in the closed loop."""
  user_id: int
  activity_level: str
  depth: int
  views: int
  interacts: int
  purchases: int
  gmv: float
  stay_seconds: float
  quick_swipes: int = 0  # swipe-aways within lf.QUICK_SWIPE_SECONDS without an effective view


# The per-session outcomes of the closed loop (``SessionResult`` fields after the user).
SESSION_OUTCOMES = ("depth", "views", "interacts", "purchases", "gmv", "stay_seconds",
                    "quick_swipes")


class Progress:
  """A small progress bar on stderr (no dependency; quiet when ``enabled`` is False)."""

  def __init__(self, total: int, label: str, enabled: bool = True):
    self.total, self.label, self.enabled = max(total, 1), label, enabled
    self.start = time.time()
    self.done = 0

  def update(self, n: int = 1) -> None:
    self.done += n
    if self.enabled and (self.done == self.total or self.done % max(1, self.total // 50) == 0):
      frac = self.done / self.total
      bar = "#" * int(30 * frac)
      sys.stderr.write(f"\r{self.label} [{bar:<30}] {self.done}/{self.total} "
                       f"{time.time() - self.start:.0f}s")
      if self.done >= self.total:
        sys.stderr.write("\n")
      sys.stderr.flush()


class Simulator:
  """Sessions of sequential full-screen slots in a :class:`World`."""

  def __init__(self, world: World, trap: world_lib.TrapConfig | None = None):
    """A simulator of ``world``; ``trap`` replaces the world config's trap strengths."""
    self.world = world
    self.behaviour = bh.Behaviour(world, trap)

  def run_session(self, rng: np.random.Generator, user: int, start: float,
                  state: bh.UserState, policy: bh.Policy, sample_from_policy: bool,
                  oracle: bool = False,
                  reachable: rc.ReachableEstimator | None = None,
                  session_id: int = 0) -> Iterator[dict]:
    """Yields one record per slot: context, chosen room, propensity, truth and outcome.

    With ``sample_from_policy`` the policy's scores are probabilities to sample from (the logging
    policy); otherwise the highest score is shown (a ranker under evaluation). With ``reachable``
    each record also has ``"reachable"``: {field: probability} of ``rc.REACHABLE_FIELDS``, taken
    before the outcome moves the state, like the truth. When ``state`` keeps a history each
    shown room is appended to it (as ``session_id``) and the policy sees it in ``SlotContext.past``.
    """
    w = self.world
    trigger_cat = world_lib.draw_index(rng, w.user_cat_pref[user])
    trigger_item = w.pick_item(rng, user, trigger_cat)
    self.behaviour.start_session(state, start, int(w.item_category[trigger_item]))
    t = start
    shown: List[int] = []
    for slot in range(w.config.max_slots):
      hosts, hot = w.live_hosts(t)
      keep = ~np.isin(hosts, shown)
      hosts, hot = hosts[keep], hot[keep]
      if len(hosts) == 0:
        return
      truths = ([self.behaviour.truth(user, state, int(h), t, bool(x), slot)
                 for h, x in zip(hosts, hot)] if oracle else None)
      ctx = bh.SlotContext(user_id=user, timestamp=t, slot_index=slot,
                           trigger_item_id=trigger_item, candidate_host_ids=hosts,
                           candidate_hot=hot, shown_host_ids=tuple(shown), truths=truths,
                           session_id=session_id,
                           past=tuple(state.history) if state.history is not None else ())
      scores = np.asarray(policy(ctx), np.float64)
      if scores.shape != hosts.shape:
        raise ValueError(f"policy returned scores of shape {scores.shape} for "
                         f"{len(hosts)} candidates")
      if sample_from_policy:
        idx = int(rng.choice(len(hosts), p=scores))  # choice checks the policy's probabilities
        propensity = float(scores[idx])
      else:
        idx, propensity = int(np.argmax(scores)), 1.0
      host = int(hosts[idx])
      reach = None
      if reachable is not None:
        truth, reach = reachable.fields(self.behaviour, user, state, host, t, bool(hot[idx]),
                                        slot)
      elif truths is not None:
        truth = truths[idx]
      else:
        truth = self.behaviour.truth(user, state, host, t, bool(hot[idx]), slot)
      outcome = self.behaviour.sample(rng, user, host, t, truth)
      t_end = t + outcome.stay_seconds
      self.behaviour.update_state(state, host, outcome, t_end)
      if state.history is not None:
        state.history.append(bh.ShownRoom(session_id, host, t, slot, trigger_item, outcome))
      yield {"slot": slot, "ts": t, "host_id": host, "trigger_item_id": trigger_item,
             "propensity": propensity, "truth": truth, "reachable": reach, "outcome": outcome}
      shown.append(host)
      if not outcome.swipe_down:
        return
      t = t_end + 1.0

  def _live_time(self, rng: np.random.Generator, windows, tries: int = 1000) -> float:
    """A random time at which at least one room is live."""
    for _ in range(tries):
      lo, hi = windows[int(rng.integers(len(windows)))]
      t = float(rng.uniform(lo, hi))
      if len(self.world.live_hosts(t)[0]):
        return t
    raise RuntimeError(f"no live room found in {tries} random times; is the world empty?")

  # --- Closed loop ---------------------------------------------------------------------------------
  def evaluate_policy(self, policy: bh.Policy, n_sessions: int, seed: int = 1,
                      oracle: bool = False, sample_from_policy: bool = False,
                      progress: Progress | None = None) -> List[SessionResult]:
    """Runs fresh sessions with ``policy`` choosing every slot; returns per-session outcomes.

    Session i has the same user, start time and random stream under every policy (common random
    numbers), so policies run with one ``seed`` are compared on the same sessions.

    Args:
      policy: Scores the candidates of each slot.
      n_sessions: Sessions to run.
      seed: Seed of the sessions.
      oracle: Give the policy the candidates' true probabilities (``SlotContext.truths``).
      sample_from_policy: The scores are probabilities to sample from (the logging policy);
        otherwise the highest score is shown.
      progress: Updated once per session.
    """
    w = self.world
    rng = np.random.default_rng(seed)
    windows = w.session_day_windows()
    results = []
    for i in range(n_sessions):
      user = int(rng.integers(1, w.config.n_users + 1))
      start = self._live_time(rng, windows)
      state = self.behaviour.new_state(keep_history=True)
      session_rng = np.random.default_rng([seed, i])
      records = list(self.run_session(session_rng, user, start, state, policy,
                                      sample_from_policy=sample_from_policy, oracle=oracle,
                                      session_id=i + 1))
      if progress is not None:
        progress.update()
      results.append(session_result(w, user, records))
    return results

  def run_days(self, policy: bh.Policy, n_users: int, days: int | None = None, seed: int = 1,
               oracle: bool = False, sample_from_policy: bool = False,
               progress: Progress | None = None) -> DaysResult:
    """Runs ``policy`` for a fixed population over days; the retention model decides who returns.

    Who comes back on a day follows ``data_gen/retention.py``. The population (``n_users``
    drawn without replacement) and each (user, day)'s random stream depend on ``seed`` only, so
    policies run with one seed face the same users and draws; the user's real-time state and
    satisfaction carry over from day to day.

    Args:
      policy: Scores the candidates of each slot.
      n_users: Users in the population.
      days: Days to run (at most the world's ``config.days``: rooms are scheduled only then).
      seed: Seed of the population and of the sessions.
      oracle: Give the policy the candidates' true probabilities.
      sample_from_policy: The scores are probabilities to sample from (the logging policy).
      progress: Updated once per user and day.

    Returns:
      Per user and day: whether the user was active, the true chance they were, and their
      sessions' outcomes.
    """
    w = self.world
    days = w.config.days if days is None else days
    if not 1 <= days <= w.config.days:
      raise ValueError(f"days must be in [1, {w.config.days}] (the world's days); got {days}")
    if not 1 <= n_users <= w.config.n_users:
      raise ValueError(f"n_users must be in [1, {w.config.n_users}]; got {n_users}")
    cfg = w.config.retention
    users = np.sort(np.random.default_rng(seed).choice(
        np.arange(1, w.config.n_users + 1), n_users, replace=False))
    rates = np.array(w.config.sessions_per_day)[w.user_activity[users]]
    states = [self.behaviour.new_state(keep_history=True) for _ in users]
    satisfaction = np.full(n_users, cfg.reference)
    out = DaysResult(users=users, p_active=np.zeros((n_users, days)),
                     active=np.zeros((n_users, days), bool),
                     sessions=[[[] for _ in range(days)] for _ in users])
    session_id = 0
    for day, window in enumerate(w.session_day_windows()[:days]):
      for i, user in enumerate(users):
        rng = np.random.default_rng([seed, day, int(user)])
        p = retention.p_active(cfg, float(rates[i]), float(satisfaction[i]))
        out.p_active[i, day] = p
        out.active[i, day] = rng.random() < p
        if out.active[i, day]:
          n = retention.sessions_on_active_day(rng, float(rates[i]))
          starts = sorted(self._live_time(rng, [window]) for _ in range(n))
          for k, start in enumerate(starts):
            state = states[i]
            session_id += 1
            records = list(self.run_session(
                np.random.default_rng([seed, day, int(user), k]), int(user),
                max(start, state.last_ts + 30.0), state, policy,
                sample_from_policy=sample_from_policy, oracle=oracle, session_id=session_id))
            result = session_result(w, int(user), records)
            out.sessions[i][day].append(result)
            satisfaction[i] = retention.updated_satisfaction(
                cfg, float(satisfaction[i]),
                retention.session_score(cfg, result.depth, result.views, result.purchases,
                                        result.quick_swipes))
        if progress is not None:
          progress.update()
    return out


@dataclasses.dataclass
class DaysResult:
  """A multi-day closed loop (:meth:`Simulator.run_days`) per user ([U]) and day ([D])."""
  users: np.ndarray  # [U] user ids
  p_active: np.ndarray  # [U, D] the retention model's true chance of being active
  active: np.ndarray  # [U, D] bool: whether the user had sessions that day
  sessions: List[List[List[SessionResult]]]  # [U][D] the day's sessions

  def per_user_day(self, field: str) -> np.ndarray:
    """[U, D] the sum of a session outcome over each user's sessions of each day."""
    return np.array([[sum(getattr(r, field) for r in day) for day in user]
                     for user in self.sessions], np.float64)


def _daily_per_user(result: DaysResult, first_day: int) -> Dict[str, np.ndarray]:
  """[U, D'] per user and day from ``first_day`` on: each of :data:`DAY_OUTCOMES`."""
  if not 0 <= first_day < result.active.shape[1]:
    raise ValueError(f"first_day must be in [0, {result.active.shape[1]}); got {first_day}")
  return {"dau": result.active[:, first_day:].astype(np.float64),
          "expected_dau": result.p_active[:, first_day:],
          "purchases_per_day": result.per_user_day("purchases")[:, first_day:],
          "sessions_per_day": np.array([[len(d) for d in u] for u in result.sessions],
                                       np.float64)[:, first_day:]}


DAY_OUTCOMES = ("dau", "expected_dau", "purchases_per_day", "sessions_per_day")


def mean_ci95(x: np.ndarray, scale: float = 1.0) -> Dict[str, float]:
  """``scale`` times the mean of ``x`` and its 95% normal half-width (NaN where undefined)."""
  x = np.asarray(x, np.float64)
  half = 1.96 * x.std(ddof=1) / math.sqrt(len(x)) if len(x) > 1 else float("nan")
  return {"mean": float(x.mean() * scale) if len(x) else float("nan"),
          "ci95": float(half * scale)}


def _population_total(per_user: np.ndarray) -> Dict[str, float]:
  """A population's daily total from [U] per-user daily means, with its 95% half-width."""
  return mean_ci95(per_user, scale=len(per_user))


def summarize_days(result: DaysResult, first_day: int = 1) -> Dict[str, Dict[str, float]]:
  """Daily active users, purchases and sessions per day over days ``first_day``.. with 95% intervals.

  Day 0 is left out by default: who is active on it does not depend on the policy yet. The
  interval is over users (each user's mean over the days, times the population), so it holds for
  the population, not for a particular calendar. ``expected_dau`` is the mean of the true
  chances of being active, for the realised ``dau`` to be checked against.
  """
  out = {name: _population_total(x.mean(axis=1))
         for name, x in _daily_per_user(result, first_day).items()}
  out["per_day_dau"] = [int(a) for a in result.active.sum(axis=0)]
  return out


def paired_days_difference(a: DaysResult, b: DaysResult, field: str,
                           first_day: int = 1) -> Dict[str, float]:
  """``a`` minus ``b`` in one of :data:`DAY_OUTCOMES`, paired per user (runs on the same seed)."""
  if not np.array_equal(a.users, b.users) or a.active.shape != b.active.shape:
    raise ValueError("paired_days_difference needs two runs of the same population and days")
  if field not in DAY_OUTCOMES:
    raise ValueError(f"field {field!r} is not one of {DAY_OUTCOMES}")
  x = _daily_per_user(a, first_day)[field].mean(axis=1)
  y = _daily_per_user(b, first_day)[field].mean(axis=1)
  return _population_total(x - y)


def session_result(world: World, user: int, records: List[dict]) -> SessionResult:
  """The outcome of one session from its :meth:`Simulator.run_session` records."""
  outs: List[bh.Outcome] = [r["outcome"] for r in records]
  return SessionResult(
      user_id=user, activity_level=ACTIVITY_LEVELS[world.user_activity[user]], depth=len(outs),
      views=sum(o.effective_view for o in outs), interacts=sum(o.like for o in outs),
      purchases=sum(o.purchase for o in outs), gmv=sum(o.gmv for o in outs),
      stay_seconds=sum(o.stay_seconds for o in outs),
      quick_swipes=sum(not o.effective_view and o.stay_seconds < lf.QUICK_SWIPE_SECONDS
                       for o in outs))


def summarize_sessions(results: List[SessionResult]) -> Dict[str, Dict[str, float]]:
  """Mean and 95% normal confidence half-width of each per-session outcome."""
  return {field: mean_ci95([getattr(r, field) for r in results]) for field in SESSION_OUTCOMES}


def paired_difference(a: List[SessionResult], b: List[SessionResult],
                      field: str) -> Dict[str, float]:
  """Mean and 95% half-width of ``a[i].field - b[i].field`` over sessions run on the same seed.

  :meth:`Simulator.evaluate_policy` runs session i with the same user, start and random stream
  under every policy, so the per-session difference removes the spread between sessions.
  """
  if len(a) != len(b) or len(a) < 2:
    raise ValueError(f"paired_difference needs two equally long runs of >= 2 sessions; got "
                     f"{len(a)} and {len(b)}")
  mismatched = [i for i, (x, y) in enumerate(zip(a, b)) if x.user_id != y.user_id]
  if mismatched:
    raise ValueError(f"sessions {mismatched[:5]} have different users: not runs on the same seed")
  return mean_ci95([getattr(x, field) - getattr(y, field) for x, y in zip(a, b)])


# --- Log writing ---------------------------------------------------------------------------------------
def impression_events(impression_id: int, session_id: int, user: int, rec: dict) -> List[dict]:
  """The event records of one :meth:`Simulator.run_session` record: its impression, its actions
  and its leave (last), as ``events.jsonl`` holds them."""
  o: bh.Outcome = rec["outcome"]
  base = {"impression_id": impression_id, "user_id": user, "host_id": rec["host_id"]}
  events = [dict(base, event="impression", session_id=session_id, ts=round(rec["ts"], 3),
                 slot=rec["slot"], trigger_item_id=rec["trigger_item_id"],
                 propensity=round(rec["propensity"], 6))]
  for name, off in o.action_offsets.items():
    ev = dict(base, event=name, ts=round(rec["ts"] + off, 3))
    if name == "purchase":
      ev.update(item_id=o.purchased_item, gmv=o.gmv)
    events.append(ev)
  events.append(dict(base, event="leave", ts=round(rec["ts"] + o.stay_seconds, 3),
                     stay_seconds=o.stay_seconds, swipe_down=bool(o.swipe_down)))
  return events


def _write(f: TextIO, record: dict) -> None:
  f.write(json.dumps(record, separators=(",", ":")) + "\n")


def _corrupt_lines(rng: np.random.Generator, record: dict, kind: str) -> str:
  """A bad version of ``record`` of the given kind, as a raw log line."""
  line = json.dumps(record, separators=(",", ":"))
  if kind == "truncated":
    return line[: max(1, len(line) // 2)]
  if kind == "wrong_type":
    return json.dumps(dict(record, user_id="user-" + str(record.get("user_id"))))
  if kind == "unknown_id":
    return json.dumps(dict(record, host_id=10_000_000 + int(rng.integers(1000))))
  if kind == "out_of_order":  # a leave event stamped before its impression
    return json.dumps(dict(record, ts=round(record["ts"] - 10_000.0, 3)))
  raise ValueError(f"unknown corruption kind {kind!r}")


CORRUPTION_KINDS = ("truncated", "wrong_type", "unknown_id", "out_of_order")


def generate_logs(config: WorldConfig, out_dir: str, corrupt_fraction: float = 0.0,
                  progress: bool = True) -> dict:
  """Simulates ``config.days`` days with the logging policy and writes the logs to ``out_dir``.

  Memory stays bounded by one day of events. With ``corrupt_fraction`` > 0 that share of sessions
  gets one bad line (truncated, wrong type, unknown id or out-of-order time) added, for exercising
  the ExampleGen's quarantine; the clean records are all still written.

  Returns:
    The summary dict that is also written to ``summary.json``.
  """
  if not 0.0 <= corrupt_fraction < 1.0:
    raise ValueError(f"corrupt_fraction must be in [0, 1); got {corrupt_fraction}")
  os.makedirs(out_dir, exist_ok=True)
  t0 = time.time()
  world = World(config)
  sim = Simulator(world)
  policy = bh.LoggingPolicy(world, seed=config.seed + 1)
  # What the lifelong purchases reveal about each user, once per user (no randomness drawn).
  estimator = rc.ReachableEstimator(world)
  rng = np.random.default_rng(config.seed + 2)
  files = {name: open(os.path.join(out_dir, f"{name}.jsonl"), "w") for name in LOG_FILES}
  truth_file = open(os.path.join(out_dir, GROUND_TRUTH_FILE), "w")
  counts = {"impressions": 0, "sessions": 0, "events": 0, "corrupt_lines": 0,
            "by_activity": {a: 0 for a in ACTIVITY_LEVELS}}
  label_sums = {k: 0.0 for k in ("effective_view", "interact", "item_click", "add_to_cart",
                                 "purchase", "swipe_down", "gmv", "stay_seconds")}
  try:
    for i in range(1, config.n_items + 1):
      _write(files["items"], {"item_id": i, "category_id": int(world.item_category[i]),
                              "brand_id": int(world.item_brand[i]),
                              "shop_id": int(world.item_shop[i]),
                              "price": float(world.item_price[i])})
    for h in range(1, config.n_hosts + 1):
      _write(files["hosts"], {"host_id": h, "shop_id": int(world.host_shop[h]),
                              "category_ids": [int(c) for c in world.host_categories[h] if c]})
    for u in range(1, config.n_users + 1):
      _write(files["users"], {"user_id": u,
                              "activity_level": ACTIVITY_LEVELS[world.user_activity[u]]})
    for p in world.purchases:
      _write(files["purchases"], p)
    for d in sorted(world.displays, key=lambda x: x["ts"]):
      _write(files["displays"], d)

    states = {u: sim.behaviour.new_state() for u in range(1, config.n_users + 1)}
    rates = np.array(config.sessions_per_day)[world.user_activity[1:]]
    windows = world.session_day_windows()
    session_counts = [rng.poisson(rates) for _ in windows]
    bar = Progress(int(sum(c.sum() for c in session_counts)), "sessions", progress)
    impression_id = session_id = 0
    last_ts = 0.0
    for (lo, hi), per_user in zip(windows, session_counts):
      starts = [(float(rng.uniform(lo, hi)), int(u) + 1) for u in np.flatnonzero(per_user)
                for _ in range(per_user[u])]
      starts.sort()
      day_events: List[dict] = []
      for start, user in starts:
        state = states[user]
        start = max(start, state.last_ts + 30.0)
        session_id += 1
        bad_this_session = rng.random() < corrupt_fraction
        for rec in sim.run_session(rng, user, start, state, policy, sample_from_policy=True,
                                   reachable=estimator, session_id=session_id):
          impression_id += 1
          o: bh.Outcome = rec["outcome"]
          tr: bh.Truth = rec["truth"]
          events = impression_events(impression_id, session_id, user, rec)
          day_events += events
          leave = events[-1]
          truth_rec = {"impression_id": impression_id}
          truth_rec.update((k, round(float(getattr(tr, k)), 6)) for k in TRUTH_FIELDS)
          truth_rec.update((k, round(rec["reachable"][k], 6)) for k in rc.REACHABLE_FIELDS)
          _write(truth_file, truth_rec)
          counts["impressions"] += 1
          counts["by_activity"][ACTIVITY_LEVELS[world.user_activity[user]]] += 1
          for k in ("effective_view", "item_click", "add_to_cart", "purchase", "swipe_down",
                    "gmv", "stay_seconds"):
            label_sums[k] += float(getattr(o, k))
          label_sums["interact"] += float(o.like)
          if bad_this_session:
            bad_this_session = False
            kind = CORRUPTION_KINDS[int(rng.integers(len(CORRUPTION_KINDS)))]
            day_events.append({"_raw": _corrupt_lines(rng, leave, kind), "ts": leave["ts"]})
            counts["corrupt_lines"] += 1
        counts["sessions"] += 1
        bar.update()
      day_events.sort(key=lambda e: e["ts"])
      if day_events:
        last_ts = max(last_ts, day_events[-1]["ts"])
      for ev in day_events:
        if "_raw" in ev:
          files["events"].write(ev["_raw"] + "\n")
        else:
          _write(files["events"], ev)
      counts["events"] += len(day_events)
  finally:
    for f in files.values():
      f.close()
    truth_file.close()
  n = max(counts["impressions"], 1)
  # The declared window: sessions and a room's last stint start inside the simulated days but may
  # run past the last midnight, so the end is the latest of the three.
  last_display = max((d["ts"] for d in world.displays), default=0.0)
  events_end = float(max(EPOCH + config.days * DAY, math.floor(max(last_ts, last_display)) + 1))
  summary = {
      lf.TIME_WINDOW: {lf.WINDOW_EVENTS: [float(EPOCH), events_end],
                       lf.WINDOW_PURCHASES: [float(EPOCH - LIFELONG_HISTORY_DAYS * DAY),
                                             events_end]},
      "config": dataclasses.asdict(config), "corrupt_fraction": corrupt_fraction,
      "generator_version": generator_version(), "out_dir": os.path.abspath(out_dir),
      "counts": counts, "lifelong_purchases": len(world.purchases),
      "displays": len(world.displays), "label_rates": {k: v / n for k, v in label_sums.items()},
      "seconds": round(time.time() - t0, 1)}
  with open(os.path.join(out_dir, SUMMARY_FILE), "w") as f:
    json.dump(summary, f, indent=2)
  return summary


def read_ground_truth(log_dir: str) -> Dict[int, dict]:
  """impression_id -> truth record."""
  out = {}
  with open(os.path.join(log_dir, GROUND_TRUTH_FILE)) as f:
    for line in f:
      rec = json.loads(line)
      out[int(rec["impression_id"])] = rec
  return out


def generator_version() -> str:
  """Fingerprint of the simulator's code (logs made by other code are not reused)."""
  from pipeline.code_version import code_version  # pylint: disable=import-outside-toplevel
  return code_version(packages=("data_gen",))


def reusable_logs(out_dir: str, config: WorldConfig, corrupt_fraction: float) -> str | None:
  """Why the logs in ``out_dir`` cannot stand in for generating them again (None: they can).

  They can when every log file is there and ``summary.json`` records the same world config,
  corruption and simulator code.
  """
  path = os.path.join(out_dir, SUMMARY_FILE)
  if not os.path.exists(path):
    return f"no {path}"
  with open(path) as f:
    summary = json.load(f)
  want = {"config": json.loads(json.dumps(dataclasses.asdict(config))),
          "corrupt_fraction": corrupt_fraction, "generator_version": generator_version()}
  for key, value in want.items():
    if summary.get(key) != value:
      return f"{key} differs ({summary.get(key)!r} in {path})"
  missing = [name for name in [k + lf.LOG_SUFFIX for k in lf.LOG_KINDS] + [GROUND_TRUTH_FILE]
             if not os.path.exists(os.path.join(out_dir, name))]
  return f"missing {missing}" if missing else None


def load_config(scale: str, seed: int | None = None, trap_scale: float = 1.0,
                **overrides) -> WorldConfig:
  """The preset ``scale`` with its seed, its trap scaled and any ``overrides`` that are not None.

  Args:
    scale: A name in ``world.SCALES``.
    seed: The world seed (None: the preset's).
    trap_scale: Every greedy-trap strength of the preset times this (``TrapConfig.scaled``):
      0 writes logs of a world without the trap, 1 keeps the preset's.
    **overrides: ``WorldConfig`` fields to replace.

  Returns:
    The world config.
  """
  from data_gen.world import SCALES  # pylint: disable=import-outside-toplevel
  if scale not in SCALES:
    raise ValueError(f"unknown scale {scale!r}; choose one of {sorted(SCALES)}")
  cfg = SCALES[scale]
  if seed is not None:
    overrides["seed"] = seed
  if trap_scale != 1.0:
    overrides["trap"] = cfg.trap.scaled(trap_scale)
  return dataclasses.replace(cfg, **{k: v for k, v in overrides.items() if v is not None})
