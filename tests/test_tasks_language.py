"""`language`: the synthetic source's exact entropy rate against Monte Carlo, the floor reached by the true
predictor, text files (90/5/5 by position, clear errors) and the optional Hugging Face path."""

from __future__ import annotations

import math
import sys
import types
from collections import Counter

import numpy as np
import pytest
import torch

from mamba_kan.errors import UserError
from mamba_kan.tasks import make_task
from mamba_kan.tasks.common import make_rng
from mamba_kan.tasks.language import MarkovSource


def zipf_entropy(branching: int, exponent: float) -> float:
    """-sum p log p for p_r = (r+1)^-s / sum, r < branching: written out independently of the task code."""
    weights = [(r + 1) ** -exponent for r in range(branching)]
    total = sum(weights)
    return -sum(w / total * math.log(w / total) for w in weights)


def plugin_conditional_entropy(seqs: np.ndarray, order: int) -> float:
    """Empirical H(X_t | X_{t-order..t-1}) in nats from counts over rows of ``seqs`` (B, T)."""
    joint: Counter = Counter()
    ctx: Counter = Counter()
    for row in seqs:
        row = row.tolist()
        for t in range(order, len(row)):
            c = tuple(row[t - order : t])
            joint[c + (row[t],)] += 1
            ctx[c] += 1
    n = sum(joint.values())
    return -sum(k / n * math.log(k / ctx[key[:-1]]) for key, k in joint.items())


def test_exact_entropy_rate_is_the_zipf_entropy():
    task = make_task("language", 0, context=32, eval_sequences=4)
    assert task.source.entropy_rate == pytest.approx(zipf_entropy(4, 1.0), rel=1e-12)
    assert task.reference_values("test")["floor_expected"] == task.source.entropy_rate
    uniform = make_task("language", 0, context=32, eval_sequences=4, zipf=0.0, branching=5)
    assert uniform.source.entropy_rate == pytest.approx(math.log(5), rel=1e-12)
    # with uniform successors every realised transition costs exactly log(branching): floor = expectation
    assert uniform.floor == pytest.approx(math.log(5), rel=1e-12)


@pytest.mark.parametrize(("order", "alphabet", "branching", "zipf"), [(2, 6, 3, 1.0), (3, 16, 4, 1.0)])
def test_exact_entropy_rate_agrees_with_a_monte_carlo_estimate(order, alphabet, branching, zipf):
    source = MarkovSource(order, alphabet, branching, zipf, source_seed=7)
    seqs = source.sample(make_rng(1, "mc"), 64, 6000)  # 384k symbols
    estimate = plugin_conditional_entropy(seqs, order)
    # the plug-in estimator is biased low by about (#contexts * (branching - 1)) / (2 n)
    bias = alphabet**order * (branching - 1) / (2 * seqs.size)
    assert estimate == pytest.approx(source.entropy_rate - bias, abs=0.01)
    assert abs(estimate - zipf_entropy(branching, zipf)) < 0.01 + bias


def test_source_is_sparse_and_uses_the_alphabet():
    source = MarkovSource(3, 16, 4, 1.0, source_seed=0)
    seqs = source.sample(make_rng(0, "x"), 8, 2000)
    assert len(np.unique(seqs)) == 16 and set(np.unique(seqs)) <= set(source.symbols.tolist())
    # every context is followed by at most `branching` distinct symbols
    followers: dict = {}
    for row in seqs.tolist():
        for t in range(3, len(row)):
            followers.setdefault(tuple(row[t - 3 : t]), set()).add(row[t])
    assert max(len(v) for v in followers.values()) == 4


def test_the_true_source_reaches_the_floor_and_masked_positions_lack_context():
    task = make_task("language", 2, context=64, eval_sequences=48)
    source = task.source

    def oracle(x: torch.Tensor) -> torch.Tensor:
        out = torch.zeros(*x.shape, 256, dtype=torch.float64)
        for b, row in enumerate(x.numpy()):
            for t in range(source.order - 1, x.shape[1]):
                out[b, t] = torch.from_numpy(source.log_prob_next(row[: t + 1]))
        return out.clamp(min=-1e4)

    batch = next(task.eval_batches("val", 4))
    assert (
        batch.mask.shape == (4, 64)
        and not batch.mask[:, : source.order - 1].any()
        and batch.mask[:, source.order - 1 :].all()
    )
    metrics = task.evaluate(oracle, "test", 16)
    # the realised floor is exactly the true source's log-loss on these test sequences (computed per position
    # by log_prob_next above, vectorised by the task)
    assert metrics["loss"] == pytest.approx(task.floor, rel=1e-9)
    assert metrics["floor"] == task.floor and metrics["gap_to_floor"] == pytest.approx(0.0, abs=1e-9)
    # 48 x 62 scored symbols: the realised floor is within sampling error (~0.02 nats) of the entropy rate
    assert metrics["floor_expected"] == source.entropy_rate
    assert metrics["floor"] == pytest.approx(source.entropy_rate, abs=0.06)
    # the unigram baseline is the entropy of the scored targets' byte frequencies, well above the floor
    targets = torch.cat([b.targets[b.mask] for b in task.eval_batches("test", 16)]).numpy()
    freq = np.bincount(targets, minlength=256) / targets.size
    assert metrics["baseline_unigram"] == pytest.approx(-(freq[freq > 0] * np.log(freq[freq > 0])).sum())
    assert metrics["baseline_unigram"] > metrics["floor"] + 0.5
    assert metrics["bpb"] == pytest.approx(metrics["loss"] / math.log(2))
    assert metrics["perplexity"] == pytest.approx(math.exp(metrics["loss"]))


def test_source_is_fixed_by_source_seed_and_sequences_by_the_run_seed():
    a, b = make_task("language", 0, context=32), make_task("language", 1, context=32)
    assert np.array_equal(a.source.successors, b.source.successors)
    assert not torch.equal(a.train_batch(0, 4).inputs, b.train_batch(0, 4).inputs)
    c = make_task("language", 0, context=32, source_seed=5)
    assert not np.array_equal(a.source.successors, c.source.successors)


def test_synthetic_splits_share_no_sequence():
    task = make_task("language", 0, context=64, eval_sequences=32)
    seqs = {
        "train": {tuple(r) for s in range(8) for r in task.train_batch(s, 8).inputs.tolist()},
        "val": {tuple(r) for b in task.eval_batches("val", 8) for r in b.inputs.tolist()},
        "test": {tuple(r) for b in task.eval_batches("test", 8) for r in b.inputs.tolist()},
    }
    assert (
        not seqs["train"] & seqs["val"]
        and not seqs["train"] & seqs["test"]
        and not seqs["val"] & seqs["test"]
    )


@pytest.fixture()
def text_file(tmp_path):
    text = "".join(f"line {i}: the quick brown fox jumps over the lazy dog - déjà vu ✓\n" for i in range(400))
    path = tmp_path / "corpus.txt"
    path.write_text(text, encoding="utf-8")
    return path, text.encode("utf-8")


def test_text_file_split_90_5_5_by_position_and_windows_stay_inside(text_file):
    path, data = text_file
    task = make_task("language/text", 0, data_path=str(path), context=64, eval_sequences=1000)
    n = len(data)
    assert task.bounds == {
        "train": (0, int(0.9 * n)),
        "val": (int(0.9 * n), int(0.9 * n) + int(0.05 * n)),
        "test": (int(0.9 * n) + int(0.05 * n), n),
    }
    for split in ("val", "test"):
        lo, hi = task.bounds[split]
        starts = task.eval_starts(split)
        assert starts.min() >= lo and starts.max() + 65 <= hi and np.all(np.diff(starts) == 64)
        batch = next(task.eval_batches(split, 1))
        s = int(starts[0])
        assert bytes(batch.inputs[0].tolist()) == data[s : s + 64]
        assert bytes(batch.targets[0].tolist()) == data[s + 1 : s + 65]
    for step in range(10):
        batch = task.train_batch(step, 8)
        for row in batch.inputs.tolist():
            start = data.find(bytes(row))
            assert (
                0 <= start and start + 65 <= task.bounds["train"][1] + 64
            )  # found inside the training bytes
    assert task.floor is None and "floor" not in task.evaluate(lambda x: torch.zeros(*x.shape, 256), "val", 8)


def test_text_file_errors_are_clear(tmp_path):
    with pytest.raises(UserError, match="text file not found: .*missing.txt"):
        make_task("language/text", 0, data_path=str(tmp_path / "missing.txt"))
    empty = tmp_path / "empty.txt"
    empty.write_bytes(b"")
    with pytest.raises(UserError, match="text file is empty"):
        make_task("language/text", 0, data_path=str(empty))
    latin1 = tmp_path / "latin1.txt"
    latin1.write_bytes("caf\u00e9 ".encode("latin-1") * 1000)
    with pytest.raises(UserError, match="not UTF-8 text: .*offset 3"):
        make_task("language/text", 0, data_path=str(latin1))
    binary = tmp_path / "blob.bin"
    binary.write_bytes(b"abc\x00def" * 1000)
    with pytest.raises(UserError, match="not UTF-8 text.*NUL byte"):
        make_task("language/text", 0, data_path=str(binary))
    short = tmp_path / "short.txt"
    short.write_text("hello world\n" * 20)
    with pytest.raises(UserError, match=r"has 240 bytes; a 90/5/5 split needs at least 5140 bytes"):
        make_task("language/text", 0, data_path=str(short))
    with pytest.raises(UserError, match="not a regular file"):
        make_task("language/text", 0, data_path=str(tmp_path))
    with pytest.raises(UserError, match="needs option data_path"):
        make_task("language/text", 0)
    with pytest.raises(UserError, match="data_path is not used by language/synthetic"):
        make_task("language", 0, data_path=str(short))


def test_hf_config_needs_the_optional_package(monkeypatch):
    monkeypatch.setitem(sys.modules, "datasets", None)  # import datasets -> ImportError
    with pytest.raises(UserError, match="needs the optional 'datasets' package"):
        make_task("language/hf", 0, hf_dataset="wikitext")


def test_hf_config_reads_local_text_without_downloading(monkeypatch):
    calls = {}

    class FakeDataset:
        column_names = ["text", "id"]

        def __getitem__(self, key):
            return [f"document {i} " * 20 for i in range(60)]

    class DownloadConfig:
        def __init__(self, local_files_only=False):
            self.local_files_only = local_files_only

    def load_dataset(name, config, split, download_config):
        calls.update(name=name, config=config, split=split, offline=download_config.local_files_only)
        return FakeDataset()

    fake = types.SimpleNamespace(load_dataset=load_dataset, DownloadConfig=DownloadConfig, DatasetDict=dict)
    monkeypatch.setitem(sys.modules, "datasets", fake)
    task = make_task("language/hf", 0, hf_dataset="some/corpus", hf_config="v1", context=32)
    assert calls == {"name": "some/corpus", "config": "v1", "split": "train", "offline": True}
    expected = "\n".join(f"document {i} " * 20 for i in range(60)).encode()
    assert bytes(task.data.tolist()) == expected
    with pytest.raises(UserError, match="no column 'body'; valid choices: text, id"):
        make_task("language/hf", 0, hf_dataset="some/corpus", hf_text_field="body", context=32)


def test_bad_synthetic_settings_are_user_errors():
    with pytest.raises(UserError, match="branching must be in"):
        make_task("language", 0, branching=20)
    with pytest.raises(UserError, match="alphabet must be in"):
        make_task("language", 0, alphabet=300)
    with pytest.raises(UserError, match="contexts exceeds"):
        make_task("language", 0, alphabet=256, order=4)


def test_every_sampled_symbol_is_a_successor_of_its_context_in_the_documented_numbering():
    """A plain loop over the sample: context id = base-alphabet number of the last ``order`` symbol indices,
    oldest most significant; each next symbol must be one of that context's ``successors``."""
    source = MarkovSource(2, 6, 3, 1.0, source_seed=5)
    seqs = source.sample(make_rng(2, "walk"), 5, 300)
    index = {int(s): i for i, s in enumerate(source.symbols)}
    for row in seqs.tolist():
        for t in range(2, len(row)):
            ctx = index[row[t - 2]] * 6 + index[row[t - 1]]
            assert index[row[t]] in source.successors[ctx].tolist()


def test_training_batches_sampled_in_blocks_equal_one_generator_per_step():
    """train_batch samples TRAIN_BLOCK steps per call (one walk over all their rows): every step's batch must be
    what that step's own generator gives alone, for sequential steps, out of order, and after a repeat."""
    from mamba_kan.tasks.language import TRAIN_BLOCK

    task = make_task("language", seed=3, context=40, eval_sequences=8)
    source = task.source

    def alone(step: int, bsz: int) -> np.ndarray:
        seqs = source.sample(make_rng(3, "language", "synthetic", "train", step), bsz, 41)
        return np.ascontiguousarray(seqs, dtype=np.int64)

    order = [*range(TRAIN_BLOCK + 3), 2, 0, 17, 16, 5]
    for step in order:
        batch = task.train_batch(step, 6)
        want = alone(step, 6)
        assert np.array_equal(batch.inputs.numpy(), want[:, :-1]), step
        assert np.array_equal(batch.targets.numpy(), want[:, 1:]), step
    assert np.array_equal(task.train_batch(4, 3).inputs.numpy(), alone(4, 3)[:, :-1])  # another batch size
