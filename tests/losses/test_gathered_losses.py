"""Losses that span processes (SupCon, DCL/DCLW, MoCo v3, CoSENT, CLIP, SigLIP): on 2 gloo processes, each
holding half the batch, the loss and the parameter gradients averaged over the processes (what
DistributedDataParallel and a logger do) equal one process's on the whole batch, in float64."""

import pytest
import torch

from contrastkit.losses import clip_loss, cosent_loss, dcl_loss, moco_info_nce, sigmoid_loss, supcon_loss
from loss_helpers import assert_averaged_over_processes_equal, run_in_process_group

LABELS = torch.tensor([0, 1, 0, 2, 1, 1, 0, 2])
SCORES = torch.tensor([0.0, 1.2, 5.0, 3.4, 2.0, 4.1, 0.5, 3.0], dtype=torch.float64)


def _supcon(a, b, rows, gather):
    return supcon_loss(a, b, labels=LABELS[rows], temperature=0.3, gather_across_processes=gather)


def _dcl(a, b, rows, gather):
    return dcl_loss(a, b, temperature=0.3, gather_across_processes=gather)


def _dclw(a, b, rows, gather):
    return dcl_loss(a, b, temperature=0.3, weight_sigma=0.5, gather_across_processes=gather)


def _moco_v3(a, b, rows, gather):
    # MoCo's keys come from the momentum encoder and carry no gradient.
    return moco_info_nce(a, b.detach(), temperature=0.3, gather_across_processes=gather)


def _cosent(a, b, rows, gather):
    return cosent_loss(a, b, SCORES[rows], scale=7.0, gather_across_processes=gather)


def _clip(a, b, rows, gather):
    return clip_loss(a, b, torch.tensor(2.0, dtype=torch.float64), gather_across_processes=gather)


def _clip_repeated_captions(a, b, rows, gather):
    return clip_loss(a, b, torch.tensor(2.0, dtype=torch.float64), caption_ids=LABELS[rows],
                     gather_across_processes=gather)


def _siglip(a, b, rows, gather):
    return sigmoid_loss(a, b, 1.5, -2.0, gather_across_processes=gather)


def _siglip_repeated_captions(a, b, rows, gather):
    return sigmoid_loss(a, b, 1.5, -2.0, caption_ids=LABELS[rows], gather_across_processes=gather)


LOSSES = {"supcon": _supcon, "dcl": _dcl, "dclw": _dclw, "moco_v3": _moco_v3, "cosent": _cosent, "clip": _clip,
          "clip_repeated_captions": _clip_repeated_captions, "siglip": _siglip,
          "siglip_repeated_captions": _siglip_repeated_captions}


def _projection(weight):
    projection = torch.nn.Linear(weight.shape[1], weight.shape[0], bias=False, dtype=torch.float64)
    projection.weight.data.copy_(weight)
    return projection


def _loss_and_gradient(name, inputs_a, inputs_b, weight, rows, gather):
    projection = _projection(weight)
    loss = LOSSES[name](projection(inputs_a[rows]), projection(inputs_b[rows]), rows, gather)
    loss.backward()
    return loss.detach(), projection.weight.grad


def _worker(rank, world, inputs_a, inputs_b, weight, expected):
    half = inputs_a.shape[0] // world
    rows = slice(rank * half, (rank + 1) * half)
    for name in LOSSES:
        gathered = list(_loss_and_gradient(name, inputs_a, inputs_b, weight, rows, gather=True))
        assert_averaged_over_processes_equal(gathered, expected[name], world, rtol=1e-10, atol=1e-12, msg=name)


def test_gathered_losses_equal_one_process_on_the_whole_batch(tmp_path):
    generator = torch.Generator().manual_seed(3)
    inputs_a, inputs_b = (torch.randn(8, 6, generator=generator, dtype=torch.float64) for _ in range(2))
    weight = torch.randn(5, 6, generator=generator, dtype=torch.float64)
    expected = {name: _loss_and_gradient(name, inputs_a, inputs_b, weight, slice(None), gather=False)
                for name in LOSSES}
    run_in_process_group(tmp_path, _worker, inputs_a, inputs_b, weight, expected)


@pytest.mark.parametrize("name", LOSSES)
def test_gather_in_a_single_process_changes_nothing(name):
    generator = torch.Generator().manual_seed(4)
    inputs_a, inputs_b = (torch.randn(8, 6, generator=generator, dtype=torch.float64) for _ in range(2))
    weight = torch.randn(5, 6, generator=generator, dtype=torch.float64)
    plain = _loss_and_gradient(name, inputs_a, inputs_b, weight, slice(None), gather=False)
    gathered = _loss_and_gradient(name, inputs_a, inputs_b, weight, slice(None), gather=True)
    for actual, reference in zip(gathered, plain):
        torch.testing.assert_close(actual, reference, rtol=0, atol=0)
