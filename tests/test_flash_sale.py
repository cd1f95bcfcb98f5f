"""Flash sales are observable: the simulator logs them with the display, the ExampleGen reads them."""

import pytest

from components.live_example_gen import point_in_time as pit
from components.live_example_gen import records as r
from data_gen import log_format as lf
from data_gen.simulator import load_config
from data_gen.world import HOT_WINDOW_SECONDS, World, flash_sale_displays


def _refresh(ts, items):
  return {"host_id": 7, "ts": ts, "item_ids": items}


def test_a_stint_announces_its_display_when_the_flash_sale_starts_and_ends():
  refreshes = [_refresh(0.0, [1]), _refresh(1800.0, [2]), _refresh(3600.0, [3])]
  out = flash_sale_displays(refreshes, hot_start=1000.0, end=5000.0)
  got = [(d["ts"], d["item_ids"], d[lf.DISPLAY_FLASH_SALE]) for d in out]
  assert got == [(0.0, [1], False), (1000.0, [1], True), (1800.0, [2], True),
                 (1000.0 + HOT_WINDOW_SECONDS, [2], False), (3600.0, [3], False)]
  plain = flash_sale_displays(refreshes, hot_start=-1, end=5000.0)
  assert [(d["ts"], d[lf.DISPLAY_FLASH_SALE]) for d in plain] == [(0.0, False), (1800.0, False),
                                                                   (3600.0, False)]


def test_a_sale_that_outlasts_the_stint_gets_no_end_record():
  out = flash_sale_displays([_refresh(0.0, [1])], hot_start=100.0, end=1000.0)
  assert [(d["ts"], d[lf.DISPLAY_FLASH_SALE]) for d in out] == [(0.0, False), (100.0, True)]


def test_the_world_logs_every_hot_window_and_the_behaviour_sees_the_same_products():
  world = World(load_config("tiny", seed=3))
  hot_stints = [s for s in world.stints if s[3] >= 0]
  assert hot_stints
  starts = {(d["host_id"], d["ts"]) for d in world.displays if d[lf.DISPLAY_FLASH_SALE]}
  for host, _, _, hot in hot_stints:
    assert (host, round(hot, 3)) in starts
  for d in world.displays:  # the flag says exactly whether the room is hot at that moment
    live, hot = world.live_hosts(d["ts"] + 1e-3)
    assert d[lf.DISPLAY_FLASH_SALE] == bool(hot[live == d["host_id"]].any())


def test_the_example_gen_reads_the_flag_as_of_the_impression():
  timeline = pit.HostTimeline([], [
      {"host_id": 1, "ts": 10.0, "item_ids": [1], lf.DISPLAY_FLASH_SALE: False},
      {"host_id": 1, "ts": 20.0, "item_ids": [1], lf.DISPLAY_FLASH_SALE: True},
      {"host_id": 1, "ts": 50.0, "item_ids": [2], lf.DISPLAY_FLASH_SALE: False}])
  assert [timeline.flash_sale(t) for t in (5.0, 15.0, 20.0, 21.0, 50.0, 51.0)] == [0, 0, 0, 1, 1, 0]


@pytest.mark.parametrize("value,ok", [(True, True), (False, True), ("yes", False), (1, False),
                                      (None, False)])
def test_the_flag_must_be_a_boolean_and_may_be_absent(value, ok):
  windows = {lf.WINDOW_EVENTS: (0.0, 100.0), lf.WINDOW_PURCHASES: (0.0, 100.0)}
  rec = {"host_id": 1, "ts": 5.0, "item_ids": [1], lf.DISPLAY_FLASH_SALE: value}
  if ok:
    assert r.VALIDATORS[r.DISPLAYS](rec, windows)[lf.DISPLAY_FLASH_SALE] is value
  else:
    with pytest.raises(r.RecordError, match=f"field 'flash_sale' must be true or false, got {value!r}"):
      r.VALIDATORS[r.DISPLAYS](rec, windows)
  del rec[lf.DISPLAY_FLASH_SALE]
  assert r.VALIDATORS[r.DISPLAYS](rec, windows)[lf.DISPLAY_FLASH_SALE] is False
