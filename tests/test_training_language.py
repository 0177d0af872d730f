"""End to end on the embedded language task: a small Transformer and a small Mamba trained by the loop get well
below the unigram entropy of the data (what a context-free model can reach), and the record carries the entropy
floor beside the result. Scaled down for CI (first-order source, context 32, 150 steps); the full-size check is
`mamba-kan train --task language --model {mlp_transformer,mlp_mamba}` with the default budget."""

from __future__ import annotations

import math
from collections import Counter

import pytest

from mamba_kan.tasks import make_task
from mamba_kan.training import TrainConfig, run_experiment

OPTIONS = {"context": 32, "order": 1, "eval_sequences": 8}


def unigram_entropy(task) -> float:
    """Plug-in entropy (nats) of the byte frequencies of the test targets, counted where the loss counts."""
    counts: Counter[int] = Counter()
    for batch in task.eval_batches("test", 8):
        targets = batch.targets if batch.mask is None else batch.targets[batch.mask]
        counts.update(targets.reshape(-1).tolist())
    n = sum(counts.values())
    return -sum(c / n * math.log(c / n) for c in counts.values())


@pytest.mark.slow
@pytest.mark.timeout(240)
@pytest.mark.parametrize("model", ["mlp_transformer", "mlp_mamba"])
def test_small_models_get_well_below_the_unigram_entropy(model):
    h1 = unigram_entropy(make_task("language", seed=0, **OPTIONS))
    cfg = TrainConfig(
        model=model,
        task="language",
        task_options=OPTIONS,
        model_cfg={"d_model": 32, "n_layers": 1, "n_heads": 2},
        max_steps=150,
        threads=1,
    )
    r = run_experiment(cfg)
    assert r["status"] == "completed" and r["primary_metric"] == "loss"
    floor = r["floor"]
    assert floor is not None and floor < h1
    assert r["metrics"]["floor"] == floor  # shown beside the result
    assert r["primary_value"] >= floor - 0.05  # nothing beats the entropy rate (up to sampling noise)
    assert r["primary_value"] < h1 - 0.5, (r["primary_value"], h1, floor)
