"""Turn a pytest-benchmark JSON file into the performance tables.

    pytest benchmarks --benchmark-only --benchmark-json=bench.json
    python benchmarks/report.py bench.json --results benchmarks/results

One row per benchmark group: the primary (fastsmooth) median and, from the same run, its
ratio to the floor and to the naive implementation. With --results, the tables are written as
CSV files whose names and ``# machine:`` / ``# software:`` lines record where and with what
they were measured; the docs' performance page renders every such file (docs/performance.md).
With --readme, the Markdown table replaces the text between the markers <!-- bench:start -->
and <!-- bench:end --> of that file.
"""
from __future__ import annotations

import argparse
import csv
import io
import json
import platform
import re
from pathlib import Path

START, END = "<!-- bench:start -->", "<!-- bench:end -->"


def rows(data: dict) -> list[dict]:
    groups: dict[str, dict] = {}
    for bench in data["benchmarks"]:
        info = bench.get("extra_info", {})
        if "role" not in info:
            continue
        g = groups.setdefault(bench["group"], {"roles": {}, "info": {}})
        g["roles"][info["role"]] = bench["stats"]["median"]
        g["roles"].update(info.get("interleaved", {}))
        if info.get("primary"):
            g["primary"] = info["role"]
            g["info"] = info
    out = []
    for name, g in groups.items():
        if "primary" not in g:
            continue
        roles, info = g["roles"], g["info"]
        median = roles[g["primary"]]
        floor = next((v for k, v in roles.items() if k.endswith("floor")), None)
        naive = next((v for k, v in roles.items() if k.startswith("naive")), None)
        reused = next((v for k, v in roles.items() if k.endswith("out=")), None)
        images = info.get("images")
        out.append(
            {
                "group": name,
                "images": images,
                "seconds": median,
                "reused": reused,
                "kind": "copy" if "copy floor" in roles else "certify",
                "lockstep": info.get("timing") == "lockstep",
                "per_image": median / images if images else None,
                "vs_floor": median / floor if floor else None,
                "reused_vs_floor": reused / floor if reused and floor else None,
                "naive_over": naive / median if naive else None,
                "naive_over_reused": naive / reused if naive and reused else None,
            }
        )
    return out


def _f(v, fmt):
    return "-" if v is None else format(v, fmt)


def markdown(table: list[dict], machine: str) -> str:
    lines = [
        f"Measured on: {machine}. Medians of one `pytest benchmarks --benchmark-only` run; every ratio",
        "compares figures from that same run (in the certification rows, rounds of the three roles",
        "were interleaved; in rows marked *lockstep*, the roles took turns at every forward pass).",
        "",
        "**Certification** (floor: the base network alone on pre-built inputs, same count, same batch size):",
        "",
        "| benchmark | images | fastsmooth s | s / image | fastsmooth / floor | naive / fastsmooth |",
        "|---|---|---|---|---|---|",
    ]
    for r in (r for r in table if r["kind"] == "certify" and r["images"] is not None):
        lines.append(
            f"| {r['group']}{' (*lockstep*)' if r['lockstep'] else ''} | {_f(r['images'], 'd')} | {r['seconds']:.4g} | {_f(r['per_image'], '.4g')} "
            f"| {_f(r['vs_floor'], '.3f')} | {_f(r['naive_over'], '.2f')} |"
        )
    lines += [
        "",
        "**Batch creation kernels** (floor: `torch.empty_like(out).copy_(out)` of the same bytes; "
        "'reused out=' writes into a preallocated buffer, as the smoothers do):",
        "",
        "| benchmark | fastsmooth s | fastsmooth / copy floor | naive / fastsmooth | reused out= s | reused / copy floor | naive / reused |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in (r for r in table if r["kind"] == "copy"):
        lines.append(
            f"| {r['group']} | {r['seconds']:.4g} | {_f(r['vs_floor'], '.2f')} | {_f(r['naive_over'], '.2f')} "
            f"| {_f(r['reused'], '.4g')} | {_f(r['reused_vs_floor'], '.2f')} | {_f(r['naive_over_reused'], '.2f')} |"
        )
    others = [r for r in table if r["kind"] == "certify" and r["images"] is None]
    if others:
        lines += ["", "Other timings: " + "; ".join(
            f"{r['group']}: {r['seconds']:.3g} s (naive / fastsmooth {_f(r['naive_over'], '.3g')})" for r in others
        )]
    return "\n".join(lines)


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9.]+", "-", text.lower()).strip("-")


def write_csv(table: list[dict], directory: Path, machine: str, software: dict[str, str]) -> list[Path]:
    """The certification and batch-creation tables as CSV files under ``directory``, named
    ``<table>_<machine>_<software>.csv`` and headed by ``# key: value`` lines."""
    directory.mkdir(parents=True, exist_ok=True)
    versions = "_".join(f"{name}{version}" for name, version in software.items())
    header = [f"# machine: {machine}", "# software: " + ", ".join(f"{k} {v}" for k, v in software.items()),
              "# command: pytest benchmarks --benchmark-only, then python benchmarks/report.py",
              "# conditions: medians of one run; every ratio compares figures from that same run"]
    kinds = {
        "certification": ("certify", ["benchmark", "images", "fastsmooth s", "s / image", "fastsmooth / floor",
                                      "naive / fastsmooth"]),
        "batch-creation": ("copy", ["benchmark", "fastsmooth s", "fastsmooth / copy floor", "naive / fastsmooth",
                                    "reused out= s", "reused / copy floor", "naive / reused"]),
    }
    written = []
    for name, (kind, columns) in kinds.items():
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(columns)
        for r in (r for r in table if r["kind"] == kind):
            label = r["group"] + (" (lockstep)" if r["lockstep"] else "")
            if kind == "certify":
                writer.writerow([label, _f(r["images"], "d"), f"{r['seconds']:.4g}", _f(r["per_image"], ".4g"),
                                 _f(r["vs_floor"], ".3f"), _f(r["naive_over"], ".2f")])
            else:
                writer.writerow([label, f"{r['seconds']:.4g}", _f(r["vs_floor"], ".2f"), _f(r["naive_over"], ".2f"),
                                 _f(r["reused"], ".4g"), _f(r["reused_vs_floor"], ".2f"),
                                 _f(r["naive_over_reused"], ".2f")])
        path = directory / f"{name}_{_slug(machine)}_{versions}.csv"
        path.write_text("\n".join(header) + "\n" + out.getvalue())
        written.append(path)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("json", type=Path)
    parser.add_argument("--readme", type=Path, help="Markdown file to update between the bench markers")
    parser.add_argument("--results", type=Path, help="folder to write the tables to as CSV files (benchmarks/results)")
    args = parser.parse_args(argv)
    data = json.loads(args.json.read_text())
    table = rows(data)
    info = data.get("machine_info", {})
    cpu = info.get("cpu", {})
    machine = f"{cpu.get('brand_raw', '?')}, {cpu.get('count', '?')} CPU threads, no GPU" if "cuda" not in json.dumps(
        [b.get("extra_info", {}).get("device", "") for b in data["benchmarks"]]) else cpu.get("brand_raw", "?")
    text = markdown(table, machine)
    print(text)
    if args.results:
        software = {"torch": data.get("machine_info", {}).get("torch", None) or _torch_version(),
                    "python": platform.python_version()}
        for path in write_csv(table, args.results, machine, software):
            print(f"wrote {path}")
    if args.readme:
        readme = args.readme.read_text()
        if START not in readme or END not in readme:
            raise SystemExit(f"{args.readme} has no {START} ... {END} markers")
        readme = re.sub(re.escape(START) + ".*?" + re.escape(END), START + "\n" + text + "\n" + END, readme, flags=re.S)
        args.readme.write_text(readme)
    return 0


def _torch_version() -> str:
    import torch

    return torch.__version__


if __name__ == "__main__":
    raise SystemExit(main())
