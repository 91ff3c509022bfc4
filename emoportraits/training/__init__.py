"""Training the main model: configuration, the per-iteration losses, checkpoints (used by train/)."""
from .config import DataSource, TrainConfig
from .step import GeneratorStep, TrainBatch, discriminator_loss

__all__ = ["DataSource", "GeneratorStep", "TrainBatch", "TrainConfig", "discriminator_loss"]
