"""The Trainer's run_fn: one entry for every model, picked by name from ``custom_config``."""

from __future__ import annotations

import dataclasses
import os
import time
from typing import Callable, Dict, List, Mapping, Sequence

import tensorflow as tf
import tensorflow_transform as tft
from absl import logging
from tfx import v1 as tfx
from tfx_bsl.public import tfxio

from models import (
  distribution,
  feedback,
  lifelong,
  linear_start,
  moc,
  msc,
  multitask,
  request_checks,
  warmup,
)
from models import features as F
from models import signatures as S
from models import tasks as tasks_lib
from models.layers.lifelong import ChannelDINAttention
from models.spec import ModelSpec
from models.weight_average import WeightAverage


@dataclasses.dataclass(frozen=True)
class ModelDef:
  """A model by name: its network builder, the heads it is trained on and the TrainConfig
  fields its builder takes (``{builder argument: TrainConfig field}``)."""
  network: Callable[..., tf.keras.Model]
  tasks: Callable[[TrainConfig], tasks_lib.Tasks] = lambda cfg: tasks_lib.ENGAGEMENT
  settings: Mapping[str, str] = dataclasses.field(default_factory=dict)

  def build_network(self, spec: ModelSpec, cfg: TrainConfig) -> tf.keras.Model:
    """The network with this config's settings."""
    return self.network(spec, **{arg: getattr(cfg, field) for arg, field in self.settings.items()})


def _multitask(kind: str, **kwargs) -> ModelDef:
  return ModelDef(lambda s: multitask.build_multitask(s, kind, **kwargs))


def _feedback(**switches) -> ModelDef:
  triplet = switches.get("use_triplet", True)
  return ModelDef(lambda s: feedback.build_feedback(s, **switches),
                  lambda cfg: feedback.feedback_tasks(cfg.triplet_weight, cfg.triplet_margin,
                                                      use_triplet=triplet))


def _lifelong(**switches) -> ModelDef:
  aux = switches.get("use_aux", True)
  return ModelDef(lambda s, **settings: lifelong.build_lifelong(s, **switches, **settings),
                  lambda cfg: lifelong.lifelong_tasks(cfg.lifelong_aux_weight if aux else 0.0),
                  settings={"top_k": "lifelong_top_k"})


def _stcrank(raw_labels: bool = False, name: str = "stcrank") -> ModelDef:
  """The feedback network with MOC's swipe-down head; its rules from the config, or none."""
  return ModelDef(
      # No linear path: the linear start fits the engagement heads only (``F.HEADS``), and a
      # frozen room-offset table would leave the swipe-down head's column at zero.
      lambda s: feedback.build_feedback(s, heads=moc.STCRANK_HEADS, wide=False, name=name),
      lambda cfg: moc.stcrank_tasks(moc.RAW_LABELS if raw_labels else cfg.moc_rules(),
                                    (feedback.triplet_head(cfg.triplet_weight,
                                                           cfg.triplet_margin),)))


MODELS: Dict[str, ModelDef] = {
    "dnn": ModelDef(multitask.build_dnn),
    "dcn": ModelDef(multitask.build_dcn),
    "shared_bottom": _multitask("shared_bottom"),
    # The demo's default: the shared bottom on a linear path solved first (models/linear_start.py).
    "baseline": _multitask("shared_bottom", wide=True, name="baseline"),
    "mmoe": _multitask("mmoe"),
    "ple": _multitask("ple"),
    "feedback": _feedback(),
    "feedback_no_triplet": _feedback(use_triplet=False, name="feedback_no_triplet"),
    "feedback_no_negative": _feedback(use_negative=False, use_triplet=False,
                                      name="feedback_no_negative"),
    "feedback_no_realtime": _feedback(use_negative=False, use_triplet=False, use_realtime=False,
                                      name="feedback_no_realtime"),
    "stcrank": _stcrank(),
    "stcrank_raw_labels": _stcrank(raw_labels=True, name="stcrank_raw_labels"),
    "lifelong": _lifelong(),
    "lifelong_mean_pool": _lifelong(extraction="mean_pool", name="lifelong_mean_pool"),
    "lifelong_merged_softmax": _lifelong(channel_softmax=False, name="lifelong_merged_softmax"),
    "lifelong_no_bias_net": _lifelong(use_bias_net=False, name="lifelong_no_bias_net"),
    "lifelong_no_channel_statistics": _lifelong(channel_statistics=False,
                                                name="lifelong_no_channel_statistics"),
}
# The exported module tracks the layers a later model may start from under this name.
WARM_START_ATTRIBUTE = "warm_start"
# The inputs of the signatures that take one user's context and N candidate rooms.
CONTEXT_INPUTS = [tf.TensorSpec([1], tf.string, name=S.CONTEXT_INPUT),
                  tf.TensorSpec([None], tf.string, name=S.EXAMPLES_INPUT)]


@dataclasses.dataclass(frozen=True)
class TrainConfig:
  """Trainer settings carried in the pipeline's ``custom_config``."""
  model_name: str = "baseline"
  batch_size: int = 256
  learning_rate: float = 2e-3
  embedding_dim: int = 16
  embedding_l2: float = 3e-5  # see ModelSpec.embedding_l2
  # See ModelSpec.room_offset_rate. 3 was the best of 1/3/10/30 in a one-seed screen at world
  # seed 7; over 3 training seeds it lifts interact AUC by ~0.001 at world seeds 7 and 8, the
  # other heads within noise (BUILD_NOTES, "per-room constants that converge").
  room_offset_rate: float = 3.0
  # Epochs are full passes over the train split; training stops when the eval loss has not
  # improved for ``patience`` epochs and the best epoch's weights are restored. The Trainer's
  # train_steps is a hard budget on top (whichever comes first).
  max_epochs: int = 30
  # With the averaged weights the eval loss falls to one minimum and rises (every measured run),
  # so one epoch of patience stops where two did; the last iterate's noisier curve needed two.
  patience: int = 1
  # Per-step decay of a moving average of the weights that evaluation, early stopping and the
  # export use (models/weight_average.py; ~100 steps); 0: the last iterate. BUILD_NOTES "Averaged
  # weights" has the measurement.
  weight_average_decay: float = 0.99
  # A network with a linear path (``wide``) starts from that path solved exactly, an L2-penalised
  # logistic regression per head with this penalty (models/linear_start.py), which then stays
  # fixed while the rest trains; 0: the linear path trains with the rest from its initial values.
  # 10 against 1 and 30 in a one-seed screen at world seeds 7 and 8 (BUILD_NOTES "A linear start").
  linear_start_l2: float = 10.0
  # The penalties tried are linear_start_l2 × 10^k, k = 0..steps; each head keeps the one with
  # the lowest eval log loss (10 at the default scale; the tiny scale's 500 examples need more).
  linear_start_l2_steps: int = 2
  triplet_weight: float = 0.1
  triplet_margin: float = 0.2
  lifelong_aux_weight: float = 0.1  # the lifelong model's auxiliary head (0: none)
  # Purchases each lifelong extraction channel takes (its top-K) for the attention.
  lifelong_top_k: int = lifelong.DEFAULT_TOP_K
  # STCRank's MOC rules (models/moc.py): the swipe-down head's purchase exits, the view head's
  # weight of views that ended in a purchase.
  moc_purchase_exit: str = moc.MocRules.purchase_exit
  moc_view_overlap_weight: float = moc.MocRules.view_overlap_weight
  # STCRank's MSC look-ahead in the ``rank`` signature (models/msc.py), exported when the model
  # serves every output it reads: the reward as ``output:weight,...``, horizon, beam, stage-1 top M.
  msc_reward_weights: str = msc.format_reward_weights(msc.MscConfig().reward_weights)
  msc_horizon: int = msc.MscConfig.horizon
  msc_beam_width: int = msc.MscConfig.beam_width
  msc_top_m: int = msc.MscConfig.top_m
  # Warm start: with a base model (the pipeline's resolver), the lifelong attention starts from
  # the base model's and Mixout at this rate keeps it near them (0: plain fine-tuning).
  mixout_rate: float = 0.0
  seed: int = 7  # initialisation and input shuffling (narrows, does not remove, run-to-run noise)
  # tf.distribute strategy (models/distribution.py): default, mirrored, multi_worker_mirrored.
  # batch_size stays the global batch: N replicas each take 1/N of it.
  distribution: str = distribution.DEFAULT
  # Not used in training: the pipeline puts the source fingerprint here so that a code change
  # invalidates the Trainer's cache entry (pipeline/code_version.py).
  code_version: str = ""

  def moc_rules(self) -> moc.MocRules:
    """STCRank's MOC rules of this config (raises ValueError naming a bad one)."""
    return moc.MocRules(purchase_exit=self.moc_purchase_exit,
                        view_overlap_weight=self.moc_view_overlap_weight)

  def msc(self) -> msc.MscConfig:
    """The ``rank`` signature's look-ahead of this config (raises ValueError naming a bad one)."""
    return msc.MscConfig(reward_weights=msc.parse_reward_weights(self.msc_reward_weights),
                         horizon=self.msc_horizon, beam_width=self.msc_beam_width,
                         top_m=self.msc_top_m)

  def model_spec(self, tf_transform_output) -> ModelSpec:
    """The model's input spec from a Transform output, with this config's modelling settings."""
    return ModelSpec.from_transform_output(tf_transform_output, self.embedding_dim,
                                           self.embedding_l2, self.room_offset_rate)

  @classmethod
  def from_custom_config(cls, custom: Dict) -> TrainConfig:
    fields = {f.name for f in dataclasses.fields(cls)}
    unknown = set(custom or {}) - fields
    if unknown:
      raise ValueError(f"unknown trainer custom_config keys {sorted(unknown)}; known: "
                       f"{sorted(fields)}")
    cfg = cls(**(custom or {}))
    if cfg.model_name not in MODELS:
      raise ValueError(f"model_name {cfg.model_name!r} is not one of {sorted(MODELS)}")
    for name in ("batch_size", "embedding_dim", "max_epochs", "lifelong_top_k"):
      if getattr(cfg, name) < 1:
        raise ValueError(f"trainer {name} must be >= 1, got {getattr(cfg, name)}")
    if cfg.embedding_l2 < 0:
      raise ValueError(f"trainer embedding_l2 must be >= 0, got {cfg.embedding_l2}")
    if cfg.room_offset_rate < 0:
      raise ValueError(f"trainer room_offset_rate must be >= 0, got {cfg.room_offset_rate}")
    if cfg.linear_start_l2 < 0:
      raise ValueError(f"trainer linear_start_l2 must be >= 0, got {cfg.linear_start_l2}")
    if cfg.linear_start_l2_steps < 0:
      raise ValueError(f"trainer linear_start_l2_steps must be >= 0, got "
                       f"{cfg.linear_start_l2_steps}")
    if cfg.lifelong_aux_weight < 0:
      raise ValueError(f"trainer lifelong_aux_weight must be >= 0, got {cfg.lifelong_aux_weight}")
    cfg.moc_rules()  # raises on a bad rule, naming it
    cfg.msc()
    if not 0.0 <= cfg.mixout_rate <= 1.0:
      raise ValueError(f"trainer mixout_rate must be in [0, 1], got {cfg.mixout_rate}")
    if cfg.patience < 0:
      raise ValueError(f"trainer patience must be >= 0, got {cfg.patience}")
    if not 0.0 <= cfg.weight_average_decay < 1.0:
      raise ValueError(f"trainer weight_average_decay must be in [0, 1), got "
                       f"{cfg.weight_average_decay}")
    distribution.check_strategy_name(cfg.distribution)
    if not cfg.learning_rate > 0:
      raise ValueError(f"trainer learning_rate must be > 0, got {cfg.learning_rate}")
    return cfg


def parse_overrides(pairs: List[str]) -> Dict[str, object]:
  """``["learning_rate=5e-4", "patience=3"]`` (the benches' ``--set``) -> typed TrainConfig
  overrides."""
  types = {f.name: f.type for f in dataclasses.fields(TrainConfig)}
  out: Dict[str, object] = {}
  for pair in pairs:
    key, sep, value = pair.partition("=")
    if not sep or key not in types:
      raise ValueError(f"--set {pair!r}: expected key=value with key one of {sorted(types)}")
    kind = {"int": int, "float": float, "str": str}[str(types[key]).split(".")[-1]]
    try:
      out[key] = kind(value)
    except ValueError as e:
      raise ValueError(f"--set {pair!r}: {e}") from e
  return out


class StepBudget(tf.keras.callbacks.Callback):
  """Stops training once ``max_steps`` batches have run, whatever epoch that falls in."""

  def __init__(self, max_steps: int):
    super().__init__()
    if max_steps < 1:
      raise ValueError(f"StepBudget max_steps must be >= 1, got {max_steps}")
    self.max_steps = int(max_steps)
    self.steps = 0

  def on_train_batch_end(self, batch, logs=None):
    self.steps += 1
    if self.steps >= self.max_steps:
      self.model.stop_training = True


class TrainingClock(tf.keras.callbacks.Callback):
  """Times the training steps (not evaluation, not the first step's tracing) and logs a line.

  Wall seconds and this process's CPU seconds; under a multi-worker strategy each worker logs its
  own (``bench/distributed_training.py`` reads the lines).
  """

  LOG_FORMAT = "training clock: %d steps of %d examples in %.3f s wall, %.3f CPU-s"

  def __init__(self, batch_size: int):
    super().__init__()
    self.batch_size = int(batch_size)
    self.steps, self.wall, self.cpu = 0, 0.0, 0.0
    self._seen = 0
    self._start = None

  def on_train_batch_begin(self, batch, logs=None):
    self._seen += 1
    self._start = (time.perf_counter(), time.process_time()) if self._seen > 1 else None

  def on_train_batch_end(self, batch, logs=None):
    if self._start is not None:
      self.steps += 1
      self.wall += time.perf_counter() - self._start[0]
      self.cpu += time.process_time() - self._start[1]

  def on_train_end(self, logs=None):
    logging.info(self.LOG_FORMAT, self.steps, self.batch_size, self.wall, self.cpu)


def fit(model: tf.keras.Model, train_ds: tf.data.Dataset, eval_ds: tf.data.Dataset,
        cfg: TrainConfig, max_steps: int | None = None, verbose: int = 2,
        log_dir: str | None = None):
  """Epochs over the finite train split with early stopping on the eval loss.

  Restores the weights of the epoch with the lowest eval loss (with ``weight_average_decay``, the
  averaged weights, which are also what the eval split is scored with). Returns the Keras History
  (its ``history`` holds the per-epoch training curves).
  """
  stopper = tf.keras.callbacks.EarlyStopping(monitor="val_loss", patience=cfg.patience,
                                             restore_best_weights=True)
  callbacks = [stopper]
  if cfg.weight_average_decay:  # after the stopper: it must record the averaged weights
    callbacks.append(WeightAverage(cfg.weight_average_decay))
  callbacks += [TrainingClock(cfg.batch_size)] + ([StepBudget(max_steps)] if max_steps else [])
  if log_dir:  # per-epoch curves for TensorBoard
    callbacks.append(tf.keras.callbacks.TensorBoard(log_dir=log_dir, update_freq="epoch",
                                                    profile_batch=0))
  # Adam's slots would otherwise be made inside the first traced train step, and a tf.function
  # that creates variables is traced twice: building them first saves one trace of the whole
  # model (the same weights; the seconds are in BUILD_NOTES, "one trace of the train step").
  with model.distribute_strategy.scope():
    model.optimizer.build(model.trainable_variables)
  # tf_keras' EarlyStopping restores the best weights at the end of training however it ended
  # (patience, epoch budget or step budget); the test pins that.
  return model.fit(train_ds, epochs=cfg.max_epochs, validation_data=eval_ds,
                   callbacks=callbacks, verbose=verbose)


# Batch size of the linear start's passes over the train split (memory, not the result).
LINEAR_START_BATCH = 4096


def start_linear_path(model: tasks_lib.RankingModel, train_batches, cfg: TrainConfig,
                      eval_batches=None) -> Dict[str, linear_start.HeadStart]:
  """Solves the network's linear path on ``train_batches`` (models/linear_start.py) and freezes it,
  when the config asks for it and the network has one; call before :func:`fit`.

  Args:
    model: the model to start.
    train_batches: the train split's batches.
    cfg: the training config (``linear_start_l2``, ``linear_start_l2_steps``).
    eval_batches: the eval split's batches, to choose each head's penalty among
      ``linear_start_l2 × 10^k``; needed when ``linear_start_l2_steps > 0``.

  Returns:
    What each head chose ({} when it did not run).
  """
  if not cfg.linear_start_l2 or not linear_start.has_linear_path(model.network):
    return {}
  penalties = [cfg.linear_start_l2 * 10.0 ** k for k in range(cfg.linear_start_l2_steps + 1)]
  chosen = linear_start.linear_start(model.network, train_batches, penalties, eval_batches)
  for layer in (linear_start.linear_layers(model.network)
                + linear_start.wide_feature_layers(model.network)):
    layer.trainable = False
  # Keras reads the trainable flags when the model is compiled; the optimizer has no state yet.
  model.compile(optimizer=model.optimizer)
  return chosen


def build_model(spec: ModelSpec, cfg: TrainConfig) -> tasks_lib.RankingModel:
  """The named model's network wrapped with its heads, compiled with Adam."""
  definition = MODELS[cfg.model_name]
  model = tasks_lib.RankingModel(definition.build_network(spec, cfg), definition.tasks(cfg))
  model.compile(optimizer=tf.keras.optimizers.Adam(cfg.learning_rate))
  return model


def model_tasks(cfg: TrainConfig) -> tasks_lib.Tasks:
  """The heads of the configured model, without building it."""
  return MODELS[cfg.model_name].tasks(cfg)


def make_dataset(file_pattern, data_accessor, tf_transform_output, batch_size: int,
                 tasks: tasks_lib.Tasks, seed: int, num_epochs=None) -> tf.data.Dataset:
  ds = data_accessor.tf_dataset_factory(
      file_pattern, tfxio.TensorFlowDatasetOptions(batch_size=batch_size, num_epochs=num_epochs,
                                                   shuffle_seed=seed),
      tf_transform_output.transformed_metadata.schema)
  return ds.map(tasks.split)


def transformed_dataset(file_pattern: str, tf_transform_output, batch_size: int,
                        tasks: tasks_lib.Tasks, shuffle_seed: int | None = None,
                        repeat: bool = True) -> tf.data.Dataset:
  """Transformed gzip TFRecords -> (features, labels, weights) batches, outside the Trainer."""
  files = tf.io.gfile.glob(file_pattern)
  if not files:
    raise FileNotFoundError(f"no transformed examples match {file_pattern}")
  ds = tf.data.TFRecordDataset(files, compression_type="GZIP")
  if repeat:
    ds = ds.repeat()
  if shuffle_seed is not None:
    ds = ds.shuffle(20_000, seed=shuffle_seed)
  spec = tf_transform_output.transformed_feature_spec()
  return (ds.batch(batch_size).map(lambda x: tf.io.parse_example(x, spec))
          .map(tasks.split).prefetch(2))


def warm_start_layers(network: tf.keras.Model) -> Dict[str, tf.keras.layers.Layer]:
  """The layers a later model may start from (the lifelong attention), by layer name."""
  return {layer.name: layer for layer in network.layers if isinstance(layer, ChannelDINAttention)}


def _saved_warm_start_layers(variables_path: str) -> List[str]:
  """Names of the warm-startable layers an exported model holds (from its object graph)."""
  # Imported here: only a warm start reads a checkpoint's object graph.
  from tensorflow.core.protobuf import trackable_object_graph_pb2  # pylint: disable=import-outside-toplevel
  graph = trackable_object_graph_pb2.TrackableObjectGraph.FromString(
      tf.train.load_checkpoint(variables_path).get_tensor("_CHECKPOINTABLE_OBJECT_GRAPH"))
  root = {c.local_name: c.node_id for c in graph.nodes[0].children}
  if WARM_START_ATTRIBUTE not in root:
    return []
  return sorted(c.local_name for c in graph.nodes[root[WARM_START_ATTRIBUTE]].children)


def warm_start(network: tf.keras.Model, base_model_dir: str, mixout_rate: float) -> List[str]:
  """Starts the network's warm-startable layers from a previously exported model.

  Each layer the base model also holds (same name) gets its weights; they become the anchors its
  Mixout mixes toward, at ``mixout_rate``. Layers the base model lacks keep their initialisation.

  Returns:
    The names of the layers that were warm-started.
  """
  variables_path = os.path.join(base_model_dir, "variables", "variables")
  saved = set(_saved_warm_start_layers(variables_path))
  layers = {n: layer for n, layer in warm_start_layers(network).items() if n in saved}
  if not layers:
    return []
  tf.train.Checkpoint(**{WARM_START_ATTRIBUTE: layers}).read(
      variables_path).assert_existing_objects_matched()
  for layer in layers.values():
    for dense in layer.mixout_layers():
      dense.set_anchor()
      dense.rate.assign(mixout_rate)
  return sorted(layers)


class ServingModule(tf.Module):
  """Holds the Keras model and the Transform layer; its tf.functions are the exported signatures.

  See :mod:`models.signatures` for the contract of each signature.
  """

  def __init__(self, model: tasks_lib.RankingModel, tf_transform_output: tft.TFTransformOutput,
               msc_config: msc.MscConfig | None = None):
    super().__init__()
    # The network's call and its variables, not the Keras model: a tracked Keras model makes
    # tf.saved_model.save trace every layer's call for Keras' own loader, which nothing here
    # uses (the signatures are the contract); that was half the export's time and a third of
    # the serving graph.
    self._network = model.network.__call__
    self._network_variables = list(model.network.variables)
    self.tasks = model.tasks
    setattr(self, WARM_START_ATTRIBUTE, warm_start_layers(model.network))
    self.tft_layer = tf_transform_output.transform_features_layer()
    raw_spec = tf_transform_output.raw_feature_spec()
    self._serving_spec = {k: v for k, v in raw_spec.items() if k not in F.LABEL_KEYS}
    self._candidate_spec = {k: v for k, v in self._serving_spec.items()
                            if k in F.HOST_SIDE_FEATURES}
    self._context_spec = {k: v for k, v in self._serving_spec.items()
                          if k not in F.HOST_SIDE_FEATURES}
    self._user_keys = {F.transformed_name(k) for k in self._context_spec}
    self._declared = request_checks.raw_features_for(tf_transform_output)
    self._raw_spec = raw_spec
    self._input_keys = sorted(model.network.input.keys())
    self._msc = msc_config
    if msc_config is not None:
      msc_config.check_outputs(self.tasks.served_outputs)
      # Only then: saving traces every tf.function the module holds.
      self.rank = tf.function(self._rank, input_signature=CONTEXT_INPUTS)

  def _checked(self, examples: tf.Tensor, spec) -> Dict[str, tf.Tensor]:
    """Parses serialized tf.Examples and asserts every feature's declared range."""
    parsed = tf.io.parse_example(examples, spec)
    with tf.control_dependencies(request_checks.check_raw_features(parsed, self._declared)):
      return {k: tf.SparseTensor(tf.identity(v.indices), v.values, v.dense_shape)
              if isinstance(v, tf.SparseTensor) else tf.identity(v) for k, v in parsed.items()}

  def _score(self, transformed: Dict[str, tf.Tensor]) -> Dict[str, tf.Tensor]:
    outputs = self._network({k: transformed[k] for k in self._input_keys}, training=False)
    return tasks_lib.scored_outputs(self.tasks, outputs, transformed)

  @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name=S.EXAMPLES_INPUT)])
  def serve(self, examples):
    """Serialized tf.Examples (no labels) -> every served head's score, [B] each.

    Every raw feature must be finite and inside its declared range, or the request fails naming
    it. A head's mask zeroes its score (a purchase cannot happen in a room without products).
    """
    return self._score(self.tft_layer(self._checked(examples, self._serving_spec)))

  @tf.function(input_signature=CONTEXT_INPUTS)
  def rank_with_context(self, context, examples):
    """One user's context and N candidate rooms -> every served head's score, [N] each.

    The context (user, session, real-time and lifelong sequences) is parsed, checked and
    transformed once and enters the model with batch 1: every user-only computation (sequence
    embeddings, pooling, histograms) runs once, and the model broadcasts the user side where it
    meets the rooms (``BroadcastConcatenate``, batched matmuls). The scores equal ``serve`` on
    the N full examples. Room-side features in the context and user-side ones in a room are
    ignored.
    """
    return self._context_scores(context, examples)

  def _context_scores(self, context, examples) -> Dict[str, tf.Tensor]:
    user = self._checked(context, self._context_spec)  # each [1, ...]
    rooms = self._checked(examples, self._candidate_spec)  # each [N, ...]
    # One Transform call with both sides (every output depends on one side only). Two calls
    # would not do: Transform fills the inputs a call lacks with zeros of that call's batch, so
    # the rooms' call would transform N empty copies of the user's sequences.
    transformed = self.tft_layer(dict(user, **rooms))
    # Transform's outputs lose the user side's static batch of 1; given back, the layers that
    # meet one sequence with N rooms take their shared path (chosen when this is traced).
    return self._score({k: tf.ensure_shape(v, [1] + v.shape[1:])
                        if k in self._user_keys and isinstance(v, tf.Tensor) else v
                        for k, v in transformed.items()})

  def _rank(self, context, examples):
    """One user's context and N candidate rooms -> the look-ahead's slate (``models/msc.py``).

    The heads score the rooms as ``rank_with_context`` does; MSC's search orders the next
    slots and the rest follow by reward. Outputs: ``slate`` [N] (candidate indices, first slot
    first), ``slot_reward`` / ``slot_swipe_down`` / ``slot_reach`` [N] per slot of the slate,
    ``planned_value`` [1].
    """
    return msc.rank_slate(self._context_scores(context, examples), self._msc)

  @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name=S.EXAMPLES_INPUT)])
  def transform(self, examples):
    """Serialized tf.Examples (with labels) -> transformed features."""
    return self.tft_layer(tf.io.parse_example(examples, self._raw_spec))


def rank_search(cfg: TrainConfig, served_outputs: Sequence[str]) -> msc.MscConfig | None:
  """The look-ahead of the ``rank`` signature a model with ``served_outputs`` exports under
  ``cfg``; None when it does not serve every output the search reads (no ``rank``)."""
  search = cfg.msc()
  if search.missing(served_outputs):
    logging.info("no %r signature: the model serves %s, the look-ahead reads %s",
                 S.RANK_SIGNATURE, list(served_outputs), search.outputs)
    return None
  return search


def export_serving_model(model, tf_transform_output, export_dir: str,
                         msc_config: msc.MscConfig | None = None) -> None:
  """Saves the serving signatures (:mod:`models.signatures`); ``rank`` with ``msc_config``'s
  look-ahead when given (:func:`rank_search`)."""
  module = ServingModule(model, tf_transform_output, msc_config)
  signatures = {S.SERVING_SIGNATURE: module.serve, S.CONTEXT_SIGNATURE: module.rank_with_context,
                S.TRANSFORM_SIGNATURE: module.transform}
  if msc_config is not None:
    signatures[S.RANK_SIGNATURE] = module.rank
  tf.saved_model.save(module, export_dir, signatures=signatures)
  # TF Serving's warm-up file: a new version runs each online signature on a valid request
  # before it serves (here and in a real tensorflow/serving).
  warmup.write_warmup_requests(export_dir, warmup.warmup_requests(
      [name for name in signatures if name in S.ONLINE_SIGNATURES],
      *request_checks.sequence_lengths(tf_transform_output)))


def run_fn(fn_args: tfx.components.FnArgs) -> None:
  """TFX Trainer entry point."""
  cfg = TrainConfig.from_custom_config(fn_args.custom_config)
  # First: a multi-worker strategy configures collective ops, which must precede other TF work.
  strategy = distribution.make_strategy(cfg.distribution)
  tf.keras.utils.set_random_seed(cfg.seed)
  tf_transform_output = tft.TFTransformOutput(fn_args.transform_output)
  spec = cfg.model_spec(tf_transform_output)
  with strategy.scope():  # variables (model and optimizer) are made as the strategy's
    model = build_model(spec, cfg)
    if fn_args.base_model:
      started = warm_start(model.network, fn_args.base_model, cfg.mixout_rate)
      logging.info("warm start from %s: %s (Mixout rate %s)", fn_args.base_model,
                   started or "no shared layer, training from scratch", cfg.mixout_rate)
  train_ds, eval_ds = (
      distribution.distribute_by_data(make_dataset(
          files, fn_args.data_accessor, tf_transform_output, cfg.batch_size, model.tasks,
          cfg.seed, num_epochs=1))
      for files in (fn_args.train_files, fn_args.eval_files))
  # Every worker reads the whole train and eval splits here (not its shard), so all solve the
  # same path.
  def whole(files):
    return make_dataset(files, fn_args.data_accessor, tf_transform_output, LINEAR_START_BATCH,
                        model.tasks, cfg.seed, num_epochs=1)

  chosen = start_linear_path(model, whole(fn_args.train_files), cfg, whole(fn_args.eval_files))
  if chosen:
    logging.info("%s: linear path solved (per head L2 %s) and frozen", cfg.model_name,
                 {h: c.l2 for h, c in chosen.items()})
  logging.info("training %s: up to %d epochs (patience %d), at most %s steps, %d replica(s) "
               "(%s)", cfg.model_name, cfg.max_epochs, cfg.patience, fn_args.train_steps,
               strategy.num_replicas_in_sync, cfg.distribution)
  # Every worker trains and saves (saving runs collective ops); only the chief's output stays.
  with distribution.output_dir(fn_args.model_run_dir, strategy) as log_dir, \
      distribution.output_dir(fn_args.serving_model_dir, strategy) as export_dir:
    history = fit(model, train_ds, eval_ds, cfg, max_steps=fn_args.train_steps, log_dir=log_dir)
    logging.info("trained %s for %d epochs; eval loss by epoch %s", cfg.model_name,
                 len(history.history["val_loss"]),
                 [round(v, 4) for v in history.history["val_loss"]])
    export_serving_model(model, tf_transform_output, export_dir,
                         rank_search(cfg, model.tasks.served_outputs))
