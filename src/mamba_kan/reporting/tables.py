"""The headline tables (accuracy per task, training speed, grid status), key findings and provenance, as data and
as Markdown. The dashboard renders the same rows as HTML, so the README and the dashboard never disagree.

Formatting: four significant digits; "mean ± sd" uses the sample sd (ddof=1) over the completed seeds; a cell with
fewer completed runs than the task's seeds says so, e.g. ``0.512 ± 0.02 (2/3)``; no completed run: "—".
"""

from __future__ import annotations

import math
from typing import Any

from mamba_kan.reporting.data import (
    SPEED_REFERENCE,
    ReportData,
    best_models,
    cell_stats,
    describe_values,
    grid_status,
    memory_is_per_run,
    provenance,
    speed_overall,
    speed_summary,
)
from mamba_kan.reporting.fmt import number as g
from mamba_kan.reporting.fmt import si

MISSING = "—"
SPEED_CAPTION = (
    "Measured during the grid (timed training steps only; runs may share the machine). params and FLOPs/token: "
    "median over tasks (the input and output ends differ per task); steps/s and slowdown: geometric mean over tasks. "
    "Peak memory is shown for GPU runs only (on CPU the recorded value is a worker process' peak RSS)."
)


def mean_sd(mean: float, sd: float, n: int, expected: int) -> str:
    if n == 0 or not math.isfinite(mean):
        return MISSING
    text = g(mean) if not math.isfinite(sd) else f"{g(mean)} ± {g(sd, 2)}"
    return text if n >= expected else f"{text} ({n}/{expected})"


# --------------------------------------------------------------------------------------------------------------
# rows (shared by Markdown and HTML)
# --------------------------------------------------------------------------------------------------------------
def accuracy_rows(data: ReportData) -> list[dict[str, Any]]:
    """One row per variant: {"model", task: {"text", "best", "n", "expected", "mean", "sd"}}."""
    cs = cell_stats(data)
    best = best_models(data, cs)
    rows = []
    for m in data.models:
        row: dict[str, Any] = {"model": m}
        for t in data.tasks:
            c = cs[(cs["task"] == t) & (cs["model"] == m)].iloc[0]
            row[t] = {
                "text": mean_sd(c["mean"], c["sd"], int(c["n"]), int(c["expected"])),
                "best": best.get(t) == m,
                "n": int(c["n"]),
                "expected": int(c["expected"]),
                "mean": float(c["mean"]),
                "sd": float(c["sd"]),
            }
        rows.append(row)
    return rows


def speed_rows(data: ReportData) -> list[dict[str, Any]]:
    """One row per variant: params, FLOPs/token (median over tasks), steps/s and slowdown (geometric means over
    tasks), peak memory, and the per-task steps/s."""
    per_task = speed_summary(data)
    overall = speed_overall(data, per_task)
    rows = []
    for _, r in overall.iterrows():
        pt = per_task[per_task["model"] == r["model"]].set_index("task")
        rows.append(
            {
                "model": r["model"],
                "params": r["params"],
                "flops_per_token": r["flops_per_token"],
                "steps_per_sec": r["steps_per_sec"],
                "slowdown": r["slowdown"],
                "peak_memory_mb": r["peak_memory_mb"],
                "n_tasks": int(r["n_tasks"]),
                "per_task": {
                    t: float(pt.loc[t, "steps_per_sec"]) if t in pt.index else math.nan for t in data.tasks
                },
            }
        )
    return rows


def grid_rows(data: ReportData) -> list[dict[str, Any]]:
    """One row per variant: per task {"text", "complete", "missing"}: completed/expected with failures spelled out."""
    gs = grid_status(data)
    rows = []
    for m in data.models:
        row: dict[str, Any] = {"model": m}
        for t in data.tasks:
            c = gs[(gs["task"] == t) & (gs["model"] == m)].iloc[0]
            parts = []
            if c["diverged"]:
                parts.append(f"{c['diverged']} diverged")
            if c["failed"]:
                parts.append(f"{c['failed']} failed")
            if c["missing_seeds"]:
                parts.append(f"{len(c['missing_seeds'])} not run")
            text = f"{c['completed']}/{c['expected']}" + (f" ({', '.join(parts)})" if parts else "")
            row[t] = {
                "text": text,
                "complete": c["completed"] == c["expected"],
                "missing": c["completed"] == 0,
            }
        rows.append(row)
    return rows


def findings(data: ReportData) -> list[str]:
    """Key findings as plain sentences (escape before putting them into HTML)."""
    out: list[str] = []
    cs = cell_stats(data)
    best = best_models(data, cs)
    for t in data.tasks:
        rec = data.task_analysis(t) or {}
        text = f"{t} ({data.metric.get(t) or 'primary metric'}, {data.direction(t)}): "
        b = best.get(t)
        if b is None:
            text += "no completed runs. "
        else:
            c = cs[(cs["task"] == t) & (cs["model"] == b)].iloc[0]
            text += f"best mean {b} ({mean_sd(c['mean'], c['sd'], int(c['n']), int(c['expected']))}). "
        verdict = rec.get("verdict")
        if verdict:
            text += f"Activation vs topology: {verdict['verdict']} ({verdict.get('headline') or verdict.get('detail', '')})."
            dependent = verdict.get("mixer_dependent") or []
            if dependent:
                text += f" Depends on the mixer: {', '.join(dependent)}."
        elif data.analysis is not None:
            text += "Activation vs topology: not estimable (needs mlp, bspline and kan variants with paired seeds)."
        out.append(text.strip())
    across = (data.analysis or {}).get("across")
    if across:
        v = across.get("verdict") or {}
        text = (
            f"Across {len(across.get('tasks') or [])} tasks: activation vs topology {v.get('verdict', 'n/a')}"
        )
        text += f" ({v.get('headline') or v['detail']})." if v.get("detail") else "."
        fr = across.get("friedman")
        if fr:
            ranks = fr.get("average_ranks") or {}
            if ranks:
                top = min(ranks, key=ranks.get)
                text += (
                    f" Best average rank: {top} ({g(ranks[top], 3)}); Friedman p = {g(fr.get('p_value'), 3)}."
                )
        out.append(text)
    sp = [r for r in speed_rows(data) if math.isfinite(r["slowdown"])]
    if len(sp) > 1:
        slow = max(sp, key=lambda r: r["slowdown"])
        fast = min(sp, key=lambda r: r["slowdown"])

        def rel(r: dict[str, Any]) -> str:
            return (
                "the reference"
                if r["model"] == SPEED_REFERENCE
                else f"{g(r['slowdown'], 3)}x its time per step"
            )

        out.append(
            f"Speed (relative to {SPEED_REFERENCE}, geometric mean over tasks): fastest {fast['model']} "
            f"({rel(fast)}), slowest {slow['model']} ({rel(slow)})."
        )
    gs = grid_status(data)
    empty = gs[gs["completed"] == 0]
    incomplete = gs[gs["completed"] < gs["expected"]]
    if len(incomplete):
        text = (
            f"Incomplete grid: {len(incomplete)} of {len(gs)} (task, variant) cells lack some completed runs"
        )
        if len(empty):
            text += f"; without any: {', '.join(f'{r.model} on {r.task}' for r in empty.itertuples())}"
        out.append(text + ".")
    if data.analysis_note:
        out.append(data.analysis_note[0].upper() + data.analysis_note[1:] + ".")
    return out


# --------------------------------------------------------------------------------------------------------------
# Markdown
# --------------------------------------------------------------------------------------------------------------
def md_cell(text: Any) -> str:
    """Table-safe Markdown: pipes escaped, angle brackets as entities (a label never becomes markup)."""
    return str(text).replace("|", "\\|").replace("<", "&lt;").replace(">", "&gt;").replace("\n", " ")


def _md_table(header: list[str], rows: list[list[str]]) -> list[str]:
    out = ["| " + " | ".join(md_cell(h) for h in header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return out


def accuracy_markdown(data: ReportData) -> list[str]:
    header = ["variant"] + [f"{t} ({data.metric.get(t) or '?'}, {data.direction(t)})" for t in data.tasks]
    rows = []
    for r in accuracy_rows(data):
        cells = [md_cell(r["model"])]
        for t in data.tasks:
            c = r[t]
            cells.append(f"**{md_cell(c['text'])}**" if c["best"] else md_cell(c["text"]))
        rows.append(cells)
    return _md_table(header, rows)


def speed_header(data: ReportData) -> list[str]:
    header = ["variant", "params", "FLOPs/token", "steps/s", f"slowdown vs {SPEED_REFERENCE}"]
    return header + (["peak memory (MB)"] if memory_is_per_run(data) else [])


def speed_cells(data: ReportData, r: dict[str, Any]) -> list[str]:
    """One row of the speed table as plain text."""
    cells = [r["model"], si(r["params"]), si(r["flops_per_token"]), g(r["steps_per_sec"], 3),
             f"{g(r['slowdown'], 3)}x" if math.isfinite(r["slowdown"]) else "n/a"]  # fmt: skip
    return cells + ([g(r["peak_memory_mb"], 4)] if memory_is_per_run(data) else [])


def speed_markdown(data: ReportData) -> list[str]:
    rows = [[md_cell(c) for c in speed_cells(data, r)] for r in speed_rows(data)]
    return _md_table(speed_header(data), rows)


def grid_markdown(data: ReportData) -> list[str]:
    header = ["variant"] + list(data.tasks)
    rows = [[md_cell(r["model"])] + [md_cell(r[t]["text"]) for t in data.tasks] for r in grid_rows(data)]
    return _md_table(header, rows)


def provenance_items(data: ReportData) -> list[str]:
    """Hardware, software, grid, training settings and dates, stated as recorded by the runs (plain text)."""
    p = provenance(data)
    env, st, mc = p["env"], p["settings"], p["model"]
    device = describe_values(env["device_name"]) + f" ({describe_values(env['device'])}"
    device += f", {describe_values(env['cpu_count'])} CPU cores, {describe_values(env['threads'])} torch thread(s) per run)"
    cuda = [c for c in env["cuda"] if c]
    return [
        f"Hardware: {device}" + (f"; CUDA {describe_values(cuda)}" if cuda else ""),
        f"Software: torch {describe_values(env['torch'])}, Python {describe_values(env['python'])}, "
        f"{describe_values(env['platform'])}; mamba-kan code {describe_values(p['code_versions'])}, "
        f"git {describe_values([str(c)[:10] for c in env['git_commit']])}",
        f"Grid: preset {p['preset'] or 'none recorded'}; {len(data.models)} variants x {len(data.tasks)} tasks x "
        f"seeds {', '.join(str(s) for s in p['seeds'])}; {p['n_runs']} runs ("
        + ", ".join(f"{v} {k}" for k, v in sorted(p["status_counts"].items()))
        + ")",
        f"Training: max_steps {describe_values(st['max_steps'])}, batch size {describe_values(st['batch_size'])}, "
        f"lr {describe_values(st['lr'])}, eval every {describe_values(st['eval_every'])} steps; model d_model "
        f"{describe_values(mc['d_model'])}, n_layers {describe_values(mc['n_layers'])}, grid G="
        f"{describe_values(mc['grid_size'])}, k={describe_values(mc['spline_order'])}, matched by "
        f"{describe_values(mc['match'])}",
        f"Runs recorded {p['first_run'] or 'n/a'} to {p['last_run'] or 'n/a'}; report generated {p['generated_at']}",
    ]


def provenance_lines(data: ReportData) -> list[str]:
    """:func:`provenance_items` as Markdown bullets."""
    return [f"- {md_cell(item)}" for item in provenance_items(data)]


FAIRNESS_HEADER = [
    "variant",
    "params",
    "FFN width (floor)",
    "FFN share",
    "mixer share",
    "FLOPs/token (Yu 2024 / impl.)",
    "decayed / not decayed",
    "init std FFN / mixer",
]
FAIRNESS_CAPTION = (
    "What differs between the variants besides the two factors, measured on the models exactly as the grid built "
    "them (`mamba-kan models --audit`): parameters, the feedforward hidden width against the width floor, each "
    "block's share of the parameters, forward FLOPs per token under Yu et al.'s (2024) convention and as "
    "implemented, parameters under weight decay, and the residual-branch output std at initialisation on "
    "LayerNorm-ed input."
)


def fairness_rows(sheet: dict[str, Any]) -> list[list[str]]:
    """One row per variant of a stored fairness sheet (columns of :data:`FAIRNESS_HEADER`)."""
    rows = []
    for v in sheet.get("variants", []):
        flops = v.get("flops_per_token") or {}
        std = v.get("init_std") or {}
        width = f"{v.get('ffn_hidden')} ({v.get('width_floor')})" + (
            " below floor" if v.get("below_floor") else ""
        )
        rows.append(
            [
                str(v.get("variant")),
                f"{int(v.get('params') or 0):,}",
                width,
                f"{100 * float(v.get('ffn_share') or 0):.0f}%",
                f"{100 * float(v.get('mixer_share') or 0):.0f}%",
                f"{si(flops.get('yu2024'))} / {si(flops.get('implementation'))}",
                f"{int(v.get('decayed_params') or 0):,} / {int(v.get('not_decayed_params') or 0):,}",
                f"{g(std.get('ffn'), 3)} / {g(std.get('mixer'), 3)}",
            ]
        )
    return rows


def fairness_markdown(data: ReportData) -> list[str]:
    """The fairness sheet of each task (tasks whose sheet equals the previous one's are named, not repeated)."""
    out: list[str] = []
    previous: tuple[str, list[list[str]]] | None = None
    for task, sheet in data.fairness.items():
        rows = fairness_rows(sheet)
        if previous is not None and previous[1] == rows:
            out += [f"{md_cell(task)}: same as {md_cell(previous[0])}.", ""]
            continue
        scope = f"matched by {sheet.get('match')} " + (
            "within each mixer" if sheet.get("match_scope") == "mixer" else "to the whole reference model"
        )
        out += [f"**{md_cell(task)}** ({scope}, sequence length {sheet.get('seq_len')})", ""]
        out += [*_md_table(FAIRNESS_HEADER, rows), ""]
        previous = (task, rows)
    return out


def results_markdown(data: ReportData, figures: list[tuple[str, str]] | None = None) -> str:
    """The README's results section: provenance, accuracy, speed, key findings, grid status, optional figures
    (``(relative path, caption)``)."""
    out = ["## Results", "", *provenance_lines(data), ""]
    out += [
        "### Accuracy comparison",
        "",
        "Primary test metric per task, mean ± sd over seeds (completed runs; best mean in bold).",
        "",
        *accuracy_markdown(data),
        "",
        "### Training speed comparison",
        "",
        SPEED_CAPTION,
        "",
        *speed_markdown(data),
        "",
        "### Key findings",
        "",
        *[f"- {md_cell(f)}" for f in findings(data)],
        "",
        "### Grid status",
        "",
        "Completed runs / seeds of the task.",
        "",
        *grid_markdown(data),
        "",
    ]
    if data.fairness:
        out += ["### Fairness sheet", "", FAIRNESS_CAPTION, "", *fairness_markdown(data)]
    for path, caption in figures or []:
        out += [f"![{md_cell(path.rsplit('/', 1)[-1])}]({path})", "", f"*{md_cell(caption)}*", ""]
    return "\n".join(out)
