"""Pipeline settings shared by the local and Kubeflow V2 runners."""

PIPELINE_NAME = "livestream-ranking"
PREPROCESSING_FN = "models.preprocessing.preprocessing_fn"
RUN_FN = "models.trainer.run_fn"
# A budget, not a schedule: the Trainer runs epochs over the train split and stops early when
# the eval loss stops improving (models/trainer.py::fit); ~10 epochs at the default scale.
TRAIN_STEPS = 3000
# Blessing: the model must beat this AUC on the effective-view head (Evaluator threshold).
MIN_EFFECTIVE_VIEW_AUC = 0.55
BEAM_PIPELINE_ARGS = ["--direct_running_mode=in_memory", "--direct_num_workers=1"]
