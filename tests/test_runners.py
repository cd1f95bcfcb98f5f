"""The Kubeflow V2 runner compiles the pipeline offline, with every component."""

import json

import kubeflow_v2_runner

EXPECTED = {"LiveLogExampleGen", "StatisticsGen", "ImportSchemaGen", "ExampleValidator",
            "AnomalyGate", "Transform", "Trainer", "Evaluator", "Pusher"}


def test_kubeflow_v2_compile(tmp_path):
  out = kubeflow_v2_runner.compile_pipeline(str(tmp_path / "p.json"), "gs://b/x",
                                            "gcr.io/p/img:1", "baseline")
  spec = json.load(open(out))["pipelineSpec"]
  assert set(spec["root"]["dag"]["tasks"]) == EXPECTED
  assert spec["pipelineInfo"]["name"] == "livestream-ranking"
  trainer = spec["deploymentSpec"]["executors"]["Trainer_executor"]["container"]
  assert trainer["image"] == "gcr.io/p/img:1"
  # The Transform waits for the anomaly gate, so bad data never reaches training.
  assert "AnomalyGate" in spec["root"]["dag"]["tasks"]["Transform"]["dependentTasks"]
