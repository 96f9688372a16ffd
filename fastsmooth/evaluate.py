"""Certify a data set with any smoother and tabulate the results, like the authors' scripts.

One TSV row per image: ``idx  label  predict  <certificate_name>  correct  time`` (the layout
of Cohen et al.'s ``certify.py``, with the certificate column named by the smoother:
``patch_size`` or ``radius``; ``time`` in seconds). Images are certified in batches for speed,
and the time of a batch is shared equally by its images. An interrupted run resumes from the
file: finished indices are neither loaded nor recomputed, and the final file is the same as an
uninterrupted run's (up to the timings, and the randomness of randomized smoothers).

Level mode (``decide=True``) asks only "certified at each of ``levels``?" plus the prediction
(``smoother.decide_batch``: exact early exit or anytime-valid sequential decisions), and writes
``idx  label  predict  certified@<level>...  correct  forwards  time``: the per-level answers
(0 / 1) and the base-model evaluations each image used.
"""
from __future__ import annotations

import dataclasses
import math
import os
import time
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, Protocol

import torch
from torch.utils.data import DataLoader, Dataset, IterableDataset
from tqdm.auto import tqdm

from fastsmooth.smoothing.base import Certified

__all__ = ["evaluate", "EvaluationSummary", "LevelRow", "Row", "read_level_results", "read_results"]

COLUMNS = ("idx", "label", "predict", "{certificate}", "correct", "time")


class Evaluable(Protocol):
    certificate_name: str

    def evaluate_batch(self, x: torch.Tensor) -> Certified: ...


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
class LevelRow:
    """One image's result in level mode, as written to the TSV."""

    index: int
    label: int
    prediction: int
    certified: tuple[bool, ...]
    correct: bool
    forwards: int
    seconds: float

    def line(self) -> str:
        flags = "".join(f"{int(c)}\t" for c in self.certified)
        return f"{self.index}\t{self.label}\t{self.prediction}\t{flags}{int(self.correct)}\t{self.forwards}\t{self.seconds:.6f}\n"


def _level_header(levels: Sequence[float]) -> str:
    return "\t".join(["idx", "label", "predict", *(f"certified@{t:g}" for t in levels), "correct", "forwards", "time"]) + "\n"


def read_level_results(path: str | os.PathLike[str], levels: Sequence[float]) -> list[LevelRow]:
    """The complete rows of a level-mode results file (a trailing partial line is ignored)."""
    rows = []
    for number, fields in _fields(path, 6 + len(levels)):
        idx, label, pred, *flags, correct, forwards, seconds = fields
        rows.append(LevelRow(int(idx), int(label), int(pred), tuple(f == "1" for f in flags), correct == "1",
                             int(forwards), float(seconds)))
    return rows


def _fields(path: str | os.PathLike[str], count: int) -> list[tuple[int, list[str]]]:
    text = Path(path).read_text()
    lines = text.split("\n")[1:]  # the header is checked by evaluate
    if not text.endswith("\n"):
        lines = lines[:-1]
    out = []
    for number, line in enumerate(lines, start=2):
        if not line:
            continue
        fields = line.split("\t")
        if len(fields) != count:
            raise ValueError(f"output {str(path)!r} line {number} has {len(fields)} fields, expected {count}: {line!r}")
        out.append((number, fields))
    return out


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
    rows: tuple[Row, ...] | tuple[LevelRow, ...]
    forwards_per_image: float | None = None  # level mode: mean base-model evaluations per image


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


def _open_output(path: Path, header: str, resume: bool, read: Any = None) -> tuple[list[Any], Any]:
    """Finished rows and an append handle; a partial last line is cut off before appending."""
    if resume and path.exists() and path.stat().st_size > 0:
        text = path.read_text()
        if not text.startswith(header):
            found = text.split("\n", 1)[0]
            raise ValueError(f"output {str(path)!r} has header {found!r}, expected {header.strip()!r}; not resuming")
        rows = (read or read_results)(path)
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


def _level_summary(rows: Sequence[LevelRow], levels: Sequence[float]) -> EvaluationSummary:
    count = len(rows)
    nan = math.nan
    return EvaluationSummary(
        count=count,
        clean_accuracy=sum(r.correct for r in rows) / count if count else nan,
        certified_accuracy={
            float(t): (sum(r.correct and r.certified[k] for r in rows) / count if count else nan)
            for k, t in enumerate(levels)
        },
        seconds_per_image=sum(r.seconds for r in rows) / count if count else nan,
        rows=tuple(sorted(rows, key=lambda r: r.index)),
        forwards_per_image=sum(r.forwards for r in rows) / count if count else nan,
    )


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
    decide: bool = False,
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
    forward batch itself). Returns the summary over every row, resumed ones included.
    decide: level mode (see the module docstring): ``smoother.decide_batch(x, levels)`` decides
    each level and the prediction with as few forwards as they need; ``levels`` is required.
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

    header, read = _header(smoother.certificate_name), None
    if decide:
        if not hasattr(smoother, "decide_batch"):
            raise TypeError(f"decide=True needs a smoother with decide_batch, got {type(smoother).__name__}")
        if not levels:
            raise ValueError("decide=True needs the levels to decide, got levels=[]; pass e.g. levels=[0.25, 0.5]")
        header = _level_header(levels)
        read = lambda path: read_level_results(path, levels)  # noqa: E731
    finished: list[Any] = []
    handle = None
    if output is not None:
        finished, handle = _open_output(Path(output), header, resume, read)
    done = {r.index for r in finished}

    def wanted(index: int) -> bool | None:
        """None: stop here; False: pass over; True: certify."""
        if max is not None and index >= max:
            return None
        return index % skip == 0 and index not in done

    rows = list(finished)
    bar = tqdm(total=_total(data, wanted), disable=not progress, desc="certify", unit="img")
    try:
        batch: list[tuple[int, torch.Tensor, int]] = []
        examples = _examples(data, wanted)
        while True:
            item = next(examples, None)
            if item is not None:
                batch.append(item)
            if batch and (item is None or len(batch) == batch_images):
                new = _decide_batch(smoother, batch, device, levels) if decide else _certify_batch(smoother, batch, device)
                rows.extend(new)
                if handle is not None:
                    handle.write("".join(r.line() for r in new))
                    handle.flush()
                bar.update(len(new))
                batch = []
            if item is None:
                break
    finally:
        bar.close()
        if handle is not None:
            handle.close()
    return _level_summary(rows, levels) if decide else _summary(rows, levels)


def _certify_batch(smoother: Evaluable, batch: list[tuple[int, torch.Tensor, int]], device: Any) -> list[Row]:
    x = torch.stack([image for _, image, _ in batch])
    if device is not None:
        x = x.to(device)
    start = time.perf_counter()
    result = smoother.evaluate_batch(x)
    prediction = result.prediction.tolist()  # reading back also waits for the device
    certificate = result.certificate.tolist()
    seconds = (time.perf_counter() - start) / len(batch)
    return [
        Row(index, label, int(pred), float(cert), int(pred) == label, seconds)
        for (index, _, label), pred, cert in zip(batch, prediction, certificate, strict=True)
    ]


def _decide_batch(
    smoother: Any, batch: list[tuple[int, torch.Tensor, int]], device: Any, levels: Sequence[float]
) -> list[LevelRow]:
    x = torch.stack([image for _, image, _ in batch])
    if device is not None:
        x = x.to(device)
    start = time.perf_counter()
    result = smoother.decide_batch(x, levels)
    prediction = result.prediction.tolist()
    certified = result.certified.tolist()
    forwards = result.forwards.tolist()
    seconds = (time.perf_counter() - start) / len(batch)
    return [
        LevelRow(index, label, int(pred), tuple(bool(c) and int(pred) != -1 for c in flags), int(pred) == label,
                 int(used), seconds)
        for (index, _, label), pred, flags, used in zip(batch, prediction, certified, forwards, strict=True)
    ]
