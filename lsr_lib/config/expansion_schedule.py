"""Expansion-control probability schedules p(epoch) (DESIGN.md section 2, paper A section 3).

Pure functions of the configuration, so they live with it: ``linear`` (the paper: p0 at the
first epoch, falling after each epoch to 0 at ``end_fraction`` of the epochs), ``constant``
(``p0 = 0``: without expansion control), ``cosine`` and ``step``. The gate that draws
``z ~ Bernoulli(p)`` is :class:`lsr_lib.train.d2s_method.ExpansionGate`.
"""

from __future__ import annotations

import math
from typing import Callable

GATE_MODES = ("batch", "example")  # one z per batch (paper) or one per example
REGULARIZERS = ("l1", "flops")  # names of lsr_lib.train.d2s_method.REGULARIZERS (a test keeps them equal)


def _progress(epoch: int, total_epochs: int, end_fraction: float) -> float:
    """Share of the decay period done, in [0, 1]; 1 at and after ``end_fraction * total_epochs``."""
    end = end_fraction * total_epochs
    return 1.0 if epoch >= end - 1e-9 else epoch / end


def linear_schedule(epoch: int, total_epochs: int, p0: float = 1.0, end_fraction: float = 0.95, **_: float) -> float:
    """Paper: p0 at epoch 0, linearly down after each epoch, 0 at and after ``end_fraction`` of epochs."""
    return p0 * (1.0 - _progress(epoch, total_epochs, end_fraction))


def constant_schedule(epoch: int, total_epochs: int, p0: float = 0.0, **_: float) -> float:
    """p0 throughout (p0 = 0: without expansion control; p0 = 1: never expand)."""
    return p0


def cosine_schedule(epoch: int, total_epochs: int, p0: float = 1.0, end_fraction: float = 0.95, **_: float) -> float:
    """Half-cosine from p0 at epoch 0 to 0 at ``end_fraction`` of the epochs."""
    return p0 * 0.5 * (1.0 + math.cos(math.pi * _progress(epoch, total_epochs, end_fraction)))


def step_schedule(
    epoch: int,
    total_epochs: int,
    p0: float = 1.0,
    end_fraction: float = 0.95,
    step_every: float = 0.25,
    step_gamma: float = 0.5,
    **_: float,
) -> float:
    """p0 times ``step_gamma`` after every ``step_every`` share of the epochs; 0 from ``end_fraction`` on."""
    if _progress(epoch, total_epochs, end_fraction) >= 1.0:
        return 0.0
    return p0 * step_gamma ** math.floor(epoch / (step_every * total_epochs) + 1e-9)


SCHEDULES: dict[str, Callable[..., float]] = {
    "linear": linear_schedule,
    "constant": constant_schedule,
    "cosine": cosine_schedule,
    "step": step_schedule,
}


def expansion_probability(schedule: str, epoch: int, total_epochs: int, **params: float) -> float:
    """p for ``epoch`` under the named schedule (params: p0, end_fraction, step_every, step_gamma)."""
    if schedule not in SCHEDULES:
        raise ValueError(f"unknown expansion schedule {schedule!r}; known: {', '.join(SCHEDULES)}")
    return float(min(1.0, max(0.0, SCHEDULES[schedule](epoch, total_epochs, **params))))
