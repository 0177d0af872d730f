"""``long_context``: synthetic recall/copy tasks where a selective state-space mixer is expected to help.

Each example is a token sequence (B, L); the model predicts a token at every position but only the *answer
positions* count (``Batch.mask``): loss and accuracy on those only. The defaults train short, as the published
settings do, so a laptop can run them; paper-scale lengths are set by the ``paper`` preset:

- ``mqar`` -- multi-query associative recall (Zoology, Arora et al. 2023, ``zoology/data/multiquery_ar.py``):
  ``n_pairs`` key-value pairs first (keys distinct from [1, V/2), values distinct from [V/2, V)), then the keys
  queried again in random order at even offsets of the remaining space, the offset drawn without replacement from
  a power law p(i) ~ a i^(a-1) (a = ``power_a`` = 0.01); the answer at a query position is the value bound to that
  key; every other position holds a random token from [0, V). Needs 4 * n_pairs <= L and V > L (Zoology's checks).
  Default L 128 with 8 pairs and V 8192: inside Zoology's grid (lengths 64-512, 4-64 pairs, vocab 8192).
- ``selective_copying`` (Mamba paper §4.1, Gu & Dao 2023, following the H3 ``copying`` generator): ``n_tokens``
  data tokens from [1, V-2] at random sorted positions among the first L - n_tokens positions, noise token 0
  elsewhere, then n_tokens marker tokens V-1; at the i-th marker the answer is the i-th data token. Vocabulary 16
  and 16 tokens as in the paper; default length 256 (the paper: 4096, the ``paper`` preset).
- ``induction_heads`` (Mamba paper §4.1.2, Table 2): tokens uniform in [0, V-2]; the special token V-1 appears once
  at a random position p <= L-3 and again at the last position; the answer there is the token at p+1.
  Vocabulary 16. Trained at ``seq_len`` (default 256, the paper's training length) and evaluated on the test split
  also at each of ``eval_lengths`` (default 2x, 4x and 8x seq_len), reported as ``accuracy@L=<n>`` and
  ``loss@L=<n>`` beside the primary accuracy.

Test sets are large enough for a resolution of 1% or better: 256 sequences at the training length and 128 at each
extra length (one answer per induction-heads sequence: 1/128 = 0.8%).

Every answer is determined by the input, so the best achievable accuracy (``floor``) is 1. Baselines (accuracy):
``baseline_chance`` (uniform over the answer alphabet: 2/V for mqar's values, 1/(V-2) selective copying, 1/(V-1)
induction heads); for mqar also ``baseline_in_context`` = 1/n_pairs (a uniform guess among the sequence's own
values, which needs no key matching) and ``baseline_positional``, computed on the split's actual sequences: answer
the r-th query (in position order) with the r-th pair's value. Zoology's generator draws query offsets with a
power law that favours early slots, so queries tend to keep the pairs' order and this shortcut beats 1/n_pairs
(about 0.15 at L 128 with 8 pairs, 0.30 at L 32 with 4). Batches are generated on demand from (seed, step) or
(seed, split, chunk).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import numpy as np
import torch
from torch import Tensor

from mamba_kan.errors import UserError
from mamba_kan.io_spec import NextTokenOutput, TokenInput
from mamba_kan.tasks.base import Batch, Task
from mamba_kan.tasks.common import (
    as_float,
    as_int,
    as_int_list,
    check_seed,
    check_split,
    check_step,
    chunked_eval,
    make_rng,
    merge_options,
)
from mamba_kan.tasks.registry import FamilyInfo, register_family

log = logging.getLogger(__name__)

CONFIGS = ("mqar", "selective_copying", "induction_heads")
DEFAULT_VOCAB = {"mqar": 8192, "selective_copying": 16, "induction_heads": 16}

#: Per-configuration defaults of seq_len / n_pairs (see the module docstring for their sources).
DEFAULT_SEQ_LEN = {"mqar": 128, "selective_copying": 256, "induction_heads": 256}
DEFAULT_N_PAIRS = {"mqar": 8}
#: evaluation batches hold at most this many logits (batch x length x vocab): MQAR's vocabulary of 8192 at length
#: 256 would otherwise need 2 GB per batch of 256 (the metrics do not depend on the batch size)
MAX_EVAL_LOGITS = 1 << 24
#: induction_heads: extra test lengths as multiples of the training length when eval_lengths is null
EXTRAPOLATION_FACTORS = (2, 4, 8)

OPTIONS: dict[str, Any] = {
    "seq_len": None,
    "vocab_size": None,
    "n_pairs": None,
    "power_a": 0.01,
    "n_tokens": 16,
    "eval_lengths": None,
    "n_val": 64,  # model selection only; the test split carries the reported numbers
    "n_test": 256,
    "n_extrapolation": 128,
}
OPTION_HELP: dict[str, str] = {
    "seq_len": "training sequence length (null = mqar 128, selective_copying and induction_heads 256)",
    "vocab_size": "vocabulary (null = configuration default: mqar 8192, selective_copying 16, induction_heads 16)",
    "n_pairs": "mqar: key-value pairs per sequence, 4 * n_pairs <= seq_len (null = 8)",
    "power_a": "mqar: power-law exponent a of the query offsets (Zoology default 0.01)",
    "n_tokens": "selective_copying: data tokens to copy",
    "eval_lengths": "extra test lengths, e.g. [512, 2048] (null = 2x, 4x, 8x seq_len for induction_heads, none else)",
    "n_val": "validation sequences",
    "n_test": "test sequences",
    "n_extrapolation": "test sequences at each extra length of eval_lengths",
}

Arrays = tuple[
    np.ndarray, np.ndarray, np.ndarray
]  # inputs (B, L) int64, targets (B, L) int64, mask (B, L) bool


def _distinct(rng: np.random.Generator, batch: int, population: int, k: int) -> np.ndarray:
    """(batch, k) distinct integers from [0, population) per row, uniformly without replacement."""
    keys = rng.random((batch, population))
    return np.argpartition(keys, k - 1, axis=1)[:, :k] if k < population else np.argsort(keys, axis=1)


def mqar(
    rng: np.random.Generator, batch: int, seq_len: int, vocab: int, n_pairs: int, power_a: float
) -> Arrays:
    """Multi-query associative recall, following zoology/data/multiquery_ar.py (see the module docstring)."""
    k, half = n_pairs, vocab // 2
    keys = 1 + _distinct(rng, batch, half - 1, k)  # from [1, V/2)
    values = half + _distinct(rng, batch, vocab - half, k)  # from [V/2, V)
    inputs = np.zeros((batch, seq_len), dtype=np.int64)
    inputs[:, 0 : 2 * k : 2] = keys
    inputs[:, 1 : 2 * k : 2] = values
    # query offsets: k distinct of `space` even slots, drawn without replacement with p(i) ~ a i^(a-1)
    # (Gumbel top-k is exactly successive weighted sampling without replacement, vectorised over the batch)
    space = (seq_len - 2 * k) // 2
    log_p = math.log(power_a) + (power_a - 1.0) * np.log(np.arange(1, space + 1, dtype=np.float64))
    scores = log_p - np.log(-np.log(rng.random((batch, space))))
    gaps = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    positions = 2 * k + 2 * gaps  # (B, k) query positions
    rows = np.arange(batch)[:, None]
    is_filler = np.ones((batch, seq_len), dtype=bool)
    is_filler[:, : 2 * k] = False
    inputs[rows, positions] = keys
    is_filler[rows, positions] = False
    fillers = rng.integers(0, vocab, size=(batch, seq_len))
    inputs[is_filler] = fillers[is_filler]
    targets = np.zeros((batch, seq_len), dtype=np.int64)
    targets[rows, positions] = values
    mask = np.zeros((batch, seq_len), dtype=bool)
    mask[rows, positions] = True
    return inputs, targets, mask


def selective_copying(
    rng: np.random.Generator, batch: int, seq_len: int, vocab: int, n_tokens: int
) -> Arrays:
    """Selective copying (Mamba paper §4.1; H3's torch_copying_data with variable=True), answers at the markers."""
    m = n_tokens
    tokens = rng.integers(1, vocab - 1, size=(batch, m))  # data tokens in [1, V-2]
    where = np.sort(_distinct(rng, batch, seq_len - m, m), axis=1)  # sorted positions in the first L - m
    inputs = np.zeros((batch, seq_len), dtype=np.int64)  # 0 = noise token
    rows = np.arange(batch)[:, None]
    inputs[rows, where] = tokens
    inputs[:, seq_len - m :] = vocab - 1  # markers
    targets = np.zeros((batch, seq_len), dtype=np.int64)
    targets[:, seq_len - m :] = tokens
    mask = np.zeros((batch, seq_len), dtype=bool)
    mask[:, seq_len - m :] = True
    return inputs, targets, mask


def induction_heads(rng: np.random.Generator, batch: int, seq_len: int, vocab: int) -> Arrays:
    """Induction heads (Mamba paper): after the second special token, recall the token that followed the first."""
    special = vocab - 1
    inputs = rng.integers(0, special, size=(batch, seq_len))
    where = rng.integers(0, seq_len - 2, size=batch)  # p in [0, L-3]
    rows = np.arange(batch)
    inputs[rows, where] = special
    inputs[:, -1] = special
    targets = np.zeros((batch, seq_len), dtype=np.int64)
    targets[:, -1] = inputs[rows, where + 1]
    mask = np.zeros((batch, seq_len), dtype=bool)
    mask[:, -1] = True
    return inputs, targets, mask


def positional_baseline(batches: Iterable[Batch], n_pairs: int) -> float:
    """MQAR accuracy of answering the r-th query (in position order) with the r-th pair's value.

    ``batches``: mqar batches (inputs (B, L) with the pairs at positions 0..2k-1, ``mask`` marking the k queries).
    A model that reaches only this accuracy has learned the order of the pairs, not key-value recall."""
    correct, total = 0, 0
    for batch in batches:
        assert batch.mask is not None
        b = batch.size
        answers = batch.targets[batch.mask].reshape(
            b, n_pairs
        )  # row-major: each row's queries in position order
        values = batch.inputs[:, 1 : 2 * n_pairs : 2]  # (B, k) the pairs' values in order
        correct += int((answers == values).sum())
        total += answers.numel()
    return correct / total


class LongContextTask(Task):
    """One of the three sequence tasks (see the module docstring)."""

    family = "long_context"
    primary_metric = "accuracy"
    higher_is_better = True

    def __init__(self, config: str, seed: int, **options: Any) -> None:
        super().__init__(config, check_seed(seed))
        seq_len = options["seq_len"]
        self.seq_len = DEFAULT_SEQ_LEN[config] if seq_len is None else as_int("seq_len", seq_len)
        vocab = options["vocab_size"]
        self.vocab_size = DEFAULT_VOCAB[config] if vocab is None else as_int("vocab_size", vocab)
        n_pairs = options["n_pairs"]
        self.n_pairs = as_int("n_pairs", DEFAULT_N_PAIRS.get(config, 16) if n_pairs is None else n_pairs)
        self.power_a = as_float("power_a", options["power_a"], 1e-6, 1.0)
        self.n_tokens = as_int("n_tokens", options["n_tokens"])
        self.n = {"val": as_int("n_val", options["n_val"]), "test": as_int("n_test", options["n_test"])}
        self.n_extrapolation = as_int("n_extrapolation", options["n_extrapolation"])
        lengths = options["eval_lengths"]
        if lengths is None:
            lengths = (
                tuple(f * self.seq_len for f in EXTRAPOLATION_FACTORS) if config == "induction_heads" else ()
            )
        self.eval_lengths = tuple(L for L in as_int_list("eval_lengths", lengths) if L != self.seq_len)
        for length in (self.seq_len, *self.eval_lengths):
            self._check(length)

    def _check(self, length: int) -> None:
        """Validate the settings at sequence length ``length`` (training or an extra evaluation length)."""
        v = self.vocab_size
        if self.config_name == "mqar":
            if 4 * self.n_pairs > length:
                raise UserError(
                    f"mqar needs 4 * n_pairs <= seq_len, got n_pairs {self.n_pairs} at length {length}; "
                    f"use n_pairs <= {length // 4}"
                )
            if v <= length:
                raise UserError(
                    f"mqar needs vocab_size > seq_len (Zoology), got vocab {v} at length {length}"
                )
        elif self.config_name == "selective_copying":
            if v < 3:
                raise UserError(f"selective_copying needs vocab_size >= 3 (noise, data, marker), got {v}")
            if 2 * self.n_tokens > length:
                raise UserError(
                    f"selective_copying needs 2 * n_tokens <= seq_len, got n_tokens {self.n_tokens} at length {length}"
                )
        else:
            if v < 3:
                raise UserError(f"induction_heads needs vocab_size >= 3, got {v}")
            if length < 3:
                raise UserError(f"induction_heads needs seq_len >= 3, got {length}")

    # --- data ----------------------------------------------------------------------------------------------
    def generate(self, rng: np.random.Generator, batch: int, length: int | None = None) -> Batch:
        """``batch`` fresh examples of length ``length`` (default seq_len) from ``rng``."""
        length = self.seq_len if length is None else length
        if self.config_name == "mqar":
            arrays = mqar(rng, batch, length, self.vocab_size, self.n_pairs, self.power_a)
        elif self.config_name == "selective_copying":
            arrays = selective_copying(rng, batch, length, self.vocab_size, self.n_tokens)
        else:
            arrays = induction_heads(rng, batch, length, self.vocab_size)
        inputs, targets, mask = (torch.from_numpy(a) for a in arrays)
        return Batch(inputs, targets, mask)

    def _rng(self, *keys: int | str) -> np.random.Generator:
        return make_rng(self.seed, "long_context", self.config_name, *keys)

    def train_batch(self, step: int, batch_size: int) -> Batch:
        check_step(step, batch_size)
        return self.generate(self._rng("train", step), batch_size)

    def eval_batches(self, split: str, batch_size: int) -> Iterator[Batch]:
        check_split(split)
        check_step(0, batch_size)
        return chunked_eval(self.n[split], lambda i, n: self.generate(self._rng(split, i), n), batch_size)

    def extrapolation_batches(self, length: int, batch_size: int) -> Iterator[Batch]:
        """Fixed test examples at ``length`` (n_extrapolation of them)."""
        check_step(0, batch_size)
        self._check(length)
        return chunked_eval(
            self.n_extrapolation,
            lambda i, n: self.generate(self._rng("test", "length", length, i), n, length),
            batch_size,
        )

    @torch.no_grad()
    def evaluate(
        self,
        model: Callable[[Tensor], Tensor],
        split: str,
        batch_size: int,
        device: torch.device | str = "cpu",
    ) -> dict[str, float]:
        """Primary metrics at seq_len; on the test split also accuracy/loss at each extra length."""
        batch_size = self._eval_batch(batch_size, self.seq_len)
        metrics = super().evaluate(model, split, batch_size, device)
        if split != "test":
            return metrics
        for length in self.eval_lengths:
            # keep tokens per batch (and so memory) about constant as sequences get longer
            size = self._eval_batch(max(1, batch_size * self.seq_len // length), length)
            state = self.new_metric_state()
            try:
                for batch in self.extrapolation_batches(length, size):
                    batch = batch.to(device)
                    state.update(model(batch.inputs).float(), batch)
                result = state.compute()
            except (RuntimeError, IndexError, ValueError) as exc:  # e.g. a model with a maximum length
                log.warning("%s: evaluation at length %d failed: %s", self.name, length, exc)
                result = {"accuracy": math.nan, "loss": math.nan}
            metrics[f"accuracy@L={length}"] = result["accuracy"]
            metrics[f"loss@L={length}"] = result["loss"]
        return metrics

    def _eval_batch(self, batch_size: int, length: int) -> int:
        """``batch_size`` capped so one evaluation batch holds at most MAX_EVAL_LOGITS logits."""
        return max(1, min(batch_size, MAX_EVAL_LOGITS // (length * self.vocab_size)))

    # --- ends and metrics ----------------------------------------------------------------------------------
    @property
    def input_spec(self) -> TokenInput:
        return TokenInput(self.vocab_size)

    @property
    def output_spec(self) -> NextTokenOutput:
        return NextTokenOutput(self.vocab_size)

    @property
    def tokens_per_sample(self) -> int:
        return self.seq_len

    @property
    def chance(self) -> float:
        """Accuracy of a uniform guess over the tokens an answer can be."""
        v = self.vocab_size
        if self.config_name == "mqar":
            return 1.0 / (v - v // 2)  # values from [V/2, V)
        if self.config_name == "selective_copying":
            return 1.0 / (v - 2)  # data tokens from [1, V-2]
        return 1.0 / (v - 1)  # induction heads: tokens from [0, V-2]

    def compute_reference_values(self, split: str) -> dict[str, float]:
        """``floor`` 1, ``baseline_chance``; mqar: ``baseline_in_context`` and ``baseline_positional`` (empirical,
        on the split's sequences at seq_len)."""
        check_split(split)
        out = {"floor": 1.0, "baseline_chance": self.chance}
        if self.config_name == "mqar":
            out["baseline_in_context"] = 1.0 / self.n_pairs
            out["baseline_positional"] = positional_baseline(self.eval_batches(split, 256), self.n_pairs)
        return out

    def describe(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "name": self.name,
            "seed": self.seed,
            "seq_len": self.seq_len,
            "vocab_size": self.vocab_size,
            "n_val": self.n["val"],
            "n_test": self.n["test"],
            "eval_lengths": list(self.eval_lengths),
        }
        if self.config_name == "mqar":
            out.update(n_pairs=self.n_pairs, power_a=self.power_a)
        elif self.config_name == "selective_copying":
            out.update(n_tokens=self.n_tokens)
        if self.eval_lengths:
            out["n_extrapolation"] = self.n_extrapolation
        return out


def make_long_context_task(config: str, seed: int, **options: Any) -> LongContextTask:
    return LongContextTask(config, seed, **merge_options("long_context", OPTIONS, options))


INFO = register_family(
    FamilyInfo(
        name="long_context",
        description="long-range recall and copying (MQAR, selective copying, induction heads with length "
        "extrapolation), trained at 128-256 tokens by default; Mamba-favourable",
        configs=CONFIGS,
        default_config="mqar",
        factory=make_long_context_task,
        options=dict(OPTIONS),
        option_help=dict(OPTION_HELP),
        config_help={
            "mqar": "multi-query associative recall (Zoology); length 128, vocab 8192, 8 key-value pairs",
            "selective_copying": "copy 16 randomly spaced data tokens after the markers (Mamba §4.1); length 256, "
            "vocab 16",
            "induction_heads": "recall the token after the first special token (Mamba §4.1.2); trained at 256, "
            "vocab 16; also tested at 2x, 4x and 8x the training length",
        },
        input_end="tokens (vocab = vocab_size)",
        output_end="next-token (vocab = vocab_size), answer positions only",
        primary_metric="accuracy",
        higher_is_better=True,
        metrics=(
            "accuracy",
            "loss",
            "bpb",
            "perplexity",
            "floor",
            "gap_to_floor",
            "baseline_chance",
            "baseline_in_context",
            "baseline_positional",
            "accuracy@L=<n>",
            "loss@L=<n>",
        ),
        floor="accuracy 1.0 is achievable (answers are determined by the input); baselines: chance, and for mqar "
        "1/n_pairs and the positional shortcut (measured on the split)",
    )
)
