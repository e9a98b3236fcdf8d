"""The shared encoder training loop's pieces: length-bucketed batches, the learning-rate schedule and AdamW."""

from __future__ import annotations

import pytest
import torch

from tiergate.train.loop import epoch_batches, lr_lambda, make_adamw


def test_epoch_batches_cover_every_example_once_and_bucket_by_length() -> None:
    lengths = [5, 40, 6, 38, 7, 39, 8, 41]
    batches = epoch_batches(lengths, 2, seed=0, epoch=0, bucketing=True)
    flat = sorted(i for b in batches for i in b)
    assert flat == list(range(8))
    for b in batches:  # bucketing pairs short with short and long with long
        assert len({lengths[i] > 20 for i in b}) == 1
    assert epoch_batches(lengths, 2, 0, 0, True) == batches
    assert epoch_batches(lengths, 2, 0, 1, True) != batches or len(batches) < 2


def test_lr_schedule_warms_up_then_decays_to_zero() -> None:
    f = lr_lambda(100, 10, "linear")
    assert f(0) == pytest.approx(0.1) and f(9) == pytest.approx(1.0) and f(10) == pytest.approx(1.0)
    assert f(55) == pytest.approx(0.5) and f(100) == pytest.approx(0.0)
    assert lr_lambda(100, 0, "cosine")(50) == pytest.approx(0.5)
    assert lr_lambda(100, 0, "constant")(70) == pytest.approx(1.0)


def test_adamw_is_fused_on_cpu_and_matches_the_plain_update() -> None:
    torch.manual_seed(0)
    a = torch.nn.Linear(8, 4)
    b = torch.nn.Linear(8, 4)
    b.load_state_dict(a.state_dict())
    fused = make_adamw(a.parameters(), lr=1e-2, weight_decay=0.01)
    plain = torch.optim.AdamW(b.parameters(), lr=1e-2, weight_decay=0.01)
    assert fused.defaults["fused"] is True
    x = torch.randn(16, 8)
    for _ in range(5):
        for model, opt in ((a, fused), (b, plain)):
            opt.zero_grad()
            model(x).pow(2).mean().backward()
            opt.step()
    assert torch.allclose(a.weight, b.weight, atol=1e-6)


def test_weight_average_follows_the_warmed_up_decay_and_swaps_back() -> None:
    from tiergate.train.loop import WeightAverage

    model = torch.nn.Linear(2, 1, bias=False)
    with torch.no_grad():
        model.weight.fill_(0.0)
    average = WeightAverage(model, decay=0.5)
    expected = 0.0
    for t, value in enumerate([1.0, 2.0, 4.0, 8.0], start=1):
        with torch.no_grad():
            model.weight.fill_(value)
        average.update()
        d = min(0.5, (1 + t) / (10 + t))  # 2/11, 3/12, then 0.5 from t=3 on
        expected = d * expected + (1 - d) * value
    assert average.shadow["weight"][0, 0].item() == pytest.approx(expected)
    assert average.swapped(lambda: model.weight[0, 0].item()) == pytest.approx(expected)
    assert model.weight[0, 0].item() == 8.0  # the live weights are back after the swap
    restored = WeightAverage(model, decay=0.5)
    restored.load_state_dict(average.state_dict())
    restored.apply()
    assert model.weight[0, 0].item() == pytest.approx(expected) and restored.updates == 4
