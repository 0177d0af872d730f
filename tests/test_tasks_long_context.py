"""`long_context`: answers decoded independently from the inputs (MQAR, selective copying, induction heads),
answer-only loss/accuracy, length extrapolation, bounds checks and on-demand generation."""

from __future__ import annotations

import math
import time

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from mamba_kan.errors import UserError
from mamba_kan.tasks import make_task


def test_mqar_answers_are_the_values_bound_to_the_queried_keys():
    task = make_task("long_context/mqar", 0, seq_len=512, vocab_size=1024, n_pairs=16)
    V, k = 1024, 16
    for step in range(3):
        b = task.train_batch(step, 8)
        for x, y, m in zip(b.inputs.tolist(), b.targets.tolist(), b.mask.tolist()):
            keys, values = x[0 : 2 * k : 2], x[1 : 2 * k : 2]
            assert len(set(keys)) == k and len(set(values)) == k
            assert all(1 <= key < V // 2 for key in keys) and all(V // 2 <= v < V for v in values)
            bound = dict(zip(keys, values))
            answers = [t for t in range(len(x)) if m[t]]
            assert len(answers) == k and min(answers) >= 2 * k
            assert sorted(x[t] for t in answers) == sorted(keys)  # every key is queried once
            for t in answers:
                assert y[t] == bound[x[t]]


def test_mqar_query_offsets_follow_the_zoology_power_law():
    task = make_task("long_context/mqar", 0, seq_len=1024, vocab_size=2048, n_pairs=8)
    b = task.train_batch(0, 256)
    offsets = ((b.mask.nonzero()[:, 1] - 16) // 2).numpy()  # even slots after the 2k key-value tokens
    space = (1024 - 16) // 2
    # p(i) ~ i^-0.99 puts far more queries in the first tenth of the space than the uniform 10%
    assert np.mean(offsets < space // 10) > 0.3
    assert offsets.max() < space


def test_selective_copying_targets_are_the_data_tokens_in_order():
    task = make_task("long_context/selective_copying", 1, seq_len=256, n_tokens=16)
    b = task.train_batch(0, 16)
    for x, y, m in zip(b.inputs.tolist(), b.targets.tolist(), b.mask.tolist()):
        data = [tok for tok in x[: 256 - 16] if tok != 0]  # noise token 0
        assert len(data) == 16 and all(1 <= tok <= 14 for tok in data)
        assert x[256 - 16 :] == [15] * 16  # markers
        assert [y[t] for t in range(256) if m[t]] == data
        assert sum(m) == 16 and all(m[256 - 16 :])


def test_induction_heads_answer_is_the_token_after_the_first_trigger():
    task = make_task("long_context/induction_heads", 2, seq_len=128)
    b = task.train_batch(0, 32)
    for x, y, m in zip(b.inputs.tolist(), b.targets.tolist(), b.mask.tolist()):
        triggers = [t for t, tok in enumerate(x) if tok == 15]
        assert len(triggers) == 2 and triggers[1] == 127
        assert [t for t in range(128) if m[t]] == [127] and y[127] == x[triggers[0] + 1]


def test_loss_and_accuracy_count_answer_positions_only():
    task = make_task("long_context/mqar", 0, seq_len=128, vocab_size=256, n_pairs=8, n_test=32)
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(4, 128, 256, generator=gen)
    batch = task.train_batch(0, 4)
    ref = F.cross_entropy(logits[batch.mask], batch.targets[batch.mask])
    assert task.loss(logits, batch).item() == pytest.approx(ref.item(), rel=1e-6)

    correct = {}
    for b in task.eval_batches("test", 8):
        for row in range(b.size):
            correct[tuple(b.inputs[row].tolist())] = (b.targets[row], b.mask[row])

    def oracle(x):  # right at every answer position, confidently wrong everywhere else
        out = torch.full((*x.shape, 256), -10.0)
        for row in range(x.shape[0]):
            targets, mask = correct[tuple(x[row].tolist())]
            out[row, torch.arange(x.shape[1]), targets] = 10.0
            out[row, ~mask, (targets[~mask] + 1) % 256] = 20.0  # wrong off the answer positions
        return out

    metrics = task.evaluate(oracle, "test", 8)
    assert metrics["accuracy"] == 1.0 and metrics["gap_to_floor"] == 0.0 and metrics["loss"] < 1e-6


def _induction_oracle(x: torch.Tensor) -> torch.Tensor:
    """Perfect at any length: one-hot on the token after the first trigger, at the last position."""
    out = torch.zeros(*x.shape, 16)
    for row in range(x.shape[0]):
        first = int((x[row] == 15).nonzero()[0])
        out[row, -1, x[row, first + 1]] = 50.0
    return out


def test_induction_heads_is_evaluated_at_longer_lengths_on_the_test_split():
    task = make_task("long_context/induction_heads", 0, seq_len=64, n_test=16, n_extrapolation=8)
    assert task.eval_lengths == (128, 256, 512)  # 2x, 4x, 8x the training length by default
    seen_lengths = []

    def model(x):
        seen_lengths.append(x.shape[1])
        return _induction_oracle(x)

    metrics = task.evaluate(model, "test", 8)
    assert metrics["accuracy"] == 1.0
    assert metrics["accuracy@L=128"] == 1.0 and metrics["accuracy@L=256"] == 1.0
    assert metrics["accuracy@L=512"] == 1.0
    assert set(seen_lengths) == {64, 128, 256, 512}
    val = task.evaluate(_induction_oracle, "val", 8)
    assert "accuracy@L=128" not in val  # extrapolation only on the test split

    def short_only(x):
        if x.shape[1] > 64:
            raise RuntimeError("positions beyond the training length")
        return _induction_oracle(x)

    metrics = task.evaluate(short_only, "test", 8)
    assert metrics["accuracy"] == 1.0 and math.isnan(metrics["accuracy@L=128"])


def test_explicit_eval_lengths_for_any_config():
    task = make_task(
        "long_context/mqar", 0, seq_len=64, vocab_size=512, n_pairs=4, eval_lengths="128,256", n_test=8
    )
    assert task.eval_lengths == (128, 256)
    batch = next(task.extrapolation_batches(256, 4))
    assert batch.inputs.shape == (4, 256) and int(batch.mask.sum()) == 16
    with pytest.raises(UserError, match="vocab_size > seq_len"):
        make_task("long_context/mqar", 0, seq_len=64, vocab_size=100, n_pairs=4, eval_lengths=[128])


@pytest.mark.parametrize(
    ("config", "options", "message"),
    [
        (
            "mqar",
            {"seq_len": 64, "vocab_size": 128, "n_pairs": 17},
            r"4 \* n_pairs <= seq_len.*n_pairs <= 16",
        ),
        ("mqar", {"seq_len": 256, "vocab_size": 256}, "mqar needs vocab_size > seq_len"),
        ("selective_copying", {"seq_len": 20, "n_tokens": 16}, "2 \\* n_tokens <= seq_len"),
        ("selective_copying", {"vocab_size": 2}, "vocab_size >= 3"),
        ("induction_heads", {"seq_len": 2}, "seq_len >= 3"),
        ("induction_heads", {"eval_lengths": [0]}, "eval_lengths must be positive"),
    ],
)
def test_bad_settings_are_user_errors(config, options, message):
    with pytest.raises(UserError, match=message):
        make_task(f"long_context/{config}", 0, **options)


def test_defaults_follow_the_papers():
    # laptop-sized training lengths inside the published settings: Zoology's MQAR grid (lengths 64-512, vocab 8192),
    # the Mamba paper's induction-heads training length 256 (Gu & Dao 2023 §4.1.2)
    mqar = make_task("long_context", 0)
    assert mqar.name == "long_context/mqar" and mqar.seq_len == 128 and mqar.vocab_size == 8192
    assert mqar.n_pairs == 8 and 64 <= mqar.seq_len <= 512
    copy = make_task("long_context/selective_copying", 0)
    assert copy.vocab_size == 16 and copy.n_tokens == 16 and copy.seq_len == 256
    ind = make_task("long_context/induction_heads", 0)
    assert ind.seq_len == 256 and ind.vocab_size == 16 and ind.eval_lengths == (512, 1024, 2048)
    assert make_task("long_context/induction_heads", 0, seq_len=4096).eval_lengths == (8192, 16384, 32768)
    assert copy.primary_metric == "accuracy" and copy.higher_is_better and copy.floor == 1.0
    # test sets resolve 1%: 256 sequences at the training length, 128 (one answer each) at every extra length
    assert ind.n["test"] >= 100 and ind.n_extrapolation >= 100


def test_chance_baselines_are_the_accuracy_of_a_uniform_guess():
    # the analytic values against a Monte Carlo uniform guesser over the tokens the test answers take
    rng = np.random.default_rng(0)
    for config, options in [
        ("selective_copying", {"seq_len": 64, "n_tokens": 8}),
        ("induction_heads", {"seq_len": 64}),
        ("mqar", {"seq_len": 64, "vocab_size": 128, "n_pairs": 4}),
    ]:
        task = make_task(f"long_context/{config}", 0, n_test=512, **options)
        answers = torch.cat([b.targets[b.mask] for b in task.eval_batches("test", 64)]).numpy()
        support = np.unique(answers)
        guesses = rng.integers(support.min(), support.max() + 1, size=(200, answers.size))
        assert task.reference_values("test")["baseline_chance"] == pytest.approx(
            (guesses == answers).mean(), abs=0.01
        ), config


def _positional_model(n_pairs: int, vocab: int):
    """Logits that answer the r-th query position with the r-th pair's value (found from the inputs alone)."""

    def model(x: torch.Tensor) -> torch.Tensor:
        out = torch.zeros(*x.shape, vocab)
        for row in range(x.shape[0]):
            keys = x[row, 0 : 2 * n_pairs : 2].tolist()
            values = x[row, 1 : 2 * n_pairs : 2].tolist()
            # query positions: the later occurrences of the keys, in position order
            queries = [t for t in range(2 * n_pairs, x.shape[1]) if int(x[row, t]) in keys]
            for r, t in enumerate(queries[:n_pairs]):
                out[row, t, values[r]] = 1.0
        return out

    return model


def test_mqar_baselines_in_context_and_positional():
    # a large vocabulary makes fillers that repeat a key (which would fool the input-only model below) rare
    task = make_task("long_context/mqar", 0, seq_len=32, vocab_size=8192, n_pairs=4, n_test=256)
    refs = task.reference_values("test")
    assert refs["baseline_in_context"] == 0.25 and refs["baseline_chance"] == 1 / 4096
    # the positional shortcut scored through the ordinary metric path: its accuracy is the baseline
    metrics = task.evaluate(_positional_model(4, 8192), "test", 64)
    assert metrics["accuracy"] == pytest.approx(refs["baseline_positional"], abs=0.01)
    # Zoology's power-law query offsets keep the pairs' order more often than a random order would (0.25)
    assert refs["baseline_positional"] > 0.27
    assert metrics["baseline_positional"] == refs["baseline_positional"] and metrics["floor"] == 1.0


def test_batches_at_4096_are_generated_on_demand_in_milliseconds():
    for config in ("mqar", "selective_copying", "induction_heads"):
        task = make_task(f"long_context/{config}", 0, seq_len=4096)
        task.train_batch(0, 8)  # warm-up
        start = time.perf_counter()
        batch = task.train_batch(1, 8)
        elapsed = time.perf_counter() - start
        assert batch.inputs.shape == (8, 4096)
        assert elapsed < 0.25, f"{config}: {elapsed * 1e3:.0f} ms"  # measured ~5-20 ms on the 2-core CI box
        # evaluation is generated chunk by chunk: nothing like the whole test set exists up front
        assert not any(isinstance(v, torch.Tensor) and v.numel() >= 8 * 4096 for v in vars(task).values())


@pytest.mark.parametrize("config", ["mqar", "selective_copying", "induction_heads"])
def test_train_val_test_share_no_sequence(config):
    task = make_task(f"long_context/{config}", 0, seq_len=64, vocab_size=128, n_pairs=4, n_val=64, n_test=64)
    rows = {
        "train": {tuple(r) for s in range(16) for r in task.train_batch(s, 8).inputs.tolist()},
        "val": {tuple(r) for b in task.eval_batches("val", 16) for r in b.inputs.tolist()},
        "test": {tuple(r) for b in task.eval_batches("test", 16) for r in b.inputs.tolist()},
    }
    assert len(rows["val"]) == 64 and len(rows["test"]) == 64
    assert (
        not rows["train"] & rows["val"]
        and not rows["train"] & rows["test"]
        and not rows["val"] & rows["test"]
    )
