"""Ablation of the feedback model against multi-task baselines, on one generated dataset.

Trains every variant on the same transformed examples of one pipeline run (same steps, batch and
seed), scores the raw eval split through the same Transform layer and serving function, and reports
test AUC per head, the gap to the oracle AUC from the simulator's truth, by user-activity slice;
the seesaw check (each head's AUC against shared-bottom); and training examples/s.

    python -m bench.ablation_feedback --work work --steps 300
"""

from __future__ import annotations

import glob
import os
import time
from typing import Dict, List

import numpy as np
import tensorflow as tf
import tensorflow_transform as tft
from absl import app, flags, logging

from bench import quality_report as qr
from bench.common import define_run_flags, write_json
from data_gen.simulator import read_ground_truth
from models import features as F
from models import trainer
from models.spec import ModelSpec
from serving.examples_io import latest_examples_dir, read_examples

VARIANTS = ["dnn", "shared_bottom", "mmoe", "ple", "feedback_no_negative", "feedback_no_triplet",
            "feedback"]
REFERENCE = "shared_bottom"
WARMUP_STEPS = 20


def latest_transform_dirs(work: str, pipeline_name: str) -> Dict[str, str]:
  root = os.path.join(work, "tfx", pipeline_name, "Transform")
  graph = sorted(glob.glob(os.path.join(root, "transform_graph", "*")), key=os.path.getmtime)
  examples = sorted(glob.glob(os.path.join(root, "transformed_examples", "*")),
                    key=os.path.getmtime)
  if not graph or not examples:
    raise FileNotFoundError(f"no Transform outputs under {root}; run the pipeline first")
  return {"graph": graph[-1], "examples": examples[-1]}


def train_variant(name: str, tft_output, train_pattern: str, steps: int, batch_size: int,
                  seed: int, cfg: trainer.TrainConfig):
  """Trains one variant; returns (model, training examples/s after warm-up)."""
  tf.keras.utils.set_random_seed(seed)
  spec = ModelSpec.from_transform_output(tft_output, cfg.embedding_dim)
  model = trainer.MODEL_BUILDERS[name](spec)
  trainer.compile_model(model, cfg.learning_rate, cfg.triplet_weight, cfg.triplet_margin)
  ds = trainer.transformed_dataset(train_pattern, tft_output, batch_size, model.output_names,
                                   shuffle_seed=seed)
  model.fit(ds, steps_per_epoch=WARMUP_STEPS, epochs=1, verbose=0)  # traces the graph
  start = time.perf_counter()
  model.fit(ds, steps_per_epoch=steps - WARMUP_STEPS, epochs=1, verbose=0)
  seconds = time.perf_counter() - start
  return model, (steps - WARMUP_STEPS) * batch_size / seconds


def seesaw(results: Dict[str, dict], reference: str = REFERENCE) -> Dict[str, dict]:
  """Per variant: each head's AUC minus the reference's (overall); seesaw = some up, some down."""
  out = {}
  ref = results[reference]["report"]["heads"]
  for name, res in results.items():
    deltas = {h: res["report"]["heads"][h]["all"]["auc"] - ref[h]["all"]["auc"] for h in F.HEADS}
    out[name] = {"delta_auc_vs_" + reference: deltas,
                 "seesaw": bool(max(deltas.values()) > 0 > min(deltas.values()))}
  return out


def plot(results: Dict[str, dict], path: str) -> None:
  import matplotlib  # pylint: disable=import-outside-toplevel
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel
  slices = qr.SLICES
  heads = list(F.HEADS)
  fig, axes = plt.subplots(1, len(heads), figsize=(5.2 * len(heads), 4.2), sharey=False)
  width = 0.8 / len(results)
  for ax, head in zip(axes, heads):
    x = np.arange(len(slices))
    for i, (name, res) in enumerate(results.items()):
      rows = res["report"]["heads"][head]
      ax.bar(x + i * width - 0.4 + width / 2, [rows[s]["auc"] for s in slices], width, label=name)
    oracle = [next(iter(results.values()))["report"]["heads"][head][s]["oracle_auc"]
              for s in slices]
    ax.scatter(x, oracle, marker="_", s=900, color="black", label="oracle (truth)", zorder=3)
    ax.set_xticks(x, slices)
    ax.set_title(f"{head}: test AUC")
    lo = min(min(res["report"]["heads"][head][s]["auc"] for s in slices)
             for res in results.values())
    ax.set_ylim(max(0.5, lo - 0.03), max(oracle) + 0.02)
    ax.grid(axis="y", alpha=0.3)
  handles, labels = axes[0].get_legend_handles_labels()
  fig.legend(handles, labels, loc="lower center", ncol=len(labels), fontsize=8)
  fig.suptitle("Feedback-model ablation vs multi-task baselines (same data, steps, seed)")
  fig.tight_layout(rect=(0, 0.07, 1, 1))
  fig.savefig(path, dpi=110)
  plt.close(fig)


def run(work: str, pipeline_name: str, out_dir: str, steps: int, batch_size: int, seed: int,
        variants: List[str]) -> dict:
  dirs = latest_transform_dirs(work, pipeline_name)
  tft_output = tft.TFTransformOutput(dirs["graph"])
  train_pattern = os.path.join(dirs["examples"], "Split-train", "*.gz")
  examples = read_examples(latest_examples_dir(work, pipeline_name), limit=10**9)
  truth = read_ground_truth(os.path.join(work, "logs"))
  cfg = trainer.TrainConfig()
  results = {}
  for i, name in enumerate(variants, 1):
    logging.info("[%d/%d] training %s for %d steps", i, len(variants), name, steps)
    print(f"[{i}/{len(variants)}] {name}: training {steps} steps x {batch_size}", flush=True)
    model, eps = train_variant(name, tft_output, train_pattern, steps, batch_size, seed, cfg)
    module = trainer.ServingModule(model, tft_output)
    report = qr.build_report(examples, qr.score_with(module.serve, examples), truth)
    results[name] = {"train_examples_per_second": eps, "params": model.count_params(),
                     "report": report}
    h = report["heads"]
    print(f"    view {h['effective_view']['all']['auc']:.4f}  interact "
          f"{h['interact']['all']['auc']:.4f}  buy {h['buy']['all']['auc']:.4f}  "
          f"{eps:,.0f} ex/s", flush=True)
  out = {"work": os.path.abspath(work), "steps": steps, "batch_size": batch_size, "seed": seed,
         "n_eval": len(examples), "variants": results}
  if REFERENCE in results:
    out["seesaw"] = seesaw(results)
  write_json(out, out_dir, "ablation_feedback")
  plot(results, os.path.join(out_dir, "ablation_feedback.png"))
  return out


def format_table(out: dict) -> str:
  lines = [f"{'variant':<22}{'slice':<6}" + "".join(f"{h[:8]:>9}{'gap':>7}" for h in F.HEADS)
           + f"{'ex/s':>9}"]
  for name, res in out["variants"].items():
    for sl in qr.SLICES:
      row = f"{name:<22}{sl:<6}"
      for h in F.HEADS:
        r = res["report"]["heads"][h][sl]
        row += f"{r['auc']:>9.4f}{r['gap_to_oracle']:>7.3f}"
      row += f"{res['train_examples_per_second']:>9,.0f}" if sl == "all" else ""
      lines.append(row)
  oracle = next(iter(out["variants"].values()))["report"]["heads"]
  lines.append(f"{'oracle':<22}{'all':<6}" + "".join(
      f"{oracle[h]['all']['oracle_auc']:>9.4f}{'':>7}" for h in F.HEADS))
  if "seesaw" in out:
    lines.append(f"\nAUC minus {REFERENCE} (overall): view / interact / buy, seesaw")
    for name, s in out["seesaw"].items():
      d = s[f"delta_auc_vs_{REFERENCE}"]
      lines.append(f"{name:<22}" + " ".join(f"{d[h]:+.4f}" for h in F.HEADS)
                   + ("  seesaw" if s["seesaw"] else ""))
  return "\n".join(lines)


def main(argv):
  del argv
  fl = flags.FLAGS
  out = run(fl.work, fl.pipeline_name, fl.out_dir, fl.steps, fl.batch_size, fl.seed,
            fl.variants)
  print(format_table(out))
  print(f"\nwrote {fl.out_dir}/ablation_feedback.json and .png")


if __name__ == "__main__":
  define_run_flags()
  flags.DEFINE_integer("steps", 300, "Training steps per variant (~1 epoch at default scale).")
  flags.DEFINE_integer("batch_size", 256, "Batch size.")
  flags.DEFINE_integer("seed", 7, "Seed for initialisation and shuffling.")
  flags.DEFINE_list("variants", VARIANTS, "Variants to compare.")
  app.run(main)
