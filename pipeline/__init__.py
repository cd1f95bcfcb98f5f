"""The TFX pipeline definition (pure: no paths, no orchestrator)."""
