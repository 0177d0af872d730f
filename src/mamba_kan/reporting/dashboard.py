"""The offline dashboard: one self-contained HTML file.

- The page is ``templates/dashboard.html`` (``string.Template``) with ``static/dashboard.css`` and
  ``static/dashboard.js`` inlined, all shipped as package data. plotly.js is embedded once (in the head); each
  figure is a spec of :mod:`mamba_kan.reporting.specs` drawn by :mod:`mamba_kan.reporting.interactive` and added
  with ``to_html(include_plotlyjs=False)``. Images (the GIF, the CD diagram) are inline ``data:`` URIs. Nothing is
  loaded from the network.
- The statistics tables are the analysis' own (``mamba_kan.analysis.render``), so the dashboard, ``analyze
  --markdown`` and ``statistics.md`` show the same rows; the headline tables are the rows of
  :mod:`mamba_kan.reporting.tables` (the README's).
- Escaping is the default: table cells and text go through :func:`html.escape` unless they are :class:`Markup`
  built here; JSON inside scripts has ``<``, ``>`` and ``&`` as unicode escapes; plotly labels are escaped in
  :mod:`mamba_kan.reporting.interactive`. A config value, path or error message that looks like markup is shown
  as text.
- Filters by task and variant: every block that belongs to a task or variant carries ``data-task`` /
  ``data-variant``; the script hides the unselected ones and the variant's plotly traces.
"""

from __future__ import annotations

import base64
import html
import io
import json
import logging
import string
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from mamba_kan import __version__
from mamba_kan.analysis.render import analysis_tables, format_summary
from mamba_kan.reporting import interactive as ix
from mamba_kan.reporting import specs as S
from mamba_kan.reporting.animation import Animation
from mamba_kan.reporting.data import ReportData, speed_summary
from mamba_kan.reporting.figures import render as render_static
from mamba_kan.reporting.fmt import number, si
from mamba_kan.reporting.specs import CAPTIONS
from mamba_kan.reporting.splines import SplineSet
from mamba_kan.reporting.tables import (
    FAIRNESS_CAPTION,
    FAIRNESS_HEADER,
    SPEED_CAPTION,
    accuracy_rows,
    fairness_rows,
    findings,
    grid_rows,
    provenance_items,
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

    def figure(self, name: str, spec: S.FigureSpec, caption: str | None = None, **attrs: Any) -> Markup:
        """A plotly figure of ``spec`` in a ``<figure>`` block, or a short note with the spec's skip reason."""
        if spec.skip is not None:
            self.skipped.append((name, spec.skip))
            return tag("p", f"{name}: not drawn ({spec.skip})", cls="skipped", **attrs)
        fig = ix.render(spec)
        self.n_figures += 1
        h = int(fig.layout.height or ix.HEIGHT)
        div = fig.to_html(
            full_html=False, include_plotlyjs=False, div_id=f"fig-{self.n_figures}", default_height=f"{h}px",
            default_width="100%", config={"displaylogo": False, "responsive": True},
        )  # fmt: skip
        body = [Markup(div)]
        if caption:
            body.append(tag("figcaption", caption))
        return tag("figure", body, cls="plot", **attrs)

    def static(self, name: str, spec: S.FigureSpec, alt: str) -> Markup:
        """A static (matplotlib) rendering of ``spec`` as an inline PNG, for figures without a plotly form."""
        if spec.skip is not None:
            self.skipped.append((name, spec.skip))
            return Markup("")
        img = tag("img", src=png_data_uri(render_static(spec)), alt=alt)
        return tag("figure", [img, tag("figcaption", spec.caption)], cls="static")


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
    per_task = [[r["model"], *[number(r["per_task"][t], 3) for t in data.tasks]] for r in sp]
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
    sections = []
    for key, title, spec in (
        ("learning_curves", "Learning curves", lambda t: S.learning_curves(data, t)),
        ("final_metric", "Final metric per variant", lambda t: S.final_metric(data, [t])),
        ("interaction", "Interaction plots", lambda t: S.interaction(data, [t])),
    ):
        blocks = [b.figure(f"{key} ({t})", spec(t), data_task=t) for t in data.tasks]
        sections.append(
            tag("section", [tag("h2", title), tag("p", CAPTIONS[key], cls="caption"), *blocks], id=key)
        )
    return join(sections)


def _efficiency(b: DashboardBuilder, data: ReportData) -> Markup:
    body: list[Any] = [tag("h2", "Efficiency"), tag("p", CAPTIONS["speed"], cls="caption")]
    body.append(b.figure("speed", S.speed(data)))
    for x, key in (("params", "perf_vs_params"), ("flops_per_token", "perf_vs_flops")):
        body.append(tag("p", CAPTIONS[key], cls="caption"))
        body += [b.figure(f"{key} ({t})", S.performance_vs(data, x, [t]), data_task=t) for t in data.tasks]
    return tag("section", body, id="efficiency")


def _analysis_tables(data: ReportData) -> list[Markup]:
    """The analysis' own tables (``mamba_kan.analysis.render``, the ones ``analyze --markdown/--latex`` writes) as
    HTML; a row whose first cell names a task or a variant follows the filters."""
    out: list[Markup] = []
    tasks, models = set(data.tasks), set(data.models)
    for caption, header, rows in analysis_tables(data.analysis or {}):
        attrs = [
            {"data_task": r[0]}
            if r and r[0] in tasks
            else ({"data_variant": r[0]} if r and r[0] in models else {})
            for r in rows
        ]
        out += [tag("p", caption, cls="caption"), table(header, rows, attrs)]
    return out


def verdict_line(v: dict[str, Any], scope: str = "") -> str:
    """``Verdict: <verdict> — <detail>. By mixer: ...``: the answer to the activation-vs-topology question."""
    text = (
        f"Verdict{scope}: {v.get('verdict')} — {v.get('headline') or v.get('detail', '')}".rstrip(". ") + "."
    )
    if v.get("by_mixer"):
        text += " By mixer: " + ", ".join(f"{k}: {x}" for k, x in v["by_mixer"].items()) + "."
    return text


def _statistics(b: DashboardBuilder, data: ReportData) -> Markup:
    body: list[Any] = [tag("h2", "Statistics")]
    if data.analysis is None:
        body.append(tag("p", data.analysis_note or "no statistical analysis", cls="skipped"))
        return tag("section", body, id="statistics")
    s = data.analysis.get("settings", {})
    body.append(
        tag(
            "p",
            f"alpha = {number(data.alpha())} (family-wise: K gate, then Holm over {{D1, D2}}; Holm over the rest); "
            f"{number(s.get('confidence', 0.95) * 100)}% "
            + (
                "BCa bootstrap intervals (under-cover with few seeds)"
                if s.get("interval") == "bca"
                else "t intervals"
            )
            + "; seeds are the replicates within a task, tasks the blocks across tasks.",
            cls="caption",
        )
    )
    body += _analysis_tables(data)
    body.append(
        tag(
            "details",
            [
                tag("summary", "full analysis (as printed by mamba-kan analyze)"),
                tag("pre", format_summary(data.analysis)),
            ],
        )
    )
    across = data.analysis.get("across")
    if across:
        body.append(tag("h3", "Across tasks"))
        body.append(
            b.static("cd_diagram (across tasks)", S.cd_diagram(data, None), "critical-difference diagram")
        )
        body.append(b.figure("pairwise (across tasks)", S.pairwise(data, None), CAPTIONS["pairwise"]))
        if across.get("verdict"):
            body.append(tag("p", verdict_line(across["verdict"], " across tasks"), cls="verdict"))
    for t in data.tasks:
        rec = data.task_analysis(t)
        block: list[Any] = [tag("h3", f"{t} ({data.metric_label(t)})")]
        if rec is None:
            block.append(tag("p", "no analysis for this task (no completed runs)", cls="skipped"))
        else:
            block.append(b.figure(f"pairwise ({t})", S.pairwise(data, t), CAPTIONS["pairwise"]))
            block.append(b.figure(f"contrasts ({t})", S.contrasts(data, [t]), CAPTIONS["contrasts"]))
            if rec.get("verdict"):
                block.append(tag("p", verdict_line(rec["verdict"]), cls="verdict"))
        body.append(tag("div", block, data_task=t, cls="task-block"))
    return tag("section", body, id="statistics")


def _functions(b: DashboardBuilder, data: ReportData, splines: dict[str, list[SplineSet]],
               spline_notes: list[str], animation: Animation | None) -> Markup:  # fmt: skip
    body: list[Any] = [tag("h2", "Learned functions"), tag("p", CAPTIONS["learned_functions"], cls="caption")]
    if animation is not None and animation.path.is_file():
        img = tag("img", src=file_data_uri(animation.path, "image/gif"), alt=animation.description)
        body.append(tag("figure", [img, tag("figcaption", animation.description)], cls="static"))
    for t in data.tasks:
        for s in splines.get(t, []):
            spec = S.learned_functions([s], t)
            body.append(
                b.figure(f"learned functions ({s.model}, {t})", spec, data_task=t, data_variant=s.model)
            )
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
             f"{run.primary_metric or ''} = {number(run.primary_value)}" if run.status == "completed" else "",
             run.steps, number(run.steps_per_sec, 3), number(run.wall_time_s, 3), si(run.params), si(run.flops_per_token),
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


def _fairness(data: ReportData) -> Markup:
    """The fairness sheet stored by ``compare`` for each task (the same rows as tables.md)."""
    body: list[Any] = [tag("h3", "Fairness sheet"), tag("p", FAIRNESS_CAPTION, cls="caption")]
    if not data.fairness:
        body.append(tag("p", "no fairness sheet stored with these results", cls="skipped"))
    for task, sheet in data.fairness.items():
        rows = fairness_rows(sheet)
        body += [
            tag(
                "h4",
                f"{task} (sequence length {sheet.get('seq_len')}, match scope {sheet.get('match_scope')})",
            ),
            table(FAIRNESS_HEADER, rows, [{"data_variant": r[0]} for r in rows]),
        ]
    return tag("div", body, data_task_block="1")


def _asset(package: str, name: str) -> str:
    return resources.files("mamba_kan.reporting").joinpath(package, name).read_text(encoding="utf-8")


_NAV = (("headline", "Headline"), ("learning_curves", "Curves"), ("final_metric", "Final metric"),
        ("interaction", "Interaction"), ("efficiency", "Efficiency"), ("statistics", "Statistics"),
        ("functions", "Learned functions"), ("runs", "Runs"), ("notes", "Notes"))  # fmt: skip


def build_dashboard(
    data: ReportData,
    path: Path,
    splines: dict[str, list[SplineSet]] | None = None,
    spline_notes: list[str] | None = None,
    animation: Animation | None = None,
    extra_skipped: list[tuple[str, str]] | None = None,
) -> DashboardBuilder:
    """Write the dashboard for ``data`` to ``path`` (the page is ``templates/dashboard.html`` with the style and
    script in ``static/``); returns the builder (figure count, skipped figures)."""
    from plotly.offline import get_plotlyjs

    b = DashboardBuilder(data)
    # figure sections first: they record the skipped figures that the notes at the top list
    figures = _per_task_figures(b, data)
    efficiency = _efficiency(b, data)
    statistics = _statistics(b, data)
    functions = _functions(b, data, splines or {}, spline_notes or [], animation)
    b.skipped += extra_skipped or []
    nav = tag("nav", [tag("a", label, href=f"#{anchor}") for anchor, label in _NAV])
    headline = tag("section", [tag("h2", "Headline"), _accuracy(data), _speed(data), _findings(data), _grid(data),
                                           _fairness(data)],
                   id="headline")  # fmt: skip
    footer = tag("footer", f"mamba-kan {__version__}; self-contained: plotly.js embedded, no network needed.",
                 cls="caption")  # fmt: skip
    body = join([_header(data), nav, _filters(data), _notes(data, b.skipped), headline, figures, efficiency,
                 statistics, functions, _runs(data), footer])  # fmt: skip
    page = string.Template(_asset("templates", "dashboard.html")).substitute(
        title=e("mamba-kan report: " + data.root.name),
        css=_asset("static", "dashboard.css"),
        plotlyjs=get_plotlyjs(),
        variants=script_json(list(data.models)),
        body=body,
        js=_asset("static", "dashboard.js"),
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(page, encoding="utf-8")
    return b
