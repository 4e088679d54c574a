"""Contrastive and self-supervised losses: pure functions and thin nn.Modules."""

from contrastkit.losses.info_nce import InfoNCELoss, NTXentLoss, info_nce

__all__ = ["InfoNCELoss", "NTXentLoss", "info_nce"]
