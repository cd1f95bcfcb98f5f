"""The Trainer's tf.distribute strategies: names, TF_CONFIG checks, chief-only outputs, and the
ranking model's loss under a strategy (the two-worker run is an e2e test)."""

import json
import os
import types

import numpy as np
import pytest
import tensorflow as tf

from models import distribution, tasks
from models import features as F


def test_strategy_names_are_checked():
  with pytest.raises(ValueError, match="'parameter_server' is not one of"):
    distribution.make_strategy("parameter_server")
  assert distribution.make_strategy(distribution.DEFAULT) is tf.distribute.get_strategy()


@pytest.mark.parametrize("tf_config, message", [
    (None, "needs TF_CONFIG naming the cluster"),
    ("{not json", "TF_CONFIG is not JSON"),
    (json.dumps({"cluster": {"worker": ["localhost:1"]}, "task": {"type": "worker", "index": 1}}),
     "task {'type': 'worker', 'index': 1} is not one of the cluster's"),
    (json.dumps({"cluster": {"worker": ["localhost:1"]}}), "task {} is not one of"),
])
def test_multi_worker_needs_a_tf_config_naming_this_task(monkeypatch, tf_config, message):
  monkeypatch.delenv(distribution.TF_CONFIG, raising=False)
  if tf_config is not None:
    monkeypatch.setenv(distribution.TF_CONFIG, tf_config)
  with pytest.raises(ValueError, match=message):
    distribution.make_strategy(distribution.MULTI_WORKER_MIRRORED)


def test_a_valid_tf_config_is_returned(monkeypatch):
  config = {"cluster": {"worker": ["localhost:1", "localhost:2"]},
            "task": {"type": "worker", "index": 1}}
  monkeypatch.setenv(distribution.TF_CONFIG, json.dumps(config))
  assert distribution.cluster_from_env() == config


def _strategy(chief: bool):
  return types.SimpleNamespace(extended=types.SimpleNamespace(should_checkpoint=chief))


def test_only_the_chief_writes_where_it_is_told(tmp_path):
  target = str(tmp_path / "model")
  with distribution.output_dir(target, _strategy(chief=True)) as d:
    assert d == target
  with distribution.output_dir(target, _strategy(chief=False)) as d:
    assert d != target
    open(os.path.join(d, "saved_model.pb"), "w").close()
  assert not os.path.exists(d)  # the scratch copy is gone
  assert not os.path.exists(target)
  assert distribution.is_chief(tf.distribute.get_strategy())


def test_data_sharding_policy_is_by_element():
  ds = distribution.distribute_by_data(tf.data.Dataset.range(4))
  assert (ds.options().experimental_distribute.auto_shard_policy
          == tf.data.experimental.AutoShardPolicy.DATA)


def _batch():
  rng = np.random.default_rng(0)
  labels = {h: tf.constant(rng.integers(0, 2, (16, 1)), tf.int64) for h in F.HEADS}
  return dict(labels, x_xf=tf.constant(rng.normal(size=(16, 1)), tf.float32),
              **{F.BUY_MASK: tf.constant(rng.integers(0, 2, (16, 1)), tf.float32)})


def _trained_weights(strategy):
  tf.keras.utils.set_random_seed(0)
  with strategy.scope():
    x = tf.keras.Input(shape=(1,), name="x_xf")
    network = tf.keras.Model({"x_xf": x}, {h: tf.keras.layers.Dense(1, activation="sigmoid",
                                                                    name=h)(x) for h in F.HEADS})
    model = tasks.RankingModel(network, tasks.ENGAGEMENT)
    model.compile(tf.keras.optimizers.SGD(0.5))
  data = tf.data.Dataset.from_tensors(_batch()).map(model.tasks.split).repeat(3)
  loss = model.fit(data, epochs=1, verbose=0).history["loss"][0]
  return loss, [w.numpy() for w in network.weights]


def test_ranking_model_trains_the_same_under_a_strategy():
  # Keras refuses a batch-averaged loss object under a strategy; the heads' per-example losses
  # averaged by the model give the same training as without one.
  tf.keras.utils.set_random_seed(0)
  loss, weights = _trained_weights(tf.distribute.get_strategy())
  mirrored_loss, mirrored_weights = _trained_weights(tf.distribute.MirroredStrategy(["/cpu:0"]))
  assert mirrored_loss == pytest.approx(loss, rel=1e-6)
  for got, want in zip(mirrored_weights, weights):
    np.testing.assert_allclose(got, want, rtol=1e-5)


TWO_REPLICAS = """
import json, os
os.environ["TF_USE_LEGACY_KERAS"] = "1"
import numpy as np, tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
from models import features as F, tasks

rng = np.random.default_rng(0)
def batch(n):
  out = {h: rng.integers(0, 2, (n, 1)).astype(np.int64) for h in F.HEADS}
  out["x_xf"] = rng.normal(size=(n, 1)).astype(np.float32)
  out[F.BUY_MASK] = rng.integers(0, 2, (n, 1)).astype(np.float32)
  return out
# 15 examples split 8/7 between the replicas, then 1 (one replica gets none).
batches = [batch(15), batch(1)]

def train(strategy):
  tf.keras.utils.set_random_seed(0)
  with strategy.scope():
    x = tf.keras.Input(shape=(1,), name="x_xf")
    net = tf.keras.Model({"x_xf": x}, {h: tf.keras.layers.Dense(
        1, activation="sigmoid", name=h,
        kernel_regularizer=tf.keras.regularizers.l2(0.1))(x) for h in F.HEADS})
    model = tasks.RankingModel(net, tasks.ENGAGEMENT)
    model.compile(tf.keras.optimizers.SGD(0.5))
  before = [w.numpy().tolist() for w in net.weights]
  # Of known length: from_generator's unknown cardinality made the two-replica run's second
  # epoch differ in about one run in five (TensorFlow's distributed iterator at the epoch end).
  ds = tf.data.Dataset.from_tensors(batches[0]).concatenate(
      tf.data.Dataset.from_tensors(batches[1])).map(model.tasks.split)
  hist = model.fit(ds, epochs=2, verbose=0).history
  evaluated = model.evaluate(ds, verbose=0, return_dict=True)
  return {"replicas": strategy.num_replicas_in_sync, "loss": hist["loss"],
          "eval": evaluated, "before": before,
          "after": [w.numpy().tolist() for w in net.weights]}

print(json.dumps({"one": train(tf.distribute.get_strategy()),
                  "two": train(tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"]))}))
"""


def test_two_replicas_with_uneven_and_empty_shares_train_what_one_trains():
  import subprocess
  import sys
  repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  # Its own process: logical devices must be set before TensorFlow starts.
  done = subprocess.run([sys.executable, "-c", TWO_REPLICAS], cwd=repo, capture_output=True,
                        text=True, timeout=300, env=dict(os.environ, PYTHONPATH=repo),
                        check=False)
  assert done.returncode == 0, done.stderr[-3000:]
  got = json.loads(done.stdout.strip().splitlines()[-1])
  one, two = got["one"], got["two"]
  assert (one["replicas"], two["replicas"]) == (1, 2)
  assert np.all(np.isfinite(two["loss"])) and np.all(np.isfinite(list(two["eval"].values())))
  np.testing.assert_allclose(two["loss"], one["loss"], rtol=1e-5)
  for key in one["eval"]:
    assert two["eval"][key] == pytest.approx(one["eval"][key], rel=1e-5), key
  for got_w, want_w, start in zip(two["after"], one["after"], one["before"]):
    np.testing.assert_allclose(got_w, want_w, rtol=1e-5, atol=1e-7)
    assert not np.allclose(want_w, start)  # training moved every weight


def test_training_clock_times_steps_after_the_first_and_the_bench_reads_its_line(caplog):
  from absl import logging as absl_logging

  from bench.distributed_training import parse_clock
  from models.trainer import TrainingClock
  tf.keras.utils.set_random_seed(0)
  x = tf.keras.Input(shape=(1,), name="x_xf")
  network = tf.keras.Model({"x_xf": x}, {h: tf.keras.layers.Dense(1, activation="sigmoid",
                                                                  name=h)(x) for h in F.HEADS})
  model = tasks.RankingModel(network, tasks.ENGAGEMENT)
  model.compile(tf.keras.optimizers.SGD(0.1))
  clock = TrainingClock(batch_size=16)
  data = tf.data.Dataset.from_tensors(_batch()).map(model.tasks.split).repeat(4)
  absl_logging.set_verbosity(absl_logging.INFO)
  with caplog.at_level("INFO"):
    model.fit(data, epochs=1, verbose=0, callbacks=[clock])
  assert clock.steps == 3  # 4 batches, the first (tracing) not timed
  assert clock.wall > 0 and clock.cpu > 0
  parsed = parse_clock("\n".join(r.getMessage() for r in caplog.records))
  assert parsed["steps"] == 3 and parsed["batch_size"] == 16
  assert parsed["wall_s"] == pytest.approx(clock.wall, abs=1e-3)


def test_distributed_run_summary_counts_the_chief_steps_and_everyone_s_cpu():
  from bench.distributed_training import parse_clock, summarize_run
  chief = {"steps": 10, "batch_size": 100, "wall_s": 2.0, "cpu_s": 3.0}
  other = {"steps": 10, "batch_size": 100, "wall_s": 2.1, "cpu_s": 1.0}
  got = summarize_run([chief, other])
  assert got == {"examples": 1000, "wall_s": 2.0, "examples_per_s": 500.0, "cpu_s_per_1k": 4.0}
  with pytest.raises(ValueError, match="no training clock line"):
    parse_clock("training finished")
  with pytest.raises(ValueError, match="timed no training step"):
    summarize_run([dict(chief, steps=0)])


def test_wait_all_kills_the_peers_of_a_failed_worker_and_finds_the_newest_transform(tmp_path):
  import subprocess
  import sys

  from pipeline import train_worker
  hang = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
  fail = subprocess.Popen([sys.executable, "-c", "raise SystemExit(3)"])
  codes = train_worker.wait_all([hang, fail], timeout_s=120, poll_s=0.05)
  assert codes[1] == 3 and codes[0] < 0  # the hanging peer was killed, not waited for
  for output, ids in (("transformed_examples", ["3", "7", "9"]), ("transform_graph", ["3", "7"])):
    for i in ids + ["tmp"]:
      os.makedirs(tmp_path / "Transform" / output / i)
  got = train_worker.latest_transform_outputs(str(tmp_path))
  assert got == {o: str(tmp_path / "Transform" / o / "7")
                 for o in ("transformed_examples", "transform_graph")}
  with pytest.raises(FileNotFoundError, match="run the pipeline first"):
    train_worker.latest_transform_outputs(str(tmp_path / "nothing"))
