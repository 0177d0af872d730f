"""Each of the six variants trains on every task family through the task interface alone (short runs)."""

from __future__ import annotations

import math

import pytest
import torch

from mamba_kan.tasks import make_task

models = pytest.importorskip("mamba_kan.models")

# tiny sizes: this file checks the plumbing (ends, shapes, loss, evaluate), not the science
TINY = {
    "symbolic/exp_sin": {"n_train": 64, "n_val": 16, "n_test": 16},
    "special_functions/jv": {"n_train": 64, "n_val": 16, "n_test": 16},
    "timeseries/lorenz": {"context": 24, "horizon": 6, "series_length": 400, "eval_windows": 16},
    "language/synthetic": {"context": 24, "eval_sequences": 8},
    "long_context/mqar": {"seq_len": 32, "vocab_size": 64, "n_pairs": 4, "n_val": 8, "n_test": 8},
}


def _model(variant: str, task):
    cfg = models.ModelConfig(d_model=16, n_layers=1, n_heads=2, d_state=4)
    seq = task.tokens_per_sample
    return models.build_model(variant, cfg, task.input_spec, task.output_spec, seq_len=seq)


@pytest.mark.parametrize("task_name", sorted(TINY))
@pytest.mark.parametrize("variant", models.VARIANTS if hasattr(models, "VARIANTS") else [])
def test_every_variant_trains_and_evaluates_on_every_family(variant, task_name):
    task = make_task(task_name, 0, **TINY[task_name])
    torch.manual_seed(0)
    model = _model(variant, task)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for step in range(3):
        batch = task.train_batch(step, 8)
        loss = task.loss(model(batch.inputs), batch)
        assert loss.dim() == 0 and torch.isfinite(loss)
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    metrics = task.evaluate(model, "val", 8)
    assert math.isfinite(metrics[task.primary_metric])


@pytest.mark.parametrize("task_name", sorted(TINY))
def test_a_short_run_lowers_the_validation_loss(task_name):
    """Thirty steps of the reference variant move every family's validation metric the right way."""
    task = make_task(task_name, 0, **TINY[task_name])
    torch.manual_seed(0)
    model = _model("mlp_transformer", task)
    metric = "loss" if task_name.startswith(("language", "long_context")) else "mse"
    before = task.evaluate(model.eval(), "val", 16)[metric]
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    for step in range(30):
        batch = task.train_batch(step, 16)
        loss = task.loss(model(batch.inputs), batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = task.evaluate(model.eval(), "val", 16)[metric]
    assert after < before
