"""The training's learning-rate schedule (bundle.workflows.schedule)."""

import pytest
import torch

from bundle.workflows.schedule import learning_rate_schedule


def _rates(kind: str, epochs: int = 4, steps: int = 10, lr: float = 3e-4) -> list[float]:
    optimizer = torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))], lr=lr)
    schedule = learning_rate_schedule(optimizer, kind, epochs, steps, warmup_fraction=0.25)
    rates = []
    for _ in range(epochs * steps):  # as Ignite's LrScheduleHandler: the rate of each iteration, then a step
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        schedule.step()
    return rates


def test_one_cycle_warms_up_to_the_learning_rate_then_anneals_to_a_thousandth_of_its_start():
    rates = _rates("one_cycle")
    peak = max(range(len(rates)), key=rates.__getitem__)
    assert rates[0] == pytest.approx(3e-4 / 25)
    assert peak == 9  # 25 % of 40 iterations, counted from 0 (OneCycleLR: pct_start * total - 1)
    assert rates[peak] == pytest.approx(3e-4)
    assert all(a <= b for a, b in zip(rates[:peak], rates[1 : peak + 1], strict=True))  # warm-up rises
    assert all(a >= b for a, b in zip(rates[peak:-1], rates[peak + 1 :], strict=True))  # then only falls
    assert rates[-1] == pytest.approx(3e-4 / 25 / 1000)


def test_constant_keeps_the_learning_rate_as_the_paper_does():
    assert _rates("constant") == [3e-4] * 40


@pytest.mark.parametrize(
    ("kind", "warmup", "message"),
    [
        ("cosine", 0.1, "lr_schedule must be one of one_cycle, constant, got 'cosine'"),
        ("one_cycle", 1.0, "lr_warmup_fraction must be between 0 and 1 (exclusive), got 1.0"),
    ],
)
def test_a_bad_schedule_setting_is_refused_in_one_line(kind, warmup, message):
    optimizer = torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))], lr=1e-3)
    with pytest.raises(ValueError) as error:
        learning_rate_schedule(optimizer, kind, 2, 5, warmup_fraction=warmup)
    assert str(error.value) == message
