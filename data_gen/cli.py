"""Command line: generate live-stream event logs.

    python -m data_gen.cli --out_dir data/logs --scale default --seed 7
    python -m data_gen.cli --out_dir data/logs_no_trap --trap_scale 0
"""

from __future__ import annotations

import json

from absl import app, flags

from data_gen import simulator
from data_gen.world import SCALES

FLAGS = flags.FLAGS
flags.DEFINE_string("out_dir", "data/logs", "Where the JSONL logs are written.")
flags.DEFINE_enum("scale", "default", list(SCALES), "Scale preset (data_gen/world.py SCALES).")
flags.DEFINE_integer("seed", 7, "Random seed.")
flags.DEFINE_integer("users", None, "Override the number of users.")
flags.DEFINE_integer("hosts", None, "Override the number of hosts (live rooms).")
flags.DEFINE_integer("days", None, "Override the number of simulated days.")
flags.DEFINE_float("trap_scale", 1.0, "Every greedy-trap strength (world.TrapConfig) times this; "
                   "0: a world without the trap.", lower_bound=0.0)
flags.DEFINE_float("corrupt_fraction", 0.0, "Share of sessions that get one bad log line.")
flags.DEFINE_bool("reuse", False, "Keep the logs already in out_dir when their summary.json "
                  "records the same settings and simulator code (so the pipeline's cache holds).")


def main(argv):
  del argv
  cfg = simulator.load_config(FLAGS.scale, FLAGS.seed, n_users=FLAGS.users,
                              n_hosts=FLAGS.hosts, days=FLAGS.days,
                              trap_scale=FLAGS.trap_scale)
  if FLAGS.reuse:
    why_not = simulator.reusable_logs(FLAGS.out_dir, cfg, FLAGS.corrupt_fraction)
    if why_not is None:
      print(f"reusing the logs in {FLAGS.out_dir} (same settings and simulator code)")
      return
    print(f"generating logs: {why_not}")
  summary = simulator.generate_logs(cfg, FLAGS.out_dir, FLAGS.corrupt_fraction)
  c = summary["counts"]
  print(f"wrote {c['impressions']} impressions in {c['sessions']} sessions, {c['events']} events "
        f"({c['corrupt_lines']} corrupt), {summary['lifelong_purchases']} lifelong purchases "
        f"to {summary['out_dir']} in {summary['seconds']}s")
  print("label rates:", json.dumps({k: round(v, 4) for k, v in summary["label_rates"].items()}))


if __name__ == "__main__":
  app.run(main)
