"""Run benchmark suites and collect one JSON-serialisable result.

Result layout::

    {"meta": {...environment, threads, device, date, spline kernels, load average...},
     "matmul_peak": {"n", "dtype", "gflops"},
     "suites": {"ffn": {"items": [...], "comparisons": [...], "notes": [...]}, ...}}

Each item: name, group, params, details (widths, lengths...), ms / cpu_ms (medians), ms_min, ms_max, rounds,
gflops (achieved: step FLOPs / median time), peak_fraction (of the matmul peak, see measure.py), peak_mb,
memory_method.
Each comparison: label, numerator, denominator, metric, value, op, target, met (None when not judged).
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import logging
import os
import statistics
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Any

import torch

from mamba_kan.bench.items import Item, build_item, optional_package
from mamba_kan.bench.measure import matmul_peak, peak_memory, time_group
from mamba_kan.bench.suites import FULL, SUITES, TINY, Comparison, Sizes, model_settings, plan
from mamba_kan.choices import BENCH_DEVICES, PRECISIONS
from mamba_kan.errors import UserError, require, unknown_choice
from mamba_kan.ops.bspline_autograd import load_spline_kernels
from mamba_kan.tasks import make_task
from mamba_kan.tasks.registry import parse_task_name
from mamba_kan.training import TrainConfig, Trainer, run_experiment
from mamba_kan.training.env import environment, retain_freed_memory

log = logging.getLogger(__name__)

DEVICES = BENCH_DEVICES
LOOP_OVERHEAD_TARGET = 0.05
LOOP_OVERHEAD_VARIANT = "mlp_transformer"  # the fastest step: the largest relative overhead


@dataclass
class BenchConfig:
    suites: tuple[str, ...] = SUITES
    device: str = "cpu"
    threads: int = 1
    repeats: int = 10
    warmup: int = 2
    budget_s: float = 60.0  # per comparison group: fewer rounds (>= 3) when a round is slow
    memory: bool = True
    tiny: bool = False
    precision: str = "auto"
    task: str | None = None  # model suite task (None = language)
    overhead: bool = True

    def validate(self) -> None:
        for s in self.suites:
            if s not in SUITES:
                raise unknown_choice("suite", s, (*SUITES, "all"))
        if self.device not in DEVICES:
            raise unknown_choice("device", self.device, DEVICES)
        if self.device == "cuda" and not torch.cuda.is_available():
            raise UserError("device 'cuda' requested but CUDA is not available; valid choices here: cpu")
        if self.precision not in PRECISIONS:
            raise unknown_choice("precision", self.precision, PRECISIONS)
        require(self.threads >= 1, f"--threads must be >= 1, got {self.threads}")
        require(self.repeats >= 1, f"--repeats must be >= 1, got {self.repeats}")
        require(self.warmup >= 1, f"--warmup must be >= 1, got {self.warmup}")
        require(self.budget_s > 0, f"--budget must be > 0 seconds, got {self.budget_s}")
        if self.task is not None:  # fail now, not after the other suites ran
            parse_task_name(self.task)

    @property
    def sizes(self) -> Sizes:
        base = TINY if self.tiny else FULL
        if self.task is None:
            return base
        return replace(base, model_task=self.task, model_task_options=None)  # the quick preset's options

    def resolved_precision(self) -> str:
        if self.precision != "auto":
            return self.precision
        return "bf16" if self.device == "cuda" and torch.cuda.is_bf16_supported() else "fp32"


@contextlib.contextmanager
def _torch_settings(threads: int, deterministic: bool) -> Iterator[None]:
    prev_threads = torch.get_num_threads()
    prev_det = torch.are_deterministic_algorithms_enabled()
    prev_fill = torch.utils.deterministic.fill_uninitialized_memory
    try:
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(deterministic)
        # as training does (mamba_kan.training.loop._session): deterministic algorithms without the NaN fill
        torch.utils.deterministic.fill_uninitialized_memory = False
        yield
    finally:
        torch.set_num_threads(prev_threads)
        torch.use_deterministic_algorithms(prev_det)
        torch.utils.deterministic.fill_uninitialized_memory = prev_fill


def _loadavg() -> list[float] | None:
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except (OSError, AttributeError):
        return None


def _spline_backend() -> str:
    kernels = load_spline_kernels(5, 3)
    return f"generated C kernels ({kernels.path.name})" if kernels is not None else "PyTorch ops"


def _meta(cfg: BenchConfig, device: torch.device) -> dict[str, Any]:
    meta = environment(device)
    meta.update(
        date=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        threads=cfg.threads,
        precision=cfg.resolved_precision(),
        tiny=cfg.tiny,
        spline_backend=_spline_backend(),
        load_average_start=_loadavg(),
    )
    if device.type == "cuda":
        meta["mamba_ssm"] = optional_package("mamba_ssm")
    return meta


def _item_record(item: Item, timing: dict[str, float], peak: dict[str, Any]) -> dict[str, Any]:
    gflops = item.flops / (timing["ms"] / 1e3) / 1e9 if timing["ms"] > 0 else None
    fraction = None
    if peak.get("gflops_cpu") and timing["cpu_ms"] > 0:  # CPU: work per CPU-second, see measure.py
        fraction = item.flops / (timing["cpu_ms"] / 1e3) / 1e9 / peak["gflops_cpu"]
    elif gflops is not None and peak.get("gflops"):
        fraction = gflops / peak["gflops"]
    return {
        "name": item.name,
        "group": item.group,
        "key": item.key,
        "params": item.params,
        "details": item.details,
        **{k: (round(v, 4) if isinstance(v, float) else v) for k, v in timing.items()},
        "flops": item.flops,
        "gflops": gflops,
        "peak_fraction": fraction,
    }


def _evaluate(comp: Comparison, records: dict[str, dict[str, Any]]) -> dict[str, Any]:
    num, den = records.get(comp.numerator), records.get(comp.denominator)
    value = None
    if num is not None and den is not None:
        a, b = num.get(comp.metric), den.get(comp.metric)
        if a is not None and b:
            value = a / b
    met = None
    if value is not None and comp.op is not None and comp.target is not None:
        met = value <= comp.target if comp.op == "<=" else value >= comp.target
    return {
        "label": comp.label,
        "numerator": comp.numerator,
        "denominator": comp.denominator,
        "metric": comp.metric,
        "value": value,
        "op": comp.op,
        "target": comp.target,
        "met": met,
    }


def run_suite(
    name: str, cfg: BenchConfig, device: torch.device, peak: dict[str, Any], judge: bool
) -> dict[str, Any]:
    """Time (and measure the memory of) every item of suite ``name``; evaluate its comparisons."""
    precision = cfg.resolved_precision()
    suite = plan(name, cfg.sizes, judge)
    records: dict[str, dict[str, Any]] = {}
    for specs in suite.groups:
        items = [build_item(spec, device, precision) for spec in specs]
        log.info("bench %s: timing %s", name, ", ".join(it.key for it in items))
        timings = time_group(items, device, cfg.warmup, cfg.repeats, cfg.budget_s)
        for item in items:
            records[item.key] = _item_record(item, timings[item.key], peak)
        del items
        if cfg.memory:
            for spec in specs:
                mem = peak_memory(spec, device, cfg.threads, precision)
                key = build_key(spec)
                records[key]["peak_mb"] = mem["peak_mb"]
                records[key]["memory_method"] = mem["method"]
    comparisons = [_evaluate(c, records) for c in suite.comparisons]
    return {"items": list(records.values()), "comparisons": comparisons, "notes": list(suite.notes)}


def build_key(spec: dict[str, Any]) -> str:
    """The item key of a spec without building it (name [group], as :class:`Item`)."""
    if spec["kind"] == "ffn":
        return f"{spec['ffn']} [d_model={spec['d_model']}]"
    if spec["kind"] == "mixer":
        return f"{spec['mixer']} [L={spec['seq_len']}]"
    return f"{spec['variant']} [{'reference step' if spec.get('reference') else 'train step'}]"


def loop_overhead(cfg: BenchConfig, device: torch.device, rounds: int = 3) -> dict[str, Any]:
    """The training loop's own cost per step (data, scheduler, bookkeeping, logging) at the model suite's size.

    Judged value: the training loop's own step (``mamba_kan.training.loop``: a fresh batch from the task, the
    forward/backward/clip/AdamW step, scheduler, loss and divergence bookkeeping, and every ``log_every`` steps
    the synchronising log point) against a bare step of the same model on one fixed batch, alternated step by
    step (so load on a shared machine hits both alike): overhead = median loop step / median bare step - 1.
    Cross-check: ``run_experiment``'s own steps/s over ``rounds`` runs (wall-clock, fastest run).
    """
    task, options, model_cfg, batch = model_settings(cfg.sizes)
    steps = cfg.sizes.overhead_steps
    train_cfg = TrainConfig(
        model=LOOP_OVERHEAD_VARIANT,
        task=task,
        task_options=options,
        model_cfg=model_cfg,
        batch_size=batch,
        max_steps=steps * rounds,
        eval_every=steps * rounds,
        log_every=10,
        threads=cfg.threads,
        device=device.type,
        precision=cfg.resolved_precision(),
    ).resolved()
    spec = {"kind": "model", "variant": LOOP_OVERHEAD_VARIANT, "task": task, "task_options": options,
            "batch_size": batch, "model_cfg": model_cfg}  # fmt: skip
    item = build_item(spec, device, cfg.resolved_precision())
    trainer = Trainer(train_cfg, device=device)
    trainer.model.train()

    def loop_step() -> None:
        trainer.step()
        if trainer.global_step % train_cfg.log_every == 0:
            trainer.sync()
            trainer.log_train()

    item.step()
    loop_step()
    bare_ms, loop_ms = [], []
    for i in range(steps * rounds - 1):
        for fn, out in ((item.step, bare_ms), (loop_step, loop_ms))[:: 1 if i % 2 else -1]:
            t0 = time.perf_counter()
            fn()
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            out.append(1e3 * (time.perf_counter() - t0))
    bare, loop = statistics.median(bare_ms), statistics.median(loop_ms)
    task_obj = make_task(task, seed=0, **options)
    t0 = time.perf_counter()
    for step in range(steps):
        task_obj.train_batch(step, batch)
    data_ms = 1e3 * (time.perf_counter() - t0) / steps

    e2e = run_experiment(train_cfg)
    return {
        "variant": LOOP_OVERHEAD_VARIANT,
        "steps": len(loop_ms),
        "bare_ms": bare,
        "loop_ms": loop,
        "data_ms": data_ms,
        "data_fraction": data_ms / bare,
        "run_experiment_ms": 1e3 / e2e["steps_per_sec"] if e2e.get("steps_per_sec") else None,
        "value": loop / bare - 1.0,
    }


def run_bench(cfg: BenchConfig) -> dict[str, Any]:
    """Run the configured suites; see the module docstring for the result layout."""
    cfg.validate()
    device = torch.device(cfg.device)
    judge = not cfg.tiny
    result: dict[str, Any] = {"meta": {}, "matmul_peak": {}, "suites": {}}
    # every item runs with the allocator setting training uses (mamba_kan.training.loop), bare steps included
    retained = device.type == "cpu" and retain_freed_memory()
    with _torch_settings(cfg.threads, deterministic=False):
        result["meta"] = _meta(cfg, device)
        result["meta"]["freed_memory_retained"] = retained
        dtype = torch.bfloat16 if cfg.resolved_precision() == "bf16" else torch.float32
        n = 256 if cfg.tiny else (8192 if device.type == "cuda" else 2048)
        result["matmul_peak"] = matmul_peak(device, dtype, n)
    peak = result["matmul_peak"]
    for name in cfg.suites:
        # the model suite runs like training does: deterministic algorithms on CPU (mamba_kan.training.loop)
        with _torch_settings(cfg.threads, deterministic=name == "model" and device.type == "cpu"):
            suite = run_suite(name, cfg, device, peak, judge)
            if name == "model" and cfg.overhead:
                over = loop_overhead(cfg, device, rounds=1 if cfg.tiny else 3)
                suite["loop_overhead"] = over
                met = None
                if judge and over.get("value") is not None:
                    met = over["value"] <= LOOP_OVERHEAD_TARGET
                suite["comparisons"].append(
                    {
                        "label": f"training loop overhead ({LOOP_OVERHEAD_VARIANT})",
                        "numerator": "run_experiment step",
                        "denominator": "bare step",
                        "metric": "ms",
                        "value": over.get("value"),
                        "op": "<=" if judge else None,
                        "target": LOOP_OVERHEAD_TARGET if judge else None,
                        "met": met,
                    }
                )
        result["suites"][name] = suite
    result["meta"]["load_average_end"] = _loadavg()
    return result
