"""mkdocs hook: the pages' generated parts, built from their sources at every build.

A page asks for generated text with a marker on a line of its own:

- ``<!-- cli-reference -->``: the command-line reference, walked from
  ``fastsmooth.cli.build_parser()`` (every subcommand, argument group and flag, with its help);
  no copy of a flag is kept by hand.
- ``<!-- results: NAME.csv -->``: a table rendered from ``benchmarks/results/NAME.csv``, headed
  by the file's ``# key: value`` lines (the machine, the software versions, the command and the
  conditions of the measurement).

The same functions back ``tests/test_docs_generated.py``.
"""
from __future__ import annotations

import argparse
import csv
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "benchmarks" / "results"
_MARKER = re.compile(r"^<!-- (cli-reference|results: (?P<name>[\w.+-]+\.csv)) -->$", re.M)


def _cell(text: object) -> str:
    return " ".join(str(text).split()).replace("|", "\\|")


def _subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def _summaries(parser: argparse.ArgumentParser) -> dict[str, str]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return {a.dest: a.help or "" for a in action._choices_actions}
    return {}


def _argument(action: argparse.Action) -> tuple[str, str, str]:
    if action.option_strings:
        name = ", ".join(f"`{s}`" for s in action.option_strings)
    else:
        name = f"`{action.metavar or action.dest}`"
    if action.choices is not None and not isinstance(action, argparse._SubParsersAction):
        takes = " \\| ".join(f"`{c}`" for c in action.choices)
    elif action.nargs == 0:
        takes = "(switch)"
    else:
        metavar = action.metavar or action.dest.upper()
        metavar = " ".join(metavar) if isinstance(metavar, tuple) else metavar
        more = {"+": " ...", "*": " ...", "?": " (optional)"}.get(action.nargs, "")
        takes = f"`{metavar}`{more}"
    notes = action.help or ""
    if action.required and action.option_strings:
        notes = "**required**. " + notes
    return name, takes, notes


def cli_reference(parser: argparse.ArgumentParser | None = None) -> str:
    """Markdown reference of every subcommand of ``parser`` (default: the ``fastsmooth`` CLI)."""
    if parser is None:
        from fastsmooth.cli import build_parser

        parser = build_parser()
    subcommands, summaries = _subcommands(parser), _summaries(parser)
    lines = ["| command | what it does |", "|---|---|"]
    lines += [f"| [`{parser.prog} {name}`](#{parser.prog}-{name}) | {_cell(summaries.get(name, ''))} |"
              for name in subcommands]
    for name, sub in subcommands.items():
        lines += ["", f"## `{parser.prog} {name}`", ""]
        if summaries.get(name):
            lines += [summaries[name][0].upper() + summaries[name][1:] + ".", ""]
        lines += ["```text", sub.format_usage().strip(), "```"]
        for group in sub._action_groups:
            actions = [a for a in group._group_actions if a.help is not argparse.SUPPRESS]
            actions = [a for a in actions if not isinstance(a, argparse._HelpAction)]
            if not actions:
                continue
            title = {"positional arguments": "Arguments", "options": "Options",
                     "optional arguments": "Options"}.get(group.title, group.title or "")
            title = title[:1].upper() + title[1:]
            lines += ["", f"**{title}**", ""]
            if group.description:
                lines += [_cell(group.description), ""]
            lines += ["| argument | takes | meaning |", "|---|---|---|"]
            lines += ["| " + " | ".join(_cell(c) if i == 2 else c for i, c in enumerate(_argument(a))) + " |"
                      for a in actions]
    return "\n".join(lines)


def read_results(path: Path) -> tuple[dict[str, str], list[str], list[list[str]]]:
    """A results CSV: its ``# key: value`` header lines, its column names and its rows."""
    meta: dict[str, str] = {}
    body: list[str] = []
    for line in path.read_text().splitlines():
        if line.startswith("#"):
            key, _, value = line[1:].partition(":")
            meta[key.strip()] = value.strip()
        elif line.strip():
            body.append(line)
    table = list(csv.reader(body))
    if not table:
        raise ValueError(f"{path}: no header row")
    width = len(table[0])
    for number, row in enumerate(table[1:], 2):
        if len(row) != width:
            raise ValueError(f"{path}: row {number} has {len(row)} cells, the header {width}")
    for required in ("machine", "software"):
        if required not in meta:
            raise ValueError(f"{path}: no '# {required}: ...' line (say where and with what it was measured)")
    return meta, table[0], table[1:]


def results_table(name: str, directory: Path = RESULTS) -> str:
    """Markdown for ``directory/name``: the measuring conditions, then the table."""
    meta, header, rows = read_results(directory / name)
    lines = [f"| {' | '.join(_cell(h) for h in header)} |", "|" + "---|" * len(header)]
    lines += [f"| {' | '.join(_cell(c) for c in row)} |" for row in rows]
    about = [f"**{key.capitalize()}**: {value}" for key, value in meta.items()]
    source = f"`benchmarks/results/{name}`"
    return "\n".join(lines) + "\n\n" + "<br>\n".join(about) + f"<br>\n*Source*: {source}\n"


def render(markdown: str) -> str:
    """``markdown`` with every marker replaced by its generated text."""
    def replace(match: re.Match) -> str:
        return cli_reference() if match.group(1) == "cli-reference" else results_table(match.group("name"))

    return _MARKER.sub(replace, markdown)


def on_page_markdown(markdown: str, **kwargs) -> str:  # mkdocs hook
    return render(markdown)
