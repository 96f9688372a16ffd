"""The trainer's options: learning-rate warm-up before the cosine schedule, AdamW, label smoothing,
and noise functions whose minibatch takes several forwards (``Forwards``)."""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from fastsmooth.training import Forwards, TrainConfig, _optimizer, _schedule, train


def learning_rates(config: TrainConfig, steps_per_epoch: int) -> list[float]:
    optimizer = _optimizer(nn.Linear(2, 2), config)
    scheduler = _schedule(optimizer, config, steps_per_epoch)
    rates = []
    for _ in range(config.epochs * steps_per_epoch):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
    return rates


def test_warmup_then_cosine():
    rates = learning_rates(TrainConfig(epochs=4, lr=0.1, warmup=1.5, optimizer="adamw"), steps_per_epoch=4)
    assert rates[:6] == pytest.approx([0.1 * (i + 1) / 6 for i in range(6)])  # 1.5 epochs of 4 steps
    cosine = [0.05 * (1 + math.cos(math.pi * i / 10)) for i in range(10)]
    assert rates[6:] == pytest.approx(cosine)


def test_without_warmup_the_schedule_is_torchs_cosine():
    config = TrainConfig(epochs=3, lr=0.01)
    optimizer = torch.optim.Adam(nn.Linear(2, 2).parameters(), lr=0.01)
    torch_cosine = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=9)
    want = []
    for _ in range(9):
        want.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        torch_cosine.step()
    assert learning_rates(config, 3) == want  # bit for bit: trainings without warm-up are unchanged
    assert learning_rates(TrainConfig(epochs=2, lr=0.01, schedule="constant"), 3) == [0.01] * 6


def test_adamw_is_decoupled():
    assert type(_optimizer(nn.Linear(2, 2), TrainConfig(optimizer="adamw", weight_decay=0.05))) is torch.optim.AdamW
    assert type(_optimizer(nn.Linear(2, 2), TrainConfig())) is torch.optim.Adam


@pytest.mark.parametrize("field,value,match", [
    ("warmup", -1, "warmup"), ("warmup", 11, "warmup"), ("label_smoothing", 1.5, "label_smoothing"),
    ("optimizer", "lamb", "optimizer must be one of"),
])
def test_bad_options_are_refused(field, value, match):
    with pytest.raises(ValueError, match=match):
        TrainConfig(epochs=10, **{field: value})


class Rows(nn.Module):
    """A linear model that records the batch sizes of its forwards."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(4, 3)
        self.sizes: list[int] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.sizes.append(len(x))
        return self.linear(x)


def split_in_two(x: torch.Tensor, generator: torch.Generator) -> Forwards:
    """Odd rows and even rows in separate forwards (the labels must follow them)."""
    odd, even = torch.arange(1, len(x), 2), torch.arange(0, len(x), 2)
    return Forwards([(odd, (x[odd].flatten(1),)), (even, (x[even].flatten(1),))])


def test_forwards_give_the_same_training_as_one_forward():
    torch.manual_seed(0)
    data = TensorDataset(torch.rand(16, 1, 2, 2), torch.randint(0, 3, (16,)))
    config = TrainConfig(epochs=2, lr=0.05, batch_size=8, label_smoothing=0.1, warmup=0.5)
    torch.manual_seed(1)
    one, two = Rows(), Rows()
    two.load_state_dict(one.state_dict())
    losses_one = train(one, data, lambda x, g: x.flatten(1), config, progress=False)
    losses_two = train(two, data, split_in_two, config, progress=False)
    assert two.sizes == [4] * 8 and one.sizes == [8] * 4
    assert losses_two == pytest.approx(losses_one, rel=1e-5)
    assert torch.allclose(one.linear.weight, two.linear.weight, atol=1e-6)


def test_forwards_must_cover_every_row_once():
    rows = torch.tensor([0, 0, 1])
    with pytest.raises(ValueError, match="cover each of the 3 rows once"):
        Forwards([(rows, (torch.rand(3, 4),))]).logits(Rows(), torch.arange(3))


def test_label_smoothing_is_the_losss():
    data = TensorDataset(torch.rand(8, 1, 2, 2), torch.randint(0, 3, (8,)))
    model = Rows()
    with torch.no_grad():
        want = nn.functional.cross_entropy(model(data.tensors[0].flatten(1)), data.tensors[1], label_smoothing=0.3)
    config = TrainConfig(epochs=1, lr=1e-12, batch_size=8, label_smoothing=0.3, optimizer="sgd", momentum=0.0)
    assert train(model, data, lambda x, g: x.flatten(1), config, progress=False)[0] == pytest.approx(float(want))
