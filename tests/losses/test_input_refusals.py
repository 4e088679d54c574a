"""Inputs every loss must refuse with a message, where it used to compute something silently:
integer or bool embeddings, float class labels, NaN or infinite options, and batches too small
for the loss to mean anything (no negative to contrast with, no spread, no valid triplet)."""

import math
import re

import pytest
import torch
import torch.distributed as dist

from contrastkit.errors import ConfigError, InputError
from contrastkit.losses import (BarlowTwinsLoss, CLIPLoss, ContrastiveLoss, DCLLoss, DINOLoss, InfoNCELoss,
                                LogisticLoss, MoCoLoss, NPairLoss, SigLIPLoss, SupConLoss, SwAVLoss, TripletLoss,
                                VICRegLoss, barlow_twins_loss, batch_all_triplets, batch_hard_triplets, clip_loss,
                                contrastive_loss, dcl_loss, dino_loss, hard_negatives_from_bank, info_nce,
                                logistic_loss, moco_info_nce, n_pair_loss, negative_cosine_similarity,
                                semi_hard_triplets, sigmoid_loss, sinkhorn_knopp, supcon_loss, swav_loss,
                                tiled_clip_loss, tiled_info_nce, triplet_loss, vicreg_loss)

from loss_helpers import run_in_process_group


def x(n=4, d=3):
    return torch.randn(n, d)


LABELS = torch.tensor([0, 0, 1, 1])
SCALE = torch.tensor(2.0)

# -- integer and bool embeddings ---------------------------------------------------------------

# (the argument that gets the bad dtype, a call that passes ``bad`` there)
EMBEDDING_ARGUMENTS = {
    "info_nce": ("z_a", lambda bad: info_nce(bad, x())),
    "info_nce more_views": ("more_views[0]", lambda bad: info_nce(x(), x(), bad)),
    "info_nce negatives": ("negatives", lambda bad: info_nce(x(), x(), negatives=bad)),
    "tiled_info_nce": ("z_b", lambda bad: tiled_info_nce(x(), bad)),
    "moco queries": ("queries", lambda bad: moco_info_nce(bad, x())),
    "moco negatives": ("negatives", lambda bad: moco_info_nce(x(), x(), negatives=bad)),
    "clip_loss": ("image_features", lambda bad: clip_loss(bad, x(), SCALE)),
    "tiled_clip_loss": ("text_features", lambda bad: tiled_clip_loss(x(), bad, SCALE)),
    "contrastive_loss": ("x_a", lambda bad: contrastive_loss(bad, x(), torch.ones(4))),
    "n_pair_loss": ("anchors", lambda bad: n_pair_loss(bad, x())),
    "logistic_loss": ("x_b", lambda bad: logistic_loss(x(), bad)),
    "sigmoid_loss": ("x_a", lambda bad: sigmoid_loss(bad, x(), 1.0, -1.0)),
    "triplet_loss": ("negative", lambda bad: triplet_loss(x(), x(), bad)),
    "TripletLoss embeddings": ("embeddings", lambda bad: TripletLoss(miner="batch_hard")(bad, LABELS)),
    "TripletLoss bank": ("bank", lambda bad: TripletLoss(miner="batch_hard")(x(), LABELS, bank=bad,
                                                                            bank_labels=LABELS)),
    "batch_all_triplets": ("embeddings", lambda bad: batch_all_triplets(bad, LABELS)),
    "hard_negatives_from_bank": ("anchors", lambda bad: hard_negatives_from_bank(bad, LABELS, x(), LABELS)),
    "supcon_loss": ("z_a", lambda bad: supcon_loss(bad, x(), labels=LABELS)),
    "dcl_loss": ("z_b", lambda bad: dcl_loss(x(), bad)),
    "barlow_twins_loss": ("z_a", lambda bad: barlow_twins_loss(bad, x())),
    "vicreg_loss": ("z_b", lambda bad: vicreg_loss(x(), bad)),
    "negative_cosine_similarity": ("prediction", lambda bad: negative_cosine_similarity(bad, x())),
    "swav_loss": ("scores[1]", lambda bad: swav_loss([x(), bad])),
    "sinkhorn_knopp": ("scores", lambda bad: sinkhorn_knopp(bad)),
    "dino student": ("student_logits[1]", lambda bad: dino_loss([x(), bad], [x()], torch.zeros(3))),
    "dino teacher": ("teacher_logits[0]", lambda bad: dino_loss([x(), x()], [bad], torch.zeros(3))),
    "dino center": ("center", lambda bad: dino_loss([x(), x()], [x()], bad[0])),
}


@pytest.mark.parametrize("dtype", [torch.int64, torch.bool], ids=str)
@pytest.mark.parametrize("case", EMBEDDING_ARGUMENTS, ids=str)
def test_integer_and_bool_embeddings_are_refused(case, dtype):
    # Before: cast to float32 inside the loss and computed as if they were embeddings.
    name, call = EMBEDDING_ARGUMENTS[case]
    bad = torch.randint(0, 2, (4, 3)).to(dtype)
    message = f"{name} must be a floating-point tensor, got {dtype}; convert with .float()."
    with pytest.raises(InputError, match=f"^{re.escape(message)}$"):
        call(bad)


# -- float class labels ------------------------------------------------------------------------

FLOAT_LABELS = {
    "logistic_loss": ("labels", lambda labels: logistic_loss(x(), x(), labels=labels)),
    "batch_hard_triplets": ("labels", lambda labels: batch_hard_triplets(x(), labels)),
    "semi_hard_triplets bank": ("bank_labels", lambda labels: semi_hard_triplets(x(), LABELS, bank=x(),
                                                                                  bank_labels=labels)),
    "hard_negatives_from_bank": ("anchor_labels", lambda labels: hard_negatives_from_bank(x(), labels, x(),
                                                                                           LABELS)),
    "TripletLoss": ("labels", lambda labels: TripletLoss(miner="batch_all")(x(), labels)),
}


@pytest.mark.parametrize("case", FLOAT_LABELS, ids=str)
def test_float_class_labels_are_refused(case):
    # Before: compared for equality as floats, where rounding can split or merge classes.
    name, call = FLOAT_LABELS[case]
    with pytest.raises(InputError, match=rf"{name} must hold integer class ids, got dtype torch.float32; "
                                         rf"convert them with {name}\.long\(\)"):
        call(LABELS.float())


def test_contrastive_pair_labels_may_still_be_float_or_bool():
    # ``same`` is a 0/1 target, not a class id: float and bool stay accepted.
    x_a, x_b = x(), x()
    expected = contrastive_loss(x_a, x_b, torch.tensor([1, 0, 1, 0]))
    assert contrastive_loss(x_a, x_b, torch.tensor([1.0, 0.0, 1.0, 0.0])) == expected
    assert contrastive_loss(x_a, x_b, torch.tensor([True, False, True, False])) == expected


# -- NaN and infinite options ------------------------------------------------------------------

# (the option's name, a call that passes ``value`` as that option)
SCALAR_OPTIONS = {
    "InfoNCELoss temperature": ("temperature", lambda value: InfoNCELoss(temperature=value)),
    "info_nce temperature": ("temperature", lambda value: info_nce(x(), x(), temperature=value)),
    "tiled_info_nce temperature": ("temperature", lambda value: tiled_info_nce(x(), x(), temperature=value)),
    "MoCoLoss temperature": ("temperature", lambda value: MoCoLoss(temperature=value)),
    "CLIPLoss init_temperature": ("init_temperature", lambda value: CLIPLoss(init_temperature=value)),
    "CLIPLoss max_scale": ("max_scale", lambda value: CLIPLoss(max_scale=value)),
    "ContrastiveLoss margin": ("margin", lambda value: ContrastiveLoss(margin=value)),
    "NPairLoss l2_reg": ("l2_reg", lambda value: NPairLoss(l2_reg=value)),
    "LogisticLoss temperature": ("temperature", lambda value: LogisticLoss(temperature=value)),
    "LogisticLoss bias": ("bias", lambda value: LogisticLoss(bias=value)),
    "SigLIPLoss init_scale": ("init_scale", lambda value: SigLIPLoss(init_scale=value)),
    "SigLIPLoss init_bias": ("init_bias", lambda value: SigLIPLoss(init_bias=value)),
    "sigmoid_loss logit_scale": ("logit_scale", lambda value: sigmoid_loss(x(), x(), value, -1.0)),
    "sigmoid_loss logit_bias": ("logit_bias", lambda value: sigmoid_loss(x(), x(), 1.0, value)),
    "TripletLoss margin": ("margin", lambda value: TripletLoss(margin=value)),
    "batch_all_triplets margin": ("margin", lambda value: batch_all_triplets(x(), LABELS, margin=value)),
    "semi_hard_triplets margin": ("margin", lambda value: semi_hard_triplets(x(), LABELS, margin=value)),
    "SupConLoss temperature": ("temperature", lambda value: SupConLoss(temperature=value)),
    "DCLLoss temperature": ("temperature", lambda value: DCLLoss(temperature=value)),
    "DCLLoss weight_sigma": ("weight_sigma", lambda value: DCLLoss(weight_sigma=value)),
    "BarlowTwinsLoss lambda_offdiag": ("lambda_offdiag", lambda value: BarlowTwinsLoss(lambda_offdiag=value)),
    "VICRegLoss invariance_weight": ("invariance_weight", lambda value: VICRegLoss(invariance_weight=value)),
    "VICRegLoss variance_weight": ("variance_weight", lambda value: VICRegLoss(variance_weight=value)),
    "VICRegLoss covariance_weight": ("covariance_weight", lambda value: VICRegLoss(covariance_weight=value)),
    "VICRegLoss epsilon": ("epsilon", lambda value: VICRegLoss(epsilon=value)),
    "SwAVLoss temperature": ("temperature", lambda value: SwAVLoss(temperature=value)),
    "SwAVLoss epsilon": ("epsilon", lambda value: SwAVLoss(epsilon=value)),
    "sinkhorn_knopp epsilon": ("epsilon", lambda value: sinkhorn_knopp(x(), epsilon=value)),
    "DINOLoss student_temperature": ("student_temperature", lambda value: DINOLoss(4, student_temperature=value)),
    "DINOLoss teacher_temperature": ("teacher_temperature", lambda value: DINOLoss(4, teacher_temperature=value)),
    "DINOLoss forward teacher_temperature": ("teacher_temperature", lambda value: DINOLoss(3)(
        [x(), x()], [x()], teacher_temperature=value)),
    "dino_loss student_temperature": ("student_temperature", lambda value: dino_loss(
        [x(), x()], [x()], torch.zeros(3), student_temperature=value)),
}


@pytest.mark.parametrize("value", [math.nan, math.inf], ids=["nan", "inf"])
@pytest.mark.parametrize("case", SCALAR_OPTIONS, ids=str)
def test_nan_and_infinite_options_are_refused(case, value):
    # Before: ``value <= 0`` is False for NaN and inf, so both went through to a NaN, infinite or
    # constant loss.
    name, call = SCALAR_OPTIONS[case]
    with pytest.raises(ConfigError, match=rf"^{name} must be (> 0 and finite|>= 0 and finite|a finite number), "
                                          rf"got {value}"):
        call(value)


@pytest.mark.parametrize("call, name", [
    (lambda: SwAVLoss(sinkhorn_iterations=2.5), "sinkhorn_iterations"),
    (lambda: SwAVLoss(num_assignment_views=math.nan), "num_assignment_views"),
    (lambda: sinkhorn_knopp(x(), iterations=math.nan), "iterations"),
    (lambda: hard_negatives_from_bank(x(), LABELS, x(), LABELS, k=math.nan), "k"),
    (lambda: DINOLoss(out_dim=1), "out_dim"),
], ids=["sinkhorn_iterations", "num_assignment_views", "iterations", "k", "out_dim"])
def test_counts_must_be_integers_in_range(call, name):
    # Before: NaN passed ``< 1`` and failed later inside range() or topk() with a TypeError, and a
    # DINO head of one output gave a loss of exactly 0.
    with pytest.raises(ConfigError, match=rf"^{name} must be >= \d \(an integer\)"):
        call()


def test_temperature_must_be_a_number():
    with pytest.raises(ConfigError, match=r"temperature must be > 0 and finite, got '0.1'"):
        InfoNCELoss(temperature="0.1")


def test_nan_scale_and_negatives_are_refused_under_validate():
    # Before: only the embeddings were checked, and these gave a NaN loss.
    with pytest.raises(InputError, match="logit_scale holds 1 NaN"):
        sigmoid_loss(x(), x(), torch.tensor(math.nan), torch.tensor(-1.0))
    negatives = x(8)
    negatives[3, 1] = math.nan
    with pytest.raises(InputError, match="negatives holds 1 NaN"):
        info_nce(x(), x(), negatives=negatives)


# -- batches too small for the loss to mean anything -------------------------------------------

NO_NEGATIVE = {
    "info_nce": (r"info_nce needs at least 2 samples per view \(or extra negatives\), got 1",
                 lambda: info_nce(x(1), x(1), tiled=False)),
    "info_nce three views": (r"info_nce needs at least 2 samples per view",
                             lambda: info_nce(x(1), x(1), x(1))),
    "info_nce tiled path": (r"info_nce needs at least 2 samples per view", lambda: info_nce(x(1), x(1), tiled=True)),
    "info_nce empty negatives": (r"info_nce needs at least 2 samples per view",
                                 lambda: info_nce(x(1), x(1), negatives=x(0))),
    "tiled_info_nce": (r"tiled_info_nce needs at least 2 samples per view", lambda: tiled_info_nce(x(1), x(1))),
    "moco without queue": (r"moco_info_nce needs at least 2 samples \(or a queue of negatives\), got 1",
                           lambda: MoCoLoss()(x(1), x(1))),
    "moco empty queue": ("negatives is an empty queue", lambda: moco_info_nce(x(), x(), negatives=x(0))),
    "clip_loss": ("clip_loss needs at least 2 pairs, got 1", lambda: clip_loss(x(1), x(1), SCALE, tiled=False)),
    "CLIPLoss": ("clip_loss needs at least 2 pairs, got 1", lambda: CLIPLoss()(x(1), x(1))),
    "tiled_clip_loss": ("tiled_clip_loss needs at least 2 pairs, got 1", lambda: tiled_clip_loss(x(1), x(1), SCALE)),
    "sigmoid_loss": ("sigmoid_loss needs at least 2 samples, got 1", lambda: SigLIPLoss()(x(1), x(1))),
    "logistic_loss": ("logistic_loss needs at least 2 samples, got 1", lambda: logistic_loss(x(1), x(1))),
    "n_pair_loss": ("n_pair_loss needs at least 2 samples, got 1", lambda: n_pair_loss(x(1), x(1))),
    "supcon_loss": ("supcon_loss needs at least 2 samples, got 1",
                    lambda: supcon_loss(x(1), x(1), labels=torch.tensor([3]))),
    "supcon_loss one class": ("supcon_loss got a batch whose 4 labels are all 1",
                              lambda: supcon_loss(x(), x(), labels=torch.ones(4, dtype=torch.long))),
    "logistic_loss one class": ("logistic_loss got labels that are all equal",
                                lambda: logistic_loss(x(), x(), labels=torch.zeros(4, dtype=torch.long))),
}


@pytest.mark.parametrize("case", NO_NEGATIVE, ids=str)
def test_batches_without_a_negative_are_refused(case):
    # Before: a loss of exactly 0 (or a constant), with nothing to contrast.
    message, call = NO_NEGATIVE[case]
    with pytest.raises(InputError, match=message):
        call()


def test_one_sample_with_extra_negatives_is_still_a_loss():
    # Extra negatives (a queue) give a single sample something to contrast with.
    for loss in (info_nce(x(1), x(1), negatives=x(8), tiled=False), tiled_info_nce(x(1), x(1), negatives=x(8)),
                 moco_info_nce(x(1), x(1), negatives=x(8))):
        assert torch.isfinite(loss) and loss > 0


def test_label_checks_read_values_only_under_validate():
    # The trainer calls the losses with validate=False on its hot path: no host sync there, so a
    # single-class batch goes through unchecked.
    labels = torch.zeros(4, dtype=torch.long)
    assert torch.isfinite(supcon_loss(x(), x(), labels=labels, validate=False))
    assert torch.isfinite(logistic_loss(x(), x(), labels=labels, validate=False))


@pytest.mark.parametrize("call, message", [
    (lambda: swav_loss([x(1, 4), x(1, 4)]), "swav_loss needs at least 2 samples, got 1"),
    (lambda: swav_loss([x(4, 1), x(4, 1)]), r"swav_loss needs at least 2 prototypes, got scores of shape \(4, 1\)"),
    (lambda: swav_loss([x(0, 4), x(0, 4)]), "swav_loss got an empty batch"),
    (lambda: dino_loss([x(4, 1), x(4, 1)], [x(4, 1)], torch.zeros(1)), "dino_loss needs at least 2 output dimensions"),
    (lambda: dino_loss([x(0, 4), x(0, 4)], [x(0, 4)], torch.zeros(4)), "dino_loss got an empty batch"),
], ids=["swav one sample", "swav one prototype", "swav empty", "dino one output", "dino empty"])
def test_degenerate_swav_and_dino_batches_are_refused(call, message):
    # Before: uniform codes whatever the scores, a softmax over one entry (loss 0), or a NaN mean.
    with pytest.raises(InputError, match=message):
        call()


def _one_sample_per_process(rank, world, z_a, z_b, scores, expected):
    losses = {"barlow_twins": barlow_twins_loss(z_a[rank:rank + 1], z_b[rank:rank + 1]),
              "vicreg": vicreg_loss(z_a[rank:rank + 1], z_b[rank:rank + 1]),
              "info_nce": info_nce(z_a[rank:rank + 1], z_b[rank:rank + 1], gather_across_processes=True),
              "swav": swav_loss([s[rank:rank + 1] for s in scores])}
    for name, loss in losses.items():
        if name in ("info_nce", "swav"):
            # These average over this process's samples: their mean over processes is the global loss.
            dist.all_reduce(loss)
            loss /= world
        torch.testing.assert_close(loss, expected[name], rtol=1e-12, atol=1e-12, msg=name)


def test_one_sample_per_process_is_enough_where_the_loss_spans_processes(tmp_path):
    # Before: Barlow Twins and VICReg refused one sample per process though the batch statistics
    # are those of the global batch of two.
    generator = torch.Generator().manual_seed(5)
    z_a, z_b = (torch.randn(2, 4, generator=generator, dtype=torch.float64) for _ in range(2))
    scores = [torch.randn(2, 3, generator=generator, dtype=torch.float64) for _ in range(2)]
    expected = {"barlow_twins": barlow_twins_loss(z_a, z_b), "vicreg": vicreg_loss(z_a, z_b),
                "info_nce": info_nce(z_a, z_b), "swav": swav_loss(scores)}
    run_in_process_group(tmp_path, _one_sample_per_process, z_a, z_b, scores, expected)
