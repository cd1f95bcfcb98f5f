"""Training curves: per-epoch train and eval AUC of one model under chosen training settings.

The diagnostic behind the training regime (BUILD_NOTES "Why the models did not learn"): trains one
variant on the transformed examples of a pipeline run with ``trainer.fit`` and any
``TrainConfig`` overrides, with early stopping off unless asked, and records every epoch's
Keras metrics on the train and eval splits (the eval split is the Trainer's: the last day).

    python -m bench.train_curves --work work --variant baseline --set learning_rate=5e-4 \
        --set max_epochs=6 --name curves_lr5e-4
"""

from __future__ import annotations

import dataclasses
import os
import time
from typing import Dict, List

import tensorflow as tf
import tensorflow_transform as tft
from absl import app, flags

from bench.ablation_feedback import latest_transform_dirs
from bench.common import define_run_flags, write_json
from models import features as F
from models import trainer


class EpochLog(tf.keras.callbacks.Callback):
  """Prints one line per epoch (the console of a long run) and keeps the metrics."""

  def __init__(self):
    super().__init__()
    self.rows: List[dict] = []
    self._start = time.perf_counter()

  def on_epoch_end(self, epoch, logs=None):
    row = {"epoch": epoch + 1, "seconds": time.perf_counter() - self._start, **(logs or {})}
    self.rows.append(row)
    print(f"epoch {epoch + 1:>2}  eval loss {row['val_loss']:.4f}  " + "  ".join(
        f"{h} {row[f'{h}_auc']:.4f}/{row[f'val_{h}_auc']:.4f}" for h in F.HEADS)
          + f"  (train/eval AUC, {row['seconds']:.0f} s)", flush=True)


def run(work: str, pipeline_name: str, variant: str, overrides: Dict[str, object],
        seed: int) -> dict:
  cfg = dataclasses.replace(trainer.TrainConfig(model_name=variant), **overrides)
  dirs = latest_transform_dirs(work, pipeline_name)
  tft_output = tft.TFTransformOutput(dirs["graph"])
  tf.keras.utils.set_random_seed(seed)
  model = trainer.build_model(cfg.model_spec(tft_output), cfg)
  data = lambda split, shuffle, batch=cfg.batch_size: trainer.transformed_dataset(  # noqa: E731
      os.path.join(dirs["examples"], f"Split-{split}", "*.gz"), tft_output, batch,
      model.tasks, shuffle_seed=seed if shuffle else None, repeat=False)
  trainer.start_linear_path(model, data("train", False, trainer.LINEAR_START_BATCH), cfg,
                            data("eval", False, trainer.LINEAR_START_BATCH))
  log = EpochLog()
  original_fit = model.fit
  model.fit = lambda *a, **k: original_fit(*a, **dict(k, callbacks=k["callbacks"] + [log]))
  trainer.fit(model, data("train", True), data("eval", False), cfg, verbose=0)
  return {"variant": variant, "seed": seed, "train_config": dataclasses.asdict(cfg),
          "epochs": log.rows}


def plot(out: dict, path: str) -> None:
  import matplotlib  # pylint: disable=import-outside-toplevel
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel
  epochs = [r["epoch"] for r in out["epochs"]]
  fig, axes = plt.subplots(1, len(F.HEADS), figsize=(4.2 * len(F.HEADS), 3.4))
  for ax, head in zip(axes, F.HEADS):
    ax.plot(epochs, [r[f"{head}_auc"] for r in out["epochs"]], "o-", label="train")
    ax.plot(epochs, [r[f"val_{head}_auc"] for r in out["epochs"]], "o-", label="eval")
    ax.set_title(head)
    ax.set_xlabel("epoch")
    ax.grid(alpha=0.3)
  axes[0].set_ylabel("AUC")
  axes[0].legend()
  fig.suptitle(f"{out['variant']}: {', '.join(f'{k}={v}' for k, v in out['overrides'].items())}")
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)


def main(argv):
  del argv
  fl = flags.FLAGS
  overrides = trainer.parse_overrides(fl.set)
  out = run(fl.work, fl.pipeline_name, fl.variant, overrides, fl.seed)
  out["overrides"] = overrides
  write_json(out, fl.out_dir, fl.name)
  plot(out, os.path.join(fl.out_dir, f"{fl.name}.png"))
  print(f"wrote {fl.out_dir}/{fl.name}.json and .png")


if __name__ == "__main__":
  define_run_flags("train_curves")
  flags.DEFINE_string("variant", "baseline", "Model name (trainer.MODELS).")
  flags.DEFINE_multi_string("set", [], "TrainConfig override key=value (repeatable).")
  flags.DEFINE_integer("seed", 1, "Training seed.")
  app.run(main)
