"""Turn a pytest-benchmark JSON file into the README's performance table.

    pytest benchmarks --benchmark-only --benchmark-json=bench.json
    python benchmarks/report.py bench.json --readme README.md

One row per benchmark group: the primary (fastsmooth) median and, from the same run, its
ratio to the floor and to the naive implementation. With --readme, the table replaces the
text between the markers <!-- bench:start --> and <!-- bench:end -->.
"""
from __future__ import annotations

import argparse
import json
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
        naive = roles.get("naive")
        images = info.get("images")
        out.append(
            {
                "group": name,
                "images": images,
                "seconds": median,
                "device": info.get("machine", ""),
                "per_image": median / images if images else None,
                "vs_floor": median / floor if floor else None,
                "vs_naive": median / naive if naive else None,
                "naive_over": naive / median if naive else None,
            }
        )
    return out


def markdown(table: list[dict], machine: str) -> str:
    def f(v, fmt):
        return "-" if v is None else format(v, fmt)

    lines = [
        f"Measured on: {machine}. Medians of the rounds of one `pytest benchmarks --benchmark-only` run;",
        "ratios compare figures from that same run.",
        "",
        "| benchmark | images | fastsmooth s (median) | s / image | fastsmooth / floor | naive / fastsmooth |",
        "|---|---|---|---|---|---|",
    ]
    for r in table:
        lines.append(
            f"| {r['group']} | {f(r['images'], 'd')} | {r['seconds']:.4g} | {f(r['per_image'], '.4g')} "
            f"| {f(r['vs_floor'], '.3f')} | {f(r['naive_over'], '.2f')}x |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("json", type=Path)
    parser.add_argument("--readme", type=Path, help="README to update between the bench markers")
    args = parser.parse_args(argv)
    data = json.loads(args.json.read_text())
    table = rows(data)
    machine = next((r["device"] for r in table if r["device"]), data.get("machine_info", {}).get("cpu", {}).get("brand_raw", "?"))
    text = markdown(table, machine)
    print(text)
    if args.readme:
        readme = args.readme.read_text()
        if START not in readme or END not in readme:
            raise SystemExit(f"{args.readme} has no {START} ... {END} markers")
        readme = re.sub(re.escape(START) + ".*?" + re.escape(END), START + "\n" + text + "\n" + END, readme, flags=re.S)
        args.readme.write_text(readme)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
