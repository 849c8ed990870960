"""Symmetric loss (eq. 2, 5-7) against hand-computed values."""

import pytest
import torch

from bundle.method.losses import SymmetricRegressionLoss, symmetric_margin

PRED = torch.tensor([[0.50, 0.30], [0.40, 0.35]])
TRUE = torch.tensor([[0.40, 0.40], [0.40, 0.40]])
# by hand, alpha = 0.1 (alpha^2 = 0.01):
#   L_reg per patient: 0.1^2 + 0.1^2 = 0.02 ; 0^2 + 0.05^2 = 0.0025
#   (F_r - F_l)^2: 0.04 (> 0.01) ; 0.0025 (<= 0.01)
#   clip form: 0.04 ; 0        hinge form: 0.04 - 0.01 = 0.03 ; 0


def test_clip_form_by_hand():
    loss = SymmetricRegressionLoss(alpha=0.1, beta=2.0)
    assert loss(PRED, TRUE).item() == pytest.approx(((0.02 + 2 * 0.04) + (0.0025 + 0)) / 2)


def test_hinge_form_by_hand():
    loss = SymmetricRegressionLoss(alpha=0.1, beta=2.0, form="hinge")
    assert loss(PRED, TRUE).item() == pytest.approx(((0.02 + 2 * 0.03) + 0.0025) / 2)


def test_beta_zero_is_the_paired_mse_of_eq_4():
    loss = SymmetricRegressionLoss(alpha=0.1, beta=0.0)
    assert loss(PRED, TRUE).item() == pytest.approx((0.02 + 0.0025) / 2)
    assert loss(PRED, TRUE).item() == pytest.approx(2 * torch.nn.functional.mse_loss(PRED, TRUE).item())


def test_reductions():
    none = SymmetricRegressionLoss(alpha=0.1, beta=2.0, reduction="none")(PRED, TRUE)
    assert torch.allclose(none, torch.tensor([0.10, 0.0025]))
    total = SymmetricRegressionLoss(alpha=0.1, beta=2.0, reduction="sum")(PRED, TRUE)
    assert total.item() == pytest.approx(0.1025)


def test_margin_functions():
    a = torch.tensor([0.0, 0.005, 0.01, 0.02])
    assert torch.allclose(symmetric_margin(a, 0.1, "clip"), torch.tensor([0.0, 0.0, 0.0, 0.02]))
    assert torch.allclose(symmetric_margin(a, 0.1, "hinge"), torch.tensor([0.0, 0.0, 0.0, 0.01]))


@pytest.mark.parametrize("form", ["clip", "hinge"])
def test_no_symmetric_gradient_inside_the_margin(form):
    pred = torch.tensor([[0.40, 0.35]], requires_grad=True)  # |diff| = 0.05 < alpha = 0.1
    SymmetricRegressionLoss(alpha=0.1, beta=5.0, form=form)(pred, pred.detach()).backward()
    assert torch.all(pred.grad == 0)  # L_reg is zero at the target, L_sym is inside the margin


@pytest.mark.parametrize("form", ["clip", "hinge"])
def test_symmetric_gradient_outside_the_margin_pulls_the_sides_together(form):
    pred = torch.tensor([[0.50, 0.30]], requires_grad=True)
    SymmetricRegressionLoss(alpha=0.1, beta=1.0, form=form)(pred, pred.detach()).backward()
    # d/dF_r (F_r - F_l)^2 = 2 * 0.2 = 0.4 ; the same gradient for both forms
    assert torch.allclose(pred.grad, torch.tensor([[0.4, -0.4]]))


def test_components_report_the_margin_fraction():
    terms = SymmetricRegressionLoss(alpha=0.1).components(PRED, TRUE)
    assert torch.allclose(terms["beyond"], torch.tensor([1.0, 0.0]))


@pytest.mark.parametrize("shape", [(4,), (4, 1), (4, 3)])
def test_bad_shapes_are_rejected(shape):
    with pytest.raises(ValueError, match=r"\[B, 2\]"):
        SymmetricRegressionLoss()(torch.zeros(shape), torch.zeros(shape))


def test_mismatched_target_is_rejected():
    with pytest.raises(ValueError, match="does not match"):
        SymmetricRegressionLoss()(torch.zeros(4, 2), torch.zeros(3, 2))


def test_bad_parameters_are_rejected():
    with pytest.raises(ValueError, match="form"):
        SymmetricRegressionLoss(form="square")
    with pytest.raises(ValueError, match="alpha"):
        SymmetricRegressionLoss(alpha=-0.1)
