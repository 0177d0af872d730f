"""``generate_report``: every figure, the GIF, the tables and the dashboard of a comparison directory.

Layout of ``DIR/report`` (or ``out_dir``)::

    figures/<name>.<png|svg|pdf>   static figures (see CAPTIONS in figures.py for what each shows)
    spline_evolution.gif           learned spline functions during training (learning_curves.gif without snapshots)
    dashboard.html                 the self-contained interactive dashboard (open it offline)
    tables.md                      headline tables, key findings, grid status, provenance (the README's shape)
    statistics.md, statistics.tex  the analysis tables (Markdown for the README, LaTeX booktabs for a paper)
    analysis.json                  the full analysis (``Analysis.to_dict()``)
    manifest.json                  what was written, and every figure skipped with the reason
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from mamba_kan.errors import UserError, unknown_choice
from mamba_kan.reporting import figures as F
from mamba_kan.reporting import specs as S
from mamba_kan.reporting.data import ReportData, load_report_data
from mamba_kan.reporting.splines import SplineSet, SplinesUnavailable, final_functions, representative_runs
from mamba_kan.reporting.style import unique_slugs

log = logging.getLogger(__name__)

GIF_NAME = "spline_evolution.gif"
CURVES_GIF_NAME = "learning_curves.gif"


def parse_formats(formats: str | Sequence[str]) -> tuple[str, ...]:
    """``"png,svg"`` or ``["png", "pdf"]`` -> a tuple of valid figure formats; unknown ones raise UserError."""
    items = formats.split(",") if isinstance(formats, str) else list(formats)
    out: list[str] = []
    for f in items:
        f = str(f).strip().lower().lstrip(".")
        if not f:
            continue
        if f not in F.FORMATS:
            raise unknown_choice("figure format", f, F.FORMATS)
        if f not in out:
            out.append(f)
    if not out:
        raise UserError(f"no figure format given; valid choices: {', '.join(F.FORMATS)}")
    return tuple(out)


def _check_out_dir(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise UserError(f"report directory {out} exists and is not a directory")
    probe = out
    while not probe.exists():
        probe = probe.parent
    if not os.access(probe, os.W_OK):
        raise UserError(f"cannot write the report to {out}: {probe} is not writable")


def static_figures(data: ReportData) -> list[tuple[str, str, str | None, Callable[[], S.FigureSpec]]]:
    """(file stem, figure kind, task or None, spec builder) of every static figure, in reading order."""
    slugs = unique_slugs(data.tasks)
    out: list[tuple[str, str, str | None, Callable[[], S.FigureSpec]]] = []
    for t in data.tasks:
        out.append(
            (f"learning_curves_{slugs[t]}", "learning_curves", t, lambda t=t: S.learning_curves(data, t))
        )
    out += [
        ("final_metric", "final_metric", None, lambda: S.final_metric(data)),
        ("interaction", "interaction", None, lambda: S.interaction(data)),
        ("speed", "speed", None, lambda: S.speed(data)),
        ("perf_vs_params", "perf_vs_params", None, lambda: S.performance_vs(data, "params")),
        ("perf_vs_flops", "perf_vs_flops", None, lambda: S.performance_vs(data, "flops_per_token")),
        ("contrasts", "contrasts", None, lambda: S.contrasts(data)),
        ("cd_diagram_across", "cd_diagram", None, lambda: S.cd_diagram(data, None)),
        ("pairwise_across", "pairwise", None, lambda: S.pairwise(data, None)),
    ]
    for t in data.tasks:
        out.append((f"pairwise_{slugs[t]}", "pairwise", t, lambda t=t: S.pairwise(data, t)))
        out.append((f"cd_diagram_{slugs[t]}", "cd_diagram", t, lambda t=t: S.cd_diagram(data, t)))
    return out


def _write(spec: S.FigureSpec, stem: str, task: str | None, out: Path, fig_dir: Path, fmts: Sequence[str], dpi: int,
           manifest: dict[str, Any]) -> None:  # fmt: skip
    """Render and save one spec, or list it as skipped with the spec's reason."""
    if spec.skip is not None:
        manifest["skipped"].append({"figure": stem, "reason": spec.skip})
        return
    paths = F.save_figure(F.render(spec), fig_dir, stem, fmts, dpi)
    manifest["figures"].append(
        {"name": stem, "kind": spec.kind, "task": task, "files": [str(p.relative_to(out)) for p in paths]}
    )


def load_learned_functions(data: ReportData) -> tuple[dict[str, list[SplineSet]], list[str]]:
    """task -> the final learned functions of one run per spline variant, and notes on runs that had none."""
    out: dict[str, list[SplineSet]] = {}
    notes: list[str] = []
    for t in data.tasks:
        for run in representative_runs(data, t):
            try:
                out.setdefault(t, []).append(final_functions(data.root, run))
            except SplinesUnavailable as exc:
                notes.append(f"learned functions of {run['model']} on {t}: {exc}")
    return out, notes


def generate_report(
    results_dir: str | os.PathLike[str],
    out_dir: str | os.PathLike[str] | None = None,
    formats: str | Sequence[str] = ("png",),
    *,
    analysis: Any = None,
    dpi: int = 150,
    where: Sequence[str] | None = None,
    tune: Sequence[str] | None = None,
) -> Path:
    """Build the report of a comparison directory; returns the report directory (default ``DIR/report``).

    ``formats``: static figure formats among png, svg, pdf. ``analysis``: an ``Analysis`` already computed for
    this directory (e.g. by ``compare --generate-report``); None computes it with the default settings. A
    directory with runs but too few for statistics still gets every descriptive figure, table and the dashboard.
    ``where``/``tune``: report one configuration per variant of a sweep, selected as ``analyze --where/--tune``
    selects (figures, tables and statistics alike).
    """
    fmts = parse_formats(formats)
    t0 = time.perf_counter()
    data = load_report_data(results_dir, analysis, where=where, tune=tune)
    out = Path(out_dir).expanduser() if out_dir is not None else data.root / "report"
    _check_out_dir(out)
    out.mkdir(parents=True, exist_ok=True)
    fig_dir = out / "figures"
    manifest: dict[str, Any] = {
        "results_dir": str(data.root),
        "formats": list(fmts),
        "figures": [],
        "skipped": [],
    }

    for stem, _, task, build in static_figures(data):
        _write(build(), stem, task, out, fig_dir, fmts, dpi, manifest)
    splines, spline_notes = load_learned_functions(data)
    slugs = unique_slugs(data.tasks)
    for t in data.tasks:
        _write(S.learned_functions(splines.get(t, []), t), f"learned_functions_{slugs[t]}", t, out, fig_dir, fmts, dpi,
               manifest)  # fmt: skip
    manifest["notes"] = spline_notes

    animation = _animation(data, out, manifest)

    from mamba_kan.reporting.tables import results_markdown

    figs_md = [
        (f"figures/{f['name']}.png", S.CAPTIONS[f["kind"]])
        for f in manifest["figures"]
        if "png" in fmts
        and f["task"] is None
        and f["kind"] in ("final_metric", "speed", "contrasts", "cd_diagram")
    ]
    (out / "tables.md").write_text(results_markdown(data, figs_md), encoding="utf-8")
    if data.analysis is not None:
        from mamba_kan.analysis import to_latex, to_markdown

        (out / "statistics.md").write_text(to_markdown(data.analysis), encoding="utf-8")
        (out / "statistics.tex").write_text(to_latex(data.analysis), encoding="utf-8")
        (out / "analysis.json").write_text(
            json.dumps(data.analysis, indent=1, allow_nan=False), encoding="utf-8"
        )

    from mamba_kan.reporting.dashboard import build_dashboard

    skipped = [(s["figure"], s["reason"]) for s in manifest["skipped"]]
    builder = build_dashboard(data, out / "dashboard.html", splines, spline_notes, animation, skipped)
    manifest["dashboard"] = {"file": "dashboard.html", "interactive_figures": builder.n_figures}
    manifest["elapsed_s"] = round(time.perf_counter() - t0, 2)
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1), encoding="utf-8")
    log.info(
        "report: %d figures, %d skipped, dashboard with %d interactive figures in %.1f s -> %s",
        len(manifest["figures"]), len(manifest["skipped"]), builder.n_figures, manifest["elapsed_s"], out,
    )  # fmt: skip
    return out


def _animation(data: ReportData, out: Path, manifest: dict[str, Any]) -> Any:
    """The spline GIF, or the learning-curve GIF when no run saved spline snapshots; None if neither is possible."""
    from mamba_kan.reporting.animation import learning_curve_gif, spline_evolution_gif

    try:
        anim = spline_evolution_gif(data, out / GIF_NAME)
    except S.SkipFigure as exc:
        manifest["skipped"].append({"figure": GIF_NAME, "reason": str(exc)})
        try:
            anim = learning_curve_gif(data, out / CURVES_GIF_NAME)
        except S.SkipFigure as exc2:
            manifest["skipped"].append({"figure": CURVES_GIF_NAME, "reason": str(exc2)})
            return None
    manifest["animation"] = {
        "file": anim.path.name,
        "kind": anim.kind,
        "task": anim.task,
        "runs": anim.run_ids,
        "steps": anim.steps,
    }
    return anim


#: The README's figures (stem, caption key), in the order the README shows them.
ASSET_FIGURES = (
    ("final_metric", "final_metric"),
    ("interaction", "interaction"),
    ("speed", "speed"),
    ("perf_vs_params", "perf_vs_params"),
    ("contrasts", "contrasts"),
    ("cd_diagram_across", "cd_diagram"),
)


def write_assets(
    results_dir: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    link_prefix: str | None = None,
    dpi: int = 110,
    analysis: Any = None,
) -> list[Path]:
    """The README's assets: a few PNG figures, the spline GIF (or learning-curve GIF) and ``results_tables.md``
    (provenance, accuracy, speed, findings, grid status, and the figures linked as ``link_prefix/<file>``).
    Returns the files written."""
    data = load_report_data(results_dir, analysis)
    out = Path(out_dir).expanduser()
    _check_out_dir(out)
    out.mkdir(parents=True, exist_ok=True)
    prefix = (link_prefix if link_prefix is not None else out.as_posix()).rstrip("/")
    builders = {stem: build for stem, _, _, build in static_figures(data)}
    written: list[Path] = []
    linked: list[tuple[str, str]] = []
    for stem, key in ASSET_FIGURES:
        spec = builders[stem]()
        if spec.skip is not None:
            log.warning("asset %s skipped: %s", stem, spec.skip)
            continue
        written += F.save_figure(F.render(spec), out, stem, ("png",), dpi)
        linked.append((f"{prefix}/{stem}.png", S.CAPTIONS[key]))
    manifest: dict[str, Any] = {"skipped": []}
    anim = _animation(data, out, manifest)
    if anim is not None:
        written.append(anim.path)
        linked.append((f"{prefix}/{anim.path.name}", anim.description))
    from mamba_kan.reporting.tables import results_markdown

    tables = out / "results_tables.md"
    tables.write_text(results_markdown(data, linked), encoding="utf-8")
    written.append(tables)
    return written
