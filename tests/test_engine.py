"""The engine's boxes on their own: segment runs, the batch former, the tally, the loop."""
from __future__ import annotations

import random

import pytest
import torch

from fastsmooth.engine import BatchFormer, Everything, Segment, Tally, mix_seed, one_group, run, runs, spread


def test_runs_merge_images_with_equal_units_and_one_images_consecutive_units():
    segs = [Segment(0, 0, 3, 5), Segment(1, 1, 0, 5), Segment(2, 2, 0, 5), Segment(3, 3, 0, 2), Segment(3, 3, 2, 4)]
    assert runs(segs) == [(0, 1, 3, 5, 0), (1, 3, 0, 5, 2), (3, 4, 0, 4, 12)]


def test_spread_is_a_permutation_that_spreads():
    for total in (1, 2, 3, 10, 28, 784):
        order = spread(total)
        assert sorted(order.tolist()) == list(range(total))
    first = spread(28)[:4].tolist()
    assert max(first) - min(first) > 10  # the first looks see ablations across the image


def test_mix_seed_depends_on_every_word():
    seeds = {mix_seed(1, i, k) for i in range(20) for k in range(20)}
    assert len(seeds) == 400 and all(0 <= s < 2**63 for s in seeds)


def test_former_fills_every_forward_across_images():
    former = BatchFormer(one_group)
    for slot, total in enumerate([7, 3, 12, 1]):
        former.add(slot, slot, 0, total)
    forwards = []
    while former.has_work():
        forwards.append(former.take(former.head(), 5))
    assert [sum(s.rows for s in f) for f in forwards] == [5, 5, 5, 5, 3]
    flat = [(s.slot, u) for f in forwards for s in f for u in range(s.first, s.end)]
    assert flat == [(slot, u) for slot, total in enumerate([7, 3, 12, 1]) for u in range(total)]


def test_former_keeps_groups_apart_and_cuts_at_granules():
    def groups(image, first, end):  # units < 4 in group "a", the rest in "b"
        cut = min(max(first, 4), end)
        return [(k, a, b) for k, a, b in (("a", first, cut), ("b", cut, end)) if b > a]

    former = BatchFormer(groups, granule=2)
    former.add(0, 0, 0, 9)
    former.add(1, 1, 0, 9)
    seen = []
    while former.has_work():
        key = former.head()
        segs = former.take(key, 5)
        assert sum(s.rows for s in segs) <= 5
        for s in segs:
            assert {("a" if u < 4 else "b") for u in range(s.first, s.end)} == {key}
            assert s.first % 2 == 0 or s.first == 4  # cut only at granules (4 is a group boundary)
        seen.extend((s.slot, u) for s in segs for u in range(s.first, s.end))
    assert sorted(seen) == [(s, u) for s in (0, 1) for u in range(9)]


def test_former_completion_and_offsets():
    former = BatchFormer(one_group)
    former.add(0, 5, 0, 4, offset=10)  # slot 0 = units 10 .. 13 of image 5
    segs = former.take(former.head(), 3)
    assert segs == [Segment(0, 5, 10, 13)] and former.completed() == []
    former.take(former.head(), 3)
    assert former.completed() == [0] and former.seen(0) == 4
    former.extend(0, 6)
    assert former.take(former.head(), 10) == [Segment(0, 5, 14, 16)]


@pytest.mark.parametrize("held", [1, 7, 1 << 20])
def test_tally_equals_a_loop(monkeypatch, held):
    import fastsmooth.engine.tally as tally_module

    monkeypatch.setattr(tally_module, "PENDING_LOGITS", held * 4)
    votes = lambda logits: torch.nn.functional.one_hot(logits.argmax(1), 4)  # noqa: E731
    tally = Tally(3, 4, votes, torch.device("cpu"), 100)
    expected = torch.zeros(3, 4, dtype=torch.int64)
    gen = random.Random(0)
    for _ in range(20):
        segs = [Segment(gen.randrange(3), 0, 0, gen.randrange(1, 4)) for _ in range(gen.randrange(1, 4))]
        logits = torch.randn(sum(s.rows for s in segs), 4)
        row = 0
        for s in segs:
            for r in range(s.rows):
                expected[s.slot, logits[row + r].argmax()] += 1
            row += s.rows
        tally.add(logits, segs)
    assert torch.equal(tally.flush(), expected)


class ToyWork:
    """Units of image i: logits that depend only on (i, unit); records the forward sizes."""

    granule = 1

    def __init__(self, K: int = 3):
        self.K, self.forwards = K, []
        self.votes = lambda logits: torch.nn.functional.one_hot(logits.argmax(1), K)

    def build(self, segments):
        rows = [torch.tensor([float((7 * s.image + 3 * u) % self.K == k) for k in range(self.K)])
                for s in segments for u in range(s.first, s.end)]
        return torch.stack(rows)

    def forward(self, inputs, start, stop):
        self.forwards.append(stop - start)
        return inputs[start:stop]


def toy_counts(images, total, K=3):
    out = torch.zeros(len(images), K, dtype=torch.int64)
    for slot, i in enumerate(images):
        for u in range(total):
            out[slot, (7 * i + 3 * u) % K] += 1
    return out


@pytest.mark.parametrize("batch_size", [1, 4, 13, 100])
@pytest.mark.parametrize("per_write", [1, 3])
def test_loop_counts_do_not_depend_on_batch_size_or_order(batch_size, per_write):
    images = [4, 0, 3, 1, 2]
    work = ToyWork()
    result = run(work, Everything(11), list(enumerate(images)), 3, torch.device("cpu"), batch_size, per_write)
    assert torch.equal(result.counts, toy_counts(images, 11))
    assert result.units.tolist() == [11] * 5
    assert max(work.forwards) <= batch_size  # memory bounded by batch_size
    assert all(f == batch_size for f in work.forwards[:-1])  # every forward but the last is full


def test_autobatch_picks_the_fastest_per_row_and_respects_the_limit():
    import time

    from fastsmooth.engine.autobatch import Timings, fastest

    timed = []

    def forward(n):  # per-row cost least at 256: fixed overhead, then a steep rise past 256
        timed.append(n)
        time.sleep(0.004 + (1e-5 if n <= 256 else 2e-4) * n)

    timings = Timings()
    assert fastest(forward, timings=timings) == 256
    assert 512 in timed and 1024 not in timed and timings.ceiling == 512  # 512 is slower per row: the climb stops
    timed.clear()
    assert fastest(forward, limit=100, timings=timings) == 100 and timed == [100] * 3  # the pending rows, timed once
    assert fastest(forward, limit=10) == 10 and timed == [100] * 3  # one forward holds it all: nothing timed
    assert fastest(forward, limit=5000, timings=timings) == 256 and timed == [100] * 3  # remembered
    assert fastest(forward, limit=40) == 40


def test_auto_batch_size_gives_the_same_counts_and_is_remembered():
    from fastsmooth.engine import autobatch
    from fastsmooth.smoothing import ColumnSmoothing
    from test_patch_smoothing import tiny_net

    model = tiny_net(1, 3, seed=0)
    x = torch.rand(2, 1, 6, 6)
    auto = ColumnSmoothing(model, 3, 2, batch_size="auto")
    assert torch.equal(auto.counts(x), ColumnSmoothing(model, 3, 2, batch_size=7).counts(x))
    assert len(autobatch._chosen[model]) == 1
    with pytest.raises(ValueError, match="batch_size must be a positive integer or 'auto'"):
        ColumnSmoothing(model, 3, 2, batch_size="fast")


def test_auto_is_the_default_and_leaves_seeded_answers_and_the_fingerprint_alone():
    import inspect

    from fastsmooth.results import smoother_fingerprint
    from fastsmooth.smoothing import DSSN, ColumnSmoothing, RandomizedAblation, Smooth
    from fastsmooth.smoothing.vit import ViTColumnSmoothing
    from test_patch_smoothing import tiny_net

    model = tiny_net(1, 3, seed=1)
    for smoother in (ColumnSmoothing(model, 3, 2), RandomizedAblation(model, 3, 5), DSSN(model, 3, sigma=0.5),
                     Smooth(model, 3, 0.25)):
        assert smoother.batch_size == "auto", type(smoother).__name__
    # token batches (tuples, not tensors) cannot be timed on copies of one row: the ViTs keep a number
    assert isinstance(inspect.signature(ViTColumnSmoothing.__init__).parameters["batch_size"].default, int)
    x = torch.rand(3, 1, 6, 6)
    auto = RandomizedAblation(model, 3, 5, n0=20, n=150, alpha=0.1)
    fixed = RandomizedAblation(model, 3, 5, n0=20, n=150, alpha=0.1, batch_size=7)
    for a, b in zip(auto.evaluate_batch(x, torch.Generator().manual_seed(3)),
                    fixed.evaluate_batch(x, torch.Generator().manual_seed(3))):
        assert torch.equal(a, b)
    a = auto.decide_batch(x, [0, 1], n0=20, n_max=150, alpha=0.1, generator=torch.Generator().manual_seed(4))
    b = fixed.decide_batch(x, [0, 1], n0=20, n_max=150, alpha=0.1, generator=torch.Generator().manual_seed(4))
    assert all(torch.equal(u, v) for u, v in zip(a, b))
    assert smoother_fingerprint(auto)["hyperparameters"]["batch_size"] == "auto"  # not the size measured


def test_cli_batch_size_takes_auto_or_a_positive_number():
    import argparse

    from fastsmooth.cli import _batch_size

    assert _batch_size("auto") == "auto" and _batch_size("64") == 64
    for bad in ("0", "-3", "fast", "1.5"):
        with pytest.raises(argparse.ArgumentTypeError, match="positive integer or 'auto'"):
            _batch_size(bad)


def test_early_exit_keeps_forwards_full_and_looks_in_few_rounds():
    from fastsmooth.engine import Margins

    class Counting(Margins):
        calls = 0

        def update(self, slots, counts, units):
            Counting.calls += 1
            return super().update(slots, counts, units)

    # two classes, votes alternating unit by unit: no argmax is decided before the last 1-2 units
    work = ToyWork(K=2)
    images = list(range(10))
    decider = Counting(28, [], len(images))
    result = run(work, decider, list(enumerate(images)), 2, torch.device("cpu"), 8, 2)
    rows = int(result.units.sum())
    assert 270 <= rows < 280 and sum(work.forwards) == rows
    assert len(work.forwards) == -(-rows // 8) == 35  # as few forwards as the rows allow (full enumeration: 35)
    # each image is looked at 5 or 6 times (units 14, 21, 24 or 25, ...): over 50 looks, made in a
    # few decider calls over many images each (a call whenever less than one write is pending)
    assert Counting.calls <= 8
    assert torch.equal(decider.prediction, toy_counts(images, 28, K=2).argmax(1))
