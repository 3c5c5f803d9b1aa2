"""Losses, the WGAN-GP trainer (Algorithm 1 of seed 000) and checkpoints."""

from .losses import gradient_penalty, patch_mse
from .perceptual import PerceptualLoss
from .trainer import LOSSES, TrainConfig, Trainer, TrainState, learning_rate, train, validate

__all__ = [
    "LOSSES",
    "PerceptualLoss",
    "TrainConfig",
    "TrainState",
    "Trainer",
    "gradient_penalty",
    "learning_rate",
    "patch_mse",
    "train",
    "validate",
]
