"""constellation/models/fit.py: the one training loop, on a 3-parameter linear model.

The time budget runs on a fake clock that each step advances by one second,
so no test here depends on the speed of the machine."""

from __future__ import annotations

import math

import pytest

torch = pytest.importorskip("torch")

from constellation.models import fit as fit_module  # noqa: E402
from constellation.models.fit import FitArgs, fit, lr_factor  # noqa: E402


def tiny():
    torch.manual_seed(0)
    return torch.nn.Linear(3, 1)


def endless(_epoch):
    """An epoch of four batches (x (2, 3), y (2, 1))."""
    g = torch.Generator().manual_seed(_epoch)
    return [(torch.randn(2, 3, generator=g), torch.randn(2, 1, generator=g)) for _ in range(4)]


def mse(model):
    return lambda batch: torch.nn.functional.mse_loss(model(batch[0]), batch[1])


def test_stops_at_the_step_budget_and_reports_each_step():
    model, seen = tiny(), []
    result = fit(model, endless, mse(model), FitArgs(epochs=0, max_steps=7),
                 progress=lambda step, total, loss: seen.append((step, total, loss)))
    assert result.steps == 7
    assert [(s, t) for s, t, _ in seen] == [(i, 7) for i in range(1, 8)]
    assert [loss for _, _, loss in seen] == result.losses


def test_runs_the_given_epochs_drawing_each_when_it_starts():
    model, drawn = tiny(), []

    def batches(epoch):
        drawn.append(epoch)
        return endless(epoch)[:2]

    result = fit(model, batches, mse(model), FitArgs(epochs=3, schedule="constant"))
    assert result.steps == 6 and drawn == [0, 1, 2]


def test_stops_at_the_time_budget(monkeypatch):
    clock = [100.0]
    monkeypatch.setattr(fit_module.time, "monotonic", lambda: clock[0])
    model = tiny()

    def one_second_per_step(batch):
        clock[0] += 1.0
        return mse(model)(batch)

    result = fit(model, endless, one_second_per_step, FitArgs(epochs=0, max_seconds=3.5))
    assert result.steps == 4  # started at elapsed 0, 1, 2, 3
    assert result.seconds == 4.0


def test_runs_one_step_even_when_the_time_is_already_spent(monkeypatch):
    monkeypatch.setattr(fit_module.time, "monotonic", lambda: 1000.0)
    model = tiny()
    result = fit(model, endless, mse(model), FitArgs(epochs=5, max_seconds=1.0), started=0.0)
    assert result.steps == 1


def test_nan_loss_raises_before_the_update():
    model, calls, before = tiny(), [], {}

    def loss_fn(batch):
        calls.append(1)
        if len(calls) == 3:  # step 2: the weights as they are now must survive
            before.update({k: v.clone() for k, v in model.state_dict().items()})
            return mse(model)(batch) * float("nan")
        return mse(model)(batch)

    with pytest.raises(FloatingPointError, match=r"probe, step 2 .*loss nan; weights kept"):
        fit(model, endless, loss_fn, FitArgs(lr=0.1, epochs=2, schedule="constant"), name="probe",
            nan_note="weights kept")
    assert before and all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_gradients_are_clipped_to_the_norm():
    model = tiny()
    huge = lambda batch: 1e6 * mse(model)(batch)  # noqa: E731
    fit(model, endless, huge, FitArgs(epochs=1, schedule="constant", clip_norm=0.5))
    norm = torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in model.parameters()]))
    assert norm.item() == pytest.approx(0.5, rel=1e-4)


def test_reported_loss_can_differ_from_the_minimized_one():
    model = tiny()
    result = fit(model, endless, lambda b: (2 * mse(model)(b), torch.tensor(-1.0)), FitArgs(epochs=1, max_steps=3))
    assert result.losses == [-1.0, -1.0, -1.0]


def test_train_mode_during_the_loop_eval_after():
    model, modes = tiny(), []
    model.eval()

    def loss_fn(batch):
        modes.append(model.training)
        return mse(model)(batch)

    fit(model, endless, loss_fn, FitArgs(epochs=1, max_steps=2))
    assert modes == [True, True] and not model.training


def test_schedule_warms_up_then_decays_to_the_floor():
    assert lr_factor(0, 0.0, warmup_steps=10) == pytest.approx(0.1)
    assert lr_factor(9, 0.0, warmup_steps=10) == 1.0
    assert lr_factor(50, 0.5, warmup_steps=10) == pytest.approx(0.05 + 0.95 * 0.5)
    assert lr_factor(99, 1.0, warmup_steps=10) == pytest.approx(0.05)
    assert lr_factor(99, 3.0, warmup_steps=10) == pytest.approx(0.05)  # over budget: stays at the floor
    args = FitArgs(max_steps=10, max_seconds=20.0)
    assert fit_module.budget_spent(args, 2, 10.0) == 0.5 and fit_module.budget_spent(args, 8, 10.0) == 0.8


@pytest.mark.parametrize("args", [FitArgs(epochs=0), FitArgs(epochs=1, schedule="warmup_cosine"),
                                  FitArgs(epochs=-1, schedule="constant"), FitArgs(schedule="linear")])
def test_args_without_a_bound_or_schedule_base_are_refused(args):
    model = tiny()
    with pytest.raises(ValueError, match="fit:"):
        fit(model, endless, mse(model), args)


def test_an_empty_epoch_ends_an_endless_stream():
    model = tiny()
    result = fit(model, lambda epoch: [], mse(model), FitArgs(epochs=0, max_seconds=math.inf))
    assert result.steps == 0
