"""The live-stream world: catalogue, hosts (live rooms), users and their main-site purchase history.

Everything here is static or exogenous (host schedules, popularity, hot windows, displayed products);
the per-impression behaviour lives in ``behaviour.py``. All randomness comes from one seeded
``numpy.random.Generator`` so a world is reproducible from its config.
"""

from __future__ import annotations

import dataclasses
from typing import Dict, List, Tuple

import numpy as np

from data_gen import log_format as lf

EPOCH = 1_767_225_600  # 2026-01-01T00:00:00Z; simulated day d starts at EPOCH + d * DAY.
DAY = 86_400
HOUR = 3_600
DISPLAY_REFRESH_SECONDS = 1_800  # a room re-ranks its displayed top-N every 30 minutes
HOT_WINDOW_SECONDS = 1_800  # a flash sale lasts 30 minutes
ACTIVITY_LEVELS = lf.ACTIVITY_LEVELS


def draw_index(rng: np.random.Generator, p: np.ndarray) -> int:
  """``int(rng.choice(len(p), p=p))`` for a valid probability vector, without ``choice``'s checks.

  The same arithmetic and the same one uniform draw as numpy's ``Generator.choice`` (so logs stay
  byte-identical); ``choice``'s argument checks were a tenth of the simulator's time.
  """
  return draw_from_cdf(rng, choice_cdf(p))


def choice_cdf(p: np.ndarray) -> np.ndarray:
  """The cumulative distribution numpy's ``choice`` draws from, for many draws from one ``p``."""
  cdf = p.cumsum()
  cdf /= cdf[-1]
  return cdf


def draw_from_cdf(rng: np.random.Generator, cdf: np.ndarray) -> int:
  """One draw from ``choice_cdf(p)``: the same single uniform draw as ``draw_index``."""
  return int(cdf.searchsorted(rng.random(), side="right"))


def flash_sale_displays(refreshes: List[dict], hot_start: float, end: float) -> List[dict]:
  """One stint's display records with the flash-sale flag (``log_format.DISPLAY_FLASH_SALE``).

  A flash sale is what a viewer sees in the room, so the logs say when it runs: the room
  announces its current display again when the sale starts and when it ends (no new products,
  so what the behaviour sees is unchanged), and every record says whether the sale is on.

  Args:
    refreshes: the stint's regular refreshes, in time order (``host_id``, ``ts``, ``item_ids``).
    hot_start: the flash sale's start, or a negative number for none.
    end: the stint's end.
  """
  # Log times have millisecond resolution; the flag uses the logged bounds.
  sale_start, sale_end = round(hot_start, 3), round(hot_start + HOT_WINDOW_SECONDS, 3)
  marks = [sale_start] + ([sale_end] if sale_end < end else [])
  records = list(refreshes)
  if hot_start >= 0 and refreshes:
    taken = {r["ts"] for r in refreshes}
    for mark in marks:
      if mark not in taken:
        current = [r for r in refreshes if r["ts"] <= mark][-1]
        records.append(dict(current, ts=mark))
    records.sort(key=lambda r: r["ts"])
  return [dict(r, **{lf.DISPLAY_FLASH_SALE: bool(hot_start >= 0 and sale_start <= r["ts"] < sale_end)})
          for r in records]


def _check_non_negative(config, names) -> None:
  """Raises ValueError naming the first of ``names`` whose value in ``config`` is not >= 0."""
  for name in names:
    value = getattr(config, name)
    if not value >= 0.0:
      raise ValueError(f"{type(config).__name__}.{name} must be >= 0; got {value!r}")


LEGACY_PURCHASE_EXIT = 2.9  # the purchase exit of logs written before TrapConfig existed
HARD_SELL_STREAM = 1  # the random stream ``World.host_hard_sell`` is drawn from (see there)


@dataclasses.dataclass(frozen=True)
class TrapConfig:
  """Strengths of the mechanisms behind the temporal greedy trap (``data_gen/README.md``).

  Each is a logit offset in the response equations, so 0 switches a mechanism off. A ranker that
  takes the best conversion of every slot on its own walks into them: purchases end sessions,
  a purchase dulls the next ones in the same categories, hard selling after hard selling pushes
  the user out, and the hard-selling rooms that convert best are the ones users leave most.
  The defaults are where an oracle look-ahead clearly beats oracle greedy on purchases and depth
  without emptying the logs (``data_gen/README.md`` says why).

  Attributes:
    purchase_exit: How much more a purchase makes the user leave than a plain effective view
      (added to the leave logit).
    satiation: How much a purchase lowers the item-click logit of later rooms sharing its
      categories (per unit of satiation; it decays, ``behaviour.SATIATION_DECAY_PER_SLOT``).
    sales_pressure: How much a selling room adds to the leave logit per unit of the session's
      sales pressure (the decayed sum of the selling strength of the rooms shown so far), times
      its own selling strength.
    hard_sell_lift: How much a hard-selling room (``World.host_hard_sell``) adds to the
      item-click logit, per unit of its hard sell: countdowns and flash prices convert.
    hard_sell_exit: How much a hard-selling room adds to the leave logit, per unit of its hard
      sell, whatever the user did: the pressure that converts also pushes people out. With the
      lift, it puts the best conversion of a slot in the rooms most likely to end the session.
  """
  purchase_exit: float = 2.9
  satiation: float = 1.5
  sales_pressure: float = 0.0
  hard_sell_lift: float = 1.5
  hard_sell_exit: float = 3.0

  def __post_init__(self):
    _check_non_negative(self, [f.name for f in dataclasses.fields(self)])

  def scaled(self, factor: float) -> TrapConfig:
    """Every strength times ``factor`` (0: no trap at all)."""
    if not factor >= 0.0:
      raise ValueError(f"trap scale factor must be >= 0; got {factor!r}")
    return TrapConfig(**{k: v * factor for k, v in dataclasses.asdict(self).items()})


@dataclasses.dataclass(frozen=True)
class RetentionConfig:
  """Whether a user comes back on a day, from how their last sessions went (``data_gen/README.md``).

  A session scores ``depth_weight * depth + view_weight * effective views + purchase_weight *
  purchases - quick_weight * quick swipe-aways``. A user's satisfaction starts at ``reference`` and
  after each session becomes ``memory * satisfaction + (1 - memory) * score``. The chance to be
  active on a day is ``sigmoid(logit(1 - exp(-rate)) + strength * (satisfaction - reference))``,
  with ``rate`` the activity level's sessions per day; an active day has a zero-truncated
  Poisson(rate) number of sessions, so at ``strength`` 0 the sessions are Poisson(rate) a day.
  """
  strength: float = 1.0
  memory: float = 0.7
  depth_weight: float = 0.1
  view_weight: float = 0.3
  purchase_weight: float = 0.6
  quick_weight: float = 0.4
  reference: float = 0.8

  def __post_init__(self):
    if not 0.0 <= self.memory < 1.0:
      raise ValueError(f"RetentionConfig.memory must be in [0, 1); got {self.memory!r}")
    _check_non_negative(self, ["strength", "depth_weight", "view_weight", "purchase_weight",
                               "quick_weight"])


@dataclasses.dataclass(frozen=True)
class WorldConfig:
  """Scale knobs and the seed. ``SCALES`` holds the named presets."""
  seed: int = 7
  n_users: int = 6_000
  n_hosts: int = 240
  n_items: int = 6_000
  n_categories: int = 20
  n_brands: int = 100
  days: int = 4
  display_top_n: int = 6
  max_slots: int = 30
  # Sessions per user per day by activity level (new, low, high).
  sessions_per_day: Tuple[float, float, float] = (0.15, 0.6, 2.0)
  activity_mix: Tuple[float, float, float] = (0.3, 0.4, 0.3)
  # Lifelong main-site purchases (Poisson mean) by activity level; new users have them too.
  lifelong_purchases: Tuple[float, float, float] = (25.0, 60.0, 110.0)
  max_lifelong_purchases: int = 400  # per user
  # Share of the selling and mixed rooms that hard-sell (``World.host_hard_sell``); what that
  # does is in ``trap`` (``hard_sell_lift``, ``hard_sell_exit``).
  hard_sell_share: float = 0.2
  trap: TrapConfig = TrapConfig()
  retention: RetentionConfig = RetentionConfig()  # the multi-day closed loop's return visits

  @classmethod
  def from_dict(cls, config: dict) -> WorldConfig:
    """The config that ``dataclasses.asdict`` turned into ``config`` (e.g. a summary.json's)."""
    # JSON has no tuples: a tuple field comes back as a list.
    config = {k: tuple(v) if isinstance(v, list) else v for k, v in config.items()}
    # A strength the summary lacks was written by code without that mechanism: it was off (the
    # purchase exit was built in at 2.9 before it was a setting).
    config["trap"] = TrapConfig(**{**dataclasses.asdict(TrapConfig().scaled(0.0)),
                                   "purchase_exit": LEGACY_PURCHASE_EXIT,
                                   **config.get("trap", {})})
    config["retention"] = RetentionConfig(**config.get("retention", {}))
    return cls(**config)


SCALES: Dict[str, WorldConfig] = {
    "tiny": WorldConfig(n_users=150, n_hosts=30, n_items=800, n_categories=10, n_brands=30,
                        days=2),
    "small": WorldConfig(n_users=1_000, n_hosts=60, n_items=2_000, days=3),
    "default": WorldConfig(),
    # Few users with SIM/TWIN-scale histories (hundreds to ~10,000 purchases; mean ~1,400) for the
    # lifelong length settings: as many purchases in all as the default scale, 30x per user.
    "long_history": WorldConfig(n_users=300, n_hosts=60, n_items=3_000, days=2,
                                lifelong_purchases=(200.0, 1_000.0, 3_000.0),
                                max_lifelong_purchases=10_000),
}


class World:
  """Catalogue, hosts and users drawn from a :class:`WorldConfig`.

  Ids are 1-based everywhere (0 is the padding id of the examples); arrays are indexed by id, so
  index 0 is an unused row.
  """

  def __init__(self, config: WorldConfig):
    if config.n_users < 1 or config.n_hosts < 2 or config.days < 1:
      raise ValueError(f"WorldConfig needs n_users>=1, n_hosts>=2, days>=1; got {config}")
    if not 0.0 <= config.hard_sell_share <= 1.0:
      raise ValueError(f"WorldConfig.hard_sell_share must be in [0, 1]; got "
                       f"{config.hard_sell_share!r}")
    self.config = config
    rng = np.random.default_rng(config.seed)
    self._make_catalogue(rng)
    self._make_hosts(rng)
    self._make_users(rng)
    self._make_schedules(rng)

  # --- Catalogue ----------------------------------------------------------------------------------
  def _make_catalogue(self, rng: np.random.Generator) -> None:
    c = self.config
    self.n_shops = c.n_hosts + c.n_hosts // 2  # some shops sell only on the main site
    # Each shop sells from two categories; each brand belongs to one category.
    self.shop_categories = np.zeros((self.n_shops + 1, 2), np.int64)
    self.shop_categories[1:] = rng.integers(1, c.n_categories + 1, size=(self.n_shops, 2))
    self.brand_category = np.zeros(c.n_brands + 1, np.int64)
    self.brand_category[1:] = rng.integers(1, c.n_categories + 1, size=c.n_brands)
    cat_log_price = rng.normal(4.0, 0.8, size=c.n_categories + 1)
    self.item_shop = np.zeros(c.n_items + 1, np.int64)
    self.item_category = np.zeros(c.n_items + 1, np.int64)
    self.item_brand = np.zeros(c.n_items + 1, np.int64)
    self.item_price = np.zeros(c.n_items + 1, np.float64)
    shops = rng.integers(1, self.n_shops + 1, size=c.n_items)
    for i, shop in enumerate(shops, start=1):
      cat = self.shop_categories[shop, rng.integers(0, 2)]
      brands = np.flatnonzero(self.brand_category == cat)
      self.item_shop[i] = shop
      self.item_category[i] = cat
      self.item_brand[i] = rng.choice(brands) if len(brands) else rng.integers(1, c.n_brands + 1)
      self.item_price[i] = round(float(np.exp(rng.normal(cat_log_price[cat], 0.5))), 2)
    self.items_by_category: List[np.ndarray] = [
        np.flatnonzero(self.item_category == k) for k in range(c.n_categories + 1)]
    self.items_by_shop: List[np.ndarray] = [
        np.flatnonzero(self.item_shop == s) for s in range(self.n_shops + 1)]
    self.log_price_z = np.zeros_like(self.item_price)
    self.log_price_z[1:] = (np.log(self.item_price[1:]) - 4.0) / 0.9

  # --- Hosts ---------------------------------------------------------------------------------------
  def _make_hosts(self, rng: np.random.Generator) -> None:
    c = self.config
    n = c.n_hosts
    self.host_shop = np.arange(n + 1, dtype=np.int64)  # host h sells from shop h
    # A room's categories: its shop's two, plus sometimes a third.
    self.host_categories = np.zeros((n + 1, 3), np.int64)
    self.host_categories[1:, :2] = self.shop_categories[1:n + 1]
    third = rng.random(n) < 0.4
    self.host_categories[1:, 2] = np.where(third, rng.integers(1, c.n_categories + 1, n), 0)
    for h in range(1, n + 1):  # distinct categories, padded with 0
      uniq = list(dict.fromkeys(int(x) for x in self.host_categories[h] if x))
      self.host_categories[h] = uniq + [0] * (3 - len(uniq))
    # Category membership matrix [H+1, C+1] (1.0 where the room sells that category).
    self.host_cat_matrix = np.zeros((n + 1, c.n_categories + 1))
    for h in range(1, n + 1):
      for cat in self.host_categories[h]:
        if cat:
          self.host_cat_matrix[h, cat] = 1.0
    # Types: entertainers (watchable, sell little, often show no products), sellers (sell, bore),
    # and mixed rooms.
    kind = rng.choice(3, size=n, p=[0.25, 0.25, 0.5])
    self.host_entertain = np.zeros(n + 1)
    self.host_sell = np.zeros(n + 1)
    self.host_entertain[1:] = np.where(kind == 0, rng.uniform(0.7, 1.0, n),
                                       np.where(kind == 1, rng.uniform(0.0, 0.3, n),
                                                rng.uniform(0.3, 0.7, n)))
    self.host_sell[1:] = np.where(kind == 0, rng.uniform(0.0, 0.2, n),
                                  np.where(kind == 1, rng.uniform(0.7, 1.0, n),
                                           rng.uniform(0.3, 0.7, n)))
    self.host_is_entertainer = np.zeros(n + 1, bool)
    self.host_is_entertainer[1:] = kind == 0
    self.host_quality = np.zeros(n + 1)
    self.host_quality[1:] = rng.normal(0.0, 0.5, n)
    # Hard selling, from a stream of its own so every other draw (and every log written before
    # it existed) stays as it was.
    hard_rng = np.random.default_rng([c.seed, HARD_SELL_STREAM])
    hard = (kind != 0) & (hard_rng.random(n) < c.hard_sell_share)
    self.host_hard_sell = np.zeros(n + 1)
    self.host_hard_sell[1:] = np.where(hard, hard_rng.uniform(0.6, 1.0, n), 0.0)
    # Daily popularity: a random walk around a base level [D, H+1].
    base = rng.normal(0.0, 0.5, n + 1)
    walk = np.cumsum(rng.normal(0.0, 0.25, size=(c.days, n + 1)), axis=0)
    self.host_popularity = base[None, :] + walk

  # --- Users ---------------------------------------------------------------------------------------
  def _make_users(self, rng: np.random.Generator) -> None:
    c = self.config
    n = c.n_users
    self.user_activity = np.zeros(n + 1, np.int64)  # index into ACTIVITY_LEVELS
    self.user_activity[1:] = rng.choice(3, size=n, p=list(c.activity_mix))
    # Sparse long-term category preferences (rows sum to 1) and brand preferences.
    self.user_cat_pref = np.zeros((n + 1, c.n_categories + 1))
    self.user_cat_pref[1:, 1:] = rng.dirichlet(np.full(c.n_categories, 0.25), size=n)
    self.user_brand_pref = np.zeros((n + 1, c.n_brands + 1))
    brand_noise = rng.gamma(0.3, 1.0, size=(n, c.n_brands))
    self.user_brand_pref[1:, 1:] = brand_noise * self.user_cat_pref[1:, self.brand_category[1:]]
    self.user_brand_pref[1:, 1:] /= self.user_brand_pref[1:, 1:].sum(1, keepdims=True) + 1e-12
    self.user_price_sensitivity = np.zeros(n + 1)
    self.user_price_sensitivity[1:] = rng.normal(0.0, 1.0, n)
    self.user_entertain_taste = np.zeros(n + 1)
    self.user_entertain_taste[1:] = rng.beta(2.0, 2.0, n)
    self._make_lifelong_purchases(rng)

  def _make_lifelong_purchases(self, rng: np.random.Generator) -> None:
    """Main-site purchase history before the simulation starts, drawn from the preferences."""
    c = self.config
    self.purchases: List[dict] = []
    for u in range(1, c.n_users + 1):
      n_buy = int(min(c.max_lifelong_purchases,
                      rng.poisson(c.lifelong_purchases[self.user_activity[u]])) + 1)
      cats = rng.choice(c.n_categories + 1, size=n_buy, p=self.user_cat_pref[u])
      times = np.sort(EPOCH - rng.uniform(1, 365, n_buy) * DAY)
      choices: Dict[int, Tuple[np.ndarray, np.ndarray]] = {}  # a user buys again in a category
      for cat, ts in zip(cats, times):
        if cat not in choices:
          choices[cat] = self.item_choice(u, int(cat))
        pool, cdf = choices[cat]
        item = int(pool[draw_from_cdf(rng, cdf)])
        self.purchases.append({
            "user_id": u, "item_id": item, "category_id": int(self.item_category[item]),
            "brand_id": int(self.item_brand[item]), "shop_id": int(self.item_shop[item]),
            "price": float(self.item_price[item]), "weight": int(rng.integers(1, 4)),
            "stay_seconds": round(float(rng.lognormal(3.5, 0.6)), 1), "ts": round(float(ts), 3)})

  def item_choice(self, user: int, category: int,
                  candidates: np.ndarray | None = None) -> Tuple[np.ndarray, np.ndarray]:
    """The items the user chooses among and the cumulative distribution of the choice, for
    drawing many times from one (user, category) with ``draw_from_cdf``."""
    pool = self.items_by_category[category] if candidates is None else candidates
    if len(pool) == 0:
      pool = np.arange(1, self.config.n_items + 1)
    logits = (3.0 * self.user_brand_pref[user, self.item_brand[pool]] * len(self.user_brand_pref[0])
              - 0.8 * self.user_price_sensitivity[user] * self.log_price_z[pool])
    p = np.exp(logits - logits.max())
    return pool, choice_cdf(p / p.sum())

  def pick_item(self, rng: np.random.Generator, user: int, category: int,
                candidates: np.ndarray | None = None) -> int:
    """An item the user would choose: brand preference and price sensitivity weigh the choice."""
    pool, cdf = self.item_choice(user, category, candidates)
    return int(pool[draw_from_cdf(rng, cdf)])

  # --- Schedules, hot windows, displays ------------------------------------------------------------
  def _make_schedules(self, rng: np.random.Generator) -> None:
    """Each day each room is live for one stint (or not at all), maybe with a flash-sale window."""
    c = self.config
    self.stints: List[Tuple[int, float, float, float]] = []  # (host, start, end, hot_start or -1)
    self.displays: List[dict] = []
    for d in range(c.days):
      for h in range(1, c.n_hosts + 1):
        if rng.random() > 0.85:
          continue
        start = EPOCH + d * DAY + rng.uniform(8, 20) * HOUR
        end = start + rng.uniform(2, 5) * HOUR
        hot = start + rng.uniform(0, end - start - HOT_WINDOW_SECONDS) if rng.random() < 0.35 else -1
        self.stints.append((h, start, end, hot))
        refreshes = []
        t = start
        while t < end:
          refreshes.append({"host_id": h, "ts": round(t, 3),
                            "item_ids": self._display_items(rng, h)})
          t += DISPLAY_REFRESH_SECONDS
        self.displays += flash_sale_displays(refreshes, hot, end)
    self.stints.sort(key=lambda s: s[1])
    self._stint_arr = np.array([s[1:] for s in self.stints]).reshape(-1, 3)
    self._stint_host = np.array([s[0] for s in self.stints], np.int64)
    self._display_index: Dict[int, List[Tuple[float, List[int]]]] = {}
    for disp in self.displays:
      self._display_index.setdefault(disp["host_id"], []).append((disp["ts"], disp["item_ids"]))

  def _display_items(self, rng: np.random.Generator, host: int) -> List[int]:
    # Entertainers mostly show no products; that is where a purchase cannot happen.
    if self.host_is_entertainer[host] and rng.random() < 0.7:
      return []
    pool = self.items_by_shop[self.host_shop[host]]
    if len(pool) == 0:
      return []
    k = min(self.config.display_top_n, len(pool))
    return [int(i) for i in rng.choice(pool, size=k, replace=False)]

  def live_hosts(self, t: float) -> Tuple[np.ndarray, np.ndarray]:
    """Hosts live at time t and whether each is inside a hot (flash-sale) window."""
    s = self._stint_arr
    live = (s[:, 0] <= t) & (t < s[:, 1])
    hot = live & (s[:, 2] >= 0) & (s[:, 2] <= t) & (t < s[:, 2] + HOT_WINDOW_SECONDS)
    return self._stint_host[live], hot[live]

  def displayed_items(self, host: int, t: float) -> List[int]:
    """The room's top-N products as displayed at time t (latest refresh at or before t)."""
    current: List[int] = []
    for ts, items in self._display_index.get(host, []):
      if ts > t:
        break
      current = items
    return current

  def popularity(self, host: int, t: float) -> float:
    # Plain min/max: np.clip on a scalar was a third of the simulator's time.
    day = int(min(max((t - EPOCH) // DAY, 0), self.config.days - 1))
    return float(self.host_popularity[day, host])

  def session_day_windows(self) -> List[Tuple[float, float]]:
    """(start, end) of the part of each day in which rooms are live."""
    return [(EPOCH + d * DAY + 8.5 * HOUR, EPOCH + d * DAY + 23.5 * HOUR)
            for d in range(self.config.days)]
