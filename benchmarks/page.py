"""docs/benchmarks.md from the saved results in benchmarks/results/ (one JSON per benchmark and store).

Running one benchmark rewrites its own files only; the page is always rendered from every file there, so
the rest of the page stays as it was. ``python -m benchmarks.page`` renders without running anything.
"""

from __future__ import annotations

import argparse
import json
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from benchmarks.common import ROOT, fmt

RESULTS = ROOT / "benchmarks" / "results"
METHOD = ROOT / "benchmarks" / "method.md"
PAGE = ROOT / "docs" / "benchmarks.md"
#: The order of the page: the spine first, then the channels, then the pages people read.
ORDER = (
    "pipeline",
    "hosts",
    "email",
    "lanes",
    "planning",
    "metrics",
    "telegram",
    "matrix",
    "sms",
    "whatsapp",
    "console",
    "public",
)
#: ``both``: benchmarks that measure SQLite and PostgreSQL in one run (console, public).
STORES = ("sqlite", "postgresql", "both")


def slug(words: list[str]) -> str:
    return re.sub(r"[^a-z0-9]+", "-", " ".join(words).lower()).strip("-")


def file_name(name: str, store: str, extra: list[str] | None = None) -> str:
    """``pipeline.postgresql.json``, ``console.both.json``; a variant: ``pipeline.sqlite.<its-args>.json``."""
    parts = [name, store, *([slug(extra)] if extra else [])]
    return ".".join(parts) + ".json"


def save(result: dict[str, Any], directory: Path, store: str, extra: list[str], label: str = "") -> Path:
    """Write one result with what the page needs to render it later: store, variant, when it was measured."""
    result = {
        **result,
        "store": store,
        "variant": extra,
        "label": label,
        "measured_at": result.get("measured_at") or datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
    }
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / file_name(result["name"], store, extra)
    path.write_text(json.dumps(result, indent=2, ensure_ascii=False, default=str) + "\n", encoding="utf-8")
    return path


def load(directory: Path) -> list[dict[str, Any]]:
    """Every saved result, in page order: benchmark, then store (SQLite first), then variants."""
    results = [json.loads(p.read_text(encoding="utf-8")) for p in sorted(directory.glob("*.json"))]

    def key(r: dict[str, Any]) -> tuple[int, str, int, int, str]:
        name = r["name"]
        rank = ORDER.index(name) if name in ORDER else len(ORDER)
        store = r.get("store", "sqlite")
        srank = STORES.index(store) if store in STORES else len(STORES)
        return rank, name, 1 if r.get("variant") else 0, srank, slug(r.get("variant") or [])

    return sorted(results, key=key)


def display_name(result: dict[str, Any]) -> str:
    """``pipeline (postgresql)``; results saved before stores were a parameter (SQLite) show the name only."""
    name = result["name"]
    inside = []
    if "database" in result.get("params", {}):
        inside.append(result["params"]["database"])
    if result.get("variant"):
        inside.append(result.get("label") or " ".join(result["variant"]))
    return f"{name} ({'; '.join(inside)})" if inside else name


def display_title(result: dict[str, Any]) -> str:
    title = result["title"]
    if "database" in result.get("params", {}):
        title += f" — {'PostgreSQL' if result['params']['database'] == 'postgresql' else 'SQLite'}"
    if result.get("variant"):
        label = f": {result['label']}" if result.get("label") else ""
        title += f" — `{' '.join(result['variant'])}`{label}"
    return title


def _machine_lines(results: list[dict[str, Any]]) -> list[str]:
    """One machine (two lines) per distinct machine; the PostgreSQL version from any run that used it."""
    seen: list[dict[str, str]] = []
    for r in results:
        m = {k: v for k, v in (r.get("machine") or {}).items() if k != "postgresql"}
        if m and m not in seen:
            seen.append(m)
    lines = []
    for m in seen:
        pg = next(
            (
                r["machine"]["postgresql"]
                for r in results
                if r.get("machine", {}).get("postgresql")
                and {k: v for k, v in r["machine"].items() if k != "postgresql"} == m
            ),
            "",
        )
        versions = f"Python {m['python']}, SQLite {m['sqlite']}" + (f", PostgreSQL {pg}" if pg else "")
        redis = f"Redis {m['redis']}" + (f" at `{m['redis_url']}`" if m.get("redis_url") else "")
        private = " (a private redis-server started for this run)" if m.get("private") else ""
        lines.append(f"- Machine: nproc {m['nproc']}, {m['cpu']}; {m['platform']}")
        lines.append(f"- {versions}, {redis}{private}")
    return lines


def render(results: list[dict[str, Any]], *, quick: bool = False) -> str:
    lines = [
        "# Benchmarks",
        "",
        "Written by `python -m benchmarks.all`"
        + (" **--quick (smoke sizes, not the real figures)**" if quick else "")
        + " from the results saved in `benchmarks/results/` (one file per benchmark and store); do not edit "
        "by hand (the method section lives in `benchmarks/method.md`).",
        "",
        f"- Rendered: {datetime.now(UTC).strftime('%Y-%m-%d %H:%M UTC')}",
        *_machine_lines(results),
        "- Measured: " + ", ".join(f"{display_name(r)} {r.get('measured_at', '?')}" for r in results),
        "",
        "## Figures",
        "",
        "| Benchmark | Figure | Value | Ceiling (same run) | Ratio | Aim | vs aim | Met |",
        "|---|---|---:|---|---:|---|---:|:---:|",
    ]
    for result in results:
        name = display_name(result)
        if result.get("error"):
            lines.append(f"| {name} | failed: {result['error']} | | | | | | ✗ |")
            continue
        for row in result["rows"]:
            unit = row.get("ceiling_unit") or row["unit"]
            ceiling = (
                f"{fmt(row['ceiling'])} {unit} ({row['ceiling_what']})" if row["ceiling"] is not None else "–"
            )
            met = "–" if row["met"] is None else ("yes" if row["met"] else "**no**")
            lines.append(
                f"| {name} | {row['metric']} | {fmt(row['value'])} {row['unit']} | {ceiling} | "
                f"{fmt(row['ratio'])} | {row['aim'] or '–'} | {fmt(row['vs_aim'])} | {met} |"
            )
    lines += ["", "## Runs", ""]
    for result in results:
        lines.append(f"### {display_title(result)}")
        lines.append("")
        params = ", ".join(f"`{k}={v}`" for k, v in result.get("params", {}).items())
        when = f" ({result['when_note']})" if result.get("when_note") else ""
        lines.append(f"{params}; took {result.get('seconds', 0):.0f} s{when}.")
        lines.append("")
        lines += [f"- {note}" for note in result.get("notes", [])]
        lines.append("")
        if result.get("extra_markdown"):
            lines += [result["extra_markdown"].rstrip(), ""]
    lines.append(METHOD.read_text(encoding="utf-8").rstrip())
    return "\n".join(lines).rstrip() + "\n"


def write(directory: Path = RESULTS, output: Path = PAGE, *, quick: bool = False) -> Path:
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(render(load(directory), quick=quick), encoding="utf-8")
    return output


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--results-dir", default=str(RESULTS))
    p.add_argument("--output", default=str(PAGE))
    args = p.parse_args(argv)
    print(f"wrote {write(Path(args.results_dir), Path(args.output))}")


if __name__ == "__main__":
    main()
