"""The Trainer's run_fn: one entry for every model, picked by name from ``custom_config``."""

from __future__ import annotations

import dataclasses
import os
from typing import Callable, Dict

import tensorflow as tf
import tensorflow_transform as tft
from absl import logging
from tfx import v1 as tfx
from tfx_bsl.public import tfxio

from models import baseline
from models import features as F
from models.spec import NON_INPUT_KEYS, ModelSpec

ModelBuilder = Callable[[ModelSpec], tf.keras.Model]
MODEL_BUILDERS: Dict[str, ModelBuilder] = {"baseline": baseline.build_baseline}
SERVING_SIGNATURE = "serving_default"
TRANSFORM_SIGNATURE = "transform_features"
EXAMPLES_INPUT = "examples"


@dataclasses.dataclass(frozen=True)
class TrainConfig:
  """Trainer settings carried in the pipeline's ``custom_config``."""
  model_name: str = "baseline"
  batch_size: int = 256
  learning_rate: float = 2e-3
  embedding_dim: int = 16
  epochs: int = 1

  @classmethod
  def from_custom_config(cls, custom: Dict) -> TrainConfig:
    fields = {f.name for f in dataclasses.fields(cls)}
    unknown = set(custom or {}) - fields
    if unknown:
      raise ValueError(f"unknown trainer custom_config keys {sorted(unknown)}; known: "
                       f"{sorted(fields)}")
    cfg = cls(**(custom or {}))
    if cfg.model_name not in MODEL_BUILDERS:
      raise ValueError(f"model_name {cfg.model_name!r} is not one of {sorted(MODEL_BUILDERS)}")
    return cfg


def split_labels(batch: Dict[str, tf.Tensor]):
  """Transformed batch -> (model inputs, labels per head, sample weights per head)."""
  features = {k: v for k, v in batch.items() if k not in NON_INPUT_KEYS}
  labels = {h: batch[h] for h in F.HEADS}
  ones = tf.ones_like(batch[F.BUY_MASK])
  weights = {h: (batch[F.BUY_MASK] if h == F.HEAD_BUY else ones) for h in F.HEADS}
  return features, labels, weights


def make_dataset(file_pattern, data_accessor, tf_transform_output, batch_size: int,
                 num_epochs=None) -> tf.data.Dataset:
  ds = data_accessor.tf_dataset_factory(
      file_pattern, tfxio.TensorFlowDatasetOptions(batch_size=batch_size, num_epochs=num_epochs),
      tf_transform_output.transformed_metadata.schema)
  return ds.map(split_labels)


def compile_model(model: tf.keras.Model, learning_rate: float) -> None:
  model.compile(
      optimizer=tf.keras.optimizers.Adam(learning_rate),
      loss={h: tf.keras.losses.BinaryCrossentropy() for h in F.HEADS},
      weighted_metrics={h: [tf.keras.metrics.AUC(name="auc")] for h in F.HEADS})


class ServingModule(tf.Module):
  """Holds the Keras model and the Transform layer; its tf.functions are the exported signatures."""

  def __init__(self, model: tf.keras.Model, tf_transform_output: tft.TFTransformOutput):
    super().__init__()
    self.model = model
    self.tft_layer = tf_transform_output.transform_features_layer()
    raw_spec = tf_transform_output.raw_feature_spec()
    self._serving_spec = {k: v for k, v in raw_spec.items() if k not in F.LABEL_KEYS}
    self._raw_spec = raw_spec
    self._input_keys = sorted(model.input.keys()) if isinstance(model.input, dict) else None

  @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name=EXAMPLES_INPUT)])
  def serve(self, examples):
    """Serialized tf.Examples (no labels) -> every head's score, [B] each."""
    transformed = self.tft_layer(tf.io.parse_example(examples, self._serving_spec))
    outputs = self.model({k: transformed[k] for k in self._input_keys}, training=False)
    scores = {h: tf.reshape(outputs[h], [-1]) for h in F.HEADS}
    # A purchase cannot happen in a room that displays no products: the buy score is 0 there.
    scores[F.HEAD_BUY] *= tf.reshape(transformed[F.BUY_MASK], [-1])
    return scores

  @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name=EXAMPLES_INPUT)])
  def transform(self, examples):
    """Serialized tf.Examples (with labels) -> transformed features."""
    return self.tft_layer(tf.io.parse_example(examples, self._raw_spec))


def export_serving_model(model, tf_transform_output, export_dir: str) -> None:
  module = ServingModule(model, tf_transform_output)
  tf.saved_model.save(module, export_dir, signatures={
      SERVING_SIGNATURE: module.serve, TRANSFORM_SIGNATURE: module.transform})


def run_fn(fn_args: tfx.components.FnArgs) -> None:
  """TFX Trainer entry point."""
  cfg = TrainConfig.from_custom_config(fn_args.custom_config)
  tf_transform_output = tft.TFTransformOutput(fn_args.transform_output)
  train_ds = make_dataset(fn_args.train_files, fn_args.data_accessor, tf_transform_output,
                          cfg.batch_size)
  eval_ds = make_dataset(fn_args.eval_files, fn_args.data_accessor, tf_transform_output,
                         cfg.batch_size)
  spec = ModelSpec.from_transform_output(tf_transform_output, cfg.embedding_dim)
  model = MODEL_BUILDERS[cfg.model_name](spec)
  compile_model(model, cfg.learning_rate)
  steps = max(1, fn_args.train_steps // cfg.epochs)
  logging.info("training %s for %d epochs x %d steps", cfg.model_name, cfg.epochs, steps)
  model.fit(train_ds, epochs=cfg.epochs, steps_per_epoch=steps, validation_data=eval_ds,
            validation_steps=fn_args.eval_steps, verbose=2)
  export_serving_model(model, tf_transform_output, fn_args.serving_model_dir)
  os.makedirs(fn_args.model_run_dir, exist_ok=True)
