"""Learning-rate schedules as pure functions of the step, so a resumed run needs no scheduler state."""

from __future__ import annotations

import math


def cosine_with_warmup(step: int, total_steps: int, warmup_steps: int = 0, final_factor: float = 0.0) -> float:
    """Factor of the peak learning rate at ``step``: linear warm-up, then cosine decay to ``final_factor``.

    Example:
        >>> cosine_with_warmup(0, 100, 10), cosine_with_warmup(10, 100, 10), cosine_with_warmup(100, 100, 10)
        (0.1, 1.0, 0.0)
    """
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    return final_factor + (1 - final_factor) * 0.5 * (1 + math.cos(math.pi * progress))


def constant_with_warmup(step: int, total_steps: int, warmup_steps: int = 0) -> float:
    """Factor of the peak learning rate at ``step``: linear warm-up, then the peak to the end (TS2Vec's
    recipe trains at a constant rate; its running average of the weights does the annealing).

    Example:
        >>> constant_with_warmup(0, 100, 10), constant_with_warmup(10, 100, 10), constant_with_warmup(100, 100, 10)
        (0.1, 1.0, 1.0)
    """
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    return 1.0


# The schedules a run can name (config key ``lr_schedule``); each maps (step, total, warm-up) to a factor.
LR_SCHEDULES = {"cosine": cosine_with_warmup, "constant": constant_with_warmup}
