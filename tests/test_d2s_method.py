"""The D2S method (DESIGN.md section 2): loss, regularisers and objective against brute-force references."""

from __future__ import annotations

import math

import pytest
import torch

from lsr_lib.config.d2s import D2SConfig
from lsr_lib.config.expansion_schedule import REGULARIZERS as REGULARIZER_NAMES
from lsr_lib.train.d2s_method import (
    REGULARIZERS,
    d2s_objective,
    distillation_loss,
    flops_penalty,
    l1_penalty,
    reg_weight,
)


def _tiny(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    s_img, s_txt = torch.rand(3, 5, generator=g), torch.rand(3, 5, generator=g)
    d_img = torch.nn.functional.normalize(torch.randn(3, 4, generator=g), dim=1)
    d_txt = torch.nn.functional.normalize(torch.randn(3, 4, generator=g), dim=1)
    return s_img, s_txt, d_img, d_txt


def _reference_loss(s_img, s_txt, d_img, d_txt, tau):
    """Loop-by-loop soft-target cross-entropy, image->text rows and text->image columns."""
    b = len(s_img)
    S = [[sum(float(s_img[i, v] * s_txt[j, v]) for v in range(s_img.shape[1])) for j in range(b)] for i in range(b)]
    T = [[float(d_img[i] @ d_txt[j]) / tau for j in range(b)] for i in range(b)]

    def softmax(xs):
        m = max(xs)
        e = [math.exp(x - m) for x in xs]
        return [x / sum(e) for x in e]

    rows = [-sum(p * math.log(q) for p, q in zip(softmax(T[i]), softmax(S[i]))) for i in range(b)]
    colT = [[T[i][j] for i in range(b)] for j in range(b)]
    colS = [[S[i][j] for i in range(b)] for j in range(b)]
    cols = [-sum(p * math.log(q) for p, q in zip(softmax(colT[j]), softmax(colS[j]))) for j in range(b)]
    return 0.5 * (sum(rows) / b + sum(cols) / b)


@pytest.mark.parametrize("tau", [1e-3, 0.05, 1.0])
def test_distillation_loss_matches_loops(tau):
    t = _tiny()
    assert distillation_loss(*t, tau=tau).item() == pytest.approx(_reference_loss(*t, tau), rel=1e-5)


def test_teacher_gets_no_gradient_and_student_does():
    s_img, s_txt, d_img, d_txt = _tiny(1)
    s_img.requires_grad_(True)
    d_img.requires_grad_(True)
    loss = distillation_loss(s_img, s_txt, d_img, d_txt)
    g_s, g_d = torch.autograd.grad(loss, [s_img, d_img], allow_unused=True)
    assert g_s is not None and torch.count_nonzero(g_s) > 0
    assert g_d is None


def test_penalties_match_loops():
    x = torch.rand(4, 6, generator=torch.Generator().manual_seed(2))
    l1 = sum(float(x[i].sum()) for i in range(4)) / 4
    flops = sum((sum(float(x[i, v]) for i in range(4)) / 4) ** 2 for v in range(6))
    assert l1_penalty(x).item() == pytest.approx(l1, rel=1e-6)
    assert flops_penalty(x).item() == pytest.approx(flops, rel=1e-6)


def test_reg_weight_quadratic_warmup():
    assert reg_weight(0, 1e-3, 100) == 0.0
    assert reg_weight(50, 1e-3, 100) == pytest.approx(1e-3 * 0.25)
    assert reg_weight(100, 1e-3, 100) == pytest.approx(1e-3)
    assert reg_weight(1000, 1e-3, 100) == pytest.approx(1e-3)
    assert reg_weight(0, 1e-3, 0) == pytest.approx(1e-3)


def test_regularizer_names_in_the_config_match_the_method():
    assert tuple(REGULARIZERS) == REGULARIZER_NAMES


@pytest.mark.parametrize("regularizer", ["l1", "flops"])
def test_objective_is_distillation_plus_both_warmed_up_penalties(regularizer):
    s_img, s_txt, d_img, d_txt = _tiny(3)
    cfg = D2SConfig(regularizer=regularizer, reg_weight_image=0.2, reg_weight_text=0.05, teacher_tau=0.05)
    loss, distill, reg = d2s_objective(s_img, s_txt, d_img, d_txt, cfg, step=5, warmup_steps=10)
    penalty = REGULARIZERS[regularizer]
    want_reg = 0.2 * 0.25 * penalty(s_img).item() + 0.05 * 0.25 * penalty(s_txt).item()
    assert distill.item() == pytest.approx(_reference_loss(s_img, s_txt, d_img, d_txt, 0.05), rel=1e-5)
    assert reg.item() == pytest.approx(want_reg, rel=1e-6)
    assert loss.item() == pytest.approx(distill.item() + want_reg, rel=1e-6)
