"""Merge the results files of the shards of one run (``fastsmooth merge OUT.tsv PARTS...``).

A part is the results file of ``evaluate(..., shard="K/N")`` (``fastsmooth certify --shard
K/N``): its fingerprint is the whole run's plus a ``shard`` entry ``{"part": K, "parts": N,
"selected": S}``, S being the number of images the whole run selects (``--skip`` /
``--max``), so that the selection is known without the data: the p-th selected image is
``p * skip``, and shard K holds those with ``p % N == K - 1`` (:mod:`fastsmooth.shards`).

The merge refuses, naming the file and what is wrong: a file that is not a shard part; parts
of different runs (any difference of the fingerprints besides ``shard``, listed); two parts
of the same shard; a missing shard; a row that belongs to another shard or appears twice
(overlaps); and an image of a shard that its part lacks (gaps: an unfinished job, which
resumes when run again). The merged file has the fingerprint of the whole run and its rows
in index order: the file a single process would have written.
"""
from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from fastsmooth.outfiles import OutputLock, open_stream, target, write_atomically
from fastsmooth.results import Results, ResultsError, Row, fingerprint_differences, header, read_results
from fastsmooth.shards import Shard

__all__ = ["SHARD_KEY", "MergeError", "Merged", "merge_parts", "shard_entry", "write_merged"]

#: the fingerprint entry that tells the parts of a sharded run apart
SHARD_KEY = "shard"


class MergeError(ResultsError):
    """Parts that do not make up one run exactly."""


@dataclasses.dataclass(frozen=True)
class Merged:
    """The merged run: its fingerprint, columns and rows (in index order)."""

    fingerprint: dict[str, Any]
    columns: list[str]
    rows: list[Row]


def shard_entry(shard: Shard, selected: int) -> dict[str, int]:
    """The ``shard`` fingerprint entry of part ``shard`` of a run selecting ``selected`` images."""
    return {"part": shard.index, "parts": shard.count, "selected": selected}


def _shard_of(path: str, results: Results) -> tuple[Shard, int]:
    entry = results.fingerprint.get(SHARD_KEY)
    if not isinstance(entry, dict) or not {"part", "parts", "selected"} <= set(entry):
        raise MergeError(f"{path!r} is not a shard part: its fingerprint has no {SHARD_KEY!r} entry (it was written "
                         "without --shard K/N); give the part files of one sharded run")
    try:
        return Shard(int(entry["part"]), int(entry["parts"])), int(entry["selected"])
    except (TypeError, ValueError) as err:
        raise MergeError(f"{path!r}: malformed {SHARD_KEY!r} entry {entry!r} in its fingerprint ({err})") from None


def _skip(fingerprint: dict[str, Any], path: str) -> int:
    skip = fingerprint.get("skip", 1)
    if isinstance(skip, bool) or not isinstance(skip, int) or skip < 1:
        raise MergeError(f"{path!r}: its fingerprint records skip={skip!r}, expected a positive integer")
    return skip


def _sample(indices: Sequence[int], limit: int = 8) -> str:
    shown = ", ".join(str(i) for i in indices[:limit])
    return f"{shown}, ... ({len(indices)} in all)" if len(indices) > limit else shown


def merge_parts(parts: Sequence[str | os.PathLike[str]]) -> Merged:
    """Check that ``parts`` are the N shards of one run, each complete, and join their rows."""
    if not parts:
        raise MergeError("give the part files to merge (the results files of --shard 1/N .. N/N)")
    read = [(str(p), read_results(p)) for p in parts]
    first_path, first = read[0]
    base = {k: v for k, v in first.fingerprint.items() if k != SHARD_KEY}
    first_shard, selected = _shard_of(first_path, first)
    count = first_shard.count
    skip = _skip(base, first_path)

    owners: dict[int, str] = {}
    for path, results in read:
        shard, their_selected = _shard_of(path, results)
        differences = fingerprint_differences(base, {k: v for k, v in results.fingerprint.items() if k != SHARD_KEY})
        if shard.count != count or their_selected != selected:
            differences.append(f"shard: part of {shard.count} selecting {their_selected} images in {path!r}, part of "
                               f"{count} selecting {selected} in {first_path!r}")
        if results.columns != first.columns:
            differences.append(f"columns: {results.columns} in {path!r}, {first.columns} in {first_path!r}")
        if differences:
            raise MergeError(f"{path!r} is not a part of the run of {first_path!r}; they differ in: "
                             + "; ".join(d.replace("in the file", f"in {first_path!r}").replace("in this run", f"in {path!r}")
                                         for d in differences))
        if shard.index in owners:
            raise MergeError(f"{owners[shard.index]!r} and {path!r} are both shard {shard}: give each part once")
        owners[shard.index] = path
    missing = [k for k in range(1, count + 1) if k not in owners]
    if missing:
        raise MergeError(f"shard(s) {', '.join(f'{k}/{count}' for k in missing)} missing: give all {count} parts "
                         f"(got {len(read)})")

    rows: list[Row] = []
    for path, results in read:
        shard, _ = _shard_of(path, results)
        expected = {p * skip for p in range(shard.index - 1, selected, count)}
        seen: set[int] = set()
        for row in results.rows:  # (read_results refuses an index twice in one file)
            if row.index not in expected:
                owner = (row.index // skip) % count + 1 if row.index % skip == 0 and row.index // skip < selected else None
                where = f"shard {owner}/{count}" if owner else "no shard of this run (outside its selection)"
                raise MergeError(f"{path!r} (shard {shard}) holds image {row.index}, which belongs to {where} (overlap)")
            seen.add(row.index)
        lacking = sorted(expected - seen)
        if lacking:
            raise MergeError(f"{path!r} (shard {shard}) lacks {len(lacking)} of its {len(expected)} images (gap): "
                             f"{_sample(lacking)}; run its job again to finish it (it resumes)")
        rows.extend(results.rows)
    rows.sort(key=lambda r: r.index)
    return Merged(base, list(first.columns), rows)


def write_merged(merged: Merged, output: str | os.PathLike[str], parts: Sequence[str | os.PathLike[str]]) -> None:
    """Write the merged run to ``output`` (refusing to overwrite one of its parts), through a
    symlink, under the output's lock (:mod:`fastsmooth.outfiles`)."""
    out = Path(output)
    if out.is_dir():
        raise MergeError(f"output {str(out)!r} is a directory; give the name of the merged results file")
    if any(out.exists() and Path(p).exists() and out.samefile(p) for p in parts):
        raise MergeError(f"output {str(out)!r} is one of the parts; give another file name")
    text = header(merged.fingerprint, merged.columns) + "".join(r.line() for r in merged.rows)
    where = target(out)
    if where.stream:  # /dev/stdout, a pipe: written in place, never replaced
        with open_stream(where) as f:
            f.write(text)
        return
    with OutputLock(where.path):  # not under a run or another merge writing the same file
        write_atomically(where.path, text)
