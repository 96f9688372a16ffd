"""fastsmooth.report / `fastsmooth report`: tables checked against the results files, images written."""
from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

import fastsmooth
from fastsmooth.cli import main
from fastsmooth.reporting import read_run

HEADER = "idx\tlabel\tpredict\t{cert}\tcorrect\ttime{extra}\n"


def write_run(path: Path, rows: list[tuple], cert: str = "patch_size", fingerprint: dict | None = None,
              extra: tuple[str, ...] = (), partial: str = "") -> Path:
    """A results file as fastsmooth writes it: optional fingerprint line, header, rows."""
    text = "" if fingerprint is None else "# fastsmooth-run " + json.dumps(fingerprint, separators=(",", ":")) + "\n"
    text += HEADER.format(cert=cert, extra="".join("\t" + e for e in extra))
    for row in rows:
        text += "\t".join(str(v) for v in row) + "\n"
    path.write_text(text + partial)
    return path


def demo_like_rows(seed: int, count: int, top: int, accuracy: float, forwards: int | None = None) -> list[tuple]:
    """Rows like the demo's: labels 0-9, predictions right with probability ``accuracy``,
    certified patch sizes 0..top (a wrong prediction can be certified too)."""
    rng = random.Random(seed)
    rows = []
    for idx in range(count):
        label = rng.randrange(10)
        predict = label if rng.random() < accuracy else (label + 1 + rng.randrange(9)) % 10
        row = (idx, label, predict, rng.randrange(top + 1), int(predict == label), f"{rng.uniform(1e-3, 5e-3):.6f}")
        rows.append(row + ((forwards,) if forwards is not None else ()))
    return rows


def expected_certified(rows: list[tuple], level: float) -> float:
    return sum(1 for r in rows if r[4] == 1 and float(r[3]) >= level) / len(rows)


@pytest.fixture
def two_runs(tmp_path: Path) -> tuple[list[Path], list[list[tuple]]]:
    column = demo_like_rows(0, 120, 7, 0.9)
    block = demo_like_rows(1, 80, 5, 0.7, forwards=784)
    fp = {"method": "block", "hyperparameters": {"size": 10, "threshold": 0.3}, "version": "0.1.0"}
    paths = [
        write_run(tmp_path / "column.tsv", column, partial="120\t3\t3"),  # no fingerprint (older files); a cut row
        write_run(tmp_path / "block.tsv", block, fingerprint=fp, extra=("forwards",)),
    ]
    return paths, [column, block]


def test_tables_match_the_results_files(tmp_path: Path, two_runs) -> None:
    pytest.importorskip("matplotlib")
    paths, rows = two_runs
    out = tmp_path / "report"
    levels = [1, 2, 3, 5, 7]
    result = fastsmooth.report(paths, labels=["column s=2", "block s=10"], output_dir=out, levels=levels)

    assert [r["images"] for r in result.table] == [120, 80]  # the partial last line is not a row
    for table_row, raw in zip(result.table, rows):
        assert table_row["clean"] == pytest.approx(sum(r[4] for r in raw) / len(raw))
        for level in levels:
            assert table_row["certified"][float(level)] == pytest.approx(expected_certified(raw, level))
    # the Markdown and LaTeX tables print the same numbers, in percent with one decimal
    for table_row, raw in zip(result.table, rows):
        cells = [f"{100 * expected_certified(raw, t):.1f}" for t in levels]
        md_line = next(line for line in result.markdown.splitlines() if line.startswith(f"| {table_row['label']} |"))
        assert md_line.split(" | ")[3:] == cells[:-1] + [cells[-1] + " |"]
        tex_line = next(line for line in result.latex.splitlines() if line.startswith(table_row["label"].split()[0]))
        assert tex_line.rstrip(" \\").split(" & ")[2:] == cells
    assert "5 \\times 5" in result.latex and "\\toprule" in result.latex
    assert result.threat_model.startswith("patch size m")
    # timing summary: mean of the time column; forwards only where recorded
    assert result.summary[0]["seconds_per_image"] == pytest.approx(sum(float(r[5]) for r in rows[0]) / 120)
    assert result.summary[0]["forwards_per_image"] is None
    assert result.summary[1]["forwards_per_image"] == 784
    assert "not recorded" in result.summary_markdown
    # files: tables as returned, images non-empty
    assert (out / "table.md").read_text() == result.markdown
    assert (out / "table.tex").read_text() == result.latex
    assert (out / "summary.md").read_text() == result.summary_markdown
    png, svg = result.files["png"], result.files["svg"]
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000
    assert svg.read_text().lstrip().startswith("<?xml") and "<svg" in svg.read_text()


def test_labels_default_to_the_fingerprint(two_runs) -> None:
    paths, _ = two_runs
    result = fastsmooth.report(paths)  # no output: tables only
    assert [r["label"] for r in result.table] == ["column", "block (size=10, threshold=0.3)"]
    assert result.files == {}
    assert result.levels == tuple(float(m) for m in range(1, 8))  # 1 .. the largest certified patch


def test_radius_runs_name_the_norm(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    rows = [(0, 1, 1, 0.52, 1, 0.1), (1, 2, -1, 0.0, 0, 0.1), (2, 3, 3, 0.11, 1, 0.1), (3, 0, 0, 1.3, 1, 0.1)]
    path = write_run(tmp_path / "g.tsv", rows, cert="radius", fingerprint={"smoother": "Smooth", "hyperparameters": {"sigma": 0.5}})
    result = fastsmooth.report([path], output_dir=tmp_path / "out", levels=[0, 0.25, 0.5, 1.0])
    assert result.threat_model == "l2 radius"
    assert [result.table[0]["certified"][t] for t in (0.0, 0.25, 0.5, 1.0)] == [0.75, 0.5, 0.5, 0.25]
    assert result.table[0]["clean"] == 0.75  # the abstention is not correct
    assert result.files["png"].stat().st_size > 0


def test_refuses_mixed_threat_models_and_bad_arguments(tmp_path: Path) -> None:
    patch = write_run(tmp_path / "p.tsv", [(0, 1, 1, 3, 1, 0.1)])
    l1 = write_run(tmp_path / "r.tsv", [(0, 1, 1, 0.3, 1, 0.1)], cert="radius", fingerprint={"method": "dssn"})
    with pytest.raises(ValueError, match="different threat models"):
        fastsmooth.report([patch, l1])
    with pytest.raises(ValueError, match="one name per results file"):
        fastsmooth.report([patch], labels=["a", "b"])
    with pytest.raises(ValueError, match="integers >= 1"):
        fastsmooth.report([patch], levels=[0.5])
    with pytest.raises(FileNotFoundError, match="missing.tsv"):
        fastsmooth.report([tmp_path / "missing.tsv"])
    bad = tmp_path / "bad.tsv"
    bad.write_text("a\tb\n1\t2\n")
    with pytest.raises(ValueError, match="is not 'idx label predict"):
        read_run(bad)


def test_cli_report(tmp_path: Path, two_runs, capsys) -> None:
    pytest.importorskip("matplotlib")
    paths, rows = two_runs
    out = tmp_path / "cli"
    code = main(["report", *map(str, paths), "--labels", "column", "block", "--levels", "1", "5", "-o", str(out)])
    assert code == 0
    printed = capsys.readouterr().out
    assert f"| column | 120 | {100 * sum(r[4] for r in rows[0]) / 120:.1f} |" in printed
    for name in ("certified_accuracy.png", "certified_accuracy.svg", "table.md", "table.tex", "summary.md"):
        assert (out / name).stat().st_size > 0
    assert main(["report", str(tmp_path / "nope.tsv"), "-o", str(out)]) == 2


def test_report_of_runs_written_by_evaluate(tmp_path: Path) -> None:
    """Two runs as the demo writes them (evaluate, fingerprint line): the report's table equals
    evaluate's own summary, and the curves are labelled from the fingerprints."""
    import torch
    from torch.utils.data import TensorDataset

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(2 * 10 * 10, 10))
    with torch.no_grad():
        model[1].weight.mul_(20)
    x = torch.randint(0, 256, (24, 1, 10, 10)).float() / 255
    data = TensorDataset(x, torch.randint(10, (24,)))
    levels = (1, 2, 3)
    summaries, paths = [], []
    for name, threshold in (("theta", 0.3), ("top1", None)):
        smoother = fastsmooth.ColumnSmoothing(model, num_classes=10, size=2, threshold=threshold)
        paths.append(tmp_path / f"{name}.tsv")
        summaries.append(fastsmooth.evaluate(smoother, data, levels=levels, output=paths[-1], progress=False))
    result = fastsmooth.report(paths, levels=levels)
    for row, summary in zip(result.table, summaries):
        assert row["images"] == summary.count == 24
        assert row["clean"] == pytest.approx(summary.clean_accuracy)
        assert row["certified"] == pytest.approx(summary.certified_accuracy)
    assert result.table[0]["label"].startswith("ColumnSmoothing (size=2, threshold=0.3")


def test_level_mode_files_report_the_decided_levels_only(tmp_path: Path) -> None:
    """A level-mode file answers its own levels (its certified@ columns, as evaluate's summary)
    and no other: NaN there, never a figure read off the largest-level column."""
    from test_evaluate_levels import IndexDecider, data

    out = tmp_path / "levels.tsv"
    summary = fastsmooth.evaluate(IndexDecider(), data(12), levels=(1, 3), output=out, progress=False, decide=True)
    run = read_run(out)
    for level in (1, 3):
        assert run.certified_accuracy(level) == pytest.approx(summary.certified_accuracy[float(level)])
    assert run.certified_accuracy(2) != run.certified_accuracy(2)  # NaN: level 2 was not decided
