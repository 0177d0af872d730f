"""Plug-ins (mamba_kan.plugins, docs/plugins.md): the example package's SwiGLU FFN and ``sine`` family loaded through
``--plugin``, through ``MAMBA_KAN_PLUGINS`` and through a real entry point; cell keys of built-in cells unchanged by
a plug-in, plug-in cells keyed on the plug-in's source; bad plug-ins as one-line errors.

Everything that loads the example runs in a subprocess, so this process's registries stay the built-in ones; the
in-process tests register throwaway components and restore the registries afterwards.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
import tomllib
import torch
from torch import nn

from mamba_kan import plugins
from mamba_kan.errors import UserError

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "examples" / "plugin_example"
TINY = [
    a
    for kv in ("model_cfg.d_model=32", "model_cfg.n_layers=1", "batch_size=8", "threads=1")
    for a in ("--set", kv)
]
VERSION = (
    "pinned-for-test"  # the code version is the same in every process of this test; pinned to be explicit
)

# Cell keys of one built-in and one plug-in grid, printed as JSON (run in a subprocess where plug-ins are found by
# an entry point or MAMBA_KAN_PLUGINS: nothing here loads them explicitly).
KEYS_SCRIPT = f"""
import json
from mamba_kan.experiments.grid import TaskSpec, expand_grid
from mamba_kan.models.registry import parse_variant
builtin = expand_grid(["mlp_transformer", "kan_mamba"], [TaskSpec("symbolic/xy")], [0], {{"max_steps": 3, "threads": 1}},
                      version={VERSION!r})
plugged = expand_grid(["glu_transformer", "mlp_mamba"], [TaskSpec("sine/sin2d")], [0], {{"max_steps": 3, "threads": 1}},
                      version={VERSION!r})
print(json.dumps({{"builtin": [c.cell_key for c in builtin], "plugged": [c.cell_key for c in plugged],
                  "glu_mamba": parse_variant("glu_mamba")}}))
"""


def _env(*paths: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in (plugins.PLUGINS_ENV, "MAMBA_KAN_CODE_VERSION")}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO / "src"), *map(str, paths)])
    env.update(OMP_NUM_THREADS="1", **extra)
    return env


def _run(args: list[str], env: dict[str, str], timeout: int = 240) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout
    )


def _keys(env: dict[str, str]) -> dict:
    proc = _run(["-c", KEYS_SCRIPT], env)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _install_by_hand(site: Path) -> None:
    """The example installed into ``site`` as pip would: the package plus a dist-info whose entry points are the
    ones its pyproject declares (real metadata, found by importlib.metadata on sys.path)."""
    project = tomllib.loads((EXAMPLE / "pyproject.toml").read_text())["project"]
    shutil.copytree(EXAMPLE / "plugin_example", site / "plugin_example")
    dist = site / f"{project['name'].replace('-', '_')}-{project['version']}.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text(
        f"Metadata-Version: 2.1\nName: {project['name']}\nVersion: {project['version']}\n"
    )
    group = project["entry-points"][plugins.ENTRY_POINT_GROUP]
    (dist / "entry_points.txt").write_text(
        f"[{plugins.ENTRY_POINT_GROUP}]\n" + "".join(f"{k} = {v}\n" for k, v in group.items())
    )


# --- through --plugin: train, compare (spawned workers), analyze -------------------------------------------------
@pytest.mark.timeout(300)
def test_plugin_flag_trains_the_example_ffn_on_the_example_task(tmp_path):
    proc = _run(
        ["-m", "mamba_kan", "--plugin", "plugin_example", "train", "--model", "glu_transformer", "--task",
         "sine/sin2d", "--max-steps", "3", "--json", "--output-dir", str(tmp_path / "t"), *TINY],
        _env(EXAMPLE),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    run = json.loads(proc.stdout.strip().splitlines()[-1])
    assert run["status"] == "completed" and run["steps"] == 3
    assert (run["model"], run["ffn"], run["mixer"], run["task"]) == ("glu_transformer", "glu", "transformer",
                                                                     "sine/sin2d")  # fmt: skip
    # parameter-matched to mlp_transformer's FFN at d_model 32, ref width 128: MLP 2*32*128 + 128 + 32 = 8352
    # parameters; SwiGLU 3*32*h + 2h + 32 = 98h + 32 -> h = 84.9, rounded to 85 (88 would miss by 3.4%)
    assert run["ffn_hidden"] == 85
    assert run["metrics"]["floor"] == 0.0 and run["metrics"]["baseline_constant"] > 0


@pytest.mark.slow
@pytest.mark.timeout(400)
def test_plugin_flag_compare_runs_plugin_cells_in_worker_processes_and_analyze_reads_them(tmp_path, capsys):
    out = tmp_path / "cmp"
    proc = _run(
        ["-m", "mamba_kan", "--plugin", "plugin_example", "compare", "--models", "mlp_transformer",
         "kan_transformer", "glu_transformer", "--tasks", "sine", "--seeds", "2", "--max-steps", "3", "--workers", "1",
         "--output-dir", str(out), *TINY],
        _env(EXAMPLE),
        timeout=380,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    with sqlite3.connect(out / "results.db") as db:
        rows = sorted(db.execute("SELECT model, seed, status FROM runs").fetchall())
    assert rows == [(m, s, "completed") for m in ("glu_transformer", "kan_transformer", "mlp_transformer")
                    for s in (0, 1)]  # fmt: skip
    # analysis needs no plug-in: the plug-in variant is one more model, outside the ffn x mixer design
    from mamba_kan.cli import main

    assert main(["analyze", str(out)]) == 0
    text = capsys.readouterr().out
    assert "not in the ffn x mixer design (name does not parse): glu_transformer" in text
    assert "kan_transformer vs glu_transformer" in text  # pairwise tests include it
    assert "K kan vs mlp (kan - mlp), transformer" in text  # the contrasts stay on the built-in levels


# --- through an entry point and MAMBA_KAN_PLUGINS: cell keys -----------------------------------------------------
@pytest.mark.timeout(300)
def test_entry_point_loads_the_example_and_keys_follow_the_plugin_source(tmp_path):
    from mamba_kan.experiments.grid import TaskSpec, expand_grid

    site = tmp_path / "site"
    _install_by_hand(site)
    installed = _keys(_env(site))
    assert installed["glu_mamba"] == [
        "glu",
        "mamba",
    ]  # the entry point was loaded on first use of the registry

    # built-in cells: the same keys as in this process, which has no plug-in
    here = expand_grid(["mlp_transformer", "kan_mamba"], [TaskSpec("symbolic/xy")], [0], {"max_steps": 3, "threads": 1},
                       version=VERSION)  # fmt: skip
    assert installed["builtin"] == [c.cell_key for c in here]

    # the same source elsewhere, named in MAMBA_KAN_PLUGINS: the same keys (the digest is of contents, not paths)
    copy = tmp_path / "copy"
    shutil.copytree(EXAMPLE / "plugin_example", copy / "plugin_example")
    env = _env(copy, **{plugins.PLUGINS_ENV: "plugin_example"})
    assert _keys(env) == installed

    # an edit to the plug-in's source changes the keys of the cells that use it, and of no others
    glu = copy / "plugin_example" / "glu.py"
    glu.write_text(glu.read_text() + "\n# edited\n")
    edited = _keys(env)
    assert edited["builtin"] == installed["builtin"]
    assert all(a != b for a, b in zip(edited["plugged"], installed["plugged"]))


# --- bad plug-ins ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("source", [None, "raise RuntimeError('boom\\nsecond line')\n"])
def test_a_plugin_that_fails_to_import_is_one_line_and_exit_2(tmp_path, monkeypatch, capsys, source):
    from mamba_kan.cli import main

    name = "no_such_plugin_module" if source is None else "broken_plugin_for_test"
    if source is not None:
        (tmp_path / f"{name}.py").write_text(source)
        monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delenv(plugins.PLUGINS_ENV, raising=False)
    assert main(["--plugin", name, "tasks"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and name in err[0] and "error" in err[0]
    if source is not None:
        assert "RuntimeError: boom" in err[0]
    assert plugins.PLUGINS_ENV not in os.environ  # nothing exported for a plug-in that did not load


# --- registration contracts, in this process (registries restored afterwards) -----------------------------------
@pytest.fixture
def registries():
    from mamba_kan.tasks.registry import FAMILIES

    saved = (dict(plugins.FFNS), dict(plugins.MIXERS), dict(plugins.FAMILY_SOURCES), dict(FAMILIES))
    yield
    for live, old in zip((plugins.FFNS, plugins.MIXERS, plugins.FAMILY_SOURCES, FAMILIES), saved):
        live.clear()
        live.update(old)


class _Scaled(nn.Module):
    """A minimal block: one Linear d -> d per ``width`` units (``width`` copies summed)."""

    def __init__(self, d: int, widths: int) -> None:
        super().__init__()
        self.layers = nn.ModuleList(nn.Linear(d, d) for _ in range(widths))

    def forward(self, x):
        return sum(layer(x) for layer in self.layers)

    def scale_residual_(self, factor: float) -> None:
        with torch.no_grad():
            for layer in self.layers:
                layer.weight.mul_(factor)

    def flops_per_token(self, flop_count: str = "yu2024") -> int:
        return sum(2 * layer.weight.numel() for layer in self.layers)


def test_names_are_checked_and_built_ins_cannot_be_replaced(registries):
    for bad in ("my_ffn", "MLP", "2x", ""):
        with pytest.raises(UserError, match="lower-case"):
            plugins.register_ffn(bad, lambda d, h, cfg: None)
    with pytest.raises(UserError, match="built-in"):
        plugins.register_ffn("kan", lambda d, h, cfg: None)
    with pytest.raises(UserError, match="built-in"):
        plugins.register_mixer("ffn", lambda cfg: None)
    from mamba_kan.tasks.registry import FAMILIES

    with pytest.raises(UserError, match="built-in family"):
        plugins.register_family(FAMILIES["symbolic"])


def test_the_matcher_refuses_plugin_ffns_it_cannot_solve(registries):
    from mamba_kan.io_spec import ContinuousInput, RegressionOutput
    from mamba_kan.models import ModelConfig, solve_ffn_hidden

    ends = (ContinuousInput(2), RegressionOutput(1))
    cfg = ModelConfig(d_model=16, n_layers=1)
    plugins.register_ffn("square", lambda d, h, cfg: _Scaled(d, h * h))  # h^2 Linear layers: not affine
    plugins.register_ffn("fixed", lambda d, h, cfg: _Scaled(d, 3))  # ignores h
    plugins.register_ffn("linear", lambda d, h, cfg: _Scaled(d, h))  # (d^2 + d) h: affine, slope d^2 + d
    with pytest.raises(UserError, match="not affine"):
        solve_ffn_hidden("square_transformer", cfg, *ends)
    with pytest.raises(UserError, match="do not grow"):
        solve_ffn_hidden("fixed_transformer", cfg, *ends)
    # MLP reference at width 4 d = 64: 2*16*64 + 64 + 16 = 2128 parameters; the block has (16^2 + 16) h = 272 h
    r = solve_ffn_hidden("linear_transformer", cfg, *ends)
    assert r.ffn_hidden == round(2128 / 272) and r.reference == "mlp_transformer"


class _CumMean(nn.Module):
    """A causal mixer: position t gets out_proj(mean of x_0..x_t) * gain, ``gain`` with its own declared role."""

    def __init__(self, d: int) -> None:
        super().__init__()
        self.gain = nn.Parameter(torch.ones(d))
        self.out_proj = nn.Linear(d, d)

    def forward(self, x):
        steps = torch.arange(1, x.shape[1] + 1, dtype=x.dtype).view(1, -1, 1)
        return self.out_proj(x.cumsum(1) / steps) * self.gain

    def parameter_role(self, name: str):
        return "norm" if name == "gain" else None

    def scale_residual_(self, factor: float) -> None:
        with torch.no_grad():
            self.out_proj.weight.mul_(factor)

    def flops_per_token(self, seq_len: int) -> int:
        return 2 * self.out_proj.weight.numel() + 3 * self.gain.numel()


def test_a_plugin_mixer_makes_variants_with_every_ffn(registries):
    from mamba_kan.io_spec import NextTokenOutput, TokenInput
    from mamba_kan.models import ModelConfig, build_model
    from mamba_kan.models.registry import all_variants, parse_variant

    plugins.register_mixer("cummean", lambda cfg: _CumMean(cfg.d_model))
    assert {"mlp_cummean", "bspline_cummean", "kan_cummean"} <= set(all_variants())
    assert parse_variant("kan_cummean") == ("kan", "cummean")
    cfg = ModelConfig(d_model=16, n_layers=2)
    model = build_model("bspline_cummean", cfg, TokenInput(11), NextTokenOutput(11), seq_len=8).eval()
    assert model.parameter_roles()["blocks.0.mixer.gain"] == "norm"
    x = torch.randint(0, 11, (2, 8))
    y = x.clone()
    y[:, 5] = (y[:, 5] + 1) % 11
    out_x, out_y = model(x), model(y)
    assert out_x.shape == (2, 8, 11)
    assert torch.equal(out_x[:, :5], out_y[:, :5]) and not torch.equal(out_x[:, 5:], out_y[:, 5:])  # causal
    # the plug-in cell's key carries the mixer's source (this test file); a built-in cell's does not
    assert plugins.cell_source_hash("mlp_cummean", "symbolic") is not None
    assert plugins.cell_source_hash("mlp_mamba", "symbolic") is None


def test_a_cells_job_carries_the_drivers_plugins_and_a_worker_that_cannot_load_them_fails_the_cell(
    tmp_path, monkeypatch
):
    from mamba_kan.experiments.worker import CellJob, execute_cell

    monkeypatch.setenv(plugins.PLUGINS_ENV, "no_such_plugin_module_a, no_such_plugin_module_b")
    config = {"model": "glu_transformer", "task": "sine", "seed": 0, "max_steps": 1}
    job = CellJob("key", "run", config, str(tmp_path / "run"))
    assert job.plugins == ("no_such_plugin_module_a", "no_such_plugin_module_b")
    monkeypatch.delenv(plugins.PLUGINS_ENV)  # a host that did not inherit the driver's environment
    result = execute_cell(job)
    assert result["status"] == "failed"
    assert "plug-in no_such_plugin_module_a cannot be imported" in result["error"]
