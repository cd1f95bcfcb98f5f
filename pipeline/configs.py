"""Pipeline settings shared by the local and Kubeflow V2 runners."""

PIPELINE_NAME = "livestream-ranking"
PREPROCESSING_FN = "models.preprocessing.preprocessing_fn"
RUN_FN = "models.trainer.run_fn"
TRAIN_STEPS = 600
EVAL_STEPS = 50
# Blessing: the model must beat this AUC on the effective-view head (Evaluator threshold).
MIN_EFFECTIVE_VIEW_AUC = 0.55
BEAM_PIPELINE_ARGS = ["--direct_running_mode=in_memory", "--direct_num_workers=1"]
