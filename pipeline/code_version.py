"""A fingerprint of the code the pipeline's components run, for TFX's cache keys.

TFX caches an execution by its component, inputs and execution properties; it cannot see that
``models/trainer.py`` changed when the Trainer gets its ``run_fn`` by module path (it
fingerprints only a ``module_file``). The pipeline puts this fingerprint in the ExampleGen's,
Transform's and Trainer's properties, so editing the code re-runs them instead of reusing
artifacts that other code made.
"""

from __future__ import annotations

import hashlib
import os
from typing import Sequence

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The packages whose code decides what the ExampleGen, Transform and Trainer produce.
PACKAGES = ("components", "models", "data_gen", "schemas")


def code_version(root: str = REPO, packages: Sequence[str] = PACKAGES) -> str:
  """SHA-256 (first 16 hex digits) over the paths and contents of the packages' .py files."""
  digest = hashlib.sha256()
  for package in packages:
    base = os.path.join(root, package)
    if not os.path.isdir(base):
      raise FileNotFoundError(f"package {package!r} not found under {root}")
    for dirpath, dirnames, filenames in os.walk(base):
      dirnames.sort()
      for name in sorted(f for f in filenames if f.endswith(".py")):
        path = os.path.join(dirpath, name)
        digest.update(os.path.relpath(path, root).encode() + b"\0")
        with open(path, "rb") as f:
          digest.update(f.read() + b"\0")
  return digest.hexdigest()[:16]
