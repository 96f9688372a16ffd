"""Reports from results files: the plot and the tables of a paper's evaluation section.

``fastsmooth.report(["column.tsv", "block.tsv"], labels=["column", "block"], output_dir="report")``
(or ``fastsmooth report column.tsv block.tsv --labels column block -o report``) reads the
results files that ``fastsmooth.evaluate`` / ``fastsmooth certify`` write and produces:

- ``certified_accuracy.png`` and ``.svg``: certified accuracy against the patch size or the
  radius, one curve per run, each run's clean accuracy marked by a star at level 0 and a
  dotted line, the x axis named after the threat model (m x m patch, l0 / l1 / l2 radius);
- ``table.md`` and ``table.tex``: clean and certified accuracy at chosen levels, one row per
  run (the LaTeX is a ``booktabs`` tabular, like the papers' tables);
- ``summary.md``: images, seconds per image and, where the file records it, base-model
  forwards per image.

A results file is ``# fastsmooth-run <JSON fingerprint>`` (optional: files of older versions
have none), then the tab-separated header ``idx label predict <patch_size|radius> correct
time [more columns]``, then one row per image. The fingerprint names the method (``method``
or the ``smoother`` class) and its hyperparameters, which label the curves and the axis.

Certified accuracy at level t is the fraction of images with prediction == label (an
abstention, -1, never is) and certificate >= t; clean accuracy the fraction with prediction
== label.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from fastsmooth._validation import check_real
from fastsmooth.evaluate import CERTIFIED_AT, DECIDE_KEY
from fastsmooth.results import BASE_COLUMNS, MAGIC, Row, read_results

__all__ = ["Run", "Report", "read_run", "report", "threat_model"]


# method (CLI name or smoother class) -> the norm of its radius
_RADIUS_NORMS = {
    "ablation": "l0", "RandomizedAblation": "l0",
    "dssn": "l1", "DSSN": "l1", "ssn": "l1", "SSN": "l1", "uniform": "l1", "UniformSmoothing": "l1",
    "gaussian": "l2", "Smooth": "l2",
}
# hyperparameters worth naming in a curve's label, in this order
_NAMED = ("size", "stride", "keep", "threshold", "sigma", "n", "alpha")
_UNNAMED_DEFAULTS = {"stride": 1}  # named only when not the default (every position)


@dataclasses.dataclass(frozen=True)
class Run:
    """One results file, read back.

    label: the curve's name; certificate_name: ``patch_size`` or ``radius``; fingerprint: the
    parsed first line (empty for files without one); columns: every column, as arrays (the
    six standard ones as ``idx``, ``label``, ``predict``, the certificate, ``correct``,
    ``time``, and any others, e.g. ``forwards``, as float arrays).
    """

    path: Path
    label: str
    certificate_name: str
    fingerprint: dict[str, Any]
    columns: dict[str, np.ndarray]

    @property
    def count(self) -> int:
        return len(self.columns["idx"])

    @property
    def method(self) -> str | None:
        """The method's name from the fingerprint (``method``, else the smoother's class), if any."""
        return self.fingerprint.get("method") or self.fingerprint.get("smoother")

    @property
    def clean_accuracy(self) -> float:
        return float(self.columns["correct"].mean()) if self.count else math.nan

    def certified_accuracy(self, level: float) -> float:
        """Fraction of images that are correct and certified at ``level``.

        A level-mode file (``evaluate(decide=True)``) answers only the levels it decided: their
        ``certified@<level>`` columns, NaN at any other level, as ``fastsmooth.evaluate``'s
        summary of the same file."""
        if not self.count:
            return math.nan
        correct = self.columns["correct"].astype(bool)
        if DECIDE_KEY in self.fingerprint:
            flags = self.columns.get(f"{CERTIFIED_AT}{float(level):g}")
            return math.nan if flags is None else float((correct & (flags == 1)).mean())
        return float((correct & (self.columns[self.certificate_name] >= level)).mean())

    def mean(self, column: str) -> float | None:
        """Mean of a recorded column (None when the file has no such column)."""
        values = self.columns.get(column)
        return float(values.mean()) if values is not None and len(values) else None


@dataclasses.dataclass(frozen=True)
class Report:
    """What :func:`report` computed and wrote.

    levels: the table's levels; table: one dict per run (``label``, ``method``, ``images``,
    ``clean``, then certified accuracy per level as ``{level: fraction}`` under
    ``certified``); summary: one dict per run (``label``, ``images``, ``seconds_per_image``,
    ``forwards_per_image``, None when not recorded); markdown / latex / summary_markdown: the
    tables as text; files: what was written, by kind (``png``, ``svg``, ``md``, ``tex``, ``summary``).
    """

    runs: tuple[Run, ...]
    threat_model: str
    levels: tuple[float, ...]
    table: list[dict[str, Any]]
    summary: list[dict[str, Any]]
    markdown: str
    latex: str
    summary_markdown: str
    files: dict[str, Path]


def read_run(path: str | os.PathLike[str], label: str | None = None) -> Run:
    """Read one results file; a trailing partial line is ignored.

    Files with the fingerprint line are read by :func:`fastsmooth.results.read_results`;
    files of older versions (header first, no fingerprint) are read here, the same way.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"results file {str(path)!r} does not exist")
    with path.open() as f:
        first = f.readline()
    if first.startswith(MAGIC):
        results = read_results(path)
        fingerprint, names, rows = results.fingerprint, results.columns, results.rows
    else:
        fingerprint, (names, rows) = {}, _read_unfingerprinted(path)
    certificate = names[3]
    if certificate not in ("patch_size", "radius"):
        raise ValueError(f"results file {str(path)!r}: certificate column {certificate!r} is not patch_size or radius")
    columns = {
        "idx": np.array([r.index for r in rows], dtype=np.int64),
        "label": np.array([r.label for r in rows], dtype=np.int64),
        "predict": np.array([r.prediction for r in rows], dtype=np.int64),
        certificate: np.array([r.certificate for r in rows], dtype=np.float64),
        "correct": np.array([r.correct for r in rows], dtype=np.int64),
        "time": np.array([r.seconds for r in rows], dtype=np.float64),
    }
    for k, name in enumerate(names[len(BASE_COLUMNS):]):  # e.g. forwards; text columns are not reported
        columns[name] = np.array([_number(r.extra[k]) for r in rows], dtype=np.float64)
    return Run(path, label or _default_label(path, fingerprint), certificate, fingerprint, columns)


def _number(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        return math.nan


def _read_unfingerprinted(path: Path) -> tuple[list[str], list[Row]]:
    """(column names, rows) of a results file without the fingerprint line (older versions)."""
    lines = path.read_text().split("\n")[:-1]  # after the last newline: "" or an interrupted row
    names = lines[0].split("\t") if lines else []
    if len(names) < len(BASE_COLUMNS) or names[:3] != list(BASE_COLUMNS[:3]) or names[4:6] != list(BASE_COLUMNS[4:6]):
        raise ValueError(
            f"results file {str(path)!r}: header {lines[0] if lines else ''!r} is not "
            "'idx label predict <patch_size|radius> correct time ...'"
        )
    rows = []
    for number, line in enumerate(lines[1:], start=2):
        fields = line.split("\t")
        if len(fields) != len(names):
            raise ValueError(f"results file {str(path)!r} line {number}: {len(fields)} fields, expected {len(names)}")
        idx, label, predict, certificate, correct, seconds = fields[:6]
        rows.append(Row(int(idx), int(label), int(predict), float(certificate), correct == "1", float(seconds),
                        tuple(fields[6:])))
    return names, rows


def _default_label(path: Path, fingerprint: dict[str, Any]) -> str:
    method = fingerprint.get("method") or fingerprint.get("smoother")
    if not method:
        return path.stem
    hyper = fingerprint.get("hyperparameters") or {}
    named = [f"{k}={hyper[k]}" for k in _NAMED if hyper.get(k) is not None and hyper[k] != _UNNAMED_DEFAULTS.get(k)]
    return f"{method} ({', '.join(named)})" if named else str(method)


def threat_model(run: Run) -> str:
    """The x axis's name: the patch, or the radius's norm (from the fingerprint's method)."""
    if run.certificate_name == "patch_size":
        return "patch size m (m x m adversarial patch)"
    norm = _RADIUS_NORMS.get(str(run.method))
    return {"l0": "l0 radius (pixels changed)", "l1": "l1 radius", "l2": "l2 radius"}.get(norm, "radius")


def _nice_levels(runs: Sequence[Run]) -> list[float]:
    """Default levels: patch sizes 1 .. the largest certified (at most 8 of them); radii at a
    round step up to the largest certified radius (at most 6 levels, 0 included)."""
    largest = max((float(r.columns[r.certificate_name].max()) for r in runs if r.count), default=0.0)
    if runs[0].certificate_name == "patch_size":
        top = max(1, int(largest))
        step = max(1, math.ceil(top / 8))
        return [float(m) for m in range(step, top + 1, step)][:8] or [1.0]
    if largest <= 0:
        return [0.0]
    raw = largest / 5
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(k * magnitude for k in (1, 2, 2.5, 5, 10) if k * magnitude >= raw)
    return [round(i * step, 10) for i in range(int(largest / step) + 1)][:6]


def _level_text(level: float, certificate_name: str) -> str:
    if certificate_name == "patch_size":
        m = int(level)
        return f"{m}x{m}"
    return f"{level:g}"


def _percent(value: float) -> str:
    return "-" if math.isnan(value) else f"{100 * value:.1f}"


def _markdown(table: list[dict[str, Any]], levels: Sequence[float], certificate_name: str, axis: str) -> str:
    head = ["run", "images", "clean"] + [_level_text(t, certificate_name) for t in levels]
    lines = [f"Certified accuracy (%) against: {axis}", "", "| " + " | ".join(head) + " |",
             "|" + "---|" * len(head)]
    for row in table:
        cells = [row["label"], str(row["images"]), _percent(row["clean"])]
        cells += [_percent(row["certified"][t]) for t in levels]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _latex_escape(text: str) -> str:
    for char, escaped in (("\\", r"\textbackslash{}"), ("&", r"\&"), ("%", r"\%"), ("_", r"\_"), ("#", r"\#"),
                          ("$", r"\$"), ("{", r"\{"), ("}", r"\}")):
        text = text.replace(char, escaped)
    return text


def _latex(table: list[dict[str, Any]], levels: Sequence[float], certificate_name: str, axis: str) -> str:
    def level(t: float) -> str:
        return f"${int(t)} \\times {int(t)}$" if certificate_name == "patch_size" else f"${t:g}$"

    lines = [
        f"% certified accuracy (%) against: {axis}; written by fastsmooth.report",
        r"\begin{tabular}{l" + "r" * (len(levels) + 1) + "}",
        r"\toprule",
        " & ".join(["Run", "Clean"] + [level(t) for t in levels]) + r" \\",
        r"\midrule",
    ]
    for row in table:
        cells = [_latex_escape(row["label"]), _percent(row["clean"])] + [_percent(row["certified"][t]) for t in levels]
        lines.append(" & ".join(cells) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}"]
    return "\n".join(lines) + "\n"


def _summary_markdown(summary: list[dict[str, Any]]) -> str:
    lines = ["| run | images | seconds / image | forwards / image |", "|---|---|---|---|"]
    for row in summary:
        seconds = "-" if row["seconds_per_image"] is None else f"{row['seconds_per_image']:.4g}"
        forwards = "not recorded" if row["forwards_per_image"] is None else f"{row['forwards_per_image']:.4g}"
        lines.append(f"| {row['label']} | {row['images']} | {seconds} | {forwards} |")
    return "\n".join(lines) + "\n"


def _curve(run: Run) -> tuple[np.ndarray, np.ndarray]:
    """The curve of a run: certified accuracy at patch sizes 1 .. the largest certified + 1, or
    at radius 0 and at each distinct certified radius (where it drops just after)."""
    correct = run.columns["correct"].astype(bool)
    certificates = run.columns[run.certificate_name]
    if run.certificate_name == "patch_size":
        top = max(1, int(certificates.max()) + 1 if run.count else 1)
        x = np.arange(1, top + 1, dtype=np.float64)
        return x, np.array([run.certified_accuracy(t) for t in x])
    cut = np.unique(certificates[correct & (certificates > 0)])
    x = np.concatenate([[0.0], cut])
    y = np.array([run.certified_accuracy(t) for t in x])
    # the curve is drawn as steps "pre": on (x[k-1], x[k]] it is y[k]; past the largest radius, 0
    end = (x[-1] * 1.03) if x[-1] > 0 else 0.01
    return np.append(x, end), np.append(y, 0.0)


def _plot(runs: Sequence[Run], axis: str, stem: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")  # files only: no display needed
    import matplotlib.pyplot as plt

    patch = runs[0].certificate_name == "patch_size"
    fig, ax = plt.subplots(figsize=(5.8, 3.9))
    for run in runs:
        x, y = _curve(run)
        line, = (ax.plot(x, 100 * y, "o-", ms=4, label=run.label) if patch
                 else ax.step(x, 100 * y, where="pre", label=run.label))
        color = line.get_color()
        # clean accuracy: the certified accuracy of no attack (level 0), and a guide line
        ax.axhline(100 * run.clean_accuracy, color=color, ls=":", lw=1)
        ax.plot([0], [100 * run.clean_accuracy], marker="*", ms=11, color=color, ls="none", clip_on=False, zorder=5)
    ax.plot([], [], marker="*", ls=":", color="grey", label="clean accuracy")
    ax.set_xlabel(axis)
    ax.set_ylabel("certified accuracy (%)")
    ax.set_ylim(0, 100)
    ax.set_xlim(left=0)
    if patch:
        ax.xaxis.get_major_locator().set_params(integer=True)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    paths = [stem.with_suffix(".png"), stem.with_suffix(".svg")]
    fig.savefig(paths[0], dpi=120)
    fig.savefig(paths[1])
    plt.close(fig)
    return paths


def report(
    results: Sequence[str | os.PathLike[str]] | str | os.PathLike[str],
    labels: Sequence[str] | None = None,
    output_dir: str | os.PathLike[str] | None = None,
    levels: Sequence[float] | None = None,
    plot: bool = True,
) -> Report:
    """Plot and tabulate one or more results files (see the module docstring).

    results: the files, one curve / table row each; labels: their names (default: the method
    and hyperparameters from each fingerprint, else the file name); output_dir: where the
    files go (None: write nothing, only return the tables); levels: the table's patch sizes or
    radii (default: see :func:`_nice_levels`); plot: also write the PNG and SVG (needs
    matplotlib). Every run must certify the same kind of level (patch sizes, or radii of one
    norm): the curves share one axis.
    """
    paths = [results] if isinstance(results, (str, os.PathLike)) else list(results)
    if not paths:
        raise ValueError("results must name at least one results file")
    if labels is not None and len(labels) != len(paths):
        raise ValueError(f"labels must give one name per results file: {len(labels)} labels for {len(paths)} files")
    runs = tuple(read_run(p, None if labels is None else labels[i]) for i, p in enumerate(paths))
    axes = {threat_model(r) for r in runs}
    if len(axes) > 1:
        kinds = ", ".join(f"{r.path.name}: {threat_model(r)}" for r in runs)
        raise ValueError(f"the results files certify different threat models ({kinds}); report each kind separately")
    axis = axes.pop()
    certificate_name = runs[0].certificate_name
    if levels is None:
        levels = _nice_levels(runs)
    levels = tuple(check_real(t, "levels entry") for t in levels)  # (NaN / Inf: refused, naming the value)
    if certificate_name == "patch_size" and any(t < 1 or t != int(t) for t in levels):
        raise ValueError(f"levels of patch-size runs must be integers >= 1, got {list(levels)}")
    table = [
        {"label": r.label, "method": r.method, "images": r.count, "clean": r.clean_accuracy,
         "certified": {t: r.certified_accuracy(t) for t in levels}}
        for r in runs
    ]
    summary = [
        {"label": r.label, "images": r.count, "seconds_per_image": r.mean("time"),
         "forwards_per_image": r.mean("forwards")}
        for r in runs
    ]
    markdown = _markdown(table, levels, certificate_name, axis)
    latex = _latex(table, levels, certificate_name, axis)
    summary_markdown = _summary_markdown(summary)
    files: dict[str, Path] = {}
    if output_dir is not None:
        out = Path(output_dir)
        out.mkdir(parents=True, exist_ok=True)
        for kind, name, text in (("md", "table.md", markdown), ("tex", "table.tex", latex),
                                 ("summary", "summary.md", summary_markdown)):
            files[kind] = out / name
            files[kind].write_text(text)
        if plot:
            files["png"], files["svg"] = _plot(runs, axis, out / "certified_accuracy")
    return Report(runs, axis, levels, table, summary, markdown, latex, summary_markdown, files)
