"""Test setup: Keras 2 before TensorFlow is imported, repo root on the path."""
import os
import sys

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def pytest_collection_modifyitems(config, items):
  """Runs the whole-pipeline (``e2e``) tests first, the rest in their usual order.

  ``make test`` spreads the files over two pytest-xdist workers (``--dist loadfile``), and
  the e2e file is the longest (~8 of ~22 minutes): started first, it runs beside the rest
  instead of after it.
  """
  del config
  items.sort(key=lambda item: item.get_closest_marker("e2e") is None)  # stable: e2e first
