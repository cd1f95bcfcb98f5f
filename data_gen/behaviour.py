"""How a user responds to a shown live room, and how a session of full-screen slots unfolds.

The equations are stated in ``data_gen/README.md``. ``Behaviour.truth`` returns the exact
probabilities / expected values of every objective for one (user state, room, time); sampling draws
the outcome from those same numbers, so the logged ground truth is the Bayes-optimal predictor.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Callable, Dict, List, NamedTuple, Sequence, Tuple

import numpy as np

from data_gen.log_format import EFFECTIVE_VIEW_SECONDS, QUICK_SWIPE_SECONDS
from data_gen.world import TrapConfig, World

APPETITE_DECAY_PER_SLOT = 0.85
TRIGGER_APPETITE_BUMP = 0.8  # a session's trigger item raises the appetite for its category
# Feedback moves the appetite on the room's categories: an effective view (or an interaction)
# raises it, a like raises it further, a quick swipe-away lowers it.
VIEW_APPETITE_BUMP, LIKE_APPETITE_BUMP, QUICK_SWIPE_APPETITE_BUMP = 0.5, 0.3, -0.7
# Which real-time appetite a truth is computed with (the reachable ceilings' ablations): all of it,
# none, or only the part the session's trigger item put there (what a model that sees the trigger
# but no feedback sequence can know). The appetite is linear in its sources, so the trigger part
# is exact: the trigger's bump decayed like the rest. The trigger-only truth also leaves out the
# satiation: the purchases that raise it are feedback events, in no feature but the sequences.
APPETITE_FULL, APPETITE_NONE, APPETITE_TRIGGER_ONLY = "full", "none", "trigger_only"
APPETITE_SOURCES = (APPETITE_FULL, APPETITE_NONE, APPETITE_TRIGGER_ONLY)
APPETITE_HALF_LIFE_SECONDS = 4 * 3600.0
# The greedy trap's state (strengths in ``world.TrapConfig``): satiation after a purchase fades
# per slot and, between sessions, with a half-life; sales pressure fades per slot and is gone by
# the next session.
SATIATION_DECAY_PER_SLOT = 0.9
SATIATION_HALF_LIFE_SECONDS = 24 * 3600.0
SALES_PRESSURE_DECAY_PER_SLOT = 0.7
# Leave-logit offsets by what happened in the slot (a purchase adds TrapConfig.purchase_exit to
# the view offset).
LEAVE_BASE = -2.0
LEAVE_OFFSETS = {"quick": 0.9, "no_view": 0.3, "view": -0.7}


def sigmoid(x: float) -> float:
  return 1.0 / (1.0 + math.exp(-x))


@dataclasses.dataclass
class UserState:
  """Real-time state of one user: momentary category appetite and within-session fatigue."""
  appetite: np.ndarray  # [C+1], moved by feedback, decays
  last_ts: float = 0.0
  shown_category_counts: np.ndarray | None = None  # [C+1] in the current session
  satiation: np.ndarray | None = None  # [C+1] raised by purchases, decays
  sales_pressure: float = 0.0  # decayed sum of the shown rooms' selling strength this session
  # [C+1] the current session's trigger bump as it has decayed so far: the part of ``appetite``
  # the trigger item explains (ground truth for the ceilings only; it moves nothing).
  trigger_appetite: np.ndarray | None = None
  # The rooms shown since the state began, oldest first: what the platform has logged about the
  # user, for a ranker that builds features from it (kept only when asked: the log writer's
  # states live for all days).
  history: List[ShownRoom] | None = None


@dataclasses.dataclass(frozen=True)
class ShownRoom:
  """One shown room and how the user responded: a logged impression, as a ranker may see it."""
  session_id: int
  host_id: int
  ts: float
  slot: int
  trigger_item_id: int
  outcome: Outcome


@dataclasses.dataclass(frozen=True)
class UserTraits:
  """A user's hidden long-term traits: all the response model knows about the person.

  ``Behaviour.truth`` reads them from the world by default; passing an estimate instead gives the
  ceiling of a predictor that only knows that estimate (``data_gen/reachable.py``).
  """
  cat_pref: np.ndarray  # [C+1], index 0 unused; sums to 1
  brand_pref: np.ndarray  # [B+1], index 0 unused; sums to 1
  price_sensitivity: float
  entertain_taste: float


class _Room(NamedTuple):
  """The user-trait-free terms of one impression (room, time, real-time state)."""
  cats: np.ndarray  # [C+1] the room's category membership
  appetite: float
  trigger_appetite: float
  fatigue: float
  satiation: float
  sales_pressure: float
  quality: float
  pop: float
  hot: float
  slot: int
  entertain: float
  sell: float
  hard_sell: float
  display_brands: np.ndarray | None  # brands of the displayed items; None: nothing displayed
  price_z: float
  order_value: float


@dataclasses.dataclass(frozen=True)
class Truth:
  """Exact probabilities / expected values of each objective for one impression."""
  p_effective_view: float
  p_interact: float
  p_item_click: float
  p_add_to_cart: float
  p_purchase: float
  p_buy: float
  p_swipe_down: float
  e_stay_seconds: float
  e_gmv: float
  # Conditional pieces the sampler uses.
  p_interact_given_view: float
  p_click_given_view: float
  p_cart_given_click: float
  p_direct_buy_given_click: float
  p_purchase_given_cart: float
  p_quick_given_no_view: float
  p_leave: Dict[str, float]
  mean_stay_view: float
  expected_order_value: float


@dataclasses.dataclass
class Outcome:
  """One sampled impression outcome; times are seconds after the impression."""
  stay_seconds: float
  effective_view: bool
  like: bool
  comment: bool
  share: bool
  follow: bool
  item_click: bool
  add_to_cart: bool
  purchase: bool
  gmv: float
  purchased_item: int
  swipe_down: bool  # True: the user swiped on to the next slot; False: left the session
  action_offsets: Dict[str, float]


class Behaviour:
  """The user response model on top of a :class:`World`."""

  def __init__(self, world: World, trap: TrapConfig | None = None):
    """The response model of ``world``; ``trap`` replaces the world config's trap strengths."""
    self.world = world
    self.trap = world.config.trap if trap is None else trap

  def new_state(self, keep_history: bool = False) -> UserState:
    """A user with no real-time state; ``keep_history`` records the rooms shown from now on."""
    c = self.world.config.n_categories
    return UserState(appetite=np.zeros(c + 1), shown_category_counts=np.zeros(c + 1),
                     trigger_appetite=np.zeros(c + 1), satiation=np.zeros(c + 1),
                     history=[] if keep_history else None)

  def start_session(self, state: UserState, t: float, trigger_category: int) -> None:
    """Decay the appetite and satiation since the last activity; the trigger raises appetite."""
    if state.last_ts:
      state.appetite *= 0.5 ** ((t - state.last_ts) / APPETITE_HALF_LIFE_SECONDS)
      state.satiation *= 0.5 ** ((t - state.last_ts) / SATIATION_HALF_LIFE_SECONDS)
    state.sales_pressure = 0.0
    state.appetite[trigger_category] += TRIGGER_APPETITE_BUMP
    state.trigger_appetite = np.zeros_like(state.appetite)
    state.trigger_appetite[trigger_category] = TRIGGER_APPETITE_BUMP
    state.shown_category_counts = np.zeros_like(state.appetite)

  # --- Utilities -----------------------------------------------------------------------------------
  def user_traits(self, user: int) -> UserTraits:
    """The user's true hidden traits, as the world drew them."""
    w = self.world
    return UserTraits(cat_pref=w.user_cat_pref[user], brand_pref=w.user_brand_pref[user],
                      price_sensitivity=float(w.user_price_sensitivity[user]),
                      entertain_taste=float(w.user_entertain_taste[user]))

  def truth(self, user: int, state: UserState, host: int, t: float, hot: bool, slot: int,
            traits: UserTraits | None = None, appetite: str = APPETITE_FULL) -> Truth:
    """Exact objective probabilities for showing ``host`` to ``user`` now.

    Args:
      user: User id.
      state: The user's real-time state (appetite, fatigue).
      host: Room id.
      t: Time of the impression.
      hot: Whether the room is in a hot window.
      slot: Slot index in the session.
      traits: Hidden user traits to use instead of the true ones (an estimate, for the ceilings in
        ``data_gen/reachable.py``); None uses the world's true traits.
      appetite: Which real-time appetite to use, one of :data:`APPETITE_SOURCES` (fatigue is
        always kept).

    Returns:
      The :class:`Truth` of the impression.
    """
    return self.truths(user, state, host, t, hot, slot, [(traits, appetite)])[0]

  def truths(self, user: int, state: UserState, host: int, t: float, hot: bool, slot: int,
             variants: Sequence[Tuple[UserTraits | None, str]]) -> List[Truth]:
    """:meth:`truth` for several ``(traits, appetite source)`` variants of the same impression.

    The room-side terms (displayed items, popularity, fatigue) are looked up once; the simulator
    writes the oracle and the reachable ceilings for every impression, so this keeps that cheap.
    """
    w = self.world
    cats = w.host_cat_matrix[host]
    display = w.displayed_items(host, t)
    room = _Room(
        cats=cats, appetite=float(state.appetite @ cats),  # real-time interest
        trigger_appetite=(float(state.trigger_appetite @ cats)
                          if state.trigger_appetite is not None else 0.0),
        fatigue=float(state.shown_category_counts @ cats),  # repeated categories this session
        satiation=float(state.satiation @ cats) if state.satiation is not None else 0.0,
        sales_pressure=state.sales_pressure,
        quality=float(w.host_quality[host]), pop=w.popularity(host, t), hot=float(hot),
        slot=slot, entertain=float(w.host_entertain[host]), sell=float(w.host_sell[host]),
        hard_sell=float(w.host_hard_sell[host]),
        display_brands=w.item_brand[display] if display else None,
        price_z=float(np.mean(w.log_price_z[display])) if display else 0.0,
        order_value=float(np.mean(w.item_price[display])) if display else 0.0)
    own = None
    out = []
    for traits, appetite in variants:
      if appetite not in APPETITE_SOURCES:
        raise ValueError(f"appetite source {appetite!r} is not one of {APPETITE_SOURCES}")
      if traits is None:
        if own is None:
          own = self.user_traits(user)
        traits = own
      out.append(self._respond(room, traits, appetite))
    return out

  def _respond(self, room: _Room, traits: UserTraits, appetite_source: str) -> Truth:
    """The response equations of README.md for one room context and one set of user traits."""
    aff = float(traits.cat_pref @ room.cats)  # [0, 1]: long-term interest
    trap = self.trap
    appetite = {APPETITE_FULL: room.appetite, APPETITE_NONE: 0.0,
                APPETITE_TRIGGER_ONLY: room.trigger_appetite}[appetite_source]
    fatigue, hot, q = room.fatigue, room.hot, room.quality
    satiation = 0.0 if appetite_source == APPETITE_TRIGGER_ONLY else room.satiation
    ent = room.entertain * traits.entertain_taste
    z_view = (-1.3 + 3.0 * aff + 0.9 * appetite + 0.6 * q + 0.4 * room.pop
              + 0.7 * hot + 1.6 * ent - 0.35 * fatigue - 0.02 * room.slot)
    p_view = sigmoid(z_view)
    p_int_v = sigmoid(-1.6 + 3.0 * ent + 1.0 * aff + 0.5 * q + 0.4 * appetite)
    if room.display_brands is not None:
      # The mean of the displayed brands' preference (sum / n is what np.mean computes, without
      # its overhead: this runs five times per logged impression).
      brand_aff = (float(traits.brand_pref[room.display_brands].sum())
                   / len(room.display_brands) * self.world.config.n_brands)
      ps, price_z = traits.price_sensitivity, room.price_z
      p_click_v = sigmoid(-1.8 + 2.4 * room.sell + 0.6 * min(brand_aff, 3.0)
                          + 1.5 * aff + 0.9 * hot - trap.satiation * satiation
                          + trap.hard_sell_lift * room.hard_sell)
      p_cart_c = sigmoid(-0.9 + 0.8 * room.sell - 0.6 * ps * price_z + 0.5 * hot)
      p_direct_c = sigmoid(-3.0 + 1.2 * hot - 0.4 * ps * price_z)
      p_purchase_cart = sigmoid(-1.0 + 0.9 * hot - 0.5 * ps * price_z + 0.8 * aff)
    else:
      p_click_v = p_cart_c = p_direct_c = p_purchase_cart = 0.0
    p_quick_nv = sigmoid(-z_view - 0.3)

    p_click = p_view * p_click_v
    p_cart = p_click * p_cart_c
    p_purchase_c = p_cart_c * p_purchase_cart + (1 - p_cart_c) * p_direct_c
    p_purchase = p_click * p_purchase_c
    p_buy = p_click * (1 - (1 - p_cart_c) * (1 - p_direct_c))
    # Leaving the session: a purchase often ends it, a quick swipe-away and fatigue push out, a
    # good view keeps the user swiping.
    # Hard selling after hard selling, and a hard-selling room itself, push the user out too (the
    # greedy trap).
    base = (LEAVE_BASE + 0.18 * fatigue + 0.04 * room.slot
            + trap.sales_pressure * room.sell * (1.0 + room.sales_pressure)
            + trap.hard_sell_exit * room.hard_sell)
    p_leave = {k: sigmoid(base + v) for k, v in LEAVE_OFFSETS.items()}
    p_leave["purchase"] = sigmoid(base + LEAVE_OFFSETS["view"] + trap.purchase_exit)
    p_no_view = 1 - p_view
    leave = (p_no_view * (p_quick_nv * p_leave["quick"] + (1 - p_quick_nv) * p_leave["no_view"])
             + (p_view - p_purchase) * p_leave["view"] + p_purchase * p_leave["purchase"])
    mean_stay_view = 25.0 + 60.0 * ent + 40.0 * aff + 20.0 * q
    mean_stay_view = max(mean_stay_view, 15.0)
    e_stay = (p_no_view * (p_quick_nv * 1.75 + (1 - p_quick_nv) * 6.5)
              + p_view * (EFFECTIVE_VIEW_SECONDS + mean_stay_view))
    return Truth(
        p_effective_view=p_view, p_interact=p_view * p_int_v, p_item_click=p_click,
        p_add_to_cart=p_cart, p_purchase=p_purchase, p_buy=p_buy, p_swipe_down=1 - leave,
        e_stay_seconds=e_stay, e_gmv=p_purchase * room.order_value,
        p_interact_given_view=p_int_v, p_click_given_view=p_click_v, p_cart_given_click=p_cart_c,
        p_direct_buy_given_click=p_direct_c, p_purchase_given_cart=p_purchase_cart,
        p_quick_given_no_view=p_quick_nv, p_leave=p_leave, mean_stay_view=mean_stay_view,
        expected_order_value=room.order_value)

  def sample(self, rng: np.random.Generator, user: int, host: int, t: float,
             truth: Truth) -> Outcome:
    """Draw one outcome from ``truth``."""
    view = rng.random() < truth.p_effective_view
    offsets: Dict[str, float] = {}
    like = comment = share = follow = click = cart = purchase = False
    gmv, item = 0.0, 0
    if view:
      stay = EFFECTIVE_VIEW_SECONDS + float(rng.exponential(truth.mean_stay_view))
      if rng.random() < truth.p_interact_given_view:
        like = True
        comment = rng.random() < 0.4
        share = rng.random() < 0.2
        follow = rng.random() < 0.3
      if rng.random() < truth.p_click_given_view:
        click = True
        cart = rng.random() < truth.p_cart_given_click
        p_buy = truth.p_purchase_given_cart if cart else truth.p_direct_buy_given_click
        if rng.random() < p_buy:
          purchase = True
          display = self.world.displayed_items(host, t)
          item = self.world.pick_item(rng, user, 0, candidates=np.array(display))
          gmv = round(float(self.world.item_price[item]), 2)
      for name, flag in (("like", like), ("comment", comment), ("share", share),
                         ("follow", follow), ("item_click", click), ("add_to_cart", cart),
                         ("purchase", purchase)):
        if flag:
          offsets[name] = float(rng.uniform(0.5, stay - 0.5))
      # Funnel order in time: click before cart before purchase.
      for a, b in (("item_click", "add_to_cart"), ("add_to_cart", "purchase"),
                   ("item_click", "purchase")):
        if a in offsets and b in offsets and offsets[b] < offsets[a]:
          offsets[a], offsets[b] = offsets[b], offsets[a]
      leave_p = truth.p_leave["purchase" if purchase else "view"]
    else:
      quick = rng.random() < truth.p_quick_given_no_view
      stay = (float(rng.uniform(0.5, QUICK_SWIPE_SECONDS)) if quick
              else float(rng.uniform(QUICK_SWIPE_SECONDS, EFFECTIVE_VIEW_SECONDS)))
      leave_p = truth.p_leave["quick" if quick else "no_view"]
    swipe_down = rng.random() >= leave_p
    return Outcome(stay_seconds=round(stay, 3), effective_view=view, like=like, comment=comment,
                   share=share, follow=follow, item_click=click, add_to_cart=cart,
                   purchase=purchase, gmv=gmv, purchased_item=item, swipe_down=swipe_down,
                   action_offsets=offsets)

  def update_state(self, state: UserState, host: int, outcome: Outcome, t_end: float) -> None:
    """Feedback moves the appetite: engagement raises similar rooms, a quick swipe lowers them."""
    cats = self.world.host_cat_matrix[host]
    state.appetite *= APPETITE_DECAY_PER_SLOT
    if state.trigger_appetite is not None:
      state.trigger_appetite *= APPETITE_DECAY_PER_SLOT
    if outcome.effective_view or outcome.like:
      state.appetite += cats * (VIEW_APPETITE_BUMP + (LIKE_APPETITE_BUMP if outcome.like else 0.0))
    elif outcome.stay_seconds < QUICK_SWIPE_SECONDS:
      state.appetite += cats * QUICK_SWIPE_APPETITE_BUMP
    state.shown_category_counts += cats
    state.satiation *= SATIATION_DECAY_PER_SLOT
    if outcome.purchase:
      state.satiation += cats
    state.sales_pressure = (SALES_PRESSURE_DECAY_PER_SLOT * state.sales_pressure
                            + float(self.world.host_sell[host]))
    state.last_ts = t_end


# --- Policies ----------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class SlotContext:
  """What a policy sees when it picks the room for the next slot."""
  user_id: int
  timestamp: float
  slot_index: int
  trigger_item_id: int
  candidate_host_ids: np.ndarray  # [N] live rooms not yet shown in this session
  candidate_hot: np.ndarray  # [N] bool; a real system sees this only through host statistics
  shown_host_ids: Sequence[int]
  truths: List[Truth] | None = None  # filled only for oracle policies
  session_id: int = 0
  # The user's rooms shown before this slot (``UserState.history``), oldest first; empty when
  # the state keeps no history.
  past: Sequence[ShownRoom] = ()


# A policy returns one score per candidate; the simulator shows the highest-scoring room.
Policy = Callable[[SlotContext], np.ndarray]


class LoggingPolicy:
  """The stochastic production ranker whose impressions are logged, with exploration.

  Scores rooms by a noisy view of long-term interest, popularity and relevance to the trigger
  item; samples from a softmax with temperature, mixed with epsilon-uniform exploration.
  """

  def __init__(self, world: World, temperature: float = 0.7, epsilon: float = 0.1,
               noise: float = 0.6, seed: int = 0):
    self.world = world
    self.temperature = temperature
    self.epsilon = epsilon
    rng = np.random.default_rng(seed)
    # The production model's imperfect estimate of user preferences.
    self._pref_estimate = np.clip(
        world.user_cat_pref + rng.normal(0, noise * 0.1, world.user_cat_pref.shape), 0, None)

  def probabilities(self, ctx: SlotContext) -> np.ndarray:
    w = self.world
    hosts = ctx.candidate_host_ids
    trigger_cat = w.item_category[ctx.trigger_item_id]
    score = (2.5 * (w.host_cat_matrix[hosts] @ self._pref_estimate[ctx.user_id])
             + 0.4 * np.array([w.popularity(h, ctx.timestamp) for h in hosts])
             + 1.0 * w.host_cat_matrix[hosts, trigger_cat])
    z = score / self.temperature
    p = np.exp(z - z.max())
    p /= p.sum()
    return (1 - self.epsilon) * p + self.epsilon / len(hosts)

  def __call__(self, ctx: SlotContext) -> np.ndarray:
    return self.probabilities(ctx)


def oracle_greedy_policy(objective: str = "p_buy") -> Policy:
  """Greedy ranker that knows the truth: picks the room with the highest true ``objective``."""
  def policy(ctx: SlotContext) -> np.ndarray:
    if ctx.truths is None:
      raise ValueError("oracle_greedy_policy needs SlotContext.truths (run with oracle=True)")
    return np.array([getattr(tr, objective) for tr in ctx.truths])
  return policy


def random_policy(seed: int = 0) -> Policy:
  rng = np.random.default_rng(seed)
  return lambda ctx: rng.random(len(ctx.candidate_host_ids))
