"""The three benchmark suites: which items are timed side by side, and which ratios are compared with targets.

* ``ffn``   - mlp vs bspline vs kan feedforward blocks at equal parameters (d_model 128 and 256, 2048 tokens),
  at the widths training builds (printed in the notes), plus pykan's KAN layer at the kan block's shape when
  ``pykan`` is installed.
* ``mixer`` - causal attention vs the project's Mamba layer at L = 256, 1024, 4096 (d_model 128, batch 4), plus
  ``mambapy``'s Mamba layer with the same sizes when installed; and the selective scan op alone at L = 1024
  (batch 4, d_inner 256, N 16): the fused C scan, the PyTorch scan, mambapy's scan, and the memory roofline (a
  copy of the bytes the scan must move, timed in the same rounds).
* ``model`` - one training step of each of the six variants at the ``quick`` preset's size, each beside its
  *reference step* (the same model's step as the loop ran it when the performance issue was filed; see
  :mod:`mamba_kan.bench.reference_step`), and the training loop's own overhead (``run_experiment``'s steps/s
  against a bare forward/backward/optimizer loop).

Targets (CPU, ratios of items measured in the same run) come from the performance issue; ``tiny`` sizes (the CI
smoke run) report the same ratios without judging them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from mamba_kan.bench.items import matched_ffn_widths, optional_package
from mamba_kan.choices import BENCH_SUITES
from mamba_kan.errors import unknown_choice

SUITES = BENCH_SUITES
STEP_SPEEDUP_TARGET = (
    1.5  # steps/s of the training step over the reference step (performance issue, target 3)
)


@dataclass(frozen=True)
class Comparison:
    """value = metric(numerator) / metric(denominator); ``op`` and ``target`` None = reported, not judged."""

    label: str
    numerator: str  # item key "name [group]"
    denominator: str
    metric: str = "ms"  # "ms" | "cpu_ms" | "peak_mb"
    op: str | None = None  # "<=" | ">="
    target: float | None = None


@dataclass
class SuitePlan:
    name: str
    groups: list[list[dict[str, Any]]]  # item specs; the items of one group are timed in the same rounds
    comparisons: list[Comparison] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Sizes:
    ffn_d_models: tuple[int, ...] = (128, 256)
    ffn_tokens: int = 2048
    mixer_d_model: int = 128
    mixer_heads: int = 4
    mixer_batch: int = 4
    mixer_lengths: tuple[int, ...] = (256, 1024, 4096)
    model_task: str = "language"
    model_task_options: dict[str, Any] | None = None  # None = the quick preset's options for the task family
    model_cfg: dict[str, Any] | None = None  # None = the quick preset's
    model_batch: int | None = None  # None = the quick preset's
    overhead_steps: int = 40


FULL = Sizes()
TINY = Sizes(
    ffn_d_models=(16,),
    ffn_tokens=64,
    mixer_d_model=16,
    mixer_heads=2,
    mixer_batch=2,
    mixer_lengths=(16, 64),
    model_task_options={"context": 16},
    model_cfg={"d_model": 16, "n_layers": 1, "n_heads": 2, "ref_hidden": 128},
    model_batch=4,
    overhead_steps=6,
)


def _key(name: str, group: str) -> str:
    return f"{name} [{group}]"


def _ffn_spec(kind: str, d_model: int, tokens: int) -> dict[str, Any]:
    hidden = matched_ffn_widths(d_model)["kan" if kind == "pykan" else kind]
    return {"kind": "ffn", "ffn": kind, "d_model": d_model, "hidden": hidden, "tokens": tokens}


def ffn_plan(sizes: Sizes, judge: bool) -> SuitePlan:
    groups, comps = [], []
    with_pykan = optional_package("kan")
    for d in sizes.ffn_d_models:
        groups.append([_ffn_spec(k, d, sizes.ffn_tokens) for k in ("mlp", "bspline", "kan")])
        # pykan is timed in its own rounds: its GB-sized allocations would perturb the judged items' rounds
        if with_pykan:
            groups.append([_ffn_spec("pykan", d, sizes.ffn_tokens)])
        g = f"d_model={d}"
        mlp = _key("mlp", g)
        comps += [
            Comparison(
                f"bspline / mlp time, {g}", _key("bspline", g), mlp, "ms", *(("<=", 1.2) if judge else ())
            ),
            Comparison(f"kan / mlp time, {g}", _key("kan", g), mlp, "ms", *(("<=", 1.3) if judge else ())),
            Comparison(
                f"kan / mlp peak memory, {g}", _key("kan", g), mlp, "peak_mb", *(("<=", 3.0) if judge else ())
            ),
            Comparison(f"bspline / mlp peak memory, {g}", _key("bspline", g), mlp, "peak_mb"),
        ]
        if with_pykan:
            comps.append(Comparison(f"pykan / kan time, {g}", _key("pykan", g), _key("kan", g), "ms"))
    notes = [
        f"ffn widths as training builds them (models.solve_ffn_hidden), d_model={d}: "
        + ", ".join(f"{k} {v}" for k, v in matched_ffn_widths(d).items())
        for d in sizes.ffn_d_models
    ]
    notes += [] if with_pykan else ["pykan is not installed: its KAN layer was not measured"]
    return SuitePlan("ffn", groups, comps, notes)


def mixer_plan(sizes: Sizes, judge: bool) -> SuitePlan:
    with_mambapy = optional_package("mambapy")
    kinds = ["attention", "mamba"] + (["mambapy"] if with_mambapy else [])
    groups = [
        [
            {
                "kind": "mixer",
                "mixer": k,
                "d_model": sizes.mixer_d_model,
                "n_heads": sizes.mixer_heads,
                "seq_len": length,
                "batch": sizes.mixer_batch,
            }
            for k in kinds
        ]
        for length in sizes.mixer_lengths
    ]
    lengths = sizes.mixer_lengths
    ref = 1024 if 1024 in lengths else lengths[len(lengths) // 2]
    g = f"L={ref}"
    comps = [Comparison(f"mamba / attention time, {g}", _key("mamba", g), _key("attention", g), "ms",
                        *(("<=", 1.0) if judge else ()))]  # fmt: skip
    if with_mambapy:
        comps += [
            Comparison(f"mambapy / mamba time, {g}", _key("mambapy", g), _key("mamba", g), "ms",
                       *((">=", 5.0) if judge else ())),
            Comparison(f"mamba / mambapy peak memory, {g}", _key("mamba", g), _key("mambapy", g), "peak_mb",
                       *(("<=", 0.5) if judge else ())),
        ]  # fmt: skip
    longest = max(lengths)
    if longest != ref:
        comps.append(
            Comparison(f"mamba time L={longest} / L={ref} (x{longest // ref} length)",
                       _key("mamba", f"L={longest}"), _key("mamba", g), "ms",
                       *(("<=", 4.5 * (longest // ref) / 4) if judge else ()))
        )  # fmt: skip
        comps.append(
            Comparison(f"attention time L={longest} / L={ref}", _key("attention", f"L={longest}"),
                       _key("attention", g), "ms")
        )  # fmt: skip
        comps.append(
            Comparison(f"attention / mamba time, L={longest}", _key("attention", f"L={longest}"),
                       _key("mamba", f"L={longest}"), "ms", *((">=", 3.0) if judge else ()))
        )  # fmt: skip
    notes = [] if with_mambapy else ["mambapy is not installed: its Mamba layer was not measured"]
    scan_group, scan_comps, scan_notes = _scan_group(sizes, ref, with_mambapy, judge)
    groups.append(scan_group)
    return SuitePlan("mixer", groups, comps + scan_comps, notes + scan_notes)


def _scan_group(
    sizes: Sizes, length: int, with_mambapy: bool, judge: bool
) -> tuple[list[dict[str, Any]], list[Comparison], list[str]]:
    """The selective scan op alone at the Mamba layer's size (d_inner = 2 d_model, N 16): the fused C scan,
    the PyTorch scan, mambapy's scan, and a copy of the bytes the scan must move (its memory roofline)."""
    from mamba_kan.ops.selective_scan import fused_kernels

    fused_ok = fused_kernels(torch.zeros(1), 16) is not None
    kinds = (
        (["scan_fused"] if fused_ok else []) + ["scan_pytorch"] + (["scan_mambapy"] if with_mambapy else [])
    )
    kinds.append("scan_roofline_copy")
    specs = [
        {"kind": "mixer", "mixer": k, "d_inner": 2 * sizes.mixer_d_model, "d_state": 16, "seq_len": length,
         "batch": sizes.mixer_batch}
        for k in kinds
    ]  # fmt: skip
    g = f"L={length}"
    fast = "scan_fused" if fused_ok else "scan_pytorch"
    comps = [
        Comparison(f"{fast} / roofline copy time, {g}", _key(fast, g), _key("scan_roofline_copy", g), "ms",
                   *(("<=", 3.0) if judge else ())),
    ]  # fmt: skip
    if fused_ok:
        comps.append(Comparison(f"scan_pytorch / scan_fused time, {g}", _key("scan_pytorch", g),
                                _key("scan_fused", g), "ms"))  # fmt: skip
    if with_mambapy:
        comps.append(Comparison(f"scan_mambapy / {fast} time, {g}", _key("scan_mambapy", g), _key(fast, g), "ms",
                                *((">=", 20.0) if judge else ())))  # fmt: skip
    notes = (
        [] if fused_ok else ["the fused C scan did not build (no C compiler?): the PyTorch scan was timed"]
    )
    return specs, comps, notes


def model_settings(sizes: Sizes) -> tuple[str, dict[str, Any], dict[str, Any], int]:
    """(task, task options, model_cfg, batch size) of the model suite: the quick preset's unless overridden."""
    from mamba_kan.experiments.presets import QUICK
    from mamba_kan.tasks.registry import parse_task_name

    family, _ = parse_task_name(sizes.model_task)
    preset_opts = {}
    for spec in QUICK.family_tasks.get(family, ()):
        preset_opts = dict(spec.options)
        break
    options = dict(sizes.model_task_options) if sizes.model_task_options is not None else preset_opts
    model_cfg = dict(sizes.model_cfg) if sizes.model_cfg is not None else dict(QUICK.settings["model_cfg"])
    batch = sizes.model_batch if sizes.model_batch is not None else int(QUICK.settings["batch_size"])
    return sizes.model_task, options, model_cfg, batch


def model_plan(sizes: Sizes, judge: bool) -> SuitePlan:
    from mamba_kan.models import VARIANTS

    task, options, model_cfg, batch = model_settings(sizes)
    specs = [
        {
            "kind": "model",
            "variant": v,
            "task": task,
            "task_options": options,
            "batch_size": batch,
            "model_cfg": model_cfg,
            **({"reference": True} if reference else {}),
        }
        for v in VARIANTS
        for reference in (False, True)
    ]
    g = "train step"
    comps = [
        Comparison(f"{v} step speed-up over the reference step", _key(v, "reference step"), _key(v, g), "ms",
                   *((">=", STEP_SPEEDUP_TARGET) if judge else ()))
        for v in VARIANTS
    ]  # fmt: skip
    for mixer in ("transformer", "mamba"):
        for ffn, target in (("bspline", 2.0), ("kan", 3.0)):
            comps.append(
                Comparison(f"{ffn}_{mixer} / mlp_{mixer} step time", _key(f"{ffn}_{mixer}", g),
                           _key(f"mlp_{mixer}", g), "ms", *(("<=", target) if judge else ()))
            )  # fmt: skip
    size = "the quick preset's size" if judge else "tiny size"
    notes = [
        f"task {task} {options}, batch {batch}, model {model_cfg} ({size})",
        "reference step: the same model's step as the loop ran it when the performance issue was filed "
        "(mamba_kan.bench.reference_step: SDPA attention with per-call RoPE tables; PyTorch scan and conv + SiLU "
        "in Mamba; boolean-mask token loss; torch's default CPU AdamW; deterministic NaN fill on; today's spline kernels); "
        "speed-up = reference step time / train step time",
    ]
    return SuitePlan("model", [specs], comps, notes)


def plan(suite: str, sizes: Sizes, judge: bool) -> SuitePlan:
    builders = {"ffn": ffn_plan, "mixer": mixer_plan, "model": model_plan}
    if suite not in builders:
        raise unknown_choice("suite", suite, (*SUITES, "all"))
    return builders[suite](sizes, judge)
