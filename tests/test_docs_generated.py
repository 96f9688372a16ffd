"""The docs' generated parts: the CLI reference covers every subcommand and flag of the parser,
every results file under benchmarks/results/ parses, every marker in the pages resolves, and
benchmarks/report.py writes files the pages can render."""
from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _load(name: str, path: Path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


generated = _load("docs_generated_hook", ROOT / "docs" / "hooks" / "generated.py")


def test_cli_reference_lists_every_subcommand_and_flag():
    from fastsmooth.cli import build_parser

    parser = build_parser()
    text = generated.cli_reference(parser)
    subcommands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices
    assert len(subcommands) >= 7
    for name, sub in subcommands.items():
        assert f"## `fastsmooth {name}`" in text
        for action in sub._actions:
            for flag in action.option_strings:
                if flag not in ("-h", "--help"):
                    assert f"`{flag}`" in text, (name, flag)


def test_cli_reference_follows_the_parser():
    parser = argparse.ArgumentParser(prog="tool")
    sub = parser.add_subparsers(dest="command")
    run = sub.add_parser("run", help="run it")
    run.add_argument("--speed", choices=["slow", "fast"], help="how | fast")
    run.add_argument("files", nargs="+")
    text = generated.cli_reference(parser)
    assert "## `tool run`" in text and "Run it." in text
    assert "| `--speed` | `slow` \\| `fast` | how \\| fast |" in text
    assert "| `files` | `FILES` ... |" in text


@pytest.mark.parametrize("path", sorted((ROOT / "benchmarks" / "results").glob("*.csv")), ids=lambda p: p.name)
def test_results_file_renders(path):
    meta, header, rows = generated.read_results(path)
    assert rows and meta["machine"] and meta["software"]
    table = generated.results_table(path.name)
    assert table.startswith("| ") and table.count("\n| ") >= len(rows)


def test_results_file_without_machine_is_refused(tmp_path):
    (tmp_path / "x.csv").write_text("# software: torch\na,b\n1,2\n")
    with pytest.raises(ValueError, match="machine"):
        generated.results_table("x.csv", directory=tmp_path)
    (tmp_path / "y.csv").write_text("# machine: m\n# software: s\na,b\n1,2,3\n")
    with pytest.raises(ValueError, match="row 2"):
        generated.results_table("y.csv", directory=tmp_path)


def test_every_marker_in_the_pages_resolves():
    pages = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
    names = {m.group("name") for page in pages for m in generated._MARKER.finditer(page.read_text()) if m.group("name")}
    assert names, "no page renders a results file"
    for name in names:
        assert (ROOT / "benchmarks" / "results" / name).is_file(), name
    for page in pages:
        rendered = generated.render(page.read_text())
        assert not generated._MARKER.search(rendered), page


def test_report_writes_renderable_results(tmp_path):
    report = _load("bench_report", ROOT / "benchmarks" / "report.py")

    def bench(group, role, median, **info):
        return {"group": group, "stats": {"median": median}, "extra_info": {"role": role, **info}}

    data = {"benchmarks": [
        bench("column, MNIST", "fastsmooth", 2.0, primary=True, images=4),
        bench("column, MNIST", "floor", 1.0),
        bench("column, MNIST", "naive", 3.0),
        bench("ablate, CIFAR", "fastsmooth[cpu]", 0.5, primary=True),
        bench("ablate, CIFAR", "copy floor", 0.25),
    ]}
    paths = report.write_csv(report.rows(data), tmp_path, "Test CPU, 2 threads", {"torch": "2.13.0"})
    assert [p.name for p in paths] == ["certification_test-cpu-2-threads_torch2.13.0.csv",
                                       "batch-creation_test-cpu-2-threads_torch2.13.0.csv"]
    meta, header, rows = generated.read_results(paths[0])
    assert meta["machine"] == "Test CPU, 2 threads" and rows == [["column, MNIST", "4", "2", "0.5", "2.000", "1.50"]]
    meta, header, rows = generated.read_results(paths[1])
    assert rows[0][:3] == ["ablate, CIFAR", "0.5", "2.00"]
