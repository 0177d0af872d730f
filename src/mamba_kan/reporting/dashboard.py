"""The offline dashboard: one self-contained HTML file.

- plotly.js is embedded once (in the head); each figure is added with ``to_html(include_plotlyjs=False)``.
  Images (the GIF, the CD diagram) are inline ``data:`` URIs. Nothing is loaded from the network.
- Escaping is the default: table cells and text go through :func:`html.escape` unless they are :class:`Markup`
  built here; JSON inside scripts has ``<``, ``>`` and ``&`` as unicode escapes; plotly labels are escaped in
  :mod:`mamba_kan.reporting.interactive`. A config value, path or error message that looks like markup is shown
  as text.
- Filters by task and variant: every block that belongs to a task or variant carries ``data-task`` /
  ``data-variant``; a few lines of inline JavaScript hide the unselected ones and the variant's plotly traces.
"""

from __future__ import annotations

import base64
import html
import io
import json
import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mamba_kan import __version__
from mamba_kan.reporting import interactive as ix
from mamba_kan.reporting.animation import Animation
from mamba_kan.reporting.data import ReportData, speed_summary
from mamba_kan.reporting.figures import CAPTIONS, SkipFigure, contrast_label
from mamba_kan.reporting.splines import SplineSet
from mamba_kan.reporting.tables import (
    SPEED_CAPTION,
    accuracy_rows,
    findings,
    g,
    grid_rows,
    provenance_items,
    si,
    speed_cells,
    speed_header,
    speed_rows,
)

log = logging.getLogger(__name__)


class Markup(str):
    """A string that is already safe HTML (built by this module); everything else is escaped."""


def e(value: Any) -> Markup:
    """Escape any value for HTML text or a quoted attribute."""
    if isinstance(value, Markup):
        return value
    return Markup(html.escape("" if value is None else str(value), quote=True))


def join(parts: Iterable[Any]) -> Markup:
    return Markup("".join(e(p) for p in parts))


_VOID = frozenset({"img", "input", "br", "meta", "link", "hr"})


def tag(name: str, body: Any = "", **attrs: Any) -> Markup:
    """``<name attrs>body</name>``; attribute names use ``_`` for ``-`` (``data_task``) and ``cls`` for class;
    None/False attributes are left out."""
    parts = []
    for k, v in attrs.items():
        if v is None or v is False:
            continue
        name_ = "class" if k == "cls" else k.rstrip("_").replace("_", "-")
        parts.append(f" {name_}" if v is True else f' {name_}="{e(v)}"')
    if name in _VOID:
        return Markup(f"<{name}{''.join(parts)}>")
    content = join(body) if isinstance(body, list | tuple) else e(body)
    return Markup(f"<{name}{''.join(parts)}>{content}</{name}>")


def script_json(value: Any) -> str:
    """JSON safe inside a <script> element (no ``</script>``, no ``<!--``)."""
    return json.dumps(value).replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def table(
    header: Sequence[Any], rows: Sequence[Sequence[Any]], row_attrs: Sequence[dict[str, Any]] | None = None,
    col_attrs: Sequence[dict[str, Any]] | None = None, cls: str = "",
) -> Markup:  # fmt: skip
    """An HTML table; ``col_attrs[j]`` go on every cell of column j (e.g. ``data_task`` for the task filter)."""
    col_attrs = col_attrs or [{} for _ in header]
    head = tag("tr", [tag("th", h, **a) for h, a in zip(header, col_attrs)])
    body = []
    for i, r in enumerate(rows):
        attrs = row_attrs[i] if row_attrs else {}
        body.append(tag("tr", [tag("td", c, **a) for c, a in zip(r, col_attrs)], **attrs))
    return tag("table", [tag("thead", head), tag("tbody", body)], cls=cls or None)


def png_data_uri(fig: Any, dpi: int = 110) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def file_data_uri(path: Path, mime: str) -> str:
    return f"data:{mime};base64," + base64.b64encode(path.read_bytes()).decode("ascii")


@dataclass
class DashboardBuilder:
    """Collects the interactive figures (deterministic div ids) and the reasons for the ones that were skipped."""

    data: ReportData
    skipped: list[tuple[str, str]] = field(default_factory=list)
    n_figures: int = 0

    def figure(
        self,
        name: str,
        build: Callable[[], Any],
        caption: str | None = None,
        height: int | None = None,
        **attrs: Any,
    ) -> Markup:
        """A plotly figure in a ``<figure>`` block, or a short note where it was skipped."""
        try:
            fig = build()
        except SkipFigure as exc:
            self.skipped.append((name, str(exc)))
            return tag("p", f"{name}: not drawn ({exc})", cls="skipped", **attrs)
        self.n_figures += 1
        h = height or int(fig.layout.height or ix.HEIGHT)
        div = fig.to_html(
            full_html=False, include_plotlyjs=False, div_id=f"fig-{self.n_figures}", default_height=f"{h}px",
            default_width="100%", config={"displaylogo": False, "responsive": True},
        )  # fmt: skip
        body = [Markup(div)]
        if caption:
            body.append(tag("figcaption", caption))
        return tag("figure", body, cls="plot", **attrs)


# --------------------------------------------------------------------------------------------------------------
# sections
# --------------------------------------------------------------------------------------------------------------
_TASK_COL = "data_task"


def _header(data: ReportData) -> Markup:
    lines = provenance_items(data)
    return tag(
        "header",
        [
            tag("h1", "mamba-kan comparison report"),
            tag("p", ["results directory: ", tag("code", str(data.root.resolve()))]),
            tag("ul", [tag("li", line) for line in lines], cls="provenance"),
        ],
    )


def _filters(data: ReportData) -> Markup:
    def boxes(kind: str, values: list[str]) -> Markup:
        items = [
            tag("label", [tag("input", type="checkbox", value=v, data_filter=kind, checked=True), " ", v])
            for v in values
        ]
        buttons = [
            tag("button", "all", type="button", data_select=kind, data_state="all"),
            tag("button", "none", type="button", data_select=kind, data_state="none"),
        ]
        return tag("fieldset", [tag("legend", f"{kind}s"), *items, *buttons])

    return tag(
        "section", [boxes("task", data.tasks), boxes("variant", data.models)], id="filters", cls="filters"
    )


def _notes(data: ReportData, skipped: list[tuple[str, str]]) -> Markup:
    notes = list(data.notes)
    if data.analysis_note:
        notes.append(data.analysis_note)
    if data.analysis is not None:
        notes += [f"analysis: {n}" for n in data.analysis.get("notes", [])]
    notes += [f"{name}: not drawn ({why})" for name, why in skipped]
    if not notes:
        return Markup("")
    return tag("section", [tag("h2", "Notes"), tag("ul", [tag("li", n) for n in notes])], id="notes")


def _accuracy(data: ReportData) -> Markup:
    header = ["variant"] + [Markup(f"{e(t)}<br><small>{e(data.metric_label(t))}</small>") for t in data.tasks]
    rows, attrs = [], []
    for r in accuracy_rows(data):
        cells: list[Any] = [r["model"]]
        for t in data.tasks:
            c = r[t]
            text = c["text"]
            if c["n"] == 0:
                cells.append(tag("span", text, cls="missing", title="no completed run"))
            elif c["best"]:
                cells.append(tag("strong", text))
            else:
                cells.append(text)
        rows.append(cells)
        attrs.append({"data_variant": r["model"]})
    cols = [{}] + [{_TASK_COL: t} for t in data.tasks]
    return join(
        [
            tag("h3", "Accuracy comparison"),
            tag(
                "p",
                "Primary test metric per task: mean ± sd over seeds (completed runs; best mean in bold; "
                "(n/N) = only n of the task's N seeds completed; — = none).",
                cls="caption",
            ),  # fmt: skip
            table(header, rows, attrs, cols),
        ]
    )


def _speed(data: ReportData) -> Markup:
    sp = speed_rows(data)
    rows = [speed_cells(data, r) for r in sp]
    attrs = [{"data_variant": r["model"]} for r in sp]
    per_task = [[r["model"], *[g(r["per_task"][t], 3) for t in data.tasks]] for r in sp]
    detail = speed_summary(data).set_index(["model", "task"])
    per_task_params = [
        [
            m,
            *[
                f"{si(detail.loc[(m, t), 'params'])} / {si(detail.loc[(m, t), 'flops_per_token'])}"
                for t in data.tasks
            ],
        ]
        for m in data.models
    ]
    cols = [{}] + [{_TASK_COL: t} for t in data.tasks]
    return join(
        [
            tag("h3", "Training speed comparison"),
            tag("p", SPEED_CAPTION, cls="caption"),
            table(speed_header(data), rows, attrs),
            tag("h4", "steps/s per task"),
            table(["variant", *data.tasks], per_task, attrs, cols),
            tag("h4", "parameters / forward FLOPs per token, per task"),
            table(["variant", *data.tasks], per_task_params, attrs, cols),
        ]
    )


def _findings(data: ReportData) -> Markup:
    items = []
    for text in findings(data):
        task = next((t for t in data.tasks if text.startswith(f"{t} (")), None)
        items.append(tag("li", text, data_task=task))
    return join([tag("h3", "Key findings"), tag("ul", items)])


def _grid(data: ReportData) -> Markup:
    rows, attrs = [], []
    for r in grid_rows(data):
        cells: list[Any] = [r["model"]]
        for t in data.tasks:
            c = r[t]
            cls = "missing" if c["missing"] else ("" if c["complete"] else "partial")
            cells.append(tag("span", c["text"], cls=cls or None))
        rows.append(cells)
        attrs.append({"data_variant": r["model"]})
    cols = [{}] + [{_TASK_COL: t} for t in data.tasks]
    missing = []
    if data.analysis is not None:
        for m in data.analysis.get("missing_runs", []):
            missing.append([m.get("task"), m.get("model"), m.get("seed"), m.get("status"), m.get("reason")])
    body = [
        tag("h3", "Grid status"),
        tag(
            "p",
            "Completed runs / seeds of the task; cells without any completed run are marked.",
            cls="caption",
        ),
        table(["variant", *data.tasks], rows, attrs, cols),
    ]
    if missing:
        body += [
            tag("h4", f"Missing or excluded runs ({len(missing)})"),
            table(
                ["task", "variant", "seed", "status", "reason"],
                missing,
                [{"data_task": m[0], "data_variant": m[1]} for m in missing],
            ),  # fmt: skip
        ]
    return join(body)


def _per_task_figures(b: DashboardBuilder, data: ReportData) -> Markup:
    d = data
    sections = []
    for key, title, build in (
        ("learning_curves", "Learning curves", lambda t: lambda: ix.learning_curves(d, t)),
        ("final_metric", "Final metric per variant", lambda t: lambda: ix.final_metric(d, t)),
        ("interaction", "Interaction plots", lambda t: lambda: ix.interaction(d, t)),
    ):
        blocks = [b.figure(f"{key} ({t})", build(t), data_task=t) for t in data.tasks]
        sections.append(
            tag("section", [tag("h2", title), tag("p", CAPTIONS[key], cls="caption"), *blocks], id=key)
        )
    return join(sections)


def _efficiency(b: DashboardBuilder, data: ReportData) -> Markup:
    d = data
    body: list[Any] = [tag("h2", "Efficiency"), tag("p", CAPTIONS["speed"], cls="caption")]
    body.append(b.figure("speed", lambda: ix.speed(d)))
    for x, key in (("params", "perf_vs_params"), ("flops_per_token", "perf_vs_flops")):
        body.append(tag("p", CAPTIONS[key], cls="caption"))
        body += [
            b.figure(f"{key} ({t})", (lambda t=t, x=x: ix.performance_vs(d, t, x)), data_task=t)
            for t in data.tasks
        ]
    return tag("section", body, id="efficiency")


def _fmt_p(p: Any) -> str:
    return g(p, 3)


def _ci(lo: Any, hi: Any) -> str:
    return "n/a" if lo is None or hi is None else f"[{g(lo)}, {g(hi)}]"


def _task_stats_tables(rec: dict[str, Any], alpha: float) -> list[Markup]:
    out: list[Markup] = []
    cells = rec.get("cells") or []
    if cells:
        out.append(tag("h4", "Cells"))
        out.append(
            table(
                ["variant", "n", "mean", "sd", "median", "95% CI", "average rank"],
                [
                    [
                        c["model"],
                        c["n"],
                        g(c.get("mean")),
                        g(c.get("sd")),
                        g(c.get("median")),
                        f"{_ci(c.get('ci_low'), c.get('ci_high'))} {c.get('ci_method') or ''}",
                        g(c.get("average_rank"), 3),
                    ]
                    for c in cells
                ],
                [{"data_variant": c["model"]} for c in cells],
            )  # fmt: skip
        )
    fr = rec.get("friedman")
    if fr:
        out.append(
            tag(
                "p",
                f"Friedman chi2 = {g(fr.get('chi2'))} (df {g(fr.get('df'), 3)}), p = {_fmt_p(fr.get('p_value'))}; "
                f"Iman-Davenport F = {g(fr.get('iman_davenport_F'))}, p = {_fmt_p(fr.get('iman_davenport_p'))}; "
                f"Nemenyi CD = {g(fr.get('cd'), 3)} over {fr.get('n_blocks')} blocks.",
            )  # fmt: skip
        )
    pairs = rec.get("pairwise") or []
    if pairs:
        out.append(tag("h4", "Pairwise Wilcoxon signed-rank tests (Holm)"))
        rows = []
        for p in pairs:
            sig = bool(p.get("significant"))
            rows.append(
                [p["a"], p["b"], p.get("n_pairs"), g(p.get("mean_diff")), _fmt_p(p.get("p_value")),
                 tag("strong", _fmt_p(p.get("p_holm"))) if sig else _fmt_p(p.get("p_holm")), g(p.get("d_z"), 3),
                 g(p.get("cliff_delta"), 3), p.get("better") or "", p.get("note") or ""]
            )  # fmt: skip
        out.append(
            table(
                [
                    "a",
                    "b",
                    "pairs",
                    "mean diff (a - b)",
                    "p",
                    "p (Holm)",
                    "d_z",
                    "Cliff's delta",
                    "better",
                    "note",
                ],
                rows,
            )  # fmt: skip
        )
    cons = rec.get("contrasts") or []
    if cons:
        out.append(tag("h4", "Activation (D1) and topology (D2) contrasts"))
        out.append(
            table(
                ["contrast", "pairs", "estimate", "95% CI", "t (df)", "p", "p (Holm)", "d_z", "reading"],
                [
                    [
                        contrast_label(c),
                        c.get("n_pairs"),
                        g(c.get("estimate")),
                        _ci(c.get("ci_low"), c.get("ci_high")),
                        f"{g(c.get('t'), 3)} ({g(c.get('df'), 3)})",
                        _fmt_p(c.get("p_value")),
                        tag("strong", _fmt_p(c.get("p_holm")))
                        if c.get("significant")
                        else _fmt_p(c.get("p_holm")),
                        g(c.get("d_z"), 3),
                        c.get("statement") or "",
                    ]
                    for c in cons
                ],
            )  # fmt: skip
        )
    v = rec.get("verdict")
    if v:
        text = f"Verdict: {v.get('verdict')} — {v.get('headline') or v.get('detail', '')}".rstrip(".") + "."
        if v.get("by_mixer"):
            text += " By mixer: " + ", ".join(f"{k}: {x}" for k, x in v["by_mixer"].items()) + "."
        out.append(tag("p", text, cls="verdict"))
    anova = rec.get("anova")
    if anova:
        art = {r["effect"]: r for r in ((rec.get("art") or {}).get("table") or [])}
        out.append(tag("h4", f"Two-way ANOVA ({anova.get('formula', '')})"))
        out.append(
            table(
                ["effect", "F (df)", "p", "partial eta²", "ART p"],
                [
                    [
                        r["effect"],
                        f"{g(r.get('F'))} ({g(r.get('df'), 3)}, {g(anova.get('df_resid'), 3)})",
                        _fmt_p(r.get("p_value")),
                        g(r.get("partial_eta_sq"), 3),
                        _fmt_p(art.get(r["effect"], {}).get("p_value")),
                    ]
                    for r in anova.get("table", [])
                ],
            )  # fmt: skip
        )
        a = anova.get("assumptions") or {}
        sh, lv = a.get("shapiro") or {}, a.get("levene") or {}
        out.append(
            tag(
                "p",
                f"Assumptions: Shapiro-Wilk on residuals p = {_fmt_p(sh.get('p_value'))}; Levene p = "
                f"{_fmt_p(lv.get('p_value'))}; balanced: {anova.get('balanced')}.",
                cls="caption",
            )  # fmt: skip
        )
    pw = rec.get("power")
    if pw:
        out.append(
            tag(
                "p",
                f"Power: {pw.get('n')} {pw.get('replicates')} detect d_z >= {g(pw.get('mde_dz'), 3)} at "
                f"alpha {g(pw.get('alpha'))} with power {g(pw.get('power'))}; about "
                f"{pw.get('needed_for_target')} are needed for d_z = {g(pw.get('target_dz'))}.",
                cls="caption",
            )  # fmt: skip
        )
    notes = rec.get("notes") or []
    if notes:
        out.append(tag("ul", [tag("li", n) for n in notes], cls="notes"))
    return out


def _statistics(b: DashboardBuilder, data: ReportData) -> Markup:
    from mamba_kan.reporting.figures import cd_diagram

    body: list[Any] = [tag("h2", "Statistics")]
    if data.analysis is None:
        body.append(tag("p", data.analysis_note or "no statistical analysis", cls="skipped"))
        return tag("section", body, id="statistics")
    alpha = data.alpha()
    s = data.analysis.get("settings", {})
    body.append(
        tag(
            "p",
            f"alpha = {g(alpha)} (family-wise: K gate, then Holm over {{D1, D2}}; Holm over the rest); "
            f"{g(s.get('confidence', 0.95) * 100)}% "
            + ("BCa bootstrap intervals (under-cover with few seeds)" if s.get("interval") == "bca" else "t intervals")
            + "; seeds are the replicates within a task, tasks the blocks across tasks.",
            cls="caption",
        )  # fmt: skip
    )
    across = data.analysis.get("across")
    if across:
        body.append(tag("h3", "Across tasks"))
        try:
            fig = cd_diagram(data, None)
            body.append(tag("figure", [tag("img", src=png_data_uri(fig), alt="critical-difference diagram"),
                                       tag("figcaption", CAPTIONS["cd_diagram"])], cls="static"))  # fmt: skip
        except SkipFigure as exc:
            b.skipped.append(("cd_diagram (across tasks)", str(exc)))
        body.append(
            b.figure(
                "pairwise (across tasks)", lambda: ix.pairwise_heatmaps(data, None), CAPTIONS["pairwise"]
            )
        )
        body += _task_stats_tables(
            {k: v for k, v in across.items() if k in ("friedman", "pairwise", "notes", "power")}, alpha
        )
        mm = across.get("mixed_model") or {}
        if mm.get("contrasts"):
            body.append(tag("h4", f"Mixed model ({mm.get('formula', '')}; {mm.get('units', '')})"))
            body.append(
                table(
                    ["contrast", "estimate", "95% CI", "z", "p (Holm)", "reading"],
                    [
                        [
                            contrast_label(c),
                            g(c.get("estimate")),
                            _ci(c.get("ci_low"), c.get("ci_high")),
                            g(c.get("z"), 3),
                            _fmt_p(c.get("p_holm")),
                            c.get("statement") or "",
                        ]
                        for c in mm["contrasts"]
                    ],
                )  # fmt: skip
            )
        elif mm.get("error"):
            body.append(tag("p", f"Mixed model not fitted: {mm['error']}", cls="skipped"))
        v = across.get("verdict") or {}
        if v:
            body.append(
                tag("p", f"Verdict across tasks: {v.get('verdict')} — {v.get('headline') or v.get('detail', '')}", cls="verdict")
            )
    for t in data.tasks:
        rec = data.task_analysis(t)
        block: list[Any] = [tag("h3", f"{t} ({data.metric_label(t)})")]
        if rec is None:
            block.append(tag("p", "no analysis for this task (no completed runs)", cls="skipped"))
        else:
            block.append(
                b.figure(f"pairwise ({t})", lambda t=t: ix.pairwise_heatmaps(data, t), CAPTIONS["pairwise"])
            )
            block.append(
                b.figure(f"contrasts ({t})", lambda t=t: ix.contrasts(data, t), CAPTIONS["contrasts"])
            )
            block += _task_stats_tables(rec, alpha)
        body.append(tag("div", block, data_task=t, cls="task-block"))
    return tag("section", body, id="statistics")


def _functions(b: DashboardBuilder, data: ReportData, splines: dict[str, list[SplineSet]],
               spline_notes: list[str], animation: Animation | None) -> Markup:  # fmt: skip
    body: list[Any] = [tag("h2", "Learned functions"), tag("p", CAPTIONS["learned_functions"], cls="caption")]
    if animation is not None and animation.path.is_file():
        body.append(
            tag(
                "figure",
                [
                    tag("img", src=file_data_uri(animation.path, "image/gif"), alt=animation.description),
                    tag("figcaption", animation.description),
                ],
                cls="static",
            )  # fmt: skip
        )
    for t in data.tasks:
        for s in splines.get(t, []):
            body.append(b.figure(f"learned functions ({s.model}, {t})", lambda s=s: ix.learned_functions(s),
                                 data_task=t, data_variant=s.model))  # fmt: skip
    if spline_notes:
        body.append(tag("ul", [tag("li", n) for n in spline_notes], cls="notes"))
    return tag("section", body, id="functions")


def _runs(data: ReportData) -> Markup:
    rows, attrs = [], []
    r = data.runs.copy()
    order = {m: i for i, m in enumerate(data.models)}
    torder = {t: i for i, t in enumerate(data.tasks)}
    r = r.assign(_t=r["task"].map(torder), _m=r["model"].map(order)).sort_values(["_t", "_m", "seed"])
    for run in r.itertuples(index=False):
        details = tag(
            "details",
            [
                tag("summary", "config, environment, run directory"),
                tag("p", ["run directory: ", tag("code", str(run.run_dir or ""))]),
                tag("pre", json.dumps(run.config, indent=1, sort_keys=True, default=str)),
                tag("pre", json.dumps(run.env, indent=1, sort_keys=True, default=str)),
                tag("pre", json.dumps(run.extra, indent=1, sort_keys=True, default=str)),
            ],
        )
        rows.append(
            [run.run_id, run.task, run.model, run.seed, tag("span", run.status, cls=f"status-{run.status}"),
             f"{run.primary_metric or ''} = {g(run.primary_value)}" if run.status == "completed" else "",
             run.steps, g(run.steps_per_sec, 3), g(run.wall_time_s, 3), si(run.params), si(run.flops_per_token),
             run.error or "", details]
        )  # fmt: skip
        attrs.append({"data_task": run.task, "data_variant": run.model})
    header = ["run", "task", "variant", "seed", "status", "primary metric", "steps", "steps/s", "wall (s)", "params",
              "FLOPs/token", "error", "details"]  # fmt: skip
    return tag(
        "section",
        [
            tag("h2", f"Runs ({len(rows)})"),
            tag("p", "Every recorded run; filters apply.", cls="caption"),
            table(header, rows, attrs, cls="runs"),
        ],  # fmt: skip
        id="runs",
    )


_CSS = """
body{font-family:system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;margin:0 auto;max-width:1400px;padding:0 1.2em;
color:#222;line-height:1.4}
h1{margin-bottom:.2em}h2{border-bottom:2px solid #0072B2;padding-bottom:.2em;margin-top:2em}
nav{position:sticky;top:0;background:#fff;padding:.4em 0;border-bottom:1px solid #ddd;z-index:10}
nav a{margin-right:1em;color:#0072B2;text-decoration:none}
table{border-collapse:collapse;margin:.6em 0;font-size:.86em}
th,td{border:1px solid #ccc;padding:.25em .5em;text-align:left;vertical-align:top}
th{background:#f1f4f8}
.caption,figcaption{color:#555;font-size:.85em}
.missing{color:#D55E00;font-weight:bold}.partial{color:#8a5a00}
.status-completed{color:#009E73}.status-diverged{color:#E69F00;font-weight:bold}
.status-failed{color:#D55E00;font-weight:bold}
.skipped{color:#777;font-style:italic}.verdict{font-weight:bold}
.filters fieldset{display:inline-block;margin-right:1em;border:1px solid #ccc}
.filters label{margin-right:.8em;white-space:nowrap}
figure{margin:1em 0}figure.static img{max-width:100%}
pre{max-height:20em;overflow:auto;background:#f7f7f7;padding:.4em;font-size:.8em}
table.runs td:nth-child(12){max-width:28em;word-break:break-word}
.filtered{display:none !important}
"""

_JS = """
(function () {
  var VARIANTS = window.MK_VARIANTS || [];
  function selected(kind) {
    var out = new Set();
    document.querySelectorAll('input[data-filter="' + kind + '"]').forEach(function (el) {
      if (el.checked) { out.add(el.value); }
    });
    return out;
  }
  function apply() {
    var tasks = selected('task'), variants = selected('variant');
    document.querySelectorAll('[data-task],[data-variant]').forEach(function (el) {
      var t = el.getAttribute('data-task'), v = el.getAttribute('data-variant');
      var hide = (t !== null && !tasks.has(t)) || (v !== null && !variants.has(v));
      el.classList.toggle('filtered', hide);
    });
    if (!window.Plotly) { return; }
    document.querySelectorAll('.plotly-graph-div').forEach(function (div) {
      if (!div.data || div.offsetParent === null) { return; }
      var vis = div.data.map(function (tr) {
        return (tr.legendgroup && VARIANTS.indexOf(tr.legendgroup) >= 0) ? variants.has(tr.legendgroup) : true;
      });
      window.Plotly.restyle(div, {visible: vis});
      window.Plotly.Plots.resize(div);
    });
  }
  document.querySelectorAll('input[data-filter]').forEach(function (el) { el.addEventListener('change', apply); });
  document.querySelectorAll('button[data-select]').forEach(function (btn) {
    btn.addEventListener('click', function () {
      var kind = btn.getAttribute('data-select'), on = btn.getAttribute('data-state') === 'all';
      document.querySelectorAll('input[data-filter="' + kind + '"]').forEach(function (el) { el.checked = on; });
      apply();
    });
  });
})();
"""


def build_dashboard(
    data: ReportData,
    path: Path,
    splines: dict[str, list[SplineSet]] | None = None,
    spline_notes: list[str] | None = None,
    animation: Animation | None = None,
    extra_skipped: list[tuple[str, str]] | None = None,
) -> DashboardBuilder:
    """Write the dashboard for ``data`` to ``path``; returns the builder (figure count, skipped figures)."""
    from plotly.offline import get_plotlyjs

    b = DashboardBuilder(data)
    # figure sections first: they record the skipped figures that the notes at the top list
    figures = _per_task_figures(b, data)
    efficiency = _efficiency(b, data)
    statistics = _statistics(b, data)
    functions = _functions(b, data, splines or {}, spline_notes or [], animation)
    b.skipped += extra_skipped or []
    nav = tag("nav", [tag("a", label, href=f"#{anchor}") for anchor, label in (
        ("headline", "Headline"), ("learning_curves", "Curves"), ("final_metric", "Final metric"),
        ("interaction", "Interaction"), ("efficiency", "Efficiency"), ("statistics", "Statistics"),
        ("functions", "Learned functions"), ("runs", "Runs"), ("notes", "Notes"))])  # fmt: skip
    headline = tag("section", [tag("h2", "Headline"), _accuracy(data), _speed(data), _findings(data), _grid(data)],
                   id="headline")  # fmt: skip
    body = join([_header(data), nav, _filters(data), _notes(data, b.skipped), headline, figures, efficiency,
                 statistics, functions, _runs(data),
                 tag("footer", f"mamba-kan {__version__}; self-contained: plotly.js embedded, no network needed.",
                     cls="caption")])  # fmt: skip
    page = "".join(
        [
            "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n",
            f"<title>{e('mamba-kan report: ' + data.root.name)}</title>\n",
            f"<style>{_CSS}</style>\n",
            '<script type="text/javascript">', get_plotlyjs(), "</script>\n",
            f'<script type="text/javascript">window.MK_VARIANTS = {script_json(list(data.models))};</script>\n',
            "</head>\n<body>\n", body, f"\n<script>{_JS}</script>\n</body>\n</html>\n",
        ]
    )  # fmt: skip
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(page, encoding="utf-8")
    return b
