"""Single source of every raw feature, label and transformed-feature name.

The ExampleGen writes these raw features, the curated schema declares them, Transform reads them,
and the models read the transformed names. Nothing else spells a feature name as a string literal.

The real-time and session sequences travel as fixed-length padded features plus an explicit
``*_len`` feature. The lifelong purchases travel variable-length (exactly ``ll_len`` values per field,
at most the lifelong length; a history of 10 is not stored as 10,000): Transform pads them to the
lifelong length the model reads. Requests stay serialized tf.Examples either way, which fits TF
Serving's tensor signatures. Padding value is 0 for ids and 0.0 for floats; real ids are >= 1.
"""

from __future__ import annotations

import dataclasses
from typing import Dict, List, Tuple

from data_gen import log_format as lf

# --- Sequence lengths (defaults; one pipeline setting each, checked against the schema when the ---
# pipeline is built: ``pipeline.create_pipeline``).
REALTIME_SEQ_LEN = 50
LIFELONG_SEQ_LEN = 256
MAX_LIFELONG_SEQ_LEN = 10_000  # the longest lifelong history a model may read
SESSION_HOSTS_LEN = 10
DISPLAY_TOP_N = 6
HOST_MAX_CATEGORIES = 3

# --- Thresholds that define positive / negative real-time feedback and effective view (seconds). --
# The log format owns them (the simulator's ground truth uses the same numbers). The positive
# (high-pass) sequence is "an effective view or any interaction" and the negative (low-pass) one
# "a quick swipe-away without interaction": the same events that move a user's real-time appetite
# in the simulator, and the same "engaged" the triplet loss is labelled with.
EFFECTIVE_VIEW_SECONDS = lf.EFFECTIVE_VIEW_SECONDS
POSITIVE_STAY_SECONDS = lf.EFFECTIVE_VIEW_SECONDS
NEGATIVE_STAY_SECONDS = lf.QUICK_SWIPE_SECONDS
# Stay-time bucket boundaries (seconds) used for sequence items.
STAY_BUCKET_BOUNDARIES = (1.0, 3.0, 6.0, 10.0, 20.0, 40.0, 80.0, 160.0)
MAX_STAY_BUCKET = len(STAY_BUCKET_BOUNDARIES) + 1  # buckets are 1..this; 0 is padding
# Host statistic windows (seconds) and the counted event kinds.
HOST_STAT_WINDOWS = (("10m", 600), ("60m", 3600))
HOST_STAT_KINDS = ("uv", "likes", "follows", "comments", "shares", "item_clicks")

# --- Identity / bookkeeping (not model inputs). ----------------------------------------------------
IMPRESSION_ID = "impression_id"
SESSION_ID = "session_id"
TIMESTAMP = "timestamp"
PROPENSITY = "propensity"

# --- User / context. -------------------------------------------------------------------------------
USER_ID = "user_id"
ACTIVITY_LEVEL = "activity_level"
ACTIVITY_LEVELS = lf.ACTIVITY_LEVELS
HOUR_OF_DAY = "hour_of_day"
SLOT_INDEX = "slot_index"
TRIGGER_ITEM_ID = "trigger_item_id"
TRIGGER_CATEGORY_ID = "trigger_category_id"
SESSION_HOSTS = "session_host_ids"
SESSION_HOSTS_LEN_KEY = "session_host_ids_len"
# Every category of each room already shown in the session (position-major, HOST_MAX_CATEGORIES
# per room, 0-padded): the simulator's fatigue counts repeated categories, not repeated rooms.
SESSION_CATEGORY_IDS = "session_category_ids"

# --- Candidate host (live room). -------------------------------------------------------------------
HOST_ID = "host_id"
HOST_SHOP_ID = "host_shop_id"
HOST_CATEGORY_IDS = "host_category_ids"
DISPLAY_ITEM_IDS = "display_item_ids"
DISPLAY_CATEGORY_IDS = "display_category_ids"
DISPLAY_BRAND_IDS = "display_brand_ids"
DISPLAY_PRICES = "display_prices"
DISPLAY_LEN = "display_len"
HOST_FLASH_SALE = "host_flash_sale"  # 1 while the room runs a flash sale (from its display log)


def host_stat_key(kind: str, window: str) -> str:
  """Name of one host real-time statistic, e.g. ``host_likes_10m``."""
  return f"host_{kind}_{window}"


HOST_STAT_KEYS: Tuple[str, ...] = tuple(
    host_stat_key(kind, window) for window, _ in HOST_STAT_WINDOWS for kind in HOST_STAT_KINDS)

# --- Real-time feedback sequences (positive / negative), most recent first. ------------------------
RT_POS = "rt_pos"
RT_NEG = "rt_neg"
RT_PREFIXES = (RT_POS, RT_NEG)
# Per event: how many of the user's impressions ended after it and before the example's time.
# The simulator decays the appetite by a factor per impression, any impression, so an event's rank
# in its own sequence undercounts that distance (BUILD_NOTES, "The linear path in the feedback and
# lifelong models").
RT_IMPRESSIONS_SINCE = "impressions_since"
# Per event: 1 if the user liked the room. A like raises the simulator's appetite more than a view
# does, and how often a user likes reveals their taste for entertaining rooms, which moves every
# head (BUILD_NOTES, "Liked events in the real-time sequence"). 0 on every negative event (a quick
# swipe without interaction) and on padding.
RT_LIKED = "liked"
# Per event: 1 if the user bought in the room. A purchase sates the user: the simulator lowers the
# item-click logit of later rooms sharing its categories, fading per impression and over a day
# (BUILD_NOTES, "Purchases in the real-time sequence"). A purchase needs an effective view, so it
# is always a positive event; 0 on every negative event and on padding.
RT_PURCHASED = "purchased"
# The 0/1 flags per event: passed through by Transform, 0 on padding.
RT_FLAG_FIELDS = (RT_LIKED, RT_PURCHASED)
RT_FIELDS = ("host_ids", "category_ids", "shop_ids", "stay_buckets", "age_seconds",
             RT_IMPRESSIONS_SINCE) + RT_FLAG_FIELDS
# Made by Transform from ``age_seconds`` (not stored): each position's age in hours, 0 on padding,
# for the learned time decays of the match features (the stored seconds are also bucketized).
RT_AGE_HOURS = "age_hours"
# Values per sequence position: a past room carries all its categories (position-major, padded
# with 0), because the simulator's appetite moves on every category of a room, not the first.
RT_FIELD_WIDTH = {"category_ids": HOST_MAX_CATEGORIES}


def rt_field_length(field: str, realtime_len: int = REALTIME_SEQ_LEN) -> int:
  """Stored length of one real-time sequence field."""
  return realtime_len * RT_FIELD_WIDTH.get(field, 1)


def seq_key(prefix: str, field: str) -> str:
  return f"{prefix}_{field}"


def len_key(prefix: str) -> str:
  return f"{prefix}_len"


# --- Lifelong main-site purchase sequence, most recent first. --------------------------------------
LL = "ll"
LL_INT_FIELDS = ("item_ids", "category_ids", "brand_ids", "shop_ids", "age_days")
LL_FLOAT_FIELDS = ("prices", "stay_seconds", "weights")

# --- Labels. ----------------------------------------------------------------------------------------
STAY_SECONDS = "label_stay_seconds"
EFFECTIVE_VIEW = "label_effective_view"
INTERACT = "label_interact"
LIKE = "label_like"
COMMENT = "label_comment"
SHARE = "label_share"
FOLLOW = "label_follow"
ITEM_CLICK = "label_item_click"
ADD_TO_CART = "label_add_to_cart"
PURCHASE = "label_purchase"
BUY = "label_buy"
GMV = "label_gmv"
SWIPE_DOWN = "label_swipe_down"
LABEL_KEYS = (STAY_SECONDS, EFFECTIVE_VIEW, INTERACT, LIKE, COMMENT, SHARE, FOLLOW, ITEM_CLICK,
              ADD_TO_CART, PURCHASE, BUY, GMV, SWIPE_DOWN)
FLOAT_LABELS = (STAY_SECONDS, GMV)

# Model heads: head name -> label key. Buy is masked where the room displays no products.
HEAD_EFFECTIVE_VIEW = "effective_view"
HEAD_INTERACT = "interact"
HEAD_BUY = "buy"
HEADS: Dict[str, str] = {
    HEAD_EFFECTIVE_VIEW: EFFECTIVE_VIEW,
    HEAD_INTERACT: INTERACT,
    HEAD_BUY: BUY,
}
# STCRank's MOC heads beyond the engagement ones (``models/moc.py``): P(swipe down to the next
# slot). ``HEADS`` is every ranking model's; a model declares any other head in its tasks.
HEAD_SWIPE_DOWN = "swipe_down"
# Transformed labels besides the heads': did the impression end in a purchase (MOC's rules read it).
PURCHASED = "purchased"
# Every transformed label -> its raw label key (Transform writes them all; a head reads its own).
TRANSFORMED_LABELS: Dict[str, str] = {**HEADS, HEAD_SWIPE_DOWN: SWIPE_DOWN, PURCHASED: PURCHASE}
BUY_MASK = "buy_mask"  # transformed feature: 1.0 where a purchase can happen


def check_sequence_lengths(realtime_len: int, lifelong_len: int) -> None:
  """Raises ValueError naming a sequence length outside what the models and schema support."""
  if realtime_len < 1:
    raise ValueError(f"realtime_seq_len must be >= 1, got {realtime_len}")
  if not 1 <= lifelong_len <= MAX_LIFELONG_SEQ_LEN:
    raise ValueError(f"lifelong_seq_len must be in [1, {MAX_LIFELONG_SEQ_LEN}], got {lifelong_len}")


@dataclasses.dataclass(frozen=True)
class RawFeature:
  """One raw tf.Example feature: name, dtype ('int' | 'float' | 'bytes'), length, and the range
  every value must lie in (None: unbounded; the schema's domain and the serving checks).

  A variable-length feature (``length_key`` set) carries exactly as many values as the feature
  ``length_key`` says, at most ``length``; the others carry exactly ``length`` values.
  """
  name: str
  dtype: str
  length: int = 1
  is_label: bool = False
  min_value: float | None = None
  max_value: float | None = None
  length_key: str | None = None

  @property
  def variable_length(self) -> bool:
    return self.length_key is not None


def raw_features(realtime_len: int = REALTIME_SEQ_LEN,
                 lifelong_len: int = LIFELONG_SEQ_LEN) -> List[RawFeature]:
  """Every raw feature the ExampleGen writes, in a stable order."""
  feats = [
      RawFeature(IMPRESSION_ID, "int"), RawFeature(SESSION_ID, "int"),
      RawFeature(TIMESTAMP, "int"), RawFeature(PROPENSITY, "float"),
      RawFeature(USER_ID, "int"), RawFeature(ACTIVITY_LEVEL, "bytes"),
      RawFeature(HOUR_OF_DAY, "int"), RawFeature(SLOT_INDEX, "int"),
      RawFeature(TRIGGER_ITEM_ID, "int"), RawFeature(TRIGGER_CATEGORY_ID, "int"),
      RawFeature(SESSION_HOSTS, "int", SESSION_HOSTS_LEN), RawFeature(SESSION_HOSTS_LEN_KEY, "int"),
      RawFeature(SESSION_CATEGORY_IDS, "int", SESSION_HOSTS_LEN * HOST_MAX_CATEGORIES),
      RawFeature(HOST_ID, "int"), RawFeature(HOST_SHOP_ID, "int"),
      RawFeature(HOST_CATEGORY_IDS, "int", HOST_MAX_CATEGORIES),
      RawFeature(DISPLAY_ITEM_IDS, "int", DISPLAY_TOP_N),
      RawFeature(DISPLAY_CATEGORY_IDS, "int", DISPLAY_TOP_N),
      RawFeature(DISPLAY_BRAND_IDS, "int", DISPLAY_TOP_N),
      RawFeature(DISPLAY_PRICES, "float", DISPLAY_TOP_N), RawFeature(DISPLAY_LEN, "int"),
      RawFeature(HOST_FLASH_SALE, "int"),
  ]
  feats += [RawFeature(k, "float") for k in HOST_STAT_KEYS]
  for prefix in RT_PREFIXES:
    feats += [RawFeature(seq_key(prefix, f), "int", rt_field_length(f, realtime_len))
              for f in RT_FIELDS]
    feats.append(RawFeature(len_key(prefix), "int"))
  feats += [RawFeature(seq_key(LL, f), "int", lifelong_len, length_key=len_key(LL))
            for f in LL_INT_FIELDS]
  feats += [RawFeature(seq_key(LL, f), "float", lifelong_len, length_key=len_key(LL))
            for f in LL_FLOAT_FIELDS]
  feats.append(RawFeature(len_key(LL), "int"))
  feats += [RawFeature(k, "float" if k in FLOAT_LABELS else "int", is_label=True)
            for k in LABEL_KEYS]
  return [_with_range(f, realtime_len, lifelong_len) for f in feats]


def _with_range(feature: RawFeature, realtime_len: int, lifelong_len: int) -> RawFeature:
  """Every number is >= 0 (ids, counts, times, prices); lengths are at most their sequence's."""
  if feature.dtype == "bytes":
    return feature
  upper = {HOUR_OF_DAY: 23, PROPENSITY: 1, HOST_FLASH_SALE: 1,
           SESSION_HOSTS_LEN_KEY: SESSION_HOSTS_LEN, DISPLAY_LEN: DISPLAY_TOP_N,
           len_key(RT_POS): realtime_len, len_key(RT_NEG): realtime_len,
           len_key(LL): lifelong_len}
  upper.update({seq_key(prefix, "stay_buckets"): MAX_STAY_BUCKET for prefix in RT_PREFIXES})
  upper.update({seq_key(prefix, flag): 1 for prefix in RT_PREFIXES for flag in RT_FLAG_FIELDS})
  upper.update({k: 1 for k in LABEL_KEYS if k not in FLOAT_LABELS})
  return dataclasses.replace(feature, min_value=0, max_value=upper.get(feature.name))


def serving_raw_features(realtime_len: int = REALTIME_SEQ_LEN,
                         lifelong_len: int = LIFELONG_SEQ_LEN) -> List[RawFeature]:
  """Raw features a serving request carries: everything except labels."""
  return [f for f in raw_features(realtime_len, lifelong_len) if not f.is_label]


# --- Transformed feature names (Transform output, model input). ------------------------------------
def transformed_name(key: str) -> str:
  return f"{key}_xf"

# Features that describe the candidate room (the rest describe the user and context). A ranking
# request copies one user's context and swaps these in for each candidate.
HOST_SIDE_FEATURES: Tuple[str, ...] = (
    HOST_ID, HOST_SHOP_ID, HOST_CATEGORY_IDS, DISPLAY_ITEM_IDS, DISPLAY_CATEGORY_IDS,
    DISPLAY_BRAND_IDS, DISPLAY_PRICES, DISPLAY_LEN, HOST_FLASH_SALE) + HOST_STAT_KEYS
