"""Self-supervised methods, each an nn.Module with ``training_step(views) -> dict of losses``."""

from contrastkit.methods.registry import METHODS, list_methods, register_method
from contrastkit.methods.simclr import SimCLR

__all__ = ["METHODS", "SimCLR", "list_methods", "register_method"]
