"""The task interface across all five families: registration, seeding contract, errors."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from torch import nn

from mamba_kan.errors import UserError
from mamba_kan.io_spec import ContinuousInput, ForecastOutput, NextTokenOutput, RegressionOutput, TokenInput
from mamba_kan.tasks import FAMILIES, Batch, Task, make_task, parse_task_name
from mamba_kan.tasks.common import EVAL_CHUNK, as_int_list, make_rng, rebatch

# small, fast options per family (the quick-preset scale)
SMALL: dict[str, dict] = {
    "symbolic": {"n_train": 64, "n_val": 32, "n_test": 40},
    "special_functions": {"n_train": 64, "n_val": 32, "n_test": 40},
    "timeseries": {"context": 32, "horizon": 8, "series_length": 600, "eval_windows": 20},
    "language": {"context": 32, "eval_sequences": 20},
    "long_context": {"seq_len": 64, "vocab_size": 128, "n_pairs": 4, "n_val": 20, "n_test": 20},
}
FAMILY_NAMES = ("symbolic", "special_functions", "timeseries", "language", "long_context")


def small(name: str, seed: int = 0, **extra) -> Task:
    return make_task(name, seed, **{**SMALL[name.partition("/")[0]], **extra})


def same_batch(a: Batch, b: Batch) -> bool:
    same = torch.equal(a.inputs, b.inputs) and torch.equal(a.targets, b.targets)
    same = same and ((a.mask is None and b.mask is None) or torch.equal(a.mask, b.mask))
    return (
        same
        and a.extra.keys() == b.extra.keys()
        and all(torch.equal(a.extra[k], b.extra[k]) for k in a.extra)
    )


def concat_eval(task: Task, split: str, batch_size: int) -> Batch:
    batches = list(task.eval_batches(split, batch_size))
    assert all(b.size <= batch_size for b in batches)
    return Batch(
        torch.cat([b.inputs for b in batches]),
        torch.cat([b.targets for b in batches]),
        None if batches[0].mask is None else torch.cat([b.mask for b in batches]),
        {k: torch.cat([b.extra[k] for b in batches]) for k in batches[0].extra},
    )


def test_all_five_families_are_registered_in_the_benchmark_order():
    assert tuple(FAMILIES) == FAMILY_NAMES
    for info in FAMILIES.values():
        assert info.default_config in info.configs
        assert info.primary_metric and info.primary_metric in info.metrics
        assert set(info.option_help) == set(info.options), info.name
        assert set(info.config_help) == set(info.configs), info.name


def test_parse_task_name_and_unknown_names_list_valid_choices():
    assert parse_task_name("symbolic") == ("symbolic", "exp_sin")
    assert parse_task_name("timeseries/co2") == ("timeseries", "co2")
    with pytest.raises(UserError, match="unknown task family 'nope'.*symbolic"):
        make_task("nope", 0)
    with pytest.raises(UserError, match="configuration of task 'symbolic'.*exp_sin"):
        make_task("symbolic/nope", 0)
    with pytest.raises(UserError, match="unknown option.*bogus.*valid:.*n_train"):
        make_task("symbolic", 0, bogus=1)


@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_declared_ends_and_primary_metric_match_the_family(family):
    task = small(family)
    assert task.primary_metric == FAMILIES[family].primary_metric
    assert task.higher_is_better == FAMILIES[family].higher_is_better
    batch = task.train_batch(0, 4)
    if isinstance(task.input_spec, TokenInput):
        assert batch.inputs.dtype == torch.int64 and batch.inputs.dim() == 2
        assert int(batch.inputs.max()) < task.input_spec.vocab_size and int(batch.inputs.min()) >= 0
    else:
        assert isinstance(task.input_spec, ContinuousInput)
        assert batch.inputs.dtype == torch.float32 and batch.inputs.shape[1] <= task.input_spec.max_len
    out = task.output_spec
    if isinstance(out, NextTokenOutput):
        assert batch.targets.shape == batch.inputs.shape and batch.targets.dtype == torch.int64
        assert int(batch.targets.max()) < out.vocab_size
    elif isinstance(out, RegressionOutput):
        assert batch.targets.shape == (4, out.out_dim)
    else:
        assert isinstance(out, ForecastOutput) and batch.targets.shape == (4, out.horizon)


@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_same_seed_gives_identical_data_and_different_seeds_differ(family):
    a, b, c = small(family, 3), small(family, 3), small(family, 4)
    for step in (0, 1, 7):
        assert same_batch(a.train_batch(step, 8), b.train_batch(step, 8))
    assert not same_batch(a.train_batch(0, 8), c.train_batch(0, 8))
    for split in ("val", "test"):
        assert same_batch(concat_eval(a, split, 8), concat_eval(b, split, 8))
    # every default configuration draws its data from the seed (real time series keep fixed splits: see there)
    assert not same_batch(concat_eval(a, "test", 8), concat_eval(c, "test", 8))


@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_batches_ignore_call_order_and_the_global_rng(family):
    """train_batch is a pure function of (seed, step, batch_size): resuming at step s needs no saved state, and a
    model's initialisation or dropout (which draw from the global RNGs) cannot change the data."""
    task = small(family, 1)
    forward = [task.train_batch(s, 6) for s in range(5)]
    torch.manual_seed(1234)
    np.random.seed(1234)  # noqa: NPY002 - deliberately disturbs the legacy global RNG
    fresh = small(family, 1)
    backward = {s: fresh.train_batch(s, 6) for s in reversed(range(5))}
    for s in range(5):
        assert same_batch(forward[s], backward[s])
    assert same_batch(concat_eval(task, "val", 5), concat_eval(fresh, "val", 5))


@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_evaluation_examples_do_not_depend_on_the_batch_size(family):
    task = small(family)
    whole = concat_eval(task, "test", 1000)
    for bs in (1, 3, EVAL_CHUNK + 1):
        assert same_batch(whole, concat_eval(task, "test", bs))


class _Probe(nn.Module):
    """A model that records the batches it is given and consumes the global RNG (like init and dropout do)."""

    def __init__(self, task: Task, kind: str) -> None:
        super().__init__()
        self.seen: list[torch.Tensor] = []
        out = task.output_spec
        self.token = isinstance(out, NextTokenOutput)
        if isinstance(out, NextTokenOutput):
            width = out.vocab_size
        elif isinstance(out, RegressionOutput):
            width = out.out_dim
        else:
            width = out.horizon
        if kind == "linear":
            self.layer: nn.Module = nn.Linear(1, width)
        else:
            self.layer = nn.Sequential(nn.Linear(1, 5), nn.Dropout(0.5), nn.Linear(5, width))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen.append(x.clone())
        h = x.float().unsqueeze(-1)
        y = self.layer(h)  # (B, L, out)
        return y if self.token else y.mean(dim=1)


@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_a_seed_gives_identical_batches_whichever_model_consumes_them(family):
    seen = []
    for kind in ("linear", "dropout"):
        torch.manual_seed(0 if kind == "linear" else 99)
        task = small(family, 5)
        model = _Probe(task, kind)
        opt = torch.optim.SGD(model.parameters(), lr=1e-3)
        for step in range(4):
            batch = task.train_batch(step, 4)
            loss = task.loss(model(batch.inputs), batch)
            opt.zero_grad()
            loss.backward()
            opt.step()
        metrics = task.evaluate(model, "val", 8)
        assert math.isfinite(metrics[task.primary_metric])
        seen.append(model.seen)
    assert len(seen[0]) == len(seen[1])
    assert all(torch.equal(x, y) for x, y in zip(seen[0], seen[1]))


@pytest.mark.parametrize(
    ("name", "options", "message"),
    [
        ("symbolic", {"n_train": 0}, "n_train must be positive"),
        ("special_functions", {"n_test": -3}, "n_test must be positive"),
        ("timeseries", {"context": 0}, "context must be positive"),
        ("timeseries", {"horizon": 0}, "horizon must be positive"),
        ("language", {"context": -1}, "context must be positive"),
        ("long_context", {"seq_len": 0}, "seq_len must be positive"),
        ("long_context", {"n_val": 0}, "n_val must be positive"),
        ("symbolic", {"n_train": "many"}, "n_train must be an integer"),
    ],
)
def test_non_positive_or_malformed_sizes_are_user_errors(name, options, message):
    with pytest.raises(UserError, match=message):
        make_task(name, 0, **options)


def test_bad_seed_step_and_batch_size_are_user_errors():
    with pytest.raises(UserError, match="seed"):
        make_task("symbolic", -1)
    task = small("symbolic")
    with pytest.raises(UserError, match="batch_size"):
        task.train_batch(0, 0)
    with pytest.raises(UserError, match="step"):
        task.train_batch(-1, 4)
    with pytest.raises(UserError, match="unknown split 'train'.*val, test"):
        list(task.eval_batches("train", 4))


def test_rng_streams_are_keyed_and_stable():
    a = make_rng(3, "x", 1).random(4)
    assert np.array_equal(a, make_rng(3, "x", 1).random(4))
    assert not np.array_equal(a, make_rng(3, "x", 2).random(4))
    assert not np.array_equal(a, make_rng(3, "y", 1).random(4))
    assert not np.array_equal(a, make_rng(4, "x", 1).random(4))


def test_rebatch_preserves_order_and_sizes():
    chunks = [Batch(torch.arange(s, s + n), torch.arange(s, s + n)) for s, n in ((0, 3), (3, 5), (8, 2))]
    out = list(rebatch(chunks, 4))
    assert [b.size for b in out] == [4, 4, 2]
    assert torch.equal(torch.cat([b.inputs for b in out]), torch.arange(10))


def test_int_list_option_parsing():
    assert as_int_list("eval_lengths", "512, 1024") == (512, 1024)
    assert as_int_list("eval_lengths", [4096]) == (4096,)
    assert as_int_list("eval_lengths", 8) == (8,)
    with pytest.raises(UserError, match="eval_lengths must be positive"):
        as_int_list("eval_lengths", [0])


@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_describe_is_json_ready_and_names_the_task(family):
    task = small(family, 7)
    info = json.loads(json.dumps(task.describe()))
    assert info["name"] == task.name and info["seed"] == 7
    assert task.name.startswith(family + "/") and task.tokens_per_sample >= 1


def test_masked_token_loss_is_the_mean_nll_over_the_scored_positions_only():
    """Reference: float64 -log softmax at the target, averaged over the masked-in positions by a plain loop; the
    unscored positions (whatever their target value) get no gradient."""
    from mamba_kan.tasks.base import default_loss

    g = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 9, 11, generator=g, requires_grad=True)
    targets = torch.randint(0, 11, (3, 9), generator=g)
    mask = torch.rand(3, 9, generator=g) > 0.4
    targets[~mask] = -1  # a padding value the unscored positions may carry
    loss = default_loss(
        NextTokenOutput(11), logits, Batch(torch.zeros(3, 9, dtype=torch.long), targets, mask)
    )
    logp = logits.detach().double().log_softmax(-1)
    terms = [-logp[b, t, targets[b, t]].item() for b in range(3) for t in range(9) if mask[b, t]]
    assert loss.item() == pytest.approx(sum(terms) / len(terms), rel=1e-6)
    loss.backward()
    assert torch.count_nonzero(logits.grad[~mask]) == 0
    assert torch.count_nonzero(logits.grad[mask]) == mask.sum() * 11
