"""Statistics for the ffn x mixer comparison: per task (seeds as replicates), across tasks, and power.

Questions: (1) does the feedforward type matter, (2) does the mixer matter, (3) do they interact, (4) is a KAN
advantage due to the B-spline activation (D1 = bspline - mlp) or to the KAN topology (D2 = kan - bspline)?
The verdict first asks "is kan better than mlp?" (K = kan - mlp), and only then attributes the advantage.
Methods follow Demšar (2006), Benavoli et al. (2016) and Wobbrock et al. (2011); docs/statistics.md explains each
procedure, its scale and families, and shows the calibration table. Module docstrings: ``data`` (inputs, missing
runs, the log scale of MSE-type metrics), ``descriptive`` (t intervals; BCa by option), ``anova`` (type III ANOVA,
repeated-measures ANOVA, ART), ``contrasts`` (K/D1/D2, families, TOST, the verdict rule, vectorised verdicts),
``pairwise`` (Wilcoxon-Holm, effect sizes), ``ranks`` (Friedman, Iman-Davenport, Nemenyi), ``mixed`` (descriptive
across-task mixed model), ``power``, ``calibration`` (false-claim rates, power and coverage by simulation),
``configs`` (runs of one variant in several configurations: refused, ``where``, ``tune``), ``render`` (text,
Markdown, LaTeX), ``cd_diagram`` (the critical-difference figure from a ``cd_diagram`` record).

Usage::

    from mamba_kan.analysis import run_full_analysis, print_analysis_summary
    analysis = run_full_analysis({"mlp_transformer": [0.52, 0.51, 0.53], "kan_transformer": [...], ...})
    print_analysis_summary(analysis)
    analyze_directory("runs/quick").to_json()          # or analyze_frame(tidy_df, alpha=0.05, metric=None)

Missing runs: a (task, variant, seed) without a finite value (diverged, failed, absent) is listed in
``missing_runs`` and left out of exactly the tests that need it: cell statistics use the seeds a variant has,
paired tests and contrasts use the seeds where every variant they involve has a value (``n_pairs`` / ``n_blocks``
say how many), Friedman uses complete seeds. A NaN never propagates into a statistic.

Result contract (``Analysis.to_dict()``; JSON-ready, NaN/inf as null; ``p_holm`` = Holm-adjusted p-value)::

    schema, version
    settings: alpha, confidence, n_bootstrap, random_state, power, sesoi_dz, target_dz, block_seeds, metric,
              higher_is_better, scale (auto|raw|log), interval (t|bca), mixed_model (bool),
              where {setting: [values]}, tune [settings]          (see ``configs``)
    input:    source, n_rows, n_tasks, n_models, n_missing_runs, tasks [names], models [names],
              metric_by_task {task: metric}, higher_is_better_by_task {task: bool}
    missing_runs: [{task, model, seed, status, reason}]
    notes:    [str]
    tasks: {task name: {
        task, metric, higher_is_better, direction_source, models, seeds, n_seeds, n_complete_seeds, missing, notes,
        scale ("raw" | "log": the scale of anova, anova_rm, art and contrasts),
        cells:    [{model, ffn, mixer, n, mean, sd, median, min, max, ci_low, ci_high, ci_method ("t" | "BCa" |
                    ...), geo_mean, geo_ci_low, geo_ci_high (log-scale tasks, else null), average_rank}],
        friedman: {n_blocks, k, chi2, df, p_value, iman_davenport_F, iman_davenport_df1, iman_davenport_df2,
                   iman_davenport_p (F and p null = n/a when not computable), average_ranks {model: rank, 1 = best},
                   nemenyi_q, cd, cliques_nemenyi, significant} | null          (seeds as blocks)
        pairwise: [{a, b, n_pairs, mean_a, mean_b, mean_diff (a - b), median_diff, statistic, p_value, n_nonzero,
                    d_z, cliff_delta, p_a_better, better, note, p_holm, significant}]
        pairwise_p_matrix: {a: {b: p_holm | null}}
        cd_diagram: {average_ranks, n_blocks, cd, p_matrix, cliques_nemenyi, cliques_wilcoxon} | null
        anova:    {formula, n, table [{effect, ss, df, F, p_value, partial_eta_sq}], ss_resid, df_resid, ms_resid,
                   residual_is_rounding_noise, balanced, assumptions {shapiro {W, p_value, n, ok},
                   levene {W, p_value, groups, ok}}} | null         (F, p null when df = 0 or residual is noise)
        anova_rm: {method, n_subjects, table [{effect, ss, df, ss_error, df_error, F, p_value, epsilon_gg, p_gg,
                   partial_eta_sq}]} | null          (seed as subject, effect-specific error terms)
        art:      {method, table [{effect, ss, df, F, p_value, partial_eta_sq, df_resid}]} | null
        contrasts: [{name D1|D2|K, effect activation|topology|kan vs mlp, scope pooled|within|interaction, mixer,
                     label, weights {model: w}, n_pairs, estimate, se, df, t, p_value, ci_low, ci_high, d_z,
                     favourable, statement, family gate|primary|secondary, p_holm (within its family), significant,
                     p_equivalence, equivalent (TOST at +-sesoi_dz), scale, ratio, ratio_ci_low, ratio_ci_high
                     (log scale only), effect_text}]
                     (estimates on the task's analysis scale, signed: metric units, or log(metric) when scale = log)
        verdict:  {verdict, question, kan_vs_mlp better|worse|equivalent|not significant|untestable, headline,
                   detail, by_mixer {mixer: verdict}, mixer_dependent [labels], mde_dz_family, sesoi_dz,
                   families {gate|primary|secondary: [labels]}} | null
        power:    {replicates "seeds", n, alpha, power, mde_dz, mde_dz_family {pairwise, contrasts}, family_sizes,
                   target_dz, needed_for_target, min_p_wilcoxon, min_p_wilcoxon_holm {pairwise, contrasts}}
    }}
    across: null (one task) | {
        tasks, models, dropped_tasks, dropped_models, score_units,
        means:    [{task, model, metric, higher_is_better, mean, n, score}]   (score: oriented, in task SDs)
        friedman, pairwise, pairwise_p_matrix, cd_diagram     (as per task, tasks as blocks, on scores)
        task_level: {method, units, n_tasks, tasks, sesoi, notes, contrasts [{name, effect, scope, mixer, label,
                      n_tasks, per_task {task: estimate}, estimate, se, df, t, p_value, ci_low, ci_high,
                      p_equivalence, equivalent, favourable, statement, family, p_holm, significant}]} (+ error)
                     (the verdict's basis: one-sample t over per-task estimates in run-noise sds, df = tasks - 1)
        mixed_model: {n_obs, n_tasks, formula, random, converged, warnings, failed_fits, fixed_effects
                      [{term, estimate, se, z, df, p_value}], effects [{effect, chi2, df, F, df_denominator,
                      p_value}], contrasts [as per task, with z instead of t; df = n_tasks - 1], variance_components,
                      units, notes} | {..., error}      (descriptive; t/F reference with n_tasks - 1 df)
        verdict:  {verdict, question, kan_vs_mlp, headline, detail, mde_dz_family, basis, families}
        task_verdict_counts: {verdict: count}
        power:    (as per task, replicates "tasks") + min_p_friedman_exact
        notes
    }
    tuning: [{task, model, settings, chosen {setting: value}, val_metric, higher_is_better, criterion,
              candidates [{value {setting: value}, mean_val, criterion, n_seeds, n_without_val}]}]   ([] untuned)

Verdicts are one of "activation", "topology", "both", "undetermined" (kan beats mlp, the cause is not resolved),
"neither" (D1 and D2 both shown equivalent to 0), "no KAN advantage" (kan worse than or equivalent to mlp),
"inconclusive at this power" (or "not estimable"); the rule is in :mod:`mamba_kan.analysis.contrasts`.

Changes of this version of the contract (fields were added, none renamed or removed): contrasts gained K, family,
p_equivalence, equivalent, scale, ratio*, effect_text, and p_holm is now within the contrast's family; cells gained
geo_*; ci_method is "t" by default (was "BCa"); tasks gained scale and anova_rm; across gained task_level and the
verdict's basis moved to it from the mixed model; verdicts gained question, kan_vs_mlp, headline, families;
Iman-Davenport F/p are null where they were inf/0. Runs of one (task, variant) in different configurations are
refused (a UserError) instead of averaged; settings gained where and tune; the result gained tuning.
"""

from __future__ import annotations

from mamba_kan.analysis.cd_diagram import plot_cd_diagram
from mamba_kan.analysis.pipeline import (
    Analysis,
    Settings,
    analyze_directory,
    analyze_frame,
    run_full_analysis,
)
from mamba_kan.analysis.render import format_summary, print_analysis_summary, to_latex, to_markdown

__all__ = [
    "Analysis",
    "Settings",
    "analyze_directory",
    "analyze_frame",
    "format_summary",
    "plot_cd_diagram",
    "print_analysis_summary",
    "run_full_analysis",
    "to_latex",
    "to_markdown",
]
