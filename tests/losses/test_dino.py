import numpy as np
import pytest
import torch

from contrastkit.errors import ConfigError, InputError
from contrastkit.losses.dino import DINOLoss, dino_loss

from loss_helpers import run_in_process_group


def reference_dino(student, teacher, center, student_temperature, teacher_temperature):
    """Independent float64 DINO loss from the paper: loops over (teacher, student) crop pairs and samples."""
    student = [s.detach().numpy().astype(np.float64) for s in student]
    teacher = [t.detach().numpy().astype(np.float64) for t in teacher]
    c = center.detach().numpy().astype(np.float64).reshape(-1)
    terms = []
    for i in range(len(teacher)):
        for j in range(len(student)):
            if j == i:
                continue
            total = 0.0
            for b in range(student[j].shape[0]):
                target = np.exp((teacher[i][b] - c) / teacher_temperature)
                target /= target.sum()
                exps = np.exp(student[j][b] / student_temperature)
                total -= sum(target[k] * np.log(exps[k] / exps.sum()) for k in range(len(exps)))
            terms.append(total / student[j].shape[0])
    return np.mean(terms)


def logits(seed, num_student=4, num_teacher=2, batch=5, out_dim=6, dtype=torch.float64):
    generator = torch.Generator().manual_seed(seed)
    student = [torch.randn(batch, out_dim, generator=generator, dtype=dtype) for _ in range(num_student)]
    teacher = [torch.randn(batch, out_dim, generator=generator, dtype=dtype) for _ in range(num_teacher)]
    center = 0.3 * torch.randn(1, out_dim, generator=generator, dtype=dtype)
    return student, teacher, center


@pytest.mark.parametrize("num_student, num_teacher", [(2, 2), (4, 2), (3, 1)])
@pytest.mark.parametrize("temperatures", [(0.1, 0.04), (0.5, 0.07)])
def test_matches_float64_reference(num_student, num_teacher, temperatures):
    student, teacher, center = logits(num_student * 10 + num_teacher, num_student, num_teacher)
    loss = dino_loss(student, teacher, center, student_temperature=temperatures[0],
                     teacher_temperature=temperatures[1])
    assert loss.item() == pytest.approx(reference_dino(student, teacher, center, *temperatures), rel=1e-10)


def test_gradcheck_on_the_student():
    student, teacher, center = logits(1, num_student=3, batch=3, out_dim=4)
    student = [s.requires_grad_() for s in student]
    assert torch.autograd.gradcheck(lambda *s: dino_loss(s, teacher, center, teacher_temperature=0.2), student)


def test_no_gradient_reaches_the_teacher_or_the_centre():
    student, teacher, center = logits(2)
    student = [s.requires_grad_() for s in student]
    teacher = [t.requires_grad_() for t in teacher]
    center.requires_grad_()
    dino_loss(student, teacher, center).backward()
    assert all(s.grad is not None for s in student)
    assert all(t.grad is None for t in teacher) and center.grad is None


def test_equal_teacher_logits_give_a_uniform_target():
    student, _, center = logits(3, out_dim=8)
    teacher = [torch.full((5, 8), 2.5, dtype=torch.float64) for _ in range(2)]
    pairs = [(i, j) for i in range(2) for j in range(4) if j != i]
    expected = np.mean([-torch.log_softmax(student[j] / 0.1, dim=1).mean(dim=1).mean().item() for _, j in pairs])
    loss = dino_loss(student, teacher, torch.zeros(8, dtype=torch.float64), student_temperature=0.1)
    assert loss.item() == pytest.approx(expected, rel=1e-10)


def test_module_uses_the_current_centre_then_updates_it():
    student, teacher, center = logits(4)
    loss_fn = DINOLoss(out_dim=6, student_temperature=0.1, teacher_temperature=0.04, center_momentum=0.9).double()
    loss_fn.center.copy_(center)
    for _ in range(2):
        before = loss_fn.center.clone()
        loss = loss_fn(student, teacher)
        assert loss.item() == pytest.approx(reference_dino(student, teacher, before, 0.1, 0.04), rel=1e-10)
        batch_mean = torch.cat(teacher).mean(dim=0, keepdim=True)
        torch.testing.assert_close(loss_fn.center, 0.9 * before + 0.1 * batch_mean, rtol=1e-12, atol=1e-15)


def test_teacher_temperature_override_and_eval_mode():
    student, teacher, _ = logits(5, dtype=torch.float32)
    loss_fn = DINOLoss(out_dim=6).eval()
    loss = loss_fn(student, teacher, teacher_temperature=0.07)
    torch.testing.assert_close(loss, dino_loss(student, teacher, torch.zeros(1, 6), teacher_temperature=0.07))
    assert loss_fn.center.abs().sum() == 0  # no update outside training mode


def test_bf16_logits_are_computed_in_float32():
    student, teacher, center = logits(6, dtype=torch.bfloat16)
    loss = dino_loss(student, teacher, center)
    assert loss.dtype == torch.float32
    torch.testing.assert_close(loss, dino_loss([s.float() for s in student], [t.float() for t in teacher],
                                               center.float()))


def _distributed_worker(rank, world, student, teacher, expected_center):
    batch = student[0].shape[0] // world
    shard = slice(rank * batch, (rank + 1) * batch)
    loss_fn = DINOLoss(out_dim=student[0].shape[1]).double()
    loss_fn([s[shard] for s in student], [t[shard] for t in teacher])
    torch.testing.assert_close(loss_fn.center, expected_center, rtol=1e-12, atol=1e-15)


def test_centre_spans_all_processes(tmp_path):
    student, teacher, _ = logits(7, batch=6)
    loss_fn = DINOLoss(out_dim=6).double()
    loss_fn(student, teacher)
    run_in_process_group(tmp_path, _distributed_worker, student, teacher, loss_fn.center)


def test_bad_inputs_are_refused():
    student, teacher, center = logits(8, dtype=torch.float32)
    with pytest.raises(InputError, match="at least 2 student views"):
        dino_loss(student[:1], teacher[:1], center)
    with pytest.raises(InputError, match="teacher views <= student views"):
        dino_loss(student[:2], teacher * 2, center)
    with pytest.raises(InputError, match="same shape"):
        dino_loss(student, [teacher[0][:, :5], teacher[1]], center)
    with pytest.raises(InputError, match=r"center must have shape \(1, 6\)"):
        dino_loss(student, teacher, torch.zeros(1, 5))
    teacher[1][0, 0] = float("nan")
    with pytest.raises(InputError, match=r"teacher_logits\[1\] holds 1 NaN"):
        dino_loss(student, teacher, center)


def test_bad_options_are_refused():
    with pytest.raises(ConfigError, match="student_temperature must be > 0"):
        DINOLoss(out_dim=4, student_temperature=0.0)
    with pytest.raises(ConfigError, match="center_momentum must be in"):
        DINOLoss(out_dim=4, center_momentum=1.0)
    with pytest.raises(ConfigError, match="out_dim must be >= 2"):
        DINOLoss(out_dim=0)
    student, teacher, _ = logits(9, dtype=torch.float32)
    with pytest.raises(ConfigError, match="teacher_temperature must be > 0"):
        DINOLoss(out_dim=6)(student, teacher, teacher_temperature=-0.04)
