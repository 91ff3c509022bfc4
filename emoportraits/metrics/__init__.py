"""Evaluation metrics."""
from .image import l1_error, ssim

__all__ = ["l1_error", "ssim"]
