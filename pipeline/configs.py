"""Pipeline settings shared by the local and Kubeflow V2 runners."""

PIPELINE_NAME = "livestream-ranking"
PREPROCESSING_FN = "models.preprocessing.preprocessing_fn"
RUN_FN = "models.trainer.run_fn"
# A budget, not a schedule: the Trainer runs epochs over the train split and stops early when
# the eval loss stops improving (models/trainer.py::fit); ~10 epochs at the default scale.
TRAIN_STEPS = 3000
# Blessing: the model must beat this AUC on the effective-view head (Evaluator threshold).
MIN_EFFECTIVE_VIEW_AUC = 0.55
# ...and no head's AUC more than this below the latest blessed model's (run-to-run sd ~0.002).
MAX_AUC_DROP = 0.01
# The local demo's Beam runner (pipeline/beam_presets.py); `make demo BEAM=...` overrides it.
# Not multi_processing: on Beam 2.59 it lost one side of the ExampleGen's impression join on the
# default-scale logs (BUILD_NOTES "Demo time").
LOCAL_BEAM_PRESET = "in_memory"
