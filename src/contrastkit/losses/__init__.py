"""Contrastive and self-supervised losses: pure functions and thin nn.Modules.

Every loss takes its embeddings first, hyper-parameters as keywords and ``validate=True`` (check the
inputs are finite; the trainer turns it off on its hot path), computes in float32 (float64 for
float64 inputs) even under autocast, and returns a scalar.
"""

from contrastkit.losses.aam_softmax import AAMSoftmaxLoss, aam_softmax_loss
from contrastkit.losses.clip import CLIPLoss, clip_loss
from contrastkit.losses.cosent import CoSENTLoss, cosent_loss
from contrastkit.losses.cosine import NegativeCosineSimilarity, negative_cosine_similarity
from contrastkit.losses.curl import bilinear_info_nce
from contrastkit.losses.dcl import DCLLoss, dcl_loss
from contrastkit.losses.dino import DINOLoss, dino_loss
from contrastkit.losses.info_nce import InfoNCELoss, NTXentLoss, info_nce
from contrastkit.losses.miners import (batch_all_triplets, batch_hard_triplets, hard_negatives_from_bank,
                                       semi_hard_triplets)
from contrastkit.losses.moco import MoCoLoss, moco_info_nce
from contrastkit.losses.pairs import PairInfoNCELoss, pair_info_nce
from contrastkit.losses.pairwise import (ContrastiveLoss, LogisticLoss, NPairLoss, SigLIPLoss, contrastive_loss,
                                         logistic_loss, n_pair_loss, sigmoid_loss)
from contrastkit.losses.redundancy import BarlowTwinsLoss, VICRegLoss, barlow_twins_loss, vicreg_loss
from contrastkit.losses.sampled_softmax import SampledSoftmaxLoss, bpr_loss, sampled_softmax_loss
from contrastkit.losses.stdim import STDIMLoss, stdim_loss, stdim_loss_terms
from contrastkit.losses.supcon import SupConLoss, supcon_loss
from contrastkit.losses.swav import SwAVLoss, sinkhorn_knopp, swav_loss
from contrastkit.losses.tiled import tiled_clip_loss, tiled_info_nce
from contrastkit.losses.triplet import TripletLoss, triplet_loss

__all__ = [
    "BarlowTwinsLoss", "CLIPLoss", "CoSENTLoss", "ContrastiveLoss", "DCLLoss", "DINOLoss", "InfoNCELoss",
    "LogisticLoss", "MoCoLoss", "NPairLoss", "NTXentLoss", "NegativeCosineSimilarity", "PairInfoNCELoss",
    "SigLIPLoss", "SupConLoss", "SwAVLoss", "TripletLoss", "VICRegLoss", "barlow_twins_loss",
    "batch_all_triplets", "batch_hard_triplets", "clip_loss", "contrastive_loss", "cosent_loss", "dcl_loss",
    "dino_loss", "hard_negatives_from_bank", "info_nce", "logistic_loss", "moco_info_nce", "n_pair_loss",
    "negative_cosine_similarity", "pair_info_nce", "semi_hard_triplets", "sigmoid_loss", "sinkhorn_knopp",
    "supcon_loss", "swav_loss", "tiled_clip_loss", "tiled_info_nce", "triplet_loss", "vicreg_loss",
    "SampledSoftmaxLoss", "bpr_loss", "sampled_softmax_loss",
    "STDIMLoss", "stdim_loss", "stdim_loss_terms",
    "AAMSoftmaxLoss", "aam_softmax_loss", "bilinear_info_nce",
]
