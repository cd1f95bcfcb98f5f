"""A log set read in-process by the ExampleGen's own parsing, checks and joins (no Beam).

The closed loop (``serving/policy.py``) builds a ranker's features from what the platform has
logged: the reference tables, each user's lifelong purchases, each room's displays and every
logged impression. :func:`read_log_tables` reads them with the functions ``LogsToExamples`` runs
(``records.parse_line``, ``dedupe``, ``unknown_reference``, ``assemble_impression``), so a record
the ExampleGen quarantines is left out here too, and counted.
"""

from __future__ import annotations

import collections
import dataclasses
import os
from typing import Dict, List

from components.live_example_gen import beam_transforms as bt
from components.live_example_gen import point_in_time as pit
from components.live_example_gen import records as r
from data_gen import log_format as lf


@dataclasses.dataclass
class LogTables:
  """What one log set holds, checked and deduplicated as the ExampleGen does.

  Attributes:
    items: item_id -> item record.
    hosts: host_id -> host record.
    users: user_id -> user record.
    purchases_desc: user_id -> lifelong purchases, most recent first (the ExampleGen's order).
    displays: host_id -> display records.
    impressions: every assembled impression, by time.
    quarantined: log kind -> records left out, with their reasons.
  """
  items: Dict[int, dict]
  hosts: Dict[int, dict]
  users: Dict[int, dict]
  purchases_desc: Dict[int, List[dict]]
  displays: Dict[int, List[dict]]
  impressions: List[pit.ImpressionRecord]
  quarantined: Dict[str, List[r.BadRecord]]

  @property
  def quarantined_count(self) -> int:
    return sum(len(v) for v in self.quarantined.values())

  def timelines(self) -> Dict[int, pit.HostTimeline]:
    """host_id -> the room's logged impressions and displays, for statistics as of any time."""
    by_host = collections.defaultdict(list)
    for imp in self.impressions:
      by_host[imp.host_id].append(imp)
    return {h: pit.HostTimeline(by_host.get(h, []), self.displays.get(h, [])) for h in self.hosts}


def _parsed(kind: str, log_dir: str, windows, bad: List[r.BadRecord]) -> List[r.Parsed]:
  out = []
  for line in r.read_log_file(kind, os.path.join(log_dir, kind + lf.LOG_SUFFIX)):
    parsed = line if isinstance(line, r.BadRecord) else r.parse_line(line, windows)
    (bad if isinstance(parsed, r.BadRecord) else out).append(parsed)
  return out


def _by(key: str, parsed: List[r.Parsed]) -> Dict[int, List[r.Parsed]]:
  out = collections.defaultdict(list)
  for p in parsed:
    out[p.rec[key]].append(p)
  return out


def read_log_tables(log_dir: str) -> LogTables:
  """Reads every log file of ``log_dir`` (the windows its summary.json declares).

  Raises:
    FileNotFoundError: a log file or summary.json is missing.
  """
  windows = lf.read_time_window(log_dir)
  bad: Dict[str, List[r.BadRecord]] = {kind: [] for kind in r.LOG_KINDS}
  parsed = {kind: _parsed(kind, log_dir, windows, bad[kind]) for kind in r.LOG_KINDS}
  tables = {}
  for kind in r.REFERENCE_KINDS:
    kept, dup = bt.dedupe(kind, parsed[kind])
    bad[kind] += dup
    tables[kind] = {r.identity(kind, p.rec)[0]: p.rec for p in kept}
  users, hosts, items = tables[r.USERS], tables[r.HOSTS], tables[r.ITEMS]
  checked = {}
  for kind in (r.PURCHASES, r.DISPLAYS, r.EVENTS):
    checked[kind] = []
    for p in parsed[kind]:
      reason = bt.unknown_reference(p.rec, users, hosts, items)
      if reason:
        bad[kind].append(r.BadRecord.of(p.line, reason))
      else:
        checked[kind].append(p)
  purchases_desc = {}
  for user, group in _by("user_id", checked[r.PURCHASES]).items():
    kept, dup = bt.dedupe(r.PURCHASES, group)
    bad[r.PURCHASES] += dup
    purchases_desc[user] = [p.rec for p in bt.sorted_facts(kept, reverse=True)]
  displays = {}
  for host, group in _by("host_id", checked[r.DISPLAYS]).items():
    kept, dup = bt.dedupe(r.DISPLAYS, group)
    bad[r.DISPLAYS] += dup
    displays[host] = [p.rec for p in kept]
  impressions = []
  for impression_id, group in _by("impression_id", checked[r.EVENTS]).items():
    for out in bt.assemble_impression(impression_id, group):
      if isinstance(out, pit.ImpressionRecord):
        impressions.append(out)
      elif isinstance(out, r.BadRecord):
        bad[r.EVENTS].append(out)
  impressions.sort(key=lambda i: (i.ts, i.impression_id))
  return LogTables(items=items, hosts=hosts, users=users, purchases_desc=purchases_desc,
                   displays=displays, impressions=impressions, quarantined=bad)
