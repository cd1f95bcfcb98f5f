"""The "reachable" ceiling: the truth recomputed with the user's hidden traits replaced by estimates.

The oracle (``Behaviour.truth``) knows each user's true category and brand preference, price
sensitivity and entertainment taste. No model sees those; what the logs reveal about a user's
long-term taste is the lifelong main-site purchase history. :class:`ReachableEstimator` replaces
each hidden trait by its posterior mean under the world's own priors (equations in
``data_gen/README.md``, section "Reachable ceiling") and keeps everything a model can observe or
learn (room traits, hot windows, popularity, displayed products, real-time appetite, fatigue).
Three ablations drop the appetite, the lifelong estimate, or both, so the report can say how much
of the reachable lift a model captures; a fourth keeps only the appetite the session's trigger item
explains, the ceiling without the real-time feedback sequences.

The estimate is a plug-in (the equations evaluated at posterior means), not the full posterior
predictive, and it ignores what the in-log behaviour reveals about a user (interactions,
purchases during the simulated days), so it is a reference level, not a strict upper bound.
"""

from __future__ import annotations

from typing import Dict, Iterable, List, Sequence, Tuple

import numpy as np

from data_gen import behaviour as bh
from data_gen.world import World

# Priors of the world's user traits (``World._make_users``).
CATEGORY_PRIOR = 0.25  # pref_u ~ Dirichlet(.25 * 1_C)
BRAND_PRIOR = 0.3  # brand weight g_b ~ Gamma(.3, 1): the pseudo-count of a brand within its category
PRICE_SENSITIVITY_PRIOR_MEAN = 0.0  # ps_u ~ N(0, 1)
ENTERTAIN_TASTE_PRIOR_MEAN = 0.5  # ent_u ~ Beta(2, 2)

# The ceilings written per impression: the variant name and what it keeps.
REACHABLE = "reachable"  # lifelong estimate + real-time appetite
NO_APPETITE = "reachable_no_appetite"  # lifelong estimate, appetite zeroed
NO_LIFELONG = "reachable_no_lifelong"  # prior-mean (uniform) preferences + appetite
NEITHER = "reachable_neither"  # prior-mean preferences, appetite zeroed
# Lifelong estimate, and only the appetite the session's trigger item put there: the ceiling of a
# model that sees the trigger but not the real-time feedback sequences.
NO_RT_SEQUENCES = "reachable_no_rt_sequences"
VARIANTS = (REACHABLE, NO_APPETITE, NO_LIFELONG, NEITHER, NO_RT_SEQUENCES)
# Truth fields (``Truth`` attributes) that get a reachable version: the heads the models predict.
HEAD_FIELDS = ("p_effective_view", "p_interact", "p_buy")


def field_name(head_field: str, variant: str) -> str:
  """Name of a reachable column in ground_truth.jsonl, e.g. ``p_buy_reachable_no_appetite``."""
  if head_field not in HEAD_FIELDS or variant not in VARIANTS:
    raise KeyError(f"no reachable field for {head_field!r} x {variant!r}; heads {HEAD_FIELDS}, "
                   f"variants {VARIANTS}")
  return f"{head_field}_{variant}"


# Every reachable column of ground_truth.jsonl; the simulator writes them, the reports read them.
REACHABLE_FIELDS = tuple(field_name(h, v) for h in HEAD_FIELDS for v in VARIANTS)
# ((head field, column name), ...) per variant, in VARIANTS order: spelled once, not per impression.
_NAMES_BY_VARIANT = tuple(tuple((h, field_name(h, v)) for h in HEAD_FIELDS) for v in VARIANTS)


def purchase_counts(purchases: Iterable[dict], n_users: int, n_categories: int,
                    n_brands: int) -> Tuple[np.ndarray, np.ndarray]:
  """Per-user counts of lifelong purchases by category [U+1, C+1] and by brand [U+1, B+1]."""
  recs = [(p["user_id"], p["category_id"], p["brand_id"]) for p in purchases]
  cat_counts = np.zeros((n_users + 1, n_categories + 1))
  brand_counts = np.zeros((n_users + 1, n_brands + 1))
  if recs:
    u, c, b = np.array(recs, np.int64).T
    np.add.at(cat_counts, (u, c), 1.0)
    np.add.at(brand_counts, (u, b), 1.0)
  return cat_counts, brand_counts


def posterior_category_pref(cat_counts: np.ndarray, prior: float = CATEGORY_PRIOR) -> np.ndarray:
  """Posterior mean of a Dirichlet(prior) preference given counts: (prior + n_c) / (prior C + N).

  Args:
    cat_counts: [U, C+1] purchase counts per category; column 0 is the unused padding id.

  Returns:
    [U, C+1] rows summing to 1 (column 0 stays 0).
  """
  n = cat_counts[:, 1:]
  out = np.zeros_like(cat_counts, dtype=np.float64)
  out[:, 1:] = (prior + n) / (prior * n.shape[1] + n.sum(1, keepdims=True))
  return out


def posterior_brand_pref(cat_pref: np.ndarray, brand_counts: np.ndarray,
                         brand_category: np.ndarray, prior: float = BRAND_PRIOR) -> np.ndarray:
  """Plug-in posterior brand preference, hierarchical through the brand's category.

  The world draws ``brand_pref_b ∝ g_b pi_c(b)`` with ``g_b ~ Gamma(prior)``. Split ``g_b`` into
  the category total ``G_c = sum_{b in c} g_b ~ Gamma(prior K_c)`` and the within-category share
  ``s_b = g_b / G_c ~ Dirichlet(prior)`` over the ``K_c`` brands of category c (independent).
  Each factor is replaced by its posterior mean: ``pi_c`` by ``cat_pref``, ``s_b`` by
  ``(prior + n_b) / (prior K_c + N_c)`` (``N_c``: purchases of brands of c), ``G_c`` by its prior
  mean ``prior K_c`` (brand counts within a category say nothing about it). So
  ``brand_b ∝ cat_pref_c K_c (prior + n_b) / (prior K_c + N_c)``, normalised over brands. With no
  purchases this is uniform, 1/B, which is the exact prior mean of every brand's preference.

  Args:
    cat_pref: [U, C+1] category preference estimate.
    brand_counts: [U, B+1] purchase counts per brand; column 0 is the padding id.
    brand_category: [B+1] category of each brand.

  Returns:
    [U, B+1] rows summing to 1 (column 0 stays 0).
  """
  cats = brand_category[1:]
  n_cats = cat_pref.shape[1]
  k = np.bincount(cats, minlength=n_cats).astype(np.float64)  # brands per category
  n_b = brand_counts[:, 1:]
  n_c = np.zeros((len(n_b), n_cats))
  np.add.at(n_c.T, cats, n_b.T)  # purchases of each category's brands
  share = (prior + n_b) / (prior * k[cats] + n_c[:, cats])
  raw = cat_pref[:, cats] * k[cats] * share
  out = np.zeros_like(brand_counts, dtype=np.float64)
  out[:, 1:] = raw / raw.sum(1, keepdims=True)
  return out


class ReachableEstimator:
  """Per-user trait estimates from the lifelong purchases, computed once for the whole world."""

  def __init__(self, world: World, purchases: Sequence[dict] | None = None):
    """Estimates every user's traits.

    Args:
      world: The world (catalogue: brands' categories; sizes).
      purchases: Lifelong purchase records (as in purchases.jsonl); default ``world.purchases``.
    """
    c = world.config
    cat_counts, brand_counts = purchase_counts(
        world.purchases if purchases is None else purchases, c.n_users, c.n_categories,
        c.n_brands)
    self.cat_pref = posterior_category_pref(cat_counts)
    self.brand_pref = posterior_brand_pref(self.cat_pref, brand_counts, world.brand_category)
    uniform_cat = posterior_category_pref(np.zeros((1, c.n_categories + 1)))[0]
    uniform_brand = posterior_brand_pref(uniform_cat[None], np.zeros((1, c.n_brands + 1)),
                                         world.brand_category)[0]
    self.prior_traits = bh.UserTraits(
        cat_pref=uniform_cat, brand_pref=uniform_brand,
        price_sensitivity=PRICE_SENSITIVITY_PRIOR_MEAN,
        entertain_taste=ENTERTAIN_TASTE_PRIOR_MEAN)

  def traits(self, user: int) -> bh.UserTraits:
    """What the lifelong purchases reveal about ``user``; the rest at prior means."""
    return bh.UserTraits(cat_pref=self.cat_pref[user], brand_pref=self.brand_pref[user],
                         price_sensitivity=PRICE_SENSITIVITY_PRIOR_MEAN,
                         entertain_taste=ENTERTAIN_TASTE_PRIOR_MEAN)

  def variants(self, user: int) -> List[Tuple[bh.UserTraits, str]]:
    """``(traits, appetite source)`` of each of :data:`VARIANTS`, in order."""
    own, prior = self.traits(user), self.prior_traits
    return [(own, bh.APPETITE_FULL), (own, bh.APPETITE_NONE), (prior, bh.APPETITE_FULL),
            (prior, bh.APPETITE_NONE), (own, bh.APPETITE_TRIGGER_ONLY)]

  def fields(self, behaviour: bh.Behaviour, user: int, state: bh.UserState, host: int, t: float,
             hot: bool, slot: int) -> Tuple[bh.Truth, Dict[str, float]]:
    """The oracle truth and the :data:`REACHABLE_FIELDS` of one impression, in one pass.

    Call it before the impression's outcome moves ``state``: the ceilings see the same appetite
    and fatigue as the oracle.

    Returns:
      (the oracle :class:`Truth`, {reachable field: probability}).
    """
    truths = behaviour.truths(user, state, host, t, hot, slot,
                              [(None, bh.APPETITE_FULL)] + self.variants(user))
    values = {name: float(getattr(tr, h))
              for names, tr in zip(_NAMES_BY_VARIANT, truths[1:]) for h, name in names}
    return truths[0], values
