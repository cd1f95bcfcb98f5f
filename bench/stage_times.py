"""Wall time of each component of the latest pipeline run, read from ML Metadata.

    python -m bench.stage_times --metadata work/tfx/metadata/livestream-ranking/metadata.db
"""

from __future__ import annotations

import argparse
import json

from pipeline.run_outputs import open_store


def stage_seconds(metadata_path: str) -> dict:
  """{component: seconds} for the most recent execution of each component type."""
  store = open_store(metadata_path)
  types = {t.id: t.name for t in store.get_execution_types()}
  latest = {}
  for ex in store.get_executions():
    name = types[ex.type_id].split(".")[-1]
    if name not in latest or ex.create_time_since_epoch > latest[name].create_time_since_epoch:
      latest[name] = ex
  ordered = sorted(latest.items(), key=lambda kv: kv[1].create_time_since_epoch)
  return {name: round((ex.last_update_time_since_epoch - ex.create_time_since_epoch) / 1000, 1)
          for name, ex in ordered}


if __name__ == "__main__":
  parser = argparse.ArgumentParser(description=__doc__)
  parser.add_argument("--metadata", required=True)
  times = stage_seconds(parser.parse_args().metadata)
  print(json.dumps(times, indent=2))
  print("total", round(sum(times.values()), 1))
