"""Results files: the run fingerprint, the header, the rows, reading them back and resuming.

A results file is tab-separated text:

- line 1: ``# fastsmooth-run `` followed by the run's fingerprint as one line of compact JSON
  (sorted keys): everything that changes the rows (method and every hyperparameter, the
  model's content hash, the data's identity and a content hash of the certified images and
  labels, the selection ``skip`` / ``max``, the seed, fastsmooth's version, the backend...);
- line 2: the column names, ``idx label predict <patch_size|radius> correct time`` and
  possibly more columns after these six;
- then one row per image, appended (and flushed) as images are certified.

Two files belong to the same run exactly when their fingerprints are equal:
:func:`fingerprint_differences` says how two fingerprints differ, in words. A run resumes a
file only when the fingerprints are equal (:func:`open_for_run`); every row of a resumed
file must be one the run asks for, at most once, in increasing index order, with a label the
run's classes allow (:func:`check_rows`). Every row read back must be consistent on its own
(:func:`read_results`): index and label >= 0, prediction >= -1 (the abstain value), ``correct``
equal to ``prediction == label``, a finite certificate (nothing-certified is a negative value
or 0, never NaN / Inf), and no index twice. Writers hold the file's lock
(:class:`fastsmooth.outfiles.OutputLock`) for the whole run.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import IO, Any

from fastsmooth.outfiles import open_stream, target, write_atomically, write_error

__all__ = [
    "MAGIC",
    "BASE_COLUMNS",
    "Row",
    "Results",
    "ResultsError",
    "read_results",
    "header",
    "columns_for",
    "encode_fingerprint",
    "fingerprint_differences",
    "open_for_run",
    "check_rows",
    "sha256_file",
    "smoother_fingerprint",
    "model_sha256",
]

MAGIC = "# fastsmooth-run "
#: The first six columns of every results file; ``{certificate}`` is ``patch_size`` or ``radius``.
BASE_COLUMNS = ("idx", "label", "predict", "{certificate}", "correct", "time")


class ResultsError(ValueError):
    """A results file that cannot be read, or that does not belong to the run at hand."""


@dataclasses.dataclass(frozen=True)
class Row:
    """One image's result. ``extra`` holds the text of any columns after the first six."""

    index: int
    label: int
    prediction: int
    certificate: float
    correct: bool
    seconds: float
    extra: tuple[str, ...] = ()
    #: the line of the file the row was read from (0: not read from a file)
    number: int = dataclasses.field(default=0, compare=False, repr=False)

    def line(self) -> str:
        """The row as a line of the file (with its newline)."""
        fields = [
            str(self.index), str(self.label), str(self.prediction), f"{self.certificate:.10g}",
            str(int(self.correct)), f"{self.seconds:.6f}", *self.extra,
        ]
        return "\t".join(fields) + "\n"


@dataclasses.dataclass(frozen=True)
class Results:
    """A results file read back: its fingerprint, its column names and its complete rows."""

    fingerprint: dict[str, Any]
    columns: list[str]
    rows: list[Row]

    @property
    def certificate_name(self) -> str:
        """The name of the certificate column (``patch_size`` or ``radius``)."""
        return self.columns[3]


def encode_fingerprint(fingerprint: Mapping[str, Any]) -> str:
    """The fingerprint as the file holds it: compact JSON with sorted keys, on one line."""
    try:
        return json.dumps(fingerprint, sort_keys=True, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError) as err:
        raise ResultsError(f"the run fingerprint must be plain JSON data (no NaN), got {fingerprint!r}: {err}") from None


def header(fingerprint: Mapping[str, Any], columns: Iterable[str]) -> str:
    """Lines 1 and 2 of a results file (with their newlines)."""
    return MAGIC + encode_fingerprint(fingerprint) + "\n" + "\t".join(columns) + "\n"


def columns_for(certificate_name: str, extra: Iterable[str] = ()) -> list[str]:
    """The column names of a run whose certificate column is ``certificate_name``."""
    return [c.format(certificate=certificate_name) for c in BASE_COLUMNS] + list(extra)


def _parse_row(fields: list[str], path: Path, number: int, line: str) -> Row:
    try:
        idx, label, pred, cert, correct, seconds = fields[:6]
        if correct not in ("0", "1"):
            raise ValueError(f"correct must be 0 or 1, got {correct!r}")
        row = Row(int(idx), int(label), int(pred), float(cert), correct == "1", float(seconds), tuple(fields[6:]),
                  number)
    except ValueError as err:
        raise ResultsError(f"results file {str(path)!r} line {number} is not a valid row ({err}): {line!r}") from None
    problem = _row_problem(row)
    if problem:
        raise ResultsError(f"results file {str(path)!r} line {number} is not a valid row ({problem}): {line!r}")
    return row


def _row_problem(row: Row) -> str | None:
    """What makes a row impossible for any run to have written (None: nothing)."""
    if row.index < 0:
        return f"image index {row.index} is negative"
    if row.label < 0:
        return f"label {row.label} is negative"
    if row.prediction < -1:
        return f"prediction {row.prediction} is below -1 (the abstain value)"
    if row.correct != (row.prediction == row.label):
        return f"correct is {int(row.correct)} but prediction {row.prediction} {'!=' if row.correct else '=='} label {row.label}"
    if not math.isfinite(row.certificate):
        return f"certificate {row.certificate} is not finite (nothing certified is written as a negative number or 0)"
    if not (math.isfinite(row.seconds) and row.seconds >= 0):
        return f"time {row.seconds} is not a non-negative number of seconds"
    return None


def read_results(path: str | os.PathLike[str]) -> Results:
    """Read a results file: fingerprint, columns and every complete row.

    A trailing partial line (a run killed while writing it) is ignored. Raises
    :class:`ResultsError`, naming the file and line, for a file without a fingerprint line
    (written by an older fastsmooth, or not a results file) or with a malformed row.
    """
    path = Path(path)
    if path.is_dir():
        raise ResultsError(f"results file {str(path)!r} is a directory; give a file name")
    text = path.read_text()
    lines = text.split("\n")
    if not text.endswith("\n"):
        lines = lines[:-1]  # a partial last line
    else:
        lines = lines[:-1]  # the empty string after the final newline
    if not lines or not lines[0].startswith(MAGIC):
        first = lines[0] if lines else ""
        raise ResultsError(
            f"results file {str(path)!r} does not start with a run fingerprint ({MAGIC.strip()!r} line), found "
            f"{first[:80]!r}: it was not written by this version of fastsmooth, or is not a results file"
        )
    try:
        fingerprint = json.loads(lines[0][len(MAGIC):])
    except json.JSONDecodeError as err:
        raise ResultsError(f"results file {str(path)!r} line 1: the run fingerprint is not valid JSON ({err})") from None
    if not isinstance(fingerprint, dict):
        raise ResultsError(f"results file {str(path)!r} line 1: the run fingerprint must be a JSON object")
    if len(lines) < 2:
        raise ResultsError(f"results file {str(path)!r} has no column header (line 2)")
    columns = lines[1].split("\t")
    if len(columns) < len(BASE_COLUMNS) or columns[:3] != list(BASE_COLUMNS[:3]) or columns[4:6] != list(BASE_COLUMNS[4:6]):
        raise ResultsError(f"results file {str(path)!r} line 2 is not a column header {BASE_COLUMNS}: {lines[1]!r}")
    rows = []
    first_line: dict[int, int] = {}
    for number, line in enumerate(lines[2:], start=3):
        if not line:
            continue
        fields = line.split("\t")
        if len(fields) != len(columns):
            raise ResultsError(
                f"results file {str(path)!r} line {number} has {len(fields)} fields, expected {len(columns)}: {line!r}"
            )
        row = _parse_row(fields, path, number, line)
        if row.index in first_line:
            raise ResultsError(f"results file {str(path)!r} line {number} repeats image {row.index} (first on line "
                               f"{first_line[row.index]}): two runs wrote to it, or rows were pasted twice; remove "
                               "the repeated rows or certify anew")
        first_line[row.index] = number
        rows.append(row)
    return Results(fingerprint, columns, rows)


def _describe(value: Any) -> str:
    text = json.dumps(value, sort_keys=True, separators=(",", ":"))
    return text if len(text) <= 80 else text[:77] + "..."


def fingerprint_differences(old: Mapping[str, Any], new: Mapping[str, Any], prefix: str = "") -> list[str]:
    """How fingerprint ``new`` differs from ``old``, one readable line per difference (empty: equal).

    Nested dictionaries are compared key by key, e.g. ``hyperparameters.threshold: 0.3 in the
    file, null in this run``.
    """
    out = []
    for key in sorted(set(old) | set(new)):
        name = prefix + key
        if key not in new:
            out.append(f"{name}: {_describe(old[key])} in the file, absent in this run")
        elif key not in old:
            out.append(f"{name}: absent in the file, {_describe(new[key])} in this run")
        elif isinstance(old[key], dict) and isinstance(new[key], dict):
            out.extend(fingerprint_differences(old[key], new[key], name + "."))
        elif not _same(old[key], new[key]):
            out.append(f"{name}: {_describe(old[key])} in the file, {_describe(new[key])} in this run")
    return out


def _same(a: Any, b: Any) -> bool:
    # compared as the file stores them: a tuple and a list, or 1 and 1.0, are the same value
    return json.loads(json.dumps(a)) == json.loads(json.dumps(b))


def _write_header(path: Path, text: str) -> IO[str]:
    """Write the header to a new file atomically (a run killed meanwhile leaves no half header)."""
    write_atomically(path, text)
    return path.open("a")


def open_for_run(
    path: str | os.PathLike[str],
    fingerprint: Mapping[str, Any],
    columns: list[str],
    resume: bool,
) -> tuple[list[Row], IO[str]]:
    """Open ``path`` for the run described by ``fingerprint``: (rows already there, append handle).

    With ``resume`` an existing, non-empty file is continued only if its fingerprint and
    columns equal the run's; otherwise a :class:`ResultsError` lists every difference. A
    partial last line (a killed run) is cut off before appending. Without ``resume``, or for
    a new file, the file is (re)written with the run's header.

    A symlink is written through (its target is the results file; the link stays). A special
    file (``/dev/stdout``, a pipe, a device) is written in place: never replaced, never read
    back, so never resumed.
    """
    if Path(path).is_dir():
        raise ResultsError(f"output {str(path)!r} is a directory; give the name of a results file")
    where = target(path)
    text = header(fingerprint, columns)
    if where.stream:
        handle = open_stream(where)
        try:
            handle.write(text)
            handle.flush()
        except OSError as err:  # e.g. /dev/full
            raise write_error(where.path, err) from err
        return [], handle
    path = where.path
    if not (resume and path.exists() and path.stat().st_size > 0):
        return [], _write_header(path, text)
    found = read_results(path)
    differences = fingerprint_differences(found.fingerprint, json.loads(encode_fingerprint(fingerprint)))
    if found.columns != columns:
        differences.append(f"columns: {found.columns} in the file, {columns} in this run")
    if differences:
        raise ResultsError(
            f"output {str(path)!r} holds the results of another run, not resuming it; it differs in: "
            + "; ".join(differences)
            + ". Give another output file, or start this one anew (resume=False, --no-resume on the command line)."
        )
    raw = path.read_bytes()
    if not raw.endswith(b"\n"):  # killed in the middle of a row
        with path.open("r+b") as f:
            f.truncate(raw.rfind(b"\n") + 1)
    return found.rows, path.open("a")


def check_rows(
    rows: Iterable[Row], wanted: Callable[[int], bool], path: str | os.PathLike[str], num_classes: int | None = None
) -> None:
    """Every row must be an image the run asks for (``wanted(index)``), in increasing index
    order (each once: the order the run writes them), with a label in [0, num_classes) when
    ``num_classes`` is given. Refusals name the line."""
    last: Row | None = None
    for row in rows:
        where = f"results file {str(path)!r} line {row.number}"
        if last is not None and row.index <= last.index:
            what = "repeats" if row.index == last.index else "comes after"
            raise ResultsError(f"{where}: image {row.index} {what} image {last.index} (line {last.number}); a run "
                               "writes its images once each, in increasing order: start the file anew")
        if not wanted(row.index):
            raise ResultsError(f"{where} holds image {row.index}, which this run does not certify "
                               "(outside its skip / max selection or the data set); start the file anew")
        if num_classes is not None and row.label >= num_classes:
            raise ResultsError(f"{where}: label {row.label} is outside [0, {num_classes}) of this run's "
                               f"{num_classes} classes; start the file anew")
        last = row


def sha256_file(path: str | os.PathLike[str], chunk: int = 1 << 20) -> str:
    """The sha256 hex digest of a file's content."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()



def model_sha256(model: Any) -> str | None:
    """A content hash of a module's parameters and buffers (names, dtypes, shapes and values);
    None for a plain callable, whose content cannot be read."""
    import torch

    if not isinstance(model, torch.nn.Module):
        return None
    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        t = tensor.detach().cpu().contiguous()
        digest.update(f"{name}:{t.dtype}:{tuple(t.shape)}:".encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return digest.hexdigest()


def _plain(value: Any) -> Any:
    """A hyperparameter as JSON data; None when it is not a plain value (a model, a generator)."""
    import numbers

    import torch

    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        value = float(value)
        return value if value == value and abs(value) != float("inf") else str(value)
    if isinstance(value, (torch.dtype, torch.memory_format, torch.device)):
        return str(value)
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().tolist() if value.numel() <= 64 else None
    if isinstance(value, (list, tuple)):
        items = [_plain(v) for v in value]
        return items if all(v is not None for v in items) else None
    return None


def smoother_fingerprint(smoother: Any) -> dict[str, Any]:
    """The smoother's class and every plain public attribute (its hyperparameters: size,
    threshold, sigma, n0, n, alpha, batch_size, backend, autocast, memory_format, ...), plus
    the content hash of its base model."""
    attributes = {}
    for name, value in sorted(vars(smoother).items()):
        if name.startswith("_"):
            continue
        plain = _plain(value)
        if plain is not None or value is None:
            attributes[name] = plain
    model = getattr(smoother, "model", None)
    return {
        "smoother": type(smoother).__name__,
        "hyperparameters": attributes,
        "model_sha256": model_sha256(model),
    }
