"""Ranking models, shared layers, Transform's preprocessing_fn and the Trainer's run_fn."""
import os

# Keras 2 (tf_keras): tensorflow-recommenders and TFT/TFMA 1.16 need it. Must precede TF import.
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
