"""Custom TFX components of the live-stream ranking pipeline."""
