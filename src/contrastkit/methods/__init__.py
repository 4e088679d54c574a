"""Self-supervised methods: nn.Modules with ``training_step(views, labels) -> dict of losses`` and
the hooks of :class:`~contrastkit.methods.base.Method`, selectable by name (with AAM-softmax, the
supervised baseline of speaker encoders); and the contrastive auxiliary losses an RL agent adds to
its own update (CURL, ATC)."""

from contrastkit.methods.aam_softmax import AAMSoftmax
from contrastkit.methods.base import Method, MomentumMethod, Progress, forward_views
from contrastkit.methods.byol import BYOL
from contrastkit.methods.clip import CLIP, SigLIP
from contrastkit.methods.dino import DINO
from contrastkit.methods.frame_contrast import ATC, CURL, STDIM
from contrastkit.methods.moco import MoCoV2, MoCoV3
from contrastkit.methods.recsys import BPRMF, LightGCN, SimGCL, TwoTower, XSimGCL
from contrastkit.methods.redundancy import BarlowTwins, VICReg
from contrastkit.methods.registry import METHODS, list_methods, register_method
from contrastkit.methods.rl_auxiliary import ATCAuxiliaryLoss, CURLAuxiliaryLoss
from contrastkit.methods.simclr import SimCLR
from contrastkit.methods.simcse import CoSENT, SimCSE, SimCSEUnsup
from contrastkit.methods.simsiam import SimSiam
from contrastkit.methods.supcon import SupCon
from contrastkit.methods.swav import SwAV
from contrastkit.methods.ts2vec import TS2Vec

__all__ = ["AAMSoftmax", "ATC", "ATCAuxiliaryLoss", "BPRMF", "BYOL", "BarlowTwins", "CLIP", "CURL",
           "CURLAuxiliaryLoss", "CoSENT", "DINO", "LightGCN", "METHODS", "Method", "MoCoV2", "MoCoV3",
           "MomentumMethod", "Progress", "SigLIP", "STDIM", "SimCLR", "SimCSE", "SimCSEUnsup", "SimGCL", "SimSiam",
           "SupCon", "SwAV", "TS2Vec", "TwoTower", "VICReg", "XSimGCL", "forward_views", "list_methods",
           "register_method"]
