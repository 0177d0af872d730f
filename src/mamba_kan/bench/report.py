"""Text forms of a benchmark result: rows for the console tables and a Markdown report (docs/benchmarks.md)."""

from __future__ import annotations

from typing import Any

ITEM_COLUMNS = ("item", "params", "ms", "cpu_ms", "gflops", "peak_%", "peak_mb")
COMPARISON_COLUMNS = ("comparison", "value", "target", "met")


def _fmt(v: Any, digits: int = 3) -> str:
    if v is None:
        return "-"
    if isinstance(v, bool):
        return "yes" if v else "NO"
    if isinstance(v, int):
        return f"{v:,}"
    if isinstance(v, float):
        return f"{v:.{digits}g}" if abs(v) < 100 else f"{v:,.0f}"
    return str(v)


def item_rows(suite: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per item: name [group], params, median ms / CPU ms, achieved GFLOP/s, % of matmul peak, MB."""
    rows = []
    for it in suite["items"]:
        frac = it.get("peak_fraction")
        rows.append(
            {
                "item": it["key"] + _width(it),
                "params": it["params"],
                "ms": it.get("ms"),
                "cpu_ms": it.get("cpu_ms"),
                "gflops": it.get("gflops"),
                "peak_%": None if frac is None else 100.0 * frac,
                "peak_mb": it.get("peak_mb"),
            }
        )
    return rows


def _width(it: dict[str, Any]) -> str:
    hidden = it.get("details", {}).get("hidden")
    return f" h={hidden}" if hidden is not None else ""


def comparison_rows(suite: dict[str, Any]) -> list[dict[str, Any]]:
    rows = []
    for c in suite["comparisons"]:
        target = None if c.get("target") is None else f"{c['op']} {_fmt(c['target'])}"
        rows.append(
            {"comparison": c["label"], "value": c.get("value"), "target": target, "met": _fmt(c.get("met"))}
        )
    return rows


def _md_table(columns: tuple[str, ...], rows: list[dict[str, Any]]) -> list[str]:
    out = ["| " + " | ".join(columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    for r in rows:
        out.append("| " + " | ".join(_fmt(r.get(c)) for c in columns) + " |")
    return out


def to_markdown(result: dict[str, Any], command: str | None = None) -> str:
    """The result as Markdown: environment, matmul peak, then per suite its items and comparisons."""
    meta, peak = result["meta"], result["matmul_peak"]
    lines = [
        f"- date: {meta.get('date')}",
        f"- hardware: {meta.get('device_name')} ({meta.get('cpu_count')} logical CPUs), device {meta.get('device')}",
        f"- software: torch {meta.get('torch')}, python {meta.get('python')}, {meta.get('platform')}",
        f"- threads: {meta.get('threads')}, precision: {meta.get('precision')}, "
        f"spline layers: {meta.get('spline_backend')}",
        f"- load average (1, 5, 15 min) at start {meta.get('load_average_start')}, "
        f"at end {meta.get('load_average_end')}",
        f"- matmul peak: {_fmt(peak.get('gflops'))} GFLOP/s wall-clock, {_fmt(peak.get('gflops_cpu'))} GFLOP/s "
        f"per CPU-second ({peak.get('dtype')}, {peak.get('n')}^3); `peak_%` = an item's GFLOP per CPU-second "
        "as % of the latter",
    ]
    if command:
        lines.insert(0, f"- command: `{command}`")
    for name, suite in result["suites"].items():
        lines += ["", f"### {name}", ""]
        lines += _md_table(ITEM_COLUMNS, item_rows(suite))
        lines += [""]
        lines += _md_table(COMPARISON_COLUMNS, comparison_rows(suite))
        over = suite.get("loop_overhead")
        if over and over.get("value") is not None:
            lines += [
                "",
                f"Training loop: {_fmt(over['loop_ms'])} ms per step of the loop vs {_fmt(over['bare_ms'])} ms "
                f"per bare step ({over['variant']}, medians of {over['steps']} alternated steps); making a batch "
                f"(task.train_batch) takes {_fmt(over['data_ms'])} ms = {_fmt(100 * over['data_fraction'])}% of a "
                f"bare step; `run_experiment` itself reported {_fmt(over['run_experiment_ms'])} ms/step.",
            ]
        for note in suite.get("notes", []):
            lines.append(f"\nNote: {note}")
    return "\n".join(lines) + "\n"
