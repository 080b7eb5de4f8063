"""Draw docs/performance.png from the benchmark results in bench/results/.

Run: ``.venv/bin/python -m bench.plot`` (needs matplotlib). Each results file
that exists gets a panel; a missing one is left out:

- ``function_floor.json`` (``bench.function_floor``; and
  ``function_floor_proposal.json``, its ``--variant bench/function_proposal.sql``
  run), ``python_paths.json`` and ``bulk.json``: bars of the ratio ours /
  baseline per scenario, one bar per number of clients, threads or rows,
  against the target lines;
- ``growth.json`` (``bench.growth``): p50 and p99 latency of one call against
  the table's size.

A ratio file is a JSON list of entries, or an object whose "results" is one;
an entry has "scenario", "ratio" and one of "clients", "threads", "rows"
(see RATIO_PANELS to add a file or change its title and target lines).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # after choosing the backend
from matplotlib.axes import Axes

RESULTS = Path(__file__).with_name("results")
OUTPUT = Path(__file__).resolve().parent.parent / "docs" / "performance.png"
GROUP_KEYS = ("clients", "threads", "rows")


@dataclass(frozen=True)
class RatioPanel:
    title: str
    ylabel: str
    targets: dict[str, float] = field(default_factory=dict)  # label -> ratio


RATIO_PANELS = {
    "function_floor.json": RatioPanel(
        "upsert_platform_connection vs bare INSERT … ON CONFLICT (pgbench)",
        "tps ours / tps bare (higher is better)",
        {"mix target, 1 client": 0.90, "mix target, 8 clients": 0.85},
    ),
    "function_floor_proposal.json": RatioPanel(
        "as it is (plain) and bench/function_proposal.sql (hatched) vs bare, same run",
        "tps ours / tps bare (higher is better)",
        {"mix target, 1 client": 0.90, "mix target, 8 clients": 0.85},
    ),
    "python_paths.json": RatioPanel("Python paths", "ours / baseline", {"parity": 1.0}),
    "bulk.json": RatioPanel("Bulk upsert", "ours / baseline", {"parity": 1.0}),
}


def entries(data: Any) -> list[dict[str, Any]]:
    rows = data.get("results", []) if isinstance(data, dict) else data
    return [row for row in rows if isinstance(row, dict) and "ratio" in row]


def group_of(row: dict[str, Any]) -> str:
    for name in GROUP_KEYS:
        if name in row:
            return f"{row[name]} {name}"
    return "all"


def draw_ratios(ax: Axes, panel: RatioPanel, rows: list[dict[str, Any]]) -> None:
    scenarios = list(dict.fromkeys(str(r["scenario"]) for r in rows))
    groups = list(dict.fromkeys(group_of(r) for r in rows))
    # A variant measured in the same run (function_floor --variant): hatched bars.
    columns = ["ratio"] + (["variant_ratio"] if any("variant_ratio" in r for r in rows) else [])
    series = [(group, column) for column in columns for group in groups]
    width = 0.8 / len(series)
    for i, (group, column) in enumerate(series):
        ratios = {str(r["scenario"]): float(r[column]) for r in rows if group_of(r) == group}
        xs = [s + (i - (len(series) - 1) / 2) * width for s in range(len(scenarios))]
        heights = [ratios.get(name, math.nan) for name in scenarios]
        variant = column != "ratio"
        bars = ax.bar(
            xs,
            heights,
            width * 0.9,
            label=f"{group}, variant" if variant else group,
            color=f"C{groups.index(group)}",
            hatch="//" if variant else None,
            alpha=0.6 if variant else 1.0,
        )
        ax.bar_label(bars, fmt="%.2f", fontsize=7, padding=2)
    for (label, value), style in zip(panel.targets.items(), ("--", ":", "-."), strict=False):
        ax.axhline(value, color="black", linestyle=style, linewidth=1, label=f"{label} ({value})")
    ax.set_xticks(range(len(scenarios)), scenarios)
    ax.set_ylabel(panel.ylabel)
    ax.set_title(panel.title, fontsize=10)
    top = max(float(r.get(c, 0)) for r in rows for c in ("ratio", "variant_ratio"))
    ax.set_ylim(0, max(1.3, top * 1.25))
    ax.legend(fontsize=7, loc="upper left", ncols=2)


def draw_growth(ax: Axes, report: dict[str, Any]) -> None:
    results = report["results"]
    rows = [e["rows"] for e in results]
    for side, color in (("ours", "tab:blue"), ("bare", "tab:gray")):
        if side not in results[0]:
            continue
        for stat, style in (("p50_us", "-o"), ("p99_us", "--s")):
            values = [e[side][stat] for e in results]
            ax.plot(rows, values, style, color=color, label=f"{side} {stat.split('_')[0]}")
    ax.set_xscale("log")
    ax.set_xlabel("rows in cmis.platform_connections")
    ax.set_ylabel("latency of one call (µs)")
    target = report.get("target", {})
    title = "One upsert call (70/20/10 update/restore/create) vs table size"
    if target:
        title += (
            f"\np50 largest / smallest = {target['p50_ratio']:.2f} "
            f"(target <= {target['p50_ratio_max']})"
        )
    ax.set_title(title, fontsize=10)
    ax.set_ylim(bottom=0)
    ax.legend(fontsize=7)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", type=Path, default=RESULTS, help="bench/results")
    parser.add_argument("--output", type=Path, default=OUTPUT, help="docs/performance.png")
    args = parser.parse_args(argv)

    panels: list[tuple[str, Any]] = []
    for name in RATIO_PANELS:
        path = args.results / name
        if path.exists():
            rows = entries(json.loads(path.read_text("utf-8")))
            if rows:
                panels.append((name, rows))
    growth = args.results / "growth.json"
    if growth.exists():
        panels.append(("growth.json", json.loads(growth.read_text("utf-8"))))
    if not panels:
        sys.exit(f"no results in {args.results}: run bench.function_floor or bench.growth first")

    columns = 2 if len(panels) > 1 else 1
    lines = math.ceil(len(panels) / columns)
    fig, axes = plt.subplots(lines, columns, figsize=(7.5 * columns, 4.8 * lines), squeeze=False)
    for ax, (name, data) in zip(axes.flat, panels, strict=False):
        if name == "growth.json":
            draw_growth(ax, data)
        else:
            draw_ratios(ax, RATIO_PANELS[name], data)
    for ax in list(axes.flat)[len(panels) :]:
        ax.set_visible(False)
    fig.tight_layout()
    args.output.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.output, dpi=120)
    print(f"wrote {args.output} ({', '.join(name for name, _ in panels)})")


if __name__ == "__main__":
    main()
