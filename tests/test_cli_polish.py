"""The command line's polish: help answers without importing torch/pandas/matplotlib, every flag has help and the
value sets come from one torch-free definition, shell completion sees every subcommand's flags, tables piped to a
file are plain and uncut, the recorded sweep command, and per-cell step progress reaching the compare display.

What is slow to import is checked in child processes (this process has torch loaded by conftest).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

import mamba_kan
from mamba_kan import choices
from mamba_kan.cli import SUBCOMMANDS, build_parser, main
from mamba_kan.experiments import worker
from mamba_kan.experiments.backends import LocalBackend
from mamba_kan.experiments.grid import TaskSpec, expand_grid
from mamba_kan.experiments.runner import StepRate, run_sweep
from mamba_kan.experiments.worker import execute_cell

SRC = str(Path(mamba_kan.__file__).resolve().parents[1])
HEAVY = ("torch", "pandas", "matplotlib", "scipy", "statsmodels", "plotly")
TINY = {"max_steps": 40, "batch_size": 8, "eval_every": 30, "eval_batch_size": 32, "log_every": 2,
        "model_cfg": {"d_model": 16, "n_layers": 1, "n_heads": 2}}  # fmt: skip
TASK = TaskSpec("symbolic/exp_sin", {"n_train": 32, "n_val": 16, "n_test": 16})


def _child(code: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([SRC, os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)


# --- lazy imports --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("argv", [[], *([name] for name in SUBCOMMANDS)], ids=lambda a: " ".join(a) or "top")
def test_help_imports_no_heavy_package(argv):
    code = (
        "import contextlib, io, json, sys\n"
        "from mamba_kan.cli import main\n"
        "with contextlib.redirect_stdout(io.StringIO()) as out:\n"
        "    try:\n"
        f"        code = main({[*argv, '--help']!r})\n"
        "    except SystemExit as exc:\n"
        "        code = exc.code\n"
        f"heavy = [m for m in {HEAVY!r} if m in sys.modules]\n"
        "cli = sorted(m for m in sys.modules if m.startswith('mamba_kan.cli.') and m != 'mamba_kan.cli.common')\n"
        "print(json.dumps({'code': code, 'heavy': heavy, 'cli': cli, 'help': out.getvalue()}))\n"
    )
    proc = _child(code)
    assert proc.returncode == 0, proc.stderr
    got = json.loads(proc.stdout)
    assert got["code"] == 0 and got["help"].startswith("usage: mamba-kan")
    assert got["heavy"] == []
    # only the named subcommand's module was imported
    assert got["cli"] == ([f"mamba_kan.cli.{argv[0]}"] if argv else [])


def test_help_wall_time_is_small():
    """Lenient (loaded CI machines): the target is < 1 s; without torch/pandas it takes ~0.2 s on an idle core."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([SRC, os.environ.get("PYTHONPATH", "")])}
    walls = []
    for argv in ([], ["compare"], ["models"]):
        t0 = time.perf_counter()
        proc = subprocess.run(
            [sys.executable, "-m", "mamba_kan", *argv, "--help"], capture_output=True, env=env, timeout=120
        )
        walls.append(time.perf_counter() - t0)
        assert proc.returncode == 0
    print(f"--help wall times: {', '.join(f'{w:.2f} s' for w in walls)}")
    assert max(walls) < 5.0


# --- help texts, defaults, choices ---------------------------------------------------------------------------
def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def test_every_optional_flag_of_every_subcommand_has_help():
    parser = build_parser(full=True)
    subs = _subparsers(parser)
    assert set(subs) == set(SUBCOMMANDS)
    missing = [
        f"{name} {'/'.join(a.option_strings) or a.dest}"
        for name, p in [("mamba-kan", parser), *subs.items()]
        for a in p._actions
        if not isinstance(a, argparse._SubParsersAction) and not (a.help or "").strip()
    ]
    assert missing == []
    assert all(isinstance(p.formatter_class, type) for p in subs.values())


def _action(parser: argparse.ArgumentParser, flag: str) -> argparse.Action:
    return next(a for a in parser._actions if flag in a.option_strings)


def test_value_sets_are_choices_from_one_definition():
    from mamba_kan.bench import runner as bench_runner
    from mamba_kan.bench import suites
    from mamba_kan.experiments import backends, export
    from mamba_kan.reporting import figures
    from mamba_kan.training import config

    # the code acting on a value uses the very tuple the command line offers
    assert config.DEVICES is choices.DEVICES and config.PRECISIONS is choices.PRECISIONS
    assert bench_runner.DEVICES is choices.BENCH_DEVICES and bench_runner.PRECISIONS is choices.PRECISIONS
    assert suites.SUITES is choices.BENCH_SUITES and backends.BACKENDS is choices.BACKENDS
    assert export.FORMATS is choices.EXPORT_FORMATS and figures.FORMATS is choices.FIGURE_FORMATS
    subs = _subparsers(build_parser(full=True))
    assert tuple(_action(subs["train"], "--device").choices) == ("auto", "cpu", "cuda")
    assert tuple(_action(subs["train"], "--precision").choices) == ("auto", "fp32", "bf16")
    assert tuple(_action(subs["compare"], "--backend").choices) == ("local", "ray", "slurm")
    assert tuple(_action(subs["bench"], "--device").choices) == ("cpu", "cuda")
    assert tuple(_action(subs["bench"], "--suite").choices) == ("ffn", "mixer", "model", "all")
    assert tuple(_action(subs["export"], "--format").choices) == ("csv", "parquet", "json")
    assert tuple(_action(subs["analyze"], "--scale").choices) == ("auto", "raw", "log")
    assert tuple(_action(subs["analyze"], "--interval").choices) == ("t", "bca")
    from mamba_kan.experiments.presets import PRESETS

    assert tuple(_action(subs["compare"], "--preset").choices) == tuple(PRESETS)


def test_help_shows_defaults_once(capsys):
    assert main(["compare", "--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())  # undo argparse's line wrapping
    assert "(default: results)" in text and "(default: local)" in text and "(default: 64)" in text
    assert text.count("(default: slurm)") == 1
    assert "(default: None)" not in text and "(default: False)" not in text and "(default: [])" not in text
    assert main(["analyze", "--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "(default: 0.05)" in text and "(default: 9999)" in text and "(default 0.05)" not in text


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["train", "--device", "tpu"], "unknown device 'tpu'; valid choices: auto, cpu, cuda"),
        (["train", "--precision", "fp8"], "unknown precision 'fp8'; valid choices: auto, fp32, bf16"),
        (["compare", "--backend", "pbs"], "unknown backend 'pbs'; valid choices: local, ray, slurm"),
        (["export", "DIR", "--format", "xlsx"], "unknown format 'xlsx'; valid choices: csv, parquet, json"),
        (["frobnicate"], "unknown command 'frobnicate'; valid choices: models, tasks"),
        (["completion", "fish"], "unknown shell 'fish'"),
    ],
)
def test_value_outside_choices_is_one_line_exit_2(argv, message, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1


# --- shell completion ----------------------------------------------------------------------------------------
def test_completion_scripts_cover_every_subcommand_and_flag(capsys):
    pytest.importorskip("shtab")
    subs = _subparsers(build_parser(full=True))
    for shell in choices.COMPLETION_SHELLS:
        assert main(["completion", shell]) == 0
        script = capsys.readouterr().out
        for name, p in subs.items():
            assert name in script
            for a in p._actions:
                for flag in a.option_strings:  # tcsh's script lists the long flags without their dashes
                    assert (flag if shell != "tcsh" else flag.lstrip("-")) in script, (shell, name, flag)


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_bash_completion_completes_subcommands_flags_and_choices(tmp_path, capsys):
    pytest.importorskip("shtab")
    assert main(["completion", "bash"]) == 0
    script = tmp_path / "mamba-kan.bash"
    script.write_text(capsys.readouterr().out)

    def complete(*words: str) -> list[str]:
        line = " ".join(words)
        cmd = (
            f"source {script}; COMP_WORDS=({' '.join(repr(w) for w in words)}); COMP_CWORD={len(words) - 1}; "
            f"COMP_LINE={line!r}; COMP_POINT=${{#COMP_LINE}}; _shtab_mamba_kan; printf '%s\\n' \"${{COMPREPLY[@]}}\""
        )
        return subprocess.run(["bash", "-c", cmd], capture_output=True, text=True, timeout=60).stdout.split()

    assert set(complete("mamba-kan", "co")) == {"compare", "collect", "completion"}
    assert complete("mamba-kan", "compare", "--slurm-arr") == ["--slurm-array-parallelism"]
    assert complete("mamba-kan", "compare", "--backend", "") == ["local", "ray", "slurm"]
    assert complete("mamba-kan", "train", "--precision", "b") == ["bf16"]


# --- plain tables when not on a terminal ---------------------------------------------------------------------
def test_table_piped_to_a_file_is_plain_and_uncut(tmp_path):
    long_cell = "x" * 150 + "-" + "y" * 49  # 200 characters
    code = (
        "from mamba_kan.cli.common import print_table\n"
        "print_table('title', ['name', 'params', 'note'], [\n"
        f"    {{'name': 'mlp_transformer', 'params': 123456, 'note': {long_cell!r}}},\n"
        "    {'name': 'kan_mamba', 'params': 7, 'note': 'short'},\n"
        "])\n"
    )
    out_file = tmp_path / "table.txt"
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([SRC, os.environ.get("PYTHONPATH", "")]),
        "COLUMNS": "80",
    }
    with open(out_file, "w") as f:
        subprocess.run([sys.executable, "-c", code], stdout=f, check=True, env=env, timeout=60)
    lines = out_file.read_text().splitlines()
    assert lines[0] == "title"
    assert lines[1].split() == ["name", "params", "note"] and set(lines[2].replace(" ", "")) == {"-"}
    assert lines[3].split() == ["mlp_transformer", "123,456", long_cell]
    assert lines[4].split() == ["kan_mamba", "7", "short"]
    # numbers right-aligned in their column; nothing from the box-drawing block
    assert lines[3].index("123,456") + len("123,456") == lines[4].index(" 7") + 2
    assert not any("\u2500" <= ch <= "\u257f" for ch in out_file.read_text())


# --- the recorded command and step progress ------------------------------------------------------------------
def test_recorded_sweep_command_names_compare_once(tmp_path, monkeypatch):
    """The command compare hands the sweep (stored in the sweeps table) is the one typed, whether through
    ``mamba-kan`` (whose argv starts with the subcommand) or through a script that calls ``main``."""
    from mamba_kan.experiments import runner

    seen: list[str] = []

    def fake_sweep(cells, out, options, observer):  # records what compare would store; trains nothing
        seen.append(options.command)
        return runner.SweepSummary(Path(out) / "results.db", Path(out), len(cells), 0, 0)

    monkeypatch.setattr(runner, "run_sweep", fake_sweep)
    argv = ["compare", "--models", "mlp_transformer", "--tasks", "symbolic/exp_sin", "--seeds", "1",
            "--output-dir", str(tmp_path / "out")]  # fmt: skip
    assert main(argv) == 0
    monkeypatch.setattr(sys, "argv", ["mamba-kan", *argv])
    assert main() == 0
    assert seen == [" ".join(["mamba-kan", *argv])] * 2


def test_step_rate_eta_against_hand_computation():
    rate = StepRate({"a": 100, "b": 50})
    assert math.isnan(rate.eta_s(0.0))
    rate.report("a", 0, True, now=10.0)
    assert math.isnan(rate.eta_s(10.0))  # one report measures no rate
    rate.report("a", 20, False, now=12.0)
    # 20 steps in 2 s = 10 steps/s; left: 80 of a + 50 of b
    assert rate.eta_s(12.0) == pytest.approx(130 / 10)
    rate.report("b", 30, True, now=12.0)  # b resumes at its checkpoint's step 30: not trained here
    assert rate.done_steps == 20 and rate.steps_left() == 80 + 20
    rate.report("b", 40, False, now=14.0)  # 30 steps in 4 s
    assert rate.eta_s(14.0) == pytest.approx((80 + 10) / (30 / 4))
    rate.finish("a")  # e.g. stopped early at step 20: nothing left of it
    assert rate.steps_left() == 10


def report_often(job):
    """The real cell, with every step event passed on (the default throttle would let few through a short run)."""
    worker.PROGRESS_INTERVAL_S = 0.0
    return execute_cell(job)


class RecordingObserver:
    def __init__(self) -> None:
        self.steps: dict[str, list[int]] = {}
        self.etas: list[float] = []
        self.finished: list[str] = []

    def sweep_started(self, total, skipped, to_run, backend) -> None:
        pass

    def cell_progress(self, cell, step, progress) -> None:
        assert cell.run_id not in self.finished
        self.steps.setdefault(cell.run_id, []).append(step)
        self.etas.append(progress.eta_s)

    def cell_finished(self, cell, result, progress) -> None:
        self.finished.append(cell.run_id)


def test_running_cells_report_increasing_steps_to_the_observer(tmp_path):
    cells = expand_grid(["mlp_transformer"], [TASK], [0], TINY)
    observer = RecordingObserver()
    backend = LocalBackend(workers=1, threads=1, cell_fn=report_often)
    summary = run_sweep(cells, tmp_path, observer=observer, backend=backend)
    assert summary.counts == {"completed": 1}
    (steps,) = observer.steps.values()
    assert steps[0] == 0 and steps[-1] == TINY["max_steps"]  # the start, then each log point (every 2 steps)
    assert len(steps) > 5 and all(a < b for a, b in zip(steps, steps[1:]))
    # an ETA is known while the first (and only) cell is still running
    assert any(math.isfinite(e) for e in observer.etas)
