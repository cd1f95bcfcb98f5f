"""livestream_tfx: live-stream e-commerce ranking on TFX. Pins come from constraints.txt."""

import os
import re

from setuptools import find_packages, setup

HERE = os.path.dirname(os.path.abspath(__file__))
DIRECT = ["tfx[kfp]", "apache-beam[gcp]", "tensorflow", "tf-keras", "tensorflow-recommenders",
          "tensorflow-serving-api", "absl-py", "grpcio", "matplotlib", "scikit-learn"]
# pytest-xdist: `make test` runs the suite on two workers (one per core).
DEV = ["pytest", "pytest-xdist", "ruff"]
# deepctr: reference PLE for the training-throughput comparison; dask, distributed: the
# DaskRunner engine of bench/beam_scaling.py.
BENCH = ["deepctr", "dask", "distributed"]


def _pins():
  pins = {}
  with open(os.path.join(HERE, "constraints.txt")) as f:
    for line in f:
      m = re.match(r"^([A-Za-z0-9_.\-]+)(\[[^\]]*\])?==(\S+)", line.strip())
      if m:
        pins[m.group(1).lower().replace("_", "-")] = m.group(3)
  return pins


def _req(name, pins):
  base = re.sub(r"\[.*\]", "", name).lower().replace("_", "-")
  if base not in pins:
    raise KeyError(f"{base} is not pinned in constraints.txt")
  return f"{name}=={pins[base]}"


PINS = _pins()
setup(
    name="livestream_tfx",
    version="0.1.0",
    description="Live-stream e-commerce ranking models in a TFX pipeline, on simulated logs.",
    python_requires=">=3.10,<3.11",
    packages=find_packages(include=["data_gen*", "components*", "models*", "pipeline*",
                                    "serving*", "bench*"]),
    package_data={"": ["*.pbtxt", "*.md"]},
    install_requires=[_req(n, PINS) for n in DIRECT],
    extras_require={"dev": [_req(n, PINS) for n in DEV],
                    "bench": [_req(n, PINS) for n in BENCH]},
)
