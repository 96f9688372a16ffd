"""Certify a data set with any smoother and tabulate the results, like the authors' scripts.

One TSV row per image: ``idx  label  predict  <certificate_name>  correct  time`` (the layout
of Cohen et al.'s ``certify.py``, with the certificate column named by the smoother:
``patch_size`` or ``radius``; ``time`` in seconds). Images are certified in batches for speed,
and the time of a batch is shared equally by its images. An interrupted run resumes from the
file: finished indices are neither loaded nor recomputed, and the final file is the same as an
uninterrupted run's (up to the timings, and the randomness of randomized smoothers).
"""
from __future__ import annotations

import dataclasses
import itertools
import math
import os
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, IterableDataset
from tqdm.auto import tqdm

from fastsmooth.executors import BatchResult, Evaluable, Executor, LocalExecutor, WorkBatch
from fastsmooth.shards import Shard, parse_shard

__all__ = ["evaluate", "summarize", "EvaluationSummary", "Row", "read_results"]

COLUMNS = ("idx", "label", "predict", "{certificate}", "correct", "time")


@dataclasses.dataclass(frozen=True)
class Row:
    """One image's result, as written to the TSV."""

    index: int
    label: int
    prediction: int
    certificate: float
    correct: bool
    seconds: float

    def line(self) -> str:
        return (
            f"{self.index}\t{self.label}\t{self.prediction}\t{self.certificate:.10g}\t"
            f"{int(self.correct)}\t{self.seconds:.6f}\n"
        )


@dataclasses.dataclass(frozen=True)
class EvaluationSummary:
    """Totals over every row of the run (resumed rows included).

    clean_accuracy: fraction with prediction == label. certified_accuracy[t]: fraction with
    prediction == label and certificate >= t (an abstention, prediction -1, is never correct).
    """

    count: int
    clean_accuracy: float
    certified_accuracy: dict[float, float]
    seconds_per_image: float
    rows: tuple[Row, ...]


def _header(certificate_name: str) -> str:
    return "\t".join(c.format(certificate=certificate_name) for c in COLUMNS) + "\n"


def read_results(path: str | os.PathLike[str]) -> list[Row]:
    """The complete rows of a results file (a trailing partial line, from a crash, is ignored)."""
    text = Path(path).read_text()
    lines = text.split("\n")[1:]  # the header is checked by evaluate
    if not text.endswith("\n"):
        lines = lines[:-1]
    rows = []
    for number, line in enumerate(lines, start=2):
        if not line:
            continue
        fields = line.split("\t")
        if len(fields) != len(COLUMNS):
            raise ValueError(f"output {str(path)!r} line {number} has {len(fields)} fields, expected {len(COLUMNS)}: {line!r}")
        idx, label, pred, cert, correct, seconds = fields
        rows.append(Row(int(idx), int(label), int(pred), float(cert), correct == "1", float(seconds)))
    return rows


def _open_output(path: Path, header: str, resume: bool) -> tuple[list[Row], Any]:
    """Finished rows and an append handle; a partial last line is cut off before appending."""
    if resume and path.exists() and path.stat().st_size > 0:
        text = path.read_text()
        if not text.startswith(header):
            found = text.split("\n", 1)[0]
            raise ValueError(f"output {str(path)!r} has header {found!r}, expected {header.strip()!r}; not resuming")
        rows = read_results(path)
        if not text.endswith("\n"):  # interrupted mid-line
            with path.open("r+") as f:
                f.truncate(text.rfind("\n") + 1)
        return rows, path.open("a")
    path.parent.mkdir(parents=True, exist_ok=True)
    handle = path.open("w")
    handle.write(header)
    handle.flush()
    return [], handle


def _label(y: Any) -> int:
    return int(y.item()) if isinstance(y, torch.Tensor) else int(y)


def _examples(data: Any, wanted: Any) -> Iterator[tuple[int, torch.Tensor, int]]:
    """(index, image [C, H, W], label) for every image whose index ``wanted(index)`` accepts.

    A map-style Dataset is indexed directly, so skipped and finished images are not even
    loaded. Anything else is iterated: items are (image, label) or (images [B, C, H, W],
    labels [B]) batches, as a DataLoader yields.
    """
    if isinstance(data, Dataset) and not isinstance(data, IterableDataset) and hasattr(data, "__len__"):
        for index in range(len(data)):
            if wanted(index) is None:
                return
            if wanted(index):
                x, y = data[index][:2]
                yield index, torch.as_tensor(x), _label(y)
        return
    index = 0
    for item in data:
        x, y = item[0], item[1]
        x = torch.as_tensor(x)
        if x.dim() == 4:
            labels = y.tolist() if isinstance(y, torch.Tensor) else list(y)
            pairs = zip(x, labels, strict=True)
        elif x.dim() == 3:
            pairs = [(x, y)]
        else:
            raise ValueError(f"data must yield (image [C, H, W], label) or (images [B, C, H, W], labels), got shape {tuple(x.shape)}")
        for image, label in pairs:
            verdict = wanted(index)
            if verdict is None:
                return
            if verdict:
                yield index, image, _label(label)
            index += 1


def _total(data: Any, wanted: Any) -> int | None:
    """Number of images the run will certify, when the data set's length is known."""
    if isinstance(data, DataLoader):
        data = data.dataset
    try:
        length = len(data)
    except TypeError:
        return None
    count = 0
    for index in range(length):
        verdict = wanted(index)
        if verdict is None:
            break
        count += bool(verdict)
    return count


def _summary(rows: Sequence[Row], levels: Sequence[float]) -> EvaluationSummary:
    count = len(rows)
    correct = [r for r in rows if r.correct]
    certified = {float(t): (sum(r.certificate >= t for r in correct) / count if count else math.nan) for t in levels}
    return EvaluationSummary(
        count=count,
        clean_accuracy=len(correct) / count if count else math.nan,
        certified_accuracy=certified,
        seconds_per_image=sum(r.seconds for r in rows) / count if count else math.nan,
        rows=tuple(sorted(rows, key=lambda r: r.index)),
    )


def summarize(rows: Sequence[Row], levels: Sequence[float]) -> EvaluationSummary:
    """Clean and certified accuracy (at ``levels``) of ``rows``, as ``evaluate`` returns them."""
    return _summary(rows, [float(t) for t in levels])


def evaluate(
    smoother: Evaluable,
    data: Dataset | DataLoader | Iterable[Any],
    levels: Sequence[float] = (),
    output: str | os.PathLike[str] | None = None,
    resume: bool = True,
    skip: int = 1,
    max: int | None = None,  # noqa: A002 - the authors' scripts call it --max
    device: torch.device | str | None = None,
    batch_images: int = 64,
    progress: bool = True,
    executor: Executor | None = None,
    seed: int | None = None,
    shard: Shard | str | tuple[int, int] | None = None,
) -> EvaluationSummary:
    """Certify every image of ``data`` with ``smoother`` and summarize.

    data: a map-style Dataset of (image, label), any iterable of (image, label), or a
    DataLoader (or iterable) of (images, labels) batches. Images are numbered in data order
    from 0; as in the authors' scripts, only indices ``i % skip == 0`` and ``i < max`` are
    certified. levels: the certificate levels (patch sizes or radii) reported in
    ``certified_accuracy``. output: the TSV file, written row by row and flushed after each
    batch; with ``resume`` an existing file is continued (its finished indices are skipped),
    otherwise it is overwritten. device: where batches are sent (default: the smoother's
    ``device``). batch_images: images per ``evaluate_batch`` call (the smoother bounds the
    forward batch itself). executor: where the batches are certified (default
    :class:`~fastsmooth.executors.LocalExecutor`, this process; :class:`~fastsmooth.executors.RayExecutor`
    for a Ray cluster); this process alone reads ``data`` and writes ``output``, in data order.
    seed: certify randomized smoothers with per-image randomness derived from (seed, index),
    so that their rows do not depend on batching, executor or shard (see
    :mod:`fastsmooth.executors.seeding`). shard: ``"K/N"`` certifies only part K of N of the
    selected images (:mod:`fastsmooth.shards`). Returns the summary over every row, resumed
    ones included.
    """
    if not hasattr(smoother, "evaluate_batch") or not hasattr(smoother, "certificate_name"):
        raise TypeError(f"smoother must define evaluate_batch and certificate_name, got {type(smoother).__name__}")
    for name, value in (("skip", skip), ("batch_images", batch_images)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    if max is not None and (isinstance(max, bool) or not isinstance(max, int) or max < 0):
        raise ValueError(f"max must be a non-negative integer or None, got {max!r}")
    levels = [float(t) for t in levels]
    if device is None:
        device = getattr(smoother, "device", None)
    if shard is not None:
        shard = parse_shard(shard)
    if executor is None:
        executor = LocalExecutor()

    header = _header(smoother.certificate_name)
    finished: list[Row] = []
    handle = None
    if output is not None:
        finished, handle = _open_output(Path(output), header, resume)
    done = {r.index for r in finished}

    def wanted(index: int) -> bool | None:
        """None: stop here; False: pass over; True: certify."""
        if max is not None and index >= max:
            return None
        return index % skip == 0 and index not in done and (shard is None or shard.holds(index, skip))

    rows = list(finished)
    bar = tqdm(total=_total(data, wanted), disable=not progress, desc="certify", unit="img")
    try:
        batches = _batches(_examples(data, wanted), batch_images)
        for batch, result in executor.run(smoother, batches, device, seed):
            new = _rows(batch, result)
            rows.extend(new)
            if handle is not None:
                handle.write("".join(r.line() for r in new))
                handle.flush()
            bar.update(len(new))
    finally:
        bar.close()
        if handle is not None:
            handle.close()
    return _summary(rows, levels)


def _batches(examples: Iterator[tuple[int, torch.Tensor, int]], size: int) -> Iterator[WorkBatch]:
    """Consecutive groups of ``size`` examples (the last may be smaller), numbered from 0."""
    group: list[tuple[int, torch.Tensor, int]] = []
    sequence = 0
    for item in itertools.chain(examples, [None]):
        if item is not None:
            group.append(item)
        if group and (item is None or len(group) == size):
            yield WorkBatch(sequence, tuple(i for i, _, _ in group), tuple(y for _, _, y in group),
                            torch.stack([image for _, image, _ in group]))
            group, sequence = [], sequence + 1


def _rows(batch: WorkBatch, result: BatchResult) -> list[Row]:
    return [
        Row(index, label, pred, cert, pred == label, result.seconds_per_image)
        for index, label, pred, cert in zip(batch.indices, batch.labels, result.prediction, result.certificate,
                                            strict=True)
    ]
