"""Certify a data set with any smoother and tabulate the results, like the authors' scripts.

One TSV row per image: ``idx  label  predict  <certificate_name>  correct  time`` (the layout
of Cohen et al.'s ``certify.py``, with the certificate column named by the smoother:
``patch_size`` or ``radius``; ``time`` in seconds), under a run fingerprint line (see
:mod:`fastsmooth.results`). Images are certified in batches for speed, and the time of a
batch is shared equally by its images. An interrupted run resumes from the file: finished
indices are neither loaded nor recomputed, and the final file holds the same rows as an
uninterrupted run's (up to the timings). A file of another run (any difference in the
fingerprint) is refused, never mixed.

Level mode (``decide=True``) asks only "certified at each of ``levels``?" plus the prediction
(``smoother.decide_batch``: exact early exit or anytime-valid sequential decisions). Its rows
carry two more kinds of column after the usual six: ``forwards`` (the base-model evaluations
the image used) and ``certified@<level>`` (0 / 1) per level; the certificate column then holds
the largest level certified (0 for a patch size, -1 for a radius, when none is). The levels
are part of the fingerprint, so a level-mode file never resumes into a full-certificate run.
"""
from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import itertools
import math
import os
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, IterableDataset
from tqdm.auto import tqdm

from fastsmooth._validation import check_example, check_int, check_real
from fastsmooth.engine.compiled import Compile, check_compile, compile_records, compile_seconds
from fastsmooth.results import (
    Results,
    ResultsError,
    Row,
    check_rows,
    columns_for,
    open_for_run,
    read_results,
    smoother_fingerprint,
)
from fastsmooth.executors import BatchResult, Evaluable, Executor, LocalExecutor, WorkBatch
from fastsmooth.executors.seeding import image_generator
from fastsmooth.engine.deciders import DECISION
from fastsmooth.merge import SHARD_KEY, shard_entry
from fastsmooth.outfiles import OutputLock, target, write_error

DECIDE_KEY = "decide"  # the fingerprint entry of level mode: the levels decided
# level mode of a randomized smoother also records the sequential procedure its decide_batch
# runs, so that a file begun under another (the union rule, a fixed n0) is never resumed into
DECISION_KEY = "decision"
from fastsmooth.shards import Shard, parse_shard

__all__ = [
    "evaluate", "summarize", "EvaluationSummary", "Row", "Results", "ResultsError", "read_results", "run_fingerprint",
    "image_generator", "level_columns",
]


@dataclasses.dataclass(frozen=True)
class EvaluationSummary:
    """Totals over exactly the images the run asks for, each once (resumed rows included).

    clean_accuracy: fraction with prediction == label. certified_accuracy[t]: fraction with
    prediction == label and certificate >= t (an abstention, prediction -1, is never correct:
    labels are checked to lie in [0, num_classes)).
    """

    count: int
    clean_accuracy: float
    certified_accuracy: dict[float, float]
    seconds_per_image: float
    rows: tuple[Row, ...]
    fingerprint: dict[str, Any] = dataclasses.field(default_factory=dict)
    forwards_per_image: float | None = None  # level mode: mean base-model evaluations per image
    compile_seconds: float | None = None  # compiled forwards: seconds their compilation took in this process


def _map_style(data: Any) -> bool:
    return isinstance(data, Dataset) and not isinstance(data, IterableDataset) and hasattr(data, "__len__")


def _examples(
    data: Any, wanted: Callable[[int], bool | None], passed: Callable[[int, Any, Any], None] | None = None
) -> Iterator[tuple[int, Any, Any]]:
    """(index, image, label) as the data gives them, for every index ``wanted(index)`` accepts.

    A map-style Dataset is indexed directly, so skipped and finished images are not even
    loaded. Anything else is iterated: items are (image [C, H, W], label) pairs or
    (images [B, C, H, W], labels [B]) batches, as a DataLoader yields; a batch is told from a
    pair by its labels (a sequence, not one number), so [B, H, W] grayscale batches are not
    taken for one image of B channels. ``passed(index, image, label)`` sees the items of an
    iterable that ``wanted`` turns down (they are read anyway).
    """
    if _map_style(data):
        for index in range(len(data)):
            verdict = wanted(index)
            if verdict is None:
                return
            if verdict:
                x, y = data[index][:2]
                yield index, x, y
        return
    index = 0
    for item in data:
        x, y = item[0], item[1]
        batched = (isinstance(y, torch.Tensor) and y.dim() == 1) or isinstance(y, (list, tuple))
        if batched:
            x = torch.as_tensor(x)
            labels = y.tolist() if isinstance(y, torch.Tensor) else list(y)
            if x.dim() != 4 or len(x) != len(labels):
                raise ValueError(f"data batch starting at image {index}: expected images [B, C, H, W] and B labels, "
                                 f"got images of shape {tuple(x.shape)} and {len(labels)} labels (grayscale images "
                                 "[B, H, W]: add the channel axis)")
            pairs = zip(x, labels)
        else:
            pairs = [(x, y)]
        for image, label in pairs:
            verdict = wanted(index)
            if verdict is None:
                return
            if verdict:
                yield index, image, label
            elif passed is not None:
                passed(index, image, label)
            index += 1


def _selection(skip: int, max: int | None, length: int | None) -> Callable[[int], bool | None]:
    """wanted(index): None past the end of the selection, else whether the run certifies it."""

    def wanted(index: int) -> bool | None:
        if (max is not None and index >= max) or (length is not None and index >= length):
            return None
        return index % skip == 0

    return wanted


def _data_fingerprint(
    data: Any, wanted: Callable[[int], bool | None], num_classes: int | None
) -> tuple[dict[str, Any], int | None]:
    """(the data's part of the fingerprint, the number of selected images).

    For a map-style data set every selected image and label is loaded, checked against the
    input contract and hashed (sha256 of index, label, dtype, shape and bytes): a changed file,
    another data set, or a changed selection gives another hash. Other iterables can be read
    only once; they are checked as they come, and their hash is recorded as null.
    """
    if not _map_style(data):
        return {"data_sha256": None, "data_kind": type(data).__name__}, None
    digest = hashlib.sha256()
    shape: list[tuple[int, ...]] = []
    count = 0
    for index, x, y in _examples(data, wanted):
        image, label = check_example(x, y, index, num_classes, shape)
        t = image.detach().cpu().contiguous()
        digest.update(f"{index}:{label}:{t.dtype}:{tuple(t.shape)}:".encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
        count += 1
    return {"data_sha256": digest.hexdigest(), "data_kind": type(data).__name__}, count


#: the last column of a run over data that cannot be indexed (a DataLoader, an iterable): a
#: digest of each image and label as read, so a resume that reads other images is refused
DIGEST = "data_digest"


def example_digest(index: int, image: torch.Tensor, label: int) -> str:
    """sha256 (16 hex digits) of an example as the data gave it: index, label, dtype, shape, bytes."""
    t = torch.as_tensor(image).detach().cpu().contiguous()
    digest = hashlib.sha256(f"{index}:{int(label)}:{t.dtype}:{tuple(t.shape)}:".encode())
    digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:16]


FORWARDS = "forwards"
CERTIFIED_AT = "certified@"


def level_columns(levels: Sequence[float]) -> list[str]:
    """The columns level mode writes after the usual six: forwards used, then one 0 / 1 per level."""
    return [FORWARDS, *(f"{CERTIFIED_AT}{t:g}" for t in levels)]


def _summary(rows: Sequence[Row], levels: Sequence[float], fingerprint: dict[str, Any]) -> EvaluationSummary:
    count = len(rows)
    correct = [r for r in rows if r.correct]
    decided = fingerprint.get(DECIDE_KEY)
    if decided is not None:  # level mode: the per-level answers, as decided (levels not decided: NaN)
        where = {float(t): k for k, t in enumerate(decided)}
        certified = {
            float(t): (sum(r.extra[1 + where[float(t)]] == "1" for r in correct) / count if count and float(t) in where
                       else math.nan)
            for t in levels
        }
        forwards = sum(int(r.extra[0]) for r in rows) / count if count else math.nan
    else:
        certified = {float(t): (sum(r.certificate >= t for r in correct) / count if count else math.nan) for t in levels}
        forwards = None
    return EvaluationSummary(
        count=count,
        clean_accuracy=len(correct) / count if count else math.nan,
        certified_accuracy=certified,
        seconds_per_image=sum(r.seconds for r in rows) / count if count else math.nan,
        rows=tuple(sorted(rows, key=lambda r: r.index)),
        fingerprint=fingerprint,
        forwards_per_image=forwards,
    )


def run_fingerprint(
    smoother: Any,
    *,
    skip: int = 1,
    max: int | None = None,  # noqa: A002
    seed: int | None = None,
    device: torch.device | str | None = None,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """What identifies a run apart from its data: the smoother (class, hyperparameters, model
    hash), the certificate column, the selection, the seed, fastsmooth's version and the
    backend its ops resolve to on ``device``; ``extra`` entries (the command line's method,
    checkpoint hash, data path...) are added on top."""
    from fastsmooth import __version__
    from fastsmooth._backend import resolve_backend

    device = torch.device(device) if device is not None else getattr(smoother, "device", torch.device("cpu"))
    backend = getattr(smoother, "backend", None)
    return {
        **smoother_fingerprint(smoother),
        "certificate": smoother.certificate_name,
        "skip": skip,
        "max": max,
        "seed": seed,
        "fastsmooth": __version__,
        "backend": resolve_backend(backend, device) if isinstance(backend, str) else None,
        "device": device.type,
        **dict(extra or {}),
    }


def summarize(rows: Sequence[Row], levels: Sequence[float], fingerprint: Mapping[str, Any] | None = None
              ) -> EvaluationSummary:
    """Clean and certified accuracy (at ``levels``) of ``rows``, as ``evaluate`` returns them."""
    return _summary(rows, [check_real(t, "levels entry") for t in levels], dict(fingerprint or {}))


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
    *,
    seed: int | None = None,
    fingerprint: Mapping[str, Any] | None = None,
    executor: Executor | None = None,
    shard: Shard | str | tuple[int, int] | None = None,
    decide: bool = False,
    compile: Compile | None = None,
) -> EvaluationSummary:
    """Certify every image of ``data`` with ``smoother`` and summarize.

    data: a map-style Dataset of (image, label), any iterable of (image, label), or a
    DataLoader (or iterable) of (images, labels) batches. Images must follow the input
    contract ([C, H, W], finite, in [0, 1], one shape for all; labels in [0, num_classes)):
    a map-style data set is checked in full before anything is certified. Images are
    numbered in data order from 0; as in the authors' scripts, only indices ``i % skip == 0``
    and ``i < max`` are certified. levels: the certificate levels (patch sizes or radii)
    reported in ``certified_accuracy``.

    output: the results file (see :mod:`fastsmooth.results`), written row by row and flushed
    after each batch, under the run's fingerprint (:func:`run_fingerprint` plus the data's
    content hash). With ``resume`` an existing file is continued when its fingerprint equals
    this run's (its finished indices are skipped) and refused, naming every difference,
    when not; ``resume=False`` starts it anew. A resumed file must hold only images this
    run selects, each once, in increasing order, every row valid (``check_rows``). The run
    holds the file's lock (:class:`fastsmooth.outfiles.OutputLock`) throughout: a second
    writer fails at once. For data that cannot be indexed, each row also records a digest of
    its image and label (column ``data_digest``), checked when a resume passes the image again.
    A shard that selects no image writes its header and returns a summary of count 0.

    seed: for a randomized smoother (``smoother.randomized``), image i is certified with a
    generator seeded from (seed, i) alone: the same seed gives the same rows whatever
    ``batch_images``, and a resumed run the rows of an uninterrupted one. fingerprint: extra
    entries recorded in (and compared with) the file's fingerprint. device: where batches
    are sent (default: the smoother's ``device``). batch_images: images per
    ``evaluate_batch`` call (the smoother bounds the forward batch itself).

    executor: where the batches are certified: :class:`~fastsmooth.executors.LocalExecutor`
    (the default, this process) or :class:`~fastsmooth.executors.RayExecutor` (Ray workers);
    this process alone reads ``data`` and writes ``output``, in data order, whatever the
    executor. shard: ``"K/N"`` certifies only part K of N of the selected images
    (:mod:`fastsmooth.shards`); the fingerprint then holds a ``shard`` entry, and
    :func:`fastsmooth.merge.merge_parts` joins the N parts (map-style data only).

    decide: level mode (see the module docstring): ``smoother.decide_batch(x, levels)`` decides
    each level and the prediction with as few forwards as they need; ``levels`` is required,
    and the summary reports the decided answers and the forwards used per image.

    compile: None keeps the smoother's own ``compile``; False, True or a torch.compile mode
    sets it for this run (``fastsmooth.engine.compiled``; recorded in the fingerprint when on;
    the smoother's setting is restored afterwards). The summary's ``compile_seconds`` is the
    time compiling took in this process (Ray workers compile their own graphs, not counted).

    Returns the summary over exactly the selected images (resumed rows included).
    """
    if compile is not None:
        compile = check_compile(compile)
        if not hasattr(smoother, "compile"):
            raise TypeError(f"compile={compile!r} needs a smoother with a compile option (the fastsmooth smoothers), "
                            f"got {type(smoother).__name__}")
        saved = smoother.compile
        smoother.compile = compile
        try:
            return evaluate(smoother, data, levels, output, resume, skip, max, device, batch_images, progress,
                            seed=seed, fingerprint=fingerprint, executor=executor, shard=shard, decide=decide)
        finally:
            smoother.compile = saved
    compiles_before = len(compile_records())
    if not hasattr(smoother, "evaluate_batch") or not hasattr(smoother, "certificate_name"):
        raise TypeError(f"smoother must define evaluate_batch and certificate_name, got {type(smoother).__name__}")
    skip = check_int(skip, "skip", 1)
    batch_images = check_int(batch_images, "batch_images", 1)
    if max is not None:
        max = check_int(max, "max", 1)  # noqa: A001 - max=0 would select nothing: refused, not a table of NaN
    if seed is not None:
        seed = check_int(seed, "seed", 0, 2**63 - 1)
    levels = [check_real(t, "levels entry") for t in levels]
    if device is None:
        device = getattr(smoother, "device", None)
    num_classes = getattr(smoother, "num_classes", None)
    executor = LocalExecutor() if executor is None else executor
    if not isinstance(executor, Executor):
        raise TypeError(f"executor must be a fastsmooth.executors.Executor (LocalExecutor, RayExecutor), "
                        f"got {type(executor).__name__}")
    shard = None if shard is None else parse_shard(shard)
    if decide:
        if not hasattr(smoother, "decide_batch"):
            raise TypeError(f"decide=True needs a smoother with decide_batch, got {type(smoother).__name__}")
        if not levels:
            raise ValueError("decide=True needs the levels to decide, got levels=[]; pass e.g. levels=[0.25, 0.5]")

    length = len(data) if _map_style(data) else None
    if length == 0:
        raise ValueError("data holds no images")
    with contextlib.ExitStack() as stack:
        if output is not None and not target(output).stream:
            # one writer per results file, for the whole run (resumed or not): taken first, so
            # a second run fails at once instead of after hashing the data
            stack.enter_context(OutputLock(target(output).path))
        summary = _evaluate(smoother, data, levels, output, resume, skip, max, device, batch_images, progress, seed,
                            fingerprint, executor, shard, decide, length, num_classes)
    if getattr(smoother, "compile", False):
        summary = dataclasses.replace(summary, compile_seconds=compile_seconds(compiles_before))
    return summary


def _evaluate(
    smoother: Evaluable, data: Any, levels: list[float], output: Any, resume: bool, skip: int, max: int | None,  # noqa: A002
    device: Any, batch_images: int, progress: bool, seed: int | None, fingerprint: Mapping[str, Any] | None,
    executor: Executor, shard: Shard | None, decide: bool, length: int | None, num_classes: int | None,
) -> EvaluationSummary:
    selected = _selection(skip, max, length)
    data_part, total = _data_fingerprint(data, selected, num_classes)
    run = {**run_fingerprint(smoother, skip=skip, max=max, seed=seed, device=executor.device(device), extra=fingerprint),
           **data_part}
    if decide:
        run[DECIDE_KEY] = levels
        if getattr(smoother, "randomized", False):  # its answers and forwards depend on the sequential procedure
            run[DECISION_KEY] = dict(DECISION)
    if shard is not None:
        if total is None:
            raise ValueError(f"shard={str(shard)!r} needs a map-style data set (with a length and indexing), got "
                             f"{type(data).__name__}: the parts must know the whole selection")
        run[SHARD_KEY] = shard_entry(shard, total)
        total = len(range(shard.index - 1, total, shard.count))

    def in_run(index: int) -> bool | None:
        """None past the end; else whether this run (this shard of it) certifies the image."""
        verdict = selected(index)
        return verdict if not verdict or shard is None else shard.holds(index, skip)

    finished: list[Row] = []
    handle = None
    digests = total is None  # data read once: each row records what it certified
    if output is not None:
        extra = [*(level_columns(levels) if decide else ()), *([DIGEST] if digests else [])]
        finished, handle = open_for_run(output, run, columns_for(smoother.certificate_name, extra), resume)
        try:
            check_rows(finished, lambda i: bool(in_run(i)), output, num_classes)
        except ResultsError:
            handle.close()
            raise
    done = {r.index for r in finished}
    recorded = {r.index: r for r in finished} if digests else {}

    def passed(index: int, image: Any, label: Any) -> None:
        """A finished image of an iterable, read again: it must be the one its row certified."""
        row = recorded.get(index)
        if row is None:
            return
        image, label = check_example(image, label, index, num_classes, [])
        if example_digest(index, image, label) != row.extra[-1]:
            raise ResultsError(
                f"results file {str(output)!r} line {row.number} certified image {index} with label {row.label}, but "
                f"the data now gives another image or label {label} at index {index} (a shuffling DataLoader, or "
                "changed data): not resuming; read the data in a fixed order, or start the file anew")

    def wanted(index: int) -> bool | None:
        verdict = in_run(index)
        return verdict if not verdict else index not in done

    rows = list(finished)
    bar = tqdm(total=None if total is None else total - len(done), disable=not progress, desc="certify", unit="img")
    try:
        batches = _batches(_examples(data, wanted, passed if digests else None), batch_images, num_classes,
                           tuple(levels) if decide else None)
        for batch, result in executor.run(smoother, batches, device, seed):
            new = _rows(batch, result, digests)
            rows.extend(new)
            if handle is not None:
                try:
                    handle.write("".join(r.line() for r in new))
                    handle.flush()
                except OSError as err:  # disk full...: say which file
                    raise write_error(output, err) from err
            bar.update(len(new))
    finally:
        bar.close()
        if handle is not None:
            try:
                handle.close()
            except OSError as err:
                raise write_error(output, err) from err
    if not rows and not (shard is not None and total == 0):  # an empty shard is a finished (empty) part
        raise ValueError(f"the selection (skip={skip}, max={max}) holds no images of the data")
    return _summary(rows, levels, run)


def _batches(
    examples: Iterator[tuple[int, Any, Any]], size: int, num_classes: int | None, levels: tuple[float, ...] | None
) -> Iterator[WorkBatch]:
    """Consecutive groups of ``size`` checked examples (the last may be smaller), numbered from 0;
    ``levels``: decide these levels (level mode) instead of certifying."""
    group: list[tuple[int, torch.Tensor, int]] = []
    shape: list[tuple[int, ...]] = []
    sequence = 0
    for item in itertools.chain(examples, [None]):
        if item is not None:
            index, x, y = item
            group.append((index, *check_example(x, y, index, num_classes, shape)))
        if group and (item is None or len(group) == size):
            yield WorkBatch(sequence, tuple(i for i, _, _ in group), tuple(y for _, _, y in group),
                            torch.stack([image for _, image, _ in group]), levels)
            group, sequence = [], sequence + 1


def _rows(batch: WorkBatch, result: BatchResult, digests: bool = False) -> list[Row]:
    extra = result.extra or ((),) * len(batch)
    if digests:
        extra = [(*more, example_digest(index, image, label))
                 for more, index, image, label in zip(extra, batch.indices, batch.images, batch.labels, strict=True)]
    return [
        Row(index, label, pred, cert, pred == label, result.seconds_per_image, more)
        for index, label, pred, cert, more in zip(batch.indices, batch.labels, result.prediction, result.certificate,
                                                  extra, strict=True)
    ]
