"""Draw docs/performance.png from the benchmark results in bench/results/.

Run: ``.venv/bin/python -m bench.plot`` (needs matplotlib). Each results file
that exists gets a panel; a missing one is left out:

- ratio files (see RATIO_PANELS): ``function_floor.json`` from
  ``bench.function_floor``, its ``--variant bench/function_shell.sql`` run
  ``function_floor_shell.json``, ``python_paths.json``, ``bulk.json``:
  bars of the ratio ours / baseline per scenario (one bar per number of
  clients, threads or rows; a variant measured in the same run hatched), each
  entry's own target marked on its bar, and the panel's target lines;
- ``growth.json`` (``bench.growth``): p50 and p99 latency of one call against
  the table's size.

A ratio file is a JSON list of entries, or an object holding one under
"results" or "ratios"; an entry has "scenario", "ratio", one of "clients",
"threads", "rows", and optionally "target" and "variant_ratio".
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import textwrap
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
LIST_KEYS = ("results", "ratios")


@dataclass(frozen=True)
class RatioPanel:
    title: str
    xlabel: str = "ours / baseline (higher is better)"
    targets: dict[str, float] = field(default_factory=dict)  # lines: label -> ratio


FLOOR = "tps ours / tps bare INSERT … ON CONFLICT (higher is better)"
RATIO_PANELS = {
    "function_floor.json": RatioPanel(
        "cmis.upsert_platform_connection vs the bare INSERT … ON CONFLICT (pgbench)", FLOOR
    ),
    "function_floor_shell.json": RatioPanel(
        "… and the bare statement in an empty PL/pgSQL shell (hatched), same run", FLOOR
    ),
    "python_paths.json": RatioPanel("Python paths (bench.python_paths)", targets={"1.0": 1.0}),
    "bulk.json": RatioPanel("Bulk upsert (bench.bulk)", targets={"1.0": 1.0}),
}


def entries(data: Any) -> list[dict[str, Any]]:
    if isinstance(data, dict):
        data = next((data[k] for k in LIST_KEYS if isinstance(data.get(k), list)), [])
    return [row for row in data if isinstance(row, dict) and "ratio" in row]


def group_of(row: dict[str, Any]) -> str:
    for name in GROUP_KEYS:
        if name in row:
            return f"{row[name]} {name if row[name] != 1 else name.removesuffix('s')}"
    return "all"


def draw_ratios(ax: Axes, panel: RatioPanel, rows: list[dict[str, Any]]) -> None:
    scenarios = list(dict.fromkeys(str(r["scenario"]) for r in rows))
    groups = list(dict.fromkeys(group_of(r) for r in rows))
    columns = ["ratio"] + (["variant_ratio"] if any("variant_ratio" in r for r in rows) else [])
    series = [(group, column) for column in columns for group in groups]
    height = 0.8 / len(series)
    target_label = "target"
    for i, (group, column) in enumerate(series):
        by_scenario = {str(r["scenario"]): r for r in rows if group_of(r) == group}
        ys = [s + (i - (len(series) - 1) / 2) * height for s in range(len(scenarios))]
        values = [float(by_scenario.get(n, {}).get(column, math.nan)) for n in scenarios]
        variant = column != "ratio"
        bars = ax.barh(
            ys,
            values,
            height * 0.9,
            label=f"{group}, variant" if variant else group,
            color=f"C{groups.index(group)}",
            hatch="//" if variant else None,
            alpha=0.55 if variant else 1.0,
        )
        ax.bar_label(bars, fmt="%.2f", fontsize=6, padding=2)
        for y, name in zip(ys, scenarios, strict=True):
            target = by_scenario.get(name, {}).get("target")
            if target is not None:
                ax.plot(
                    [target, target],
                    [y - height / 2, y + height / 2],
                    "k-",
                    lw=2.5,
                    label=target_label,
                )
                target_label = "_"  # one legend entry
    for (label, value), style in zip(panel.targets.items(), ("--", ":", "-."), strict=False):
        ax.axvline(value, color="black", linestyle=style, linewidth=0.8, label=label)
    ax.set_yticks(range(len(scenarios)), [textwrap.fill(s, 48) for s in scenarios], fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel(panel.xlabel, fontsize=8)
    ax.set_title(panel.title, fontsize=10)
    top = max(float(r.get(c) or 0) for r in rows for c in ("ratio", "variant_ratio", "target"))
    ax.set_xlim(0, max(1.2, top * 1.12))
    ax.legend(fontsize=7, loc="best")


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
    ax.set_xlabel("rows in cmis.platform_connections", fontsize=8)
    ax.set_ylabel("latency of one call (µs)", fontsize=8)
    target = report.get("target", {})
    title = "One call (70/20/10 update/restore/create) vs table size (bench.growth)"
    if target:
        title += (
            f"\nours: p50 at the largest / smallest = {target['p50_ratio']:.2f} "
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

    panels: list[tuple[str, Any]] = []  # file name, its entries or report
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

    # One panel per row, as tall as its bars need.
    def height(name: str, data: Any) -> float:
        if name == "growth.json":
            return 4.0
        bars = len(data) * (2 if any("variant_ratio" in row for row in data) else 1)
        return 1.0 + 0.22 * bars

    heights = [height(name, data) for name, data in panels]
    fig, axes = plt.subplots(
        len(panels), 1, figsize=(11, sum(heights)), height_ratios=heights, squeeze=False
    )
    for ax, (name, data) in zip(axes[:, 0], panels, strict=True):
        if name == "growth.json":
            draw_growth(ax, data)
        else:
            draw_ratios(ax, RATIO_PANELS[name], data)
    fig.tight_layout()
    args.output.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.output, dpi=110)
    print(f"wrote {args.output} ({', '.join(name for name, _ in panels)})")


if __name__ == "__main__":
    main()
