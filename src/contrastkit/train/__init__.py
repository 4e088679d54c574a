"""Training: the loop, schedules, optimizers and checkpoints."""

from contrastkit.train.checkpoint import load_checkpoint, save_atomic, write_atomic
from contrastkit.train.optim import LARS, SGD, create_optimizer
from contrastkit.train.schedules import cosine_with_warmup
from contrastkit.train.trainer import Trainer, TrainerState, TrainingDiverged, read_metrics

__all__ = ["LARS", "SGD", "Trainer", "TrainerState", "TrainingDiverged", "cosine_with_warmup",
           "create_optimizer", "load_checkpoint", "read_metrics", "save_atomic", "write_atomic"]
