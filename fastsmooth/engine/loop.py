"""The one path: work items -> batch former -> fused op -> base model -> votes -> tally -> decider.

Every smoother's counts and answers come from :func:`run`; smoothers only describe their
units (:class:`~fastsmooth.engine.items.Work`) and the question (a decider).
"""
from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import torch

from fastsmooth.engine.batching import BatchFormer
from fastsmooth.engine.deciders import Decider
from fastsmooth.engine.items import Work, one_group
from fastsmooth.engine.tally import Tally


@dataclasses.dataclass
class Run:
    """counts: int64 [slots, K] on the device; units: int64 [slots], units evaluated per slot."""

    counts: torch.Tensor
    units: torch.Tensor


def run(
    work: Work,
    decider: Decider,
    slots: Sequence[tuple[int, int] | tuple[int, int, int]],
    num_classes: int,
    device: torch.device,
    batch_size: int,
    forwards_per_write: int = 1,
) -> Run:
    """Evaluate ``work`` for every ``(slot, image)`` until ``decider`` retires it.

    A slot counts the votes of units ``offset + u`` (u = 0, 1, ...) of its image, for
    ``(slot, image, offset)``; several slots may share an image (e.g. selection and estimation
    samples of one noise stream). Slots are numbered 0 .. S - 1.

    Every slot's first units are queued at once, in the given order. One write
    (``work.build``) holds up to ``forwards_per_write`` forwards of one group, each filled up to
    ``batch_size`` rows. Slots whose requested units have all run wait for a look, and the
    decider looks at all of them at once when the head group has less than one write pending:
    until then there is other work to fill the forwards, and a look at many slots costs about
    what a look at one does (one read of the counts, one vectorized decision). So the looks
    come in few rounds, each round's new units of many images are queued together (neighbouring
    images with the same units: one fused-op call), and every forward is full until the last
    round. Which forward a unit lands in never changes what the decider sees: a slot's next
    units are queued only after its look.
    Memory: one write's inputs, one forward's logits and the tally's buffer.

    Raises :class:`~fastsmooth.engine.tally.NonFiniteLogitsError` if the model returned a NaN or
    Inf logit in any row: checked on the device as the votes are counted, read at every host
    look and before the counts are returned, so no answer comes from counts that saw one.
    """
    groups = getattr(work, "groups", one_group)
    former = BatchFormer(groups, getattr(work, "granule", 1))
    units = [0] * (max((s[0] for s in slots), default=-1) + 1)
    tally = Tally(len(units), num_classes, work.votes, device, decider.rows_hint(len(slots)))
    for slot, image, *offset in slots:
        former.add(slot, image, 0, decider.start(slot), offset[0] if offset else 0)
    wanted = batch_size * forwards_per_write
    waiting: list[int] = []  # slots whose requested units have all run, in the order they completed
    while True:
        if waiting and former.pending() < wanted:
            for s in waiting:
                units[s] = former.seen(s)
            counts = None
            if decider.reads_counts:  # "device": no read-back (no wait for the device)
                counts = tally.flush()[waiting]
                if decider.reads_counts != "device":
                    counts = counts.cpu()
                    tally.check()  # the read-back has waited for the device already
            for s, target in zip(waiting, decider.update(waiting, counts, [units[s] for s in waiting])):
                if target is not None:
                    former.extend(s, target)
            waiting = []
        if not former.has_work():
            break
        key = former.head()
        forwards = []
        for _ in range(forwards_per_write):
            segments = former.take(key, batch_size)
            if not segments:
                break
            forwards.append(segments)
        inputs = work.build([s for f in forwards for s in f])
        row = 0
        for segments in forwards:
            rows = sum(s.rows for s in segments)
            tally.add(work.forward(inputs, row, row + rows), segments)
            row += rows
        waiting += former.completed()
    counts = tally.flush()
    tally.check()  # no counts (hence no answer) leave the engine if a logit was NaN / Inf
    return Run(counts, torch.tensor(units, dtype=torch.int64))
