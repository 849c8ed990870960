"""Validation metrics (SBR units, after the SBRUnitsd postprocessing) and the symmetric-loss handler, on hand-made
engine outputs."""

import numpy as np
import pytest
import torch
from ignite.engine import Engine, Events
from scipy import stats
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torch.utils.tensorboard import SummaryWriter

from bundle.data import SBRUnitsd
from bundle.handlers.metrics import sbr_metrics
from bundle.handlers.training import SymmetricLossHandler
from bundle.method.losses import SymmetricRegressionLoss

SBR_MAX = 6.84
PRED = torch.tensor([[0.50, 0.30], [0.40, 0.35], [0.20, 0.25], [0.70, 0.60], [0.10, 0.30]])
TRUE = torch.tensor([[0.40, 0.40], [0.40, 0.40], [0.30, 0.20], [0.65, 0.70], [0.15, 0.10]])


def run_engine(batches, handlers=(), metrics=None, to_sbr=False) -> Engine:
    """An engine whose output is each batch's (pred, label), optionally through the SBR-unit postprocessing."""
    postprocessing = SBRUnitsd(sbr_max=SBR_MAX) if to_sbr else dict
    engine = Engine(lambda e, batch: postprocessing({"pred": batch[0], "label": batch[1]}))
    for name, metric in (metrics or {}).items():
        metric.attach(engine, name)
    for handler in handlers:
        handler.attach(engine)
    engine.run(batches, max_epochs=1)
    return engine


def test_metrics_equal_numpy_and_scipy_in_sbr_units():
    batches = [(PRED[:2], TRUE[:2]), (PRED[2:], TRUE[2:])]
    got = run_engine(batches, metrics=sbr_metrics(), to_sbr=True).state.metrics
    pred, true = PRED.double().numpy() * SBR_MAX, TRUE.double().numpy() * SBR_MAX
    for i, side in enumerate(("right", "left")):
        err = pred[:, i] - true[:, i]
        assert got[f"val_mae_{side}"] == pytest.approx(np.abs(err).mean(), rel=1e-5)
        assert got[f"val_rmse_{side}"] == pytest.approx(np.sqrt((err**2).mean()), rel=1e-5)
        assert got[f"val_r_{side}"] == pytest.approx(stats.pearsonr(pred[:, i], true[:, i]).statistic, rel=1e-6)
    for name in ("mae", "rmse", "r"):
        assert got[f"val_{name}"] == pytest.approx((got[f"val_{name}_right"] + got[f"val_{name}_left"]) / 2)


def test_pearson_is_nan_for_constant_predictions():
    constant = torch.full_like(PRED, 0.4)
    got = run_engine([(constant, TRUE)], metrics=sbr_metrics(), to_sbr=True).state.metrics
    assert np.isnan(got["val_r"]) and np.isnan(got["val_r_right"])
    assert got["val_mae_right"] == pytest.approx((TRUE[:, 0] - 0.4).abs().mean().item() * SBR_MAX, rel=1e-5)


def test_symmetric_loss_handler_records_terms_per_iteration_and_epoch(tmp_path):
    loss = SymmetricRegressionLoss(alpha=0.1, beta=2.0)
    writer = SummaryWriter(str(tmp_path))
    handler = SymmetricLossHandler(
        loss, output_transform=lambda out: (out["pred"], out["label"]), summary_writer=writer
    )
    batches = [(PRED[:2], TRUE[:2]), (PRED[2:], TRUE[2:])]
    iteration_values = []
    engine = Engine(lambda e, batch: {"pred": batch[0], "label": batch[1]})
    handler.attach(engine)
    engine.add_event_handler(Events.ITERATION_COMPLETED, lambda e: iteration_values.append(dict(e.state.metrics)))
    engine.run(batches, max_epochs=1)
    writer.close()

    reg = ((TRUE - PRED) ** 2).sum(1)
    diff = (PRED[:, 0] - PRED[:, 1]) ** 2
    sym = torch.where(diff > 0.01, diff, torch.zeros_like(diff))
    # first iteration: patients 0-1 (hand-computed in test_losses: reg 0.02, 0.0025; sym 0.04, 0)
    assert iteration_values[0]["loss_reg"] == pytest.approx(0.01125)
    assert iteration_values[0]["loss_sym"] == pytest.approx(0.02)
    assert iteration_values[0]["beyond_margin"] == pytest.approx(0.5)
    assert engine.state.metrics["loss_reg"] == pytest.approx(reg.mean().item(), rel=1e-6)
    assert engine.state.metrics["loss_sym"] == pytest.approx(sym.mean().item(), rel=1e-6)
    assert engine.state.metrics["beyond_margin"] == pytest.approx((diff > 0.01).float().mean().item())

    events = EventAccumulator(str(tmp_path))
    events.Reload()
    scalars = events.Scalars("train/iteration/loss_reg")
    assert [s.step for s in scalars] == [1, 2]
    assert scalars[0].value == pytest.approx(0.01125, rel=1e-5)
