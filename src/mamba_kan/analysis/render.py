"""Human-readable renderings of an analysis: terminal summary, Markdown tables (README) and LaTeX booktabs (paper).

Everything here reads only ``Analysis.to_dict()``, so every number shown is also in the JSON output.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from typing import Any, TextIO

Record = dict[str, Any]


def _f(x: Any, digits: int = 4) -> str:
    """A number with ``digits`` significant digits; None -> 'n/a'."""
    if x is None:
        return "n/a"
    if isinstance(x, bool):
        return str(x)
    if isinstance(x, int):
        return str(x)
    return f"{x:.{digits}g}"


def _p(x: Any) -> str:
    return _f(x, 3)


def _ci(lo: Any, hi: Any) -> str:
    return "n/a" if lo is None or hi is None else f"[{_f(lo)}, {_f(hi)}]"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]], indent: str = "  ") -> list[str]:
    widths = [
        max(len(str(h)), *(len(str(r[i])) for r in rows)) if rows else len(h) for i, h in enumerate(header)
    ]
    line = lambda cells: indent + "  ".join(str(c).ljust(w) for c, w in zip(cells, widths)).rstrip()  # noqa: E731
    return [line(header)] + [line(r) for r in rows]


def _direction(hib: bool) -> str:
    return "higher is better" if hib else "lower is better"


def interval_label(settings: Record) -> str:
    """ "95% t" or "95% BCa bootstrap (under-covers with few seeds)": the label of the cell-mean intervals."""
    conf = _f(settings.get("confidence", 0.95) * 100)
    if settings.get("interval") == "bca":
        return f"{conf}% BCa bootstrap (under-covers with few seeds)"
    return f"{conf}% t"


# --------------------------------------------------------------------------------------------------------------
# terminal summary
# --------------------------------------------------------------------------------------------------------------
def format_summary(analysis: Any) -> str:
    """The readable terminal summary of an :class:`Analysis` (or its ``to_dict()``)."""
    d = analysis.to_dict() if hasattr(analysis, "to_dict") else analysis
    s, inp = d["settings"], d["input"]
    out = [
        f"mamba-kan analysis: alpha = {_f(s['alpha'])}; {interval_label(s)} intervals of cell means; "
        f"SESOI = {_f(s['sesoi_dz'])} (d_z per task, noise sds across tasks)",
        f"source: {inp['source']}; {inp['n_tasks']} task(s), {inp['n_models']} variant(s)",
    ]
    if d["missing_runs"]:
        out.append(
            f"missing or excluded runs ({inp['n_missing_runs']}), each left out of the tests that need it:"
        )
        for m in d["missing_runs"]:
            out.append(f"  {m['task']}  {m['model']}  seed {m['seed']}: {m['reason']}")
    else:
        out.append("missing or excluded runs: none")
    for note in d["notes"]:
        out.append(f"note: {note}")
    if d.get("tuning"):
        out += [
            "",
            "tuned per variant on validation (test metric of the chosen configuration analysed below):",
        ]
        out += _table(*_tuning_table(d["tuning"]))
    for task in d["tasks"].values():
        out += [""] + _task_summary(task)
    if d["across"] is not None:
        out += [""] + _across_summary(d["across"])
    return "\n".join(out) + "\n"


def print_analysis_summary(analysis: Any, file: TextIO | None = None) -> None:
    """Write :func:`format_summary` to ``file`` (default stdout): the original Mamba_KAN project's console entry point."""
    (file or sys.stdout).write(format_summary(analysis))


def _task_summary(t: Record) -> list[str]:
    log = t.get("scale") == "log"
    out = [
        f"=== task {t['task']}: {t['metric']} ({_direction(t['higher_is_better'])}), "
        f"{t['n_seeds']} seed(s), {t['n_complete_seeds']} with every variant"
        + (", factorial statistics on log scale (effects as ratios)" if log else "")
        + " ==="
    ]
    rows = [
        [
            c["model"],
            _f(c["n"]),
            _f(c["mean"]),
            _ci(c["ci_low"], c["ci_high"]),
            _f(c["sd"]),
            _f(c["average_rank"]),
        ]
        + ([f"{_f(c.get('geo_mean'))} {_ci(c.get('geo_ci_low'), c.get('geo_ci_high'))}"] if log else [])
        for c in t["cells"]
    ]
    out += _table(
        ["variant", "n", "mean", "CI", "sd", "avg rank"] + (["geometric mean [CI]"] if log else []), rows
    )
    fr = t["friedman"]
    if fr:
        out.append(
            f"Friedman over {fr['n_blocks']} seeds: chi2 = {_f(fr['chi2'])}, p = {_p(fr['p_value'])}; "
            f"Iman-Davenport F({_f(fr['iman_davenport_df1'])}, {_f(fr['iman_davenport_df2'])}) = "
            f"{_f(fr['iman_davenport_F'])}, p = {_p(fr['iman_davenport_p'])}; Nemenyi CD = {_f(fr['cd'])}"
        )
    out += _anova_lines(t)
    if t["contrasts"]:
        out.append(
            "planned contrasts (paired t over seeds; families: gate K at alpha, then Holm over the primary "
            f"{{D1, D2}}; Holm over the {t['power']['family_sizes'].get('secondary_contrasts', 0)} secondary)"
            + ("; log scale: estimate and CI are ratios" if log else "")
            + ":"
        )
        rows = [
            [
                c["label"],
                c.get("family", ""),
                _f(c["ratio"] if log else c["estimate"]),
                _ci(c["ratio_ci_low"], c["ratio_ci_high"]) if log else _ci(c["ci_low"], c["ci_high"]),
                _f(c["n_pairs"]),
                _f(c["d_z"]),
                _p(c["p_value"]),
                _p(c["p_holm"]),
                c["statement"]
                + (" *" if c["significant"] else "")
                + (" (equivalent)" if c.get("equivalent") else ""),
            ]
            for c in t["contrasts"]
        ]
        out += _table(
            [
                "contrast",
                "family",
                "ratio" if log else "estimate",
                "CI",
                "n",
                "d_z",
                "p",
                "p_holm",
                "reading (* = significant)",
            ],
            rows,
        )
    v = t.get("verdict")
    if v:
        out.append(f"VERDICT: {v['verdict']} ({v.get('headline', v['detail'])})")
        out.append(
            f"  {v.get('question', 'is kan better than mlp?')} {v.get('kan_vs_mlp', '')}; {v['detail']}"
        )
        if v.get("by_mixer"):
            out.append("  by mixer: " + "; ".join(f"{m}: {x}" for m, x in v["by_mixer"].items()))
        if v.get("mixer_dependent"):
            out.append("  depends on the mixer: " + "; ".join(v["mixer_dependent"]))
    if t["pairwise"]:
        out.append(
            f"pairwise Wilcoxon signed-rank over seeds (Holm over {t['power']['family_sizes']['pairwise']}):"
        )
        out += _pairwise_rows(t["pairwise"])
    out += _power_lines(t["power"])
    for note in t["notes"]:
        out.append(f"note: {note}")
    return out


def _anova_lines(t: Record) -> list[str]:
    a = t.get("anova")
    if not a:
        return []
    out = [
        f"two-way ANOVA, type III with sum-to-zero coding: {a['formula']} (n = {a['n']}), pooled error; "
        "RM: repeated measures with seed as subject, each effect against its own effect x seed error "
        "(p_GG: Greenhouse-Geisser):"
    ]
    art = {r["effect"]: r for r in (t.get("art") or {}).get("table", [])}
    rm = {r["effect"]: r for r in (t.get("anova_rm") or {}).get("table", [])}
    rows = []
    for r in a["table"]:
        ar = art.get(r["effect"])
        rr = rm.get(r["effect"])
        rows.append(
            [
                r["effect"],
                _f(r["df"]),
                _f(r["F"]),
                _p(r["p_value"]),
                _f(r["partial_eta_sq"], 3),
                "" if ar is None else _f(ar["F"]),
                "" if ar is None else _p(ar["p_value"]),
                "" if rr is None else f"{_f(rr['F'])} ({rr['df']}, {rr['df_error']})",
                "" if rr is None else _p(rr["p_gg"]),
            ]
        )
    rows.append(["residual", _f(a["df_resid"]), "", "", "", "", "", "", ""])
    out += _table(["effect", "df", "F", "p", "partial eta2", "ART F", "ART p", "RM F (df)", "RM p_GG"], rows)
    sw, lv = a["assumptions"]["shapiro"], a["assumptions"]["levene"]
    out.append(
        f"  assumptions: Shapiro-Wilk on residuals W = {_f(sw['W'])}, p = {_p(sw['p_value'])}; "
        f"Levene (median) across cells W = {_f(lv['W'])}, p = {_p(lv['p_value'])}"
    )
    return out


def _pairwise_rows(pairs: list[Record]) -> list[str]:
    rows = [
        [
            f"{r['a']} vs {r['b']}",
            _f(r["n_pairs"]),
            _f(r["mean_diff"]),
            _f(r["d_z"], 3),
            _f(r["cliff_delta"], 3),
            _f(r["p_a_better"], 3),
            _p(r["p_value"]),
            _p(r["p_holm"]),
            (r["better"] or "tie") + (" *" if r["significant"] else ""),
        ]
        for r in pairs
    ]
    return _table(
        ["pair", "n", "mean a-b", "d_z", "Cliff", "P(a better)", "p", "p_holm", "better (* = sig.)"], rows
    )


def _power_lines(pw: Record) -> list[str]:
    fam = pw["mde_dz_family"]
    holm = pw["min_p_wilcoxon_holm"]
    return [
        f"power with {pw['n']} {pw['replicates']}: smallest detectable d_z = {_f(pw['mde_dz'], 3)} at alpha "
        f"(power {_f(pw['power'])}), {_f(fam.get('contrasts'), 3)} for the contrast family, "
        f"{_f(fam.get('pairwise'), 3)} for the pairwise family; {pw['replicates']} needed for d_z = "
        f"{_f(pw['target_dz'])}: {pw['needed_for_target']}; smallest exact Wilcoxon p = {_p(pw['min_p_wilcoxon'])} "
        f"({_p(holm.get('pairwise'))} after Holm over the pairs)"
    ]


def _across_summary(a: Record) -> list[str]:
    out = [f"=== across tasks ({len(a['tasks'])} tasks as blocks; scores in {a['score_units']}) ==="]
    fr = a["friedman"]
    if fr:
        ranks = sorted(fr["average_ranks"].items(), key=lambda kv: kv[1])
        out.append("average ranks (1 = best): " + ", ".join(f"{m} {_f(r, 3)}" for m, r in ranks))
        out.append(
            f"Friedman chi2 = {_f(fr['chi2'])}, p = {_p(fr['p_value'])}; Iman-Davenport "
            f"F({_f(fr['iman_davenport_df1'])}, {_f(fr['iman_davenport_df2'])}) = {_f(fr['iman_davenport_F'])}, "
            f"p = {_p(fr['iman_davenport_p'])}; Nemenyi CD = {_f(fr['cd'])} (q = {_f(fr['nemenyi_q'])})"
        )
        cd = a["cd_diagram"]
        out.append("  groups within CD: " + _groups(cd["cliques_nemenyi"]))
        out.append("  groups without a Wilcoxon-Holm difference: " + _groups(cd["cliques_wilcoxon"]))
        out.append("pairwise Wilcoxon signed-rank over task scores (Holm), Benavoli et al. 2016:")
        out += _pairwise_rows(a["pairwise"])
    tl = a.get("task_level") or {}
    if tl.get("contrasts"):
        out.append(
            f"task-level contrasts (the verdict's basis): {tl['method']}; units: {tl['units']}; "
            f"equivalence bound +-{_f(tl['sesoi'])}"
        )
        rows = [
            [
                c["label"],
                c["family"],
                _f(c["n_tasks"]),
                _f(c["estimate"]),
                _ci(c["ci_low"], c["ci_high"]),
                _p(c["p_value"]),
                _p(c["p_holm"]),
                c["statement"]
                + (" *" if c["significant"] else "")
                + (" (equivalent)" if c.get("equivalent") else ""),
            ]
            for c in tl["contrasts"]
        ]
        out += _table(["contrast", "family", "tasks", "estimate", "CI", "p", "p_holm", "reading"], rows)
    elif tl.get("error"):
        out.append(f"task-level contrasts: not available ({tl['error']})")
    mm = a["mixed_model"]
    if "error" in mm:
        out.append(f"mixed model: not available ({mm['error']})")
    else:
        out.append(
            f"mixed model (descriptive) {mm['formula']}, groups = task, random: {mm['random']}; "
            f"converged: {mm['converged']}; n = {mm['n_obs']} runs in {mm['n_tasks']} tasks"
        )
        out.append(
            "  "
            + "; ".join(
                f"{e['effect']}: F({e['df']}, {e.get('df_denominator', 'n/a')}) = {_f(e.get('F'))}, "
                f"p = {_p(e['p_value'])}"
                for e in mm["effects"]
            )
        )
        rows = [
            [
                c["label"],
                _f(c["estimate"]),
                _ci(c["ci_low"], c["ci_high"]),
                _p(c["p_value"]),
                _p(c["p_holm"]),
                c["statement"] + (" *" if c["significant"] else ""),
            ]
            for c in mm["contrasts"]
        ]
        out += _table(["mixed-model contrast (task SDs)", "estimate", "CI", "p", "p_holm", "reading"], rows)
        for w in mm.get("warnings", []):
            out.append(f"  statsmodels: {w}")
    v = a["verdict"]
    out.append(f"VERDICT across tasks: {v['verdict']} ({v.get('headline', v['detail'])})")
    out.append(f"  {v['detail']}")
    out.append("per-task verdicts: " + ", ".join(f"{k}: {n}" for k, n in a["task_verdict_counts"].items()))
    pw = a["power"]
    out += _power_lines(pw)
    out.append(f"  smallest exact Friedman p with {pw['n']} tasks: {_p(pw['min_p_friedman_exact'])}")
    for note in a["notes"]:
        out.append(f"note: {note}")
    return out


def _reading(c: Record) -> str:
    """A contrast's direction with its significance, for tables read without the surrounding text."""
    return c["statement"] + ("" if c["significant"] else " (n.s.)")


def _groups(cliques: list[list[str]]) -> str:
    return "; ".join("{" + ", ".join(c) + "}" for c in cliques) if cliques else "none (every pair differs)"


# --------------------------------------------------------------------------------------------------------------
# paper / README tables
# --------------------------------------------------------------------------------------------------------------
def _setting_value(value: Record) -> str:
    """``{"lr": 0.001, "model_cfg.d_model": 64}`` -> ``lr=0.001, model_cfg.d_model=64``."""
    from mamba_kan.analysis.configs import format_value

    return ", ".join(f"{k}={format_value(v)}" for k, v in value.items())


def _tuning_table(tuning: list[Record]) -> tuple[list[str], list[list[str]]]:
    """(header, rows) of the tuning table: one row per (task, variant), every candidate's validation mean."""
    rows = []
    for r in tuning:
        cands = "; ".join(
            f"{_setting_value(c['value'])}: {_f(c['mean_val'])}"
            + (f" ({c['n_without_val']} of {c['n_seeds']} seeds without val)" if c["n_without_val"] else "")
            for c in r["candidates"]
        )
        chosen = _setting_value(r["chosen"])
        rows.append(
            [
                r["task"],
                r["model"],
                ", ".join(r["settings"]),
                chosen,
                f"{r['criterion']} {r['val_metric']}: {cands}",
            ]
        )
    return ["task", "variant", "setting", "chosen", "validation per candidate"], rows


def analysis_tables(d: Record) -> list[tuple[str, list[str], list[list[str]]]]:
    """(caption, header, rows) of every table, shared by the Markdown and LaTeX writers and the dashboard."""
    tables = []
    if d.get("tuning"):
        header, rows = _tuning_table(d["tuning"])
        tables.append(
            (
                "Settings tuned per variant: the value with the best validation mean over seeds; the tables below "
                "report the test metric of that configuration.",
                header,
                rows,
            )
        )
    tasks = list(d["tasks"].values())
    models = d["input"]["models"]
    header = ["variant"] + [
        f"{t['task']} ({t['metric']}, {'higher' if t['higher_is_better'] else 'lower'} better)" for t in tasks
    ]
    rows = []
    for m in models:
        row = [m]
        for t in tasks:
            c = next((c for c in t["cells"] if c["model"] == m), None)
            row.append("" if c is None else f"{_f(c['mean'])} {_ci(c['ci_low'], c['ci_high'])}")
        rows.append(row)
    tables.append((f"Mean over seeds with {interval_label(d['settings'])} interval.", header, rows))
    rows = []
    for t in tasks:
        for c in t["contrasts"]:
            if c["scope"] == "pooled":
                log = c.get("ratio") is not None
                rows.append(
                    [
                        t["task"],
                        c["label"],
                        ("ratio " if log else "") + _f(c["ratio"] if log else c["estimate"]),
                        _ci(c["ratio_ci_low"], c["ratio_ci_high"]) if log else _ci(c["ci_low"], c["ci_high"]),
                        _p(c["p_holm"]),
                        _reading(c),
                    ]
                )
        if t.get("verdict"):
            rows.append([t["task"], "verdict", "", "", "", t["verdict"]["verdict"]])
    if rows:
        tables.append(
            (
                "Is kan better than mlp (K = kan - mlp, tested first at alpha)? If so, activation (D1 = bspline - mlp)"
                " or topology (D2 = kan - bspline), Holm over {D1, D2}. Log-scale metrics as ratios.",
                ["task", "contrast", "estimate", "CI", "p (Holm)", "reading"],
                rows,
            )
        )
    rows = []
    for t in tasks:
        art = {r["effect"]: r for r in (t.get("art") or {}).get("table", [])}
        for r in (t.get("anova") or {}).get("table", []):
            if r["effect"] == "seed":
                continue
            ar = art.get(r["effect"], {})
            rows.append(
                [
                    t["task"],
                    r["effect"],
                    f"{_f(r['F'])} ({r['df']}, {t['anova']['df_resid']})",
                    _p(r["p_value"]),
                    _f(r["partial_eta_sq"], 3),
                    _p(ar.get("p_value")),
                ]
            )
    if rows:
        tables.append(
            (
                "Two-way ANOVA (type III, sum-to-zero coding, seed as block) and ART p-values.",
                ["task", "effect", "F (df)", "p", "partial eta2", "ART p"],
                rows,
            )
        )
    a = d["across"]
    if a and a["friedman"]:
        fr = a["friedman"]
        ranks = sorted(fr["average_ranks"].items(), key=lambda kv: kv[1])
        rows = [[m, _f(r, 3)] for m, r in ranks]
        cap = (
            f"Average rank over {fr['n_blocks']} tasks (1 = best). Friedman chi2 = {_f(fr['chi2'])}, "
            f"Iman-Davenport p = {_p(fr['iman_davenport_p'])}, Nemenyi CD = {_f(fr['cd'])}."
        )
        tables.append((cap, ["variant", "average rank"], rows))
    if a and (a.get("task_level") or {}).get("contrasts"):
        rows = [
            [c["label"], _f(c["estimate"]), _ci(c["ci_low"], c["ci_high"]), _p(c["p_holm"]), _reading(c)]
            for c in a["task_level"]["contrasts"]
        ]
        tables.append(
            (
                f"Across tasks: t over per-task estimates (df = tasks - 1), effects in run-noise sds; "
                f"verdict: {a['verdict']['verdict']}.",
                ["contrast", "estimate", "CI", "p (Holm)", "reading"],
                rows,
            )
        )
    if a and "contrasts" in a["mixed_model"]:
        rows = [
            [c["label"], _f(c["estimate"]), _ci(c["ci_low"], c["ci_high"]), _p(c["p_holm"]), _reading(c)]
            for c in a["mixed_model"]["contrasts"]
        ]
        tables.append(
            (
                f"Mixed model across tasks (descriptive; {a['mixed_model']['random']}), effects in task SDs, "
                f"t tests with tasks - 1 df.",
                ["contrast", "estimate", "CI", "p (Holm)", "reading"],
                rows,
            )
        )
    return tables


def to_markdown(analysis: Any) -> str:
    """GitHub-flavoured Markdown tables of the main results."""
    d = analysis.to_dict() if hasattr(analysis, "to_dict") else analysis
    esc: Callable[[str], str] = lambda s: str(s).replace("|", "\\|")  # noqa: E731
    out = []
    for caption, header, rows in analysis_tables(d):
        out += [
            f"**{esc(caption)}**",
            "",
            "| " + " | ".join(map(esc, header)) + " |",
            "|" + "---|" * len(header),
        ]
        out += ["| " + " | ".join(map(esc, r)) + " |" for r in rows]
        out.append("")
    return "\n".join(out)


def _tex(s: str) -> str:
    s = str(s).replace("\\", "\x00")  # protect backslashes from the brace escaping below
    for a, b in (
        ("&", r"\&"),
        ("%", r"\%"),
        ("_", r"\_"),
        ("#", r"\#"),
        ("$", r"\$"),
        ("{", r"\{"),
        ("}", r"\}"),
    ):
        s = s.replace(a, b)
    return s.replace("\x00", r"\textbackslash{}")


def to_latex(analysis: Any) -> str:
    """LaTeX tables (booktabs: \\toprule, \\midrule, \\bottomrule) of the main results, one table per block."""
    d = analysis.to_dict() if hasattr(analysis, "to_dict") else analysis
    out = ["% generated by mamba-kan analyze; needs \\usepackage{booktabs}"]
    for caption, header, rows in analysis_tables(d):
        out += [
            "\\begin{table}[t]",
            "\\centering",
            f"\\caption{{{_tex(caption)}}}",
            "\\begin{tabular}{l" + "r" * (len(header) - 1) + "}",
            "\\toprule",
            " & ".join(_tex(h) for h in header) + " \\\\",
            "\\midrule",
        ]
        out += [" & ".join(_tex(c) for c in r) + " \\\\" for r in rows]
        out += ["\\bottomrule", "\\end{tabular}", "\\end{table}", ""]
    return "\n".join(out)
