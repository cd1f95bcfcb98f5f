"""Ablation of the feedback and lifelong models against multi-task baselines, on one dataset.

Trains every variant on the same transformed examples of one pipeline run with the Trainer's own
regime (epochs over the train split, early stopping on the eval loss, best weights restored), for
several training seeds; scores the raw eval split through the same Transform layer and serving
function; and reports per head the test AUC as mean ± sd over the seeds next to the reachable and
oracle AUCs of the simulator's truth and the share of the user-signal lift captured, by
user-activity slice; the seesaw check against shared-bottom; epochs trained and examples/s.

    python -m bench.ablation_feedback --work work --seeds 1,2,3
"""

from __future__ import annotations

import dataclasses
import os
import time
from typing import Dict, List

import numpy as np
import tensorflow as tf
import tensorflow_transform as tft
from absl import app, flags, logging

from bench import lifelong_relevance
from bench import quality_report as qr
from bench.common import define_run_flags, grouped_bars, write_json
from data_gen import reachable as rc
from data_gen.simulator import read_ground_truth
from models import features as F
from models import trainer
from pipeline import run_outputs
from serving.examples_io import latest_examples_dir, read_examples

VARIANTS = ["dnn", "shared_bottom", "dcn", "mmoe", "ple", "baseline", "feedback_no_realtime",
            "feedback_no_negative", "feedback_no_triplet", "feedback", "lifelong_mean_pool",
            "lifelong"]
# The seesaw table's reference: the model the demo trains by default.
REFERENCE = "baseline"
# A mechanism earns its keep when its lift is at least this share of its reachable bound.
BOUND_SHARE_BAR = 0.5


@dataclasses.dataclass(frozen=True)
class Mechanism:
  """A model with one signal against the same model without it, and that signal's bound.

  The bound is the reachable AUC minus the reachable AUC of the ceiling without the signal
  (``without``, a :data:`data_gen.reachable.VARIANTS` name).
  """
  name: str
  model: str
  reference: str
  without: str


MECHANISMS = (
    # The feedback sequences, against the ceiling that keeps what the trigger item reveals (the
    # reference model sees the trigger too).
    Mechanism("realtime_sequences", "feedback", "feedback_no_realtime", rc.NO_RT_SEQUENCES),
    # The same pair against the whole appetite (trigger and sequences): the looser reading.
    Mechanism("realtime_vs_all_appetite", "feedback", "feedback_no_realtime", rc.NO_APPETITE),
    Mechanism("lifelong_extraction", "lifelong", "lifelong_mean_pool", rc.NO_LIFELONG),
)


def latest_transform_dirs(work: str, pipeline_name: str) -> Dict[str, str]:
  """The transform graph and transformed examples of Transform's newest finished run (one run).

  Raises:
    FileNotFoundError: Transform never finished under ``work``.
  """
  dirs = run_outputs.latest_output_dirs(work, pipeline_name, run_outputs.TRANSFORM,
                                        ("transform_graph", "transformed_examples"))
  return {"graph": dirs["transform_graph"], "examples": dirs["transformed_examples"]}


def train_variant(name: str, tft_output, examples_dir: str, seed: int, cfg: trainer.TrainConfig):
  """Trains one variant as the Trainer does; returns (model, per-epoch history, seconds)."""
  tf.keras.utils.set_random_seed(seed)
  cfg = dataclasses.replace(cfg, model_name=name)
  model = trainer.build_model(cfg.model_spec(tft_output), cfg)
  data = lambda split, shuffle, batch=cfg.batch_size: trainer.transformed_dataset(  # noqa: E731
      os.path.join(examples_dir, f"Split-{split}", "*.gz"), tft_output, batch,
      model.tasks, shuffle_seed=seed if shuffle else None, repeat=False)
  trainer.start_linear_path(model, data("train", False, trainer.LINEAR_START_BATCH), cfg,
                            data("eval", False, trainer.LINEAR_START_BATCH))
  start = time.perf_counter()
  history = trainer.fit(model, data("train", True), data("eval", False), cfg, verbose=0)
  seconds = time.perf_counter() - start
  relevance = (lifelong_relevance.relevance_report(model.network, data("eval", False))
               if lifelong_relevance.has_extraction(model.network) else None)
  return model, history.history, seconds, relevance


def summarize(reports: List[dict]) -> Dict[str, Dict[str, dict]]:
  """Per head x slice: AUC, lift captured and calibration as mean and sd over training seeds."""
  out: Dict[str, Dict[str, dict]] = {}
  for head in F.HEADS:
    out[head] = {}
    for sl in qr.SLICES:
      rows = [r["heads"][head][sl] for r in reports]
      cell = {}
      for key in ("auc", "lift_captured", "calibration", "gauc"):
        vals = np.array([row[key] for row in rows], np.float64)
        cell[f"{key}_mean"] = float(vals.mean())
        cell[f"{key}_sd"] = float(vals.std(ddof=1)) if len(vals) > 1 else 0.0
      for key in ["n"] + [f"{prefix}_auc" for prefix, _ in qr.CEILINGS]:
        cell[key] = rows[0][key]
      out[head][sl] = cell
  return out


def seed_ensemble(seed_scores: List[Dict[str, np.ndarray]]) -> Dict[str, np.ndarray]:
  """Per head, the mean of several training seeds' scores of the same examples."""
  return {h: np.mean([s[h] for s in seed_scores], axis=0) for h in seed_scores[0]}


def mechanism_lifts(results: Dict[str, dict],
                    mechanisms=MECHANISMS) -> Dict[str, Dict[str, Dict[str, dict]]]:
  """Per mechanism whose two variants ran, per head and slice: the AUC lift paired by training
  seed (mean, sd), its reachable bound, the share of the bound, and whether it clears the bar
  (share >= :data:`BOUND_SHARE_BAR` and mean > 2 sd)."""
  out: Dict[str, Dict[str, Dict[str, dict]]] = {}
  for mech in mechanisms:
    if mech.model not in results or mech.reference not in results:
      continue
    with_runs, without_runs = results[mech.model]["runs"], results[mech.reference]["runs"]
    seeds = sorted(set(with_runs) & set(without_runs))
    if not seeds:
      raise ValueError(f"mechanism {mech.name}: {mech.model} and {mech.reference} share no "
                       f"training seed ({sorted(with_runs)} vs {sorted(without_runs)})")
    out[mech.name] = {"model": mech.model, "reference": mech.reference, "without": mech.without,
                      "seeds": seeds, "heads": {}}
    for head in F.HEADS:
      out[mech.name]["heads"][head] = {}
      for sl in qr.SLICES:
        lifts = np.array([with_runs[s]["report"]["heads"][head][sl]["auc"]
                          - without_runs[s]["report"]["heads"][head][sl]["auc"] for s in seeds])
        ceiling = results[mech.model]["summary"][head][sl]
        bound = ceiling[f"{rc.REACHABLE}_auc"] - ceiling[f"{mech.without}_auc"]
        mean = float(lifts.mean())
        sd = float(lifts.std(ddof=1)) if len(lifts) > 1 else 0.0
        share = mean / bound if bound > 0 else float("nan")
        out[mech.name]["heads"][head][sl] = {
            "lift_mean": mean, "lift_sd": sd, "bound": float(bound), "share_of_bound": share,
            "clears_bar": bool(share >= BOUND_SHARE_BAR and mean > 2 * sd)}
  return out


def seesaw(results: Dict[str, dict], reference: str = REFERENCE) -> Dict[str, dict]:
  """Per variant: each head's mean AUC minus the reference's (overall); seesaw = some up, some down."""
  out = {}
  ref = results[reference]["summary"]
  for name, res in results.items():
    deltas = {h: res["summary"][h]["all"]["auc_mean"] - ref[h]["all"]["auc_mean"]
              for h in F.HEADS}
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
  first = next(iter(results.values()))["summary"]
  for ax, head in zip(axes, heads):
    rows = {name: res["summary"][head] for name, res in results.items()}
    x = grouped_bars(ax, slices, {n: [r[s]["auc_mean"] for s in slices] for n, r in rows.items()},
                     errors={n: [r[s]["auc_sd"] for s in slices] for n, r in rows.items()})
    for key, marker, label in (("oracle_auc", "_", "oracle (truth)"),
                               (f"{rc.REACHABLE}_auc", "x", "reachable")):
      ax.scatter(x, [first[head][s][key] for s in slices], marker=marker, s=300 if marker == "_"
                 else 40, color="black", label=label, zorder=3)
    ax.set_title(f"{head}: test AUC (mean ± sd over seeds)")
    lo = min(min(res["summary"][head][s]["auc_mean"] for s in slices) for res in results.values())
    ax.set_ylim(max(0.5, lo - 0.03), max(first[head][s]["oracle_auc"] for s in slices) + 0.02)
    ax.grid(axis="y", alpha=0.3)
  handles, labels = axes[0].get_legend_handles_labels()
  fig.legend(handles, labels, loc="lower center", ncol=min(len(labels), 6), fontsize=8)
  fig.suptitle("Model ablation on one generated dataset (same data, training regime and seeds)")
  fig.tight_layout(rect=(0, 0.1, 1, 1))
  fig.savefig(path, dpi=110)
  plt.close(fig)


def export_dir(export_base: str, variant: str, seed: int) -> str:
  """Where ``--export_base`` puts one trained variant: a model base path holding version 1, the
  layout the Pusher writes and the server and the closed loop (``--model_base``) read."""
  return os.path.join(export_base, f"{variant}_seed{seed}")


def run(work: str, pipeline_name: str, out_dir: str, seeds: List[int], variants: List[str],
        name: str = "ablation_feedback", cfg: trainer.TrainConfig | None = None,
        export_base: str | None = None) -> dict:
  """Trains and scores every variant for every seed; with ``export_base``, also exports each
  trained model's serving signatures (``rank`` included where the model serves what it reads)
  under :func:`export_dir`."""
  dirs = latest_transform_dirs(work, pipeline_name)
  os.makedirs(out_dir, exist_ok=True)
  tft_output = tft.TFTransformOutput(dirs["graph"])
  examples = read_examples(latest_examples_dir(work, pipeline_name), limit=10**9)
  truth = read_ground_truth(os.path.join(work, "logs"))
  cfg = cfg or trainer.TrainConfig()
  results = {}
  total = len(variants) * len(seeds)
  done = 0
  for variant in variants:
    runs = {}
    seed_scores = []
    for seed in seeds:
      done += 1
      logging.info("[%d/%d] training %s, seed %d", done, total, variant, seed)
      model, history, seconds, relevance = train_variant(variant, tft_output, dirs["examples"],
                                                         seed, cfg)
      if export_base:
        target = os.path.join(export_dir(export_base, variant, seed), "1")
        trainer.export_serving_model(
            model, tft_output, target,
            trainer.rank_search(dataclasses.replace(cfg, model_name=variant),
                                model.tasks.served_outputs))
        logging.info("exported %s seed %d to %s", variant, seed, target)
      module = trainer.ServingModule(model, tft_output)
      scores = qr.score_with(module.serve, examples)
      seed_scores.append(scores)
      report = qr.build_report(examples, scores, truth)
      h = report["heads"]
      runs[str(seed)] = {"epochs": len(history["loss"]), "seconds": seconds,
                         "val_loss": history["val_loss"], "report": report}
      if relevance:
        runs[str(seed)]["extraction_relevance"] = relevance
      print(f"[{done}/{total}] {variant:<22} seed {seed}: view {h['effective_view']['all']['auc']:.4f}"
            f"  interact {h['interact']['all']['auc']:.4f}  buy {h['buy']['all']['auc']:.4f}  "
            f"({len(history['loss'])} epochs, {seconds:.0f} s)", flush=True)
    results[variant] = {"params": model.count_params(), "runs": runs,
                        "summary": summarize([r["report"] for r in runs.values()])}
    if len(seed_scores) > 1:
      # The seeds' mean score: how much of the gap to the ceiling is run-to-run variance.
      results[variant]["seed_ensemble"] = qr.build_report(
          examples, seed_ensemble(seed_scores), truth)["heads"]
    relevance_runs = [r["extraction_relevance"] for r in runs.values()
                      if "extraction_relevance" in r]
    if relevance_runs:
      results[variant]["extraction_relevance"] = lifelong_relevance.summarize(relevance_runs)
      lifelong_relevance.plot(variant, results[variant]["extraction_relevance"],
                              os.path.join(out_dir, f"{name}_{variant}_relevance.png"))
  out = {"work": os.path.abspath(work), "seeds": seeds, "train_config": dataclasses.asdict(cfg),
         "n_eval": len(examples), "variants": results}
  if REFERENCE in results:
    out["seesaw"] = seesaw(results)
  out["mechanisms"] = mechanism_lifts(results)
  write_json(out, out_dir, name)
  plot(results, os.path.join(out_dir, f"{name}.png"))
  return out


def format_table(out: dict) -> str:
  """AUC mean ± sd per head and slice, the lift captured, and the ceilings."""
  lines = [f"{'variant':<22}{'slice':<6}" + "".join(f"{h[:12]:>16}{'lift':>6}" for h in F.HEADS)
           + f"{'epochs':>8}"]
  for name, res in out["variants"].items():
    epochs = np.mean([r["epochs"] for r in res["runs"].values()])
    for sl in qr.SLICES:
      row = f"{name:<22}{sl:<6}"
      for h in F.HEADS:
        c = res["summary"][h][sl]
        row += f"{c['auc_mean']:>9.4f}±{c['auc_sd']:.4f}{c['lift_captured_mean']:>6.2f}"
      row += f"{epochs:>8.1f}" if sl == "all" else ""
      lines.append(row)
    if "seed_ensemble" in res:
      lines.append(f"{'  mean of the seeds':<22}{'all':<6}" + "".join(
          f"{res['seed_ensemble'][h]['all']['auc']:>16.4f}{'':>6}" for h in F.HEADS))
  first = next(iter(out["variants"].values()))["summary"]
  for key, label in ((f"{rc.REACHABLE}_auc", "reachable"), (f"{rc.NEITHER}_auc", "reach. neither"),
                     ("oracle_auc", "oracle")):
    lines.append(f"{label:<22}{'all':<6}" + "".join(
        f"{first[h]['all'][key]:>16.4f}{'':>6}" for h in F.HEADS))
  for name, mech in out.get("mechanisms", {}).items():
    lines.append(f"\n{name}: {mech['model']} - {mech['reference']}, share of the bound "
                 f"(reachable - {mech['without']}); bar {BOUND_SHARE_BAR:.0%} and > 2 sd")
    for sl in qr.SLICES:
      cells = [mech["heads"][h][sl] for h in F.HEADS]
      lines.append(f"{'':<22}{sl:<6}" + "".join(
          f"{c['lift_mean']:>+9.4f}±{c['lift_sd']:.4f} /{c['bound']:.4f} = {c['share_of_bound']:>4.0%}"
          + ("*" if c["clears_bar"] else " ") for c in cells))
  if "seesaw" in out:
    lines.append(f"\nMean AUC minus {REFERENCE} (overall): view / interact / buy, seesaw")
    for name, s in out["seesaw"].items():
      d = s[f"delta_auc_vs_{REFERENCE}"]
      lines.append(f"{name:<22}" + " ".join(f"{d[h]:+.4f}" for h in F.HEADS)
                   + ("  seesaw" if s["seesaw"] else ""))
  return "\n".join(lines)


def main(argv):
  del argv
  fl = flags.FLAGS
  cfg = dataclasses.replace(trainer.TrainConfig(max_epochs=fl.max_epochs, patience=fl.patience),
                            **trainer.parse_overrides(fl.set))
  out = run(fl.work, fl.pipeline_name, fl.out_dir, [int(s) for s in fl.seeds], fl.variants,
            fl.name, cfg, fl.export_base)
  print(format_table(out))
  for variant, res in out["variants"].items():
    if "extraction_relevance" in res:
      print("\n" + lifelong_relevance.format_table(variant, res["extraction_relevance"]))
  print(f"\nwrote {fl.out_dir}/{fl.name}.json and .png")


if __name__ == "__main__":
  define_run_flags("ablation_feedback")
  flags.DEFINE_list("seeds", ["1", "2", "3"], "Training seeds (initialisation and shuffling).")
  flags.DEFINE_list("variants", VARIANTS, "Variants to compare.")
  flags.DEFINE_integer("max_epochs", trainer.TrainConfig.max_epochs, "Epoch budget.")
  flags.DEFINE_integer("patience", trainer.TrainConfig.patience, "Early-stopping patience.")
  flags.DEFINE_multi_string("set", [], "Any other TrainConfig override key=value (repeatable).")
  flags.DEFINE_string("export_base", None,
                      "Also export each trained model to <export_base>/<variant>_seed<seed>/1 "
                      "(e.g. for bench.closed_loop --model_base).")
  app.run(main)
