"""`mamba-kan bench`: it runs end to end on tiny sizes, its arithmetic is right, and bad input is a clear error.

A benchmark, not a timed test: nothing here asserts a speed target (docs/benchmarks.md records those).
"""

from __future__ import annotations

import json
import time

import pytest
import torch

from mamba_kan.bench.items import Item, build_item, matched_ffn_widths
from mamba_kan.bench.measure import peak_memory, time_group
from mamba_kan.bench.runner import _evaluate
from mamba_kan.bench.suites import Comparison
from mamba_kan.cli import main

CPU = torch.device("cpu")


@pytest.mark.parametrize("d_model", [128, 256])
def test_ffn_widths_match_parameters_by_the_papers_counts(d_model):
    """Parameter counts from the formulas (Liu et al. 2024 §2; Yu et al. 2024; G=5, k=3): MLP 2dh + h + d, B-spline MLP adds
    G + k + 2 per hidden unit, KAN 2dh (G + k + 2). The solved widths equal the MLP's count within 1%."""
    h = matched_ffn_widths(d_model)
    per_edge = 5 + 3 + 2
    mlp = 2 * d_model * h["mlp"] + h["mlp"] + d_model
    bspline = 2 * d_model * h["bspline"] + h["bspline"] + d_model + per_edge * h["bspline"]
    kan = 2 * d_model * h["kan"] * per_edge
    assert h["mlp"] == 4 * d_model
    assert abs(bspline / mlp - 1) <= 0.01 and abs(kan / mlp - 1) <= 0.01
    if d_model == 128:
        assert mlp == 131_712
    # the bench times the widths training builds (in the transformer variants): a model built for another task
    from mamba_kan.io_spec import RegressionOutput, TokenInput
    from mamba_kan.models import ModelConfig, build_model

    for ffn in ("bspline", "kan"):
        model = build_model(
            f"{ffn}_transformer",
            ModelConfig(d_model=d_model),
            TokenInput(vocab_size=17),
            RegressionOutput(3),
            32,
        )
        assert model.ffn_hidden == h[ffn]


def _sleeper(name: str, seconds: float) -> Item:
    return Item(name, "g", {}, lambda: time.sleep(seconds), flops=1e6, params=0)


def test_interleaved_timing_recovers_known_durations():
    items = [_sleeper("short", 0.01), _sleeper("long", 0.03)]
    t = time_group(items, CPU, warmup=1, repeats=5, budget_s=10)
    short, long = t["short [g]"], t["long [g]"]
    assert 10 <= short["ms"] < 40 and 30 <= long["ms"] < 70  # sleep overshoots a little on a busy machine
    assert 1.4 < long["ms"] / short["ms"] < 3.5
    assert short["cpu_ms"] < 5  # sleeping burns no CPU time
    assert short["rounds"] == long["rounds"] == 5


def test_rounds_rotate_the_order_and_collect_garbage_once_per_round(monkeypatch):
    import mamba_kan.bench.measure as measure

    order: list[str] = []
    items = [Item(n, "g", {}, lambda n=n: order.append(n), flops=1e6, params=0) for n in "abc"]
    collections: list[int] = []
    real_collect = measure.gc.collect
    monkeypatch.setattr(measure.gc, "collect", lambda *a: collections.append(1) or real_collect(*a))
    time_group(items, CPU, warmup=1, repeats=3, budget_s=10)
    assert order[:3] == list("abc")  # warm-up
    assert order[3:] == list("abc") + list("bca") + list("cab")  # no item always follows the collection
    assert len(collections) == 3


def test_budget_lowers_the_rounds_but_not_below_three():
    t = time_group([_sleeper("slow", 0.05)], CPU, warmup=1, repeats=20, budget_s=0.01)
    assert t["slow [g]"]["rounds"] == 3


def test_comparisons_divide_the_named_metric_and_judge_the_target():
    records = {"a [g]": {"ms": 3.0, "peak_mb": 10.0}, "b [g]": {"ms": 2.0, "peak_mb": None}}
    le = _evaluate(Comparison("a/b", "a [g]", "b [g]", "ms", "<=", 1.5), records)
    assert le["value"] == pytest.approx(1.5) and le["met"] is True
    ge = _evaluate(Comparison("a/b", "a [g]", "b [g]", "ms", ">=", 2.0), records)
    assert ge["met"] is False
    missing = _evaluate(Comparison("mem", "a [g]", "b [g]", "peak_mb", "<=", 3.0), records)
    assert missing["value"] is None and missing["met"] is None
    info = _evaluate(Comparison("a/b", "a [g]", "b [g]", "ms"), records)
    assert info["met"] is None


def test_peak_memory_of_a_step_counts_its_activations():
    """MLP 64 -> 1024 on 4096 tokens: forward keeps the (4096, 1024) pre-activation and GELU output, backward
    makes two more of that size: >= 4 x 16 MiB must be live at the peak, and nothing like a GiB."""
    spec = {"kind": "ffn", "ffn": "mlp", "d_model": 64, "hidden": 1024, "tokens": 4096}
    mem = peak_memory(spec, CPU, threads=1, precision="fp32")
    assert mem["peak_mb"] is not None, mem
    assert 48 <= mem["peak_mb"] < 400, mem


def test_cli_bench_tiny_runs_every_suite_and_writes_json(tmp_path, capsys):
    out, md = tmp_path / "bench.json", tmp_path / "bench.md"
    argv = ["bench", "--tiny", "--no-memory", "--repeats", "3", "--warmup", "1", "--out", str(out)]
    assert main([*argv, "--markdown", str(md)]) == 0
    result = json.loads(out.read_text())
    assert set(result["suites"]) == {"ffn", "mixer", "model"}
    assert result["matmul_peak"]["gflops"] > 0
    for suite in result["suites"].values():
        by_key = {it["key"]: it for it in suite["items"]}
        for it in suite["items"]:
            copy = it["name"] == "scan_roofline_copy"  # a memory copy: no parameters, no FLOPs
            assert it["ms"] > 0 and (copy or (it["params"] > 0 and it["gflops"] > 0))
        for comp in suite["comparisons"]:
            assert comp["met"] is None  # tiny sizes are not judged
            if comp["numerator"] in by_key and comp["metric"] == "ms":
                expected = by_key[comp["numerator"]]["ms"] / by_key[comp["denominator"]]["ms"]
                assert comp["value"] == pytest.approx(expected)
    names = {it["name"] for it in result["suites"]["model"]["items"]}
    assert names == {"mlp_transformer", "bspline_transformer", "kan_transformer", "mlp_mamba", "bspline_mamba",
                     "kan_mamba"}  # fmt: skip
    groups = {(it["name"], it["group"]) for it in result["suites"]["model"]["items"]}
    assert groups == {(n, g) for n in names for g in ("train step", "reference step")}
    labels = {c["label"] for c in result["suites"]["model"]["comparisons"]}
    assert {f"{n} step speed-up over the reference step" for n in names} <= labels
    assert result["suites"]["model"]["loop_overhead"]["value"] is not None
    assert "### ffn" in md.read_text()
    assert "ratios measured in this run" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--suite", "speed"], "unknown suite 'speed'; valid choices: ffn, mixer, model, all"),
        (["--threads", "0"], "--threads must be >= 1"),
        (["--device", "tpu"], "unknown device 'tpu'; valid choices: cpu, cuda"),
        (["--precision", "fp8"], "unknown precision 'fp8'"),
        (["--task", "chess"], "unknown task family 'chess'"),
    ],
)
def test_bad_bench_options_are_one_line_errors(args, message, capsys):
    assert main(["bench", "--no-save", *args]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA present")
def test_cuda_request_without_cuda_is_a_clear_error(capsys):
    assert main(["bench", "--no-save", "--device", "cuda"]) == 2
    assert "CUDA is not available" in capsys.readouterr().err


def test_kan_item_flops_count_the_executed_gemms_not_per_edge_spline_evaluations():
    """Efficiency is executed FLOPs per second: a KAN layer computes its B-spline bases once per input and then one
    GEMM over (n_basis + 1) features per input (base + spline arms), so the item's forward FLOPs per token are those
    GEMMs plus small per-input work - not Yu et al.'s count of a spline evaluation on every edge."""
    from mamba_kan.bench.items import build_item

    d, hidden, tokens = 32, 8, 64
    item = build_item(
        {"kind": "ffn", "ffn": "kan", "d_model": d, "hidden": hidden, "tokens": tokens}, torch.device("cpu")
    )
    n_basis = 5 + 3  # grid_size + spline_order
    gemm = sum(2 * d_in * (n_basis + 1) * d_out for d_in, d_out in ((d, hidden), (hidden, d)))
    per_token = item.flops / 3 / tokens
    assert gemm <= per_token <= 1.5 * gemm


def test_reference_step_runs_the_frozen_earlier_pieces_and_trains_the_same_model():
    """The reference step differs from the training step only in the frozen pieces (SDPA attention, the PyTorch
    scan and conv, boolean-mask loss, torch's default CPU AdamW, NaN fill): same model, same batch, outputs and
    losses equal to float32 rounding."""
    from mamba_kan.bench import reference_step as ref
    from mamba_kan.modules.attention import CausalSelfAttention
    from mamba_kan.modules.mamba import Mamba

    spec = {"kind": "model", "variant": "kan_transformer", "task": "language", "task_options": {"context": 16},
            "batch_size": 4, "model_cfg": {"d_model": 16, "n_layers": 1, "n_heads": 2, "ref_hidden": 64}}  # fmt: skip
    items = [build_item({**spec, "reference": r}, torch.device("cpu")) for r in (False, True)]
    assert [it.group for it in items] == ["train step", "reference step"] and items[0].params == items[
        1
    ].params
    models = [next(c.cell_contents for c in it.step.__closure__ if isinstance(c.cell_contents, torch.nn.Module))
              for it in items]  # fmt: skip
    attn = [m for m in models[1].modules() if isinstance(m, CausalSelfAttention)]
    assert attn and all(m.forward.__func__ is ref._reference_attention_forward for m in attn)
    models[1].load_state_dict(models[0].state_dict())
    x = torch.randint(0, 256, (2, 16))
    torch.testing.assert_close(models[1](x), models[0](x), atol=2e-5, rtol=1e-5)  # SDPA vs the fused kernel
    mamba_items = [build_item({**spec, "variant": "mlp_mamba", "reference": r}, torch.device("cpu"))
                   for r in (False, True)]  # fmt: skip
    mambas = [next(c.cell_contents for c in it.step.__closure__ if isinstance(c.cell_contents, torch.nn.Module))
              for it in mamba_items]  # fmt: skip
    layers = [m for m in mambas[1].modules() if isinstance(m, Mamba)]
    assert layers and all(not m.fused_scan and not m.fused_conv for m in layers)
    mambas[1].load_state_dict(mambas[0].state_dict())
    torch.testing.assert_close(
        mambas[1](x), mambas[0](x), atol=2e-5, rtol=1e-5
    )  # PyTorch vs fused scan + conv
    opts = [next(c.cell_contents for c in it.step.__closure__ if isinstance(c.cell_contents, torch.optim.Optimizer))
            for it in items]  # fmt: skip
    assert opts[0].defaults["fused"] and not opts[1].defaults["fused"] and not opts[1].defaults["foreach"]
    from mamba_kan.tasks import make_task

    task = make_task("language", seed=0, context=16)
    batch = task.train_batch(0, 3)
    assert batch.mask is not None and not batch.mask.all()
    out = models[0](batch.inputs)
    torch.testing.assert_close(ref.reference_loss(task)(out, batch), task.loss(out, batch))
    fills = []
    with ref.reference_settings():
        fills.append(torch.utils.deterministic.fill_uninitialized_memory)
    assert fills == [True]
    for it in items:
        it.step()  # both run a full step (optimizer included) without error
