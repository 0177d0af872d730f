"""``language``: byte-level language modelling (vocabulary 256) at context 256 (default) or 512.

Configurations
- ``synthetic`` (default, embedded): a sparse random order-k Markov source over bytes. A fixed random alphabet of
  ``alphabet`` byte values; every context of the last ``order`` symbols has ``branching`` distinct successors whose
  probabilities follow one Zipf law p_r ~ (r + 1)^-zipf (r = 0..branching-1), successors drawn at random per context.
  Because every context has the same next-symbol distribution up to relabelling, H(X_t | past) is the same in
  every state, so the entropy rate is exactly H = -sum_r p_r log p_r nats whatever the stationary distribution.
  That is the best achievable cross-entropy (``floor``); positions with fewer than ``order`` symbols of context
  are left out of the loss and metrics (``Batch.mask``) so the floor is exact. The source is fixed by
  ``source_seed`` (the same task for every run seed); the run seed draws the sequences. Defaults (order 2,
  16 symbols, 4 successors, Zipf 1: H = 1.2425 nats/byte) are learnable in a few hundred steps by a d_model-64
  model on CPU; order 3 with 16 symbols (4096 contexts) sits at the unigram plateau (ln 16 nats) for longer.
- ``text``: any UTF-8 text file (``data_path``; ``--data PATH`` on the command line), split 90/5/5 by byte position.
- ``hf``: a Hugging Face ``datasets`` dataset available locally (the optional package; never downloads):
  ``hf_dataset`` is a name in the local cache or a ``save_to_disk`` directory; the ``hf_text_field`` column of
  ``hf_split`` is joined with newlines, UTF-8 encoded and split 90/5/5 by position.

Batches are generated (synthetic) or sliced (text) on demand; a text file is memory-mapped, never copied whole.
Training windows start at positions drawn from (seed, step); validation/test use at most ``eval_sequences`` fixed,
evenly spaced, non-overlapping windows. Metrics: cross-entropy in nats (``loss``, primary), bits per byte
(``bpb``), perplexity, next-byte accuracy. Reference values (nats, on the split's actual examples):
``baseline_unigram``, the cross-entropy of the split's own byte frequencies (the best predictor that ignores
context; fitted to the split, so slightly optimistic); for ``synthetic`` also ``floor``, the *realised* optimum:
the mean of -log p(x_t | the previous ``order`` bytes) under the true source over the scored positions, with
``floor_expected`` = the entropy rate (its expectation) as a second line, and ``gap_to_floor``.
"""

from __future__ import annotations

import codecs
import math
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from numpy.lib.stride_tricks import sliding_window_view

from mamba_kan.errors import UserError
from mamba_kan.io_spec import NextTokenOutput, TokenInput
from mamba_kan.tasks.base import Batch, Task
from mamba_kan.tasks.common import (
    as_float,
    as_int,
    check_seed,
    check_split,
    check_step,
    chunked_eval,
    make_rng,
    merge_options,
)
from mamba_kan.tasks.registry import FamilyInfo, register_family

VOCAB = 256
SPLIT_FRACTIONS = (0.90, 0.05, 0.05)
MAX_CONTEXTS = 1 << 22  # alphabet^order transition rows kept in memory (x branching bytes each)
SYNTHETIC_BURN_IN = 64  # steps run before the first emitted symbol so the start is near stationarity
# training batches sampled per call of the synthetic source (SyntheticLanguageTask.train_batch)
TRAIN_BLOCK = 8

OPTIONS: dict[str, Any] = {
    "context": 256,
    "eval_sequences": 64,
    "order": 2,
    "alphabet": 16,
    "branching": 4,
    "zipf": 1.0,
    "source_seed": 0,
    "data_path": None,
    "hf_dataset": None,
    "hf_config": None,
    "hf_split": "train",
    "hf_text_field": "text",
}
OPTION_HELP: dict[str, str] = {
    "context": "sequence length in bytes (standard: 256 and 512)",
    "eval_sequences": "validation/test windows of `context` bytes each",
    "order": "synthetic: Markov order k (symbols of context that determine the next)",
    "alphabet": "synthetic: number of distinct byte values the source emits (2..256)",
    "branching": "synthetic: successors per context (1..alphabet)",
    "zipf": "synthetic: Zipf exponent of the successor probabilities (0 = uniform)",
    "source_seed": "synthetic: seed of the transition table (the task itself; the run seed draws sequences)",
    "data_path": "text: path of a UTF-8 text file",
    "hf_dataset": "hf: dataset name in the local Hugging Face cache, or a save_to_disk directory",
    "hf_config": "hf: dataset configuration name",
    "hf_split": "hf: split whose text is used (then split 90/5/5 by position)",
    "hf_text_field": "hf: column holding the text",
}


def zipf_probs(branching: int, exponent: float) -> np.ndarray:
    """p_r proportional to (r + 1)^-exponent, r = 0..branching-1 (float64, sums to 1)."""
    weights = np.arange(1, branching + 1, dtype=np.float64) ** -exponent
    return weights / weights.sum()


class MarkovSource:
    """The synthetic order-k byte source (see the module docstring).

    ``successors``: (alphabet^order, branching) int64 symbol indices; context id = base-``alphabet`` number of the
    last ``order`` symbol indices (oldest most significant). ``symbols``: (alphabet,) the byte value of each index.
    """

    def __init__(self, order: int, alphabet: int, branching: int, zipf: float, source_seed: int) -> None:
        if not 2 <= alphabet <= VOCAB:
            raise UserError(f"option alphabet must be in [2, {VOCAB}], got {alphabet}")
        if not 1 <= branching <= alphabet:
            raise UserError(f"option branching must be in [1, alphabet={alphabet}], got {branching}")
        if alphabet**order > MAX_CONTEXTS:
            raise UserError(
                f"alphabet^order = {alphabet}^{order} contexts exceeds {MAX_CONTEXTS}; lower order or alphabet"
            )
        self.order, self.alphabet, self.branching = order, alphabet, branching
        self.n_contexts = alphabet**order
        rng = make_rng(source_seed, "language-source", order, alphabet, branching)
        self.symbols = rng.choice(VOCAB, size=alphabet, replace=False).astype(np.uint8)
        # distinct successors per context: the first `branching` entries of an independent random ranking
        rows = []
        for start in range(0, self.n_contexts, 1 << 16):
            keys = rng.random((min(1 << 16, self.n_contexts - start), alphabet), dtype=np.float32)
            rows.append(np.argsort(keys, axis=1)[:, :branching])
        self.successors = np.concatenate(rows).astype(np.int64)
        self.probs = zipf_probs(branching, zipf)
        self._cdf = np.cumsum(self.probs)
        self._cdf[-1] = 1.0

    @property
    def entropy_rate(self) -> float:
        """Exact entropy rate in nats per symbol (every context has the same next-symbol entropy)."""
        p = self.probs[self.probs > 0]
        return float(-(p * np.log(p)).sum())

    def sample(self, rng: np.random.Generator, batch: int, length: int) -> np.ndarray:
        """(batch, length) uint8 bytes; each row starts after SYNTHETIC_BURN_IN steps from a uniform context."""
        return self.sample_many([rng], batch, length)[0]

    def sample_many(self, rngs: list[np.random.Generator], batch: int, length: int) -> list[np.ndarray]:
        """:meth:`sample` for each generator in ``rngs``, the same arrays as separate calls give, with the
        sequential walk run once over all their rows (its ~2 numpy calls per token step are the sampler's cost)."""
        steps = SYNTHETIC_BURN_IN + length
        # successor ranks are iid Zipf whatever the context, so draw them all at once; only the lookup is sequential.
        # Each generator draws exactly what a lone sample() call draws, in the same order.
        draws = [(rng.random((batch, steps)), rng.integers(0, self.n_contexts, size=batch)) for rng in rngs]
        ranks = np.searchsorted(self._cdf, np.concatenate([u for u, _ in draws]), side="right")
        ranks = np.minimum(ranks, self.branching - 1)
        ctx = np.concatenate([c for _, c in draws])
        # One add and one gather per step: the walk runs on cur = context id x branching, through the table
        # cur' = next_context[cur + rank] of next context ids x branching; the symbol emitted at a step is the last
        # (least significant) digit of the context it leads to. Same sequence as stepping ctx and successors.
        table = self._next_context_table()
        cur = ctx * self.branching
        ranks = np.ascontiguousarray(ranks.T)  # (steps, batch): one contiguous row per step
        out = np.empty((steps, len(ctx)), dtype=np.int64)
        for t in range(steps):
            cur = table[cur + ranks[t]]
            out[t] = cur
        sym = (out[SYNTHETIC_BURN_IN:].T // self.branching) % self.alphabet
        return np.split(self.symbols[sym], len(rngs))

    def _next_context_table(self) -> np.ndarray:
        """(n_contexts x branching,) int64: entry ctx x branching + rank = the context id after emitting the rank's
        successor of ctx, times branching. Built once per source."""
        if getattr(self, "_next_table", None) is None:
            ctx = np.arange(self.n_contexts, dtype=np.int64)[:, None]
            nxt = (ctx * self.alphabet + self.successors) % self.n_contexts
            self._next_table = (nxt * self.branching).reshape(-1)
        return self._next_table

    def log_prob_targets(self, inputs: np.ndarray, targets: np.ndarray) -> np.ndarray:
        """log p(targets[:, t] | the ``order`` bytes ending at inputs[:, t]) under the source, (B, L) float64.

        ``targets[:, t] = inputs[:, t + 1]`` (next-byte windows). Positions t < order - 1 lack a full context and
        get NaN; so do transitions the source cannot emit (-inf would be their true value; they never occur in
        sampled data)."""
        index = np.full(VOCAB, -1, dtype=np.int64)
        index[self.symbols] = np.arange(self.alphabet)
        sym_in, sym_out = index[inputs], index[targets]
        b, length = inputs.shape
        out = np.full((b, length), np.nan)
        k = self.order
        if length < k:
            return out
        ctx = np.zeros((b, length - k + 1), dtype=np.int64)
        for j in range(k):  # context id of inputs[t-k+1 .. t], oldest most significant
            ctx = ctx * self.alphabet + sym_in[:, j : length - k + 1 + j]
        succ = self.successors[ctx]  # (B, L-k+1, branching)
        hit = succ == sym_out[:, k - 1 :, None]
        rank = hit.argmax(axis=-1)
        logp = np.where(hit.any(axis=-1), np.log(self.probs)[rank], np.nan)
        out[:, k - 1 :] = logp
        return out

    def log_prob_next(self, history: np.ndarray) -> np.ndarray:
        """Log-probabilities over the 256 bytes of the next byte after ``history`` (bytes, >= order of them)."""
        index = {int(b): i for i, b in enumerate(self.symbols)}
        ctx = 0
        for b in history[-self.order :]:
            ctx = ctx * self.alphabet + index[int(b)]
        out = np.full(VOCAB, -np.inf)
        out[self.symbols[self.successors[ctx]]] = np.log(self.probs)
        return out


# --- real text -------------------------------------------------------------------------------------------------
def load_text_file(path_like: str | os.PathLike[str]) -> np.ndarray:
    """Memory-map a UTF-8 text file as uint8 after checking it exists, is non-empty and decodes as UTF-8."""
    path = Path(path_like).expanduser()
    if not path.exists():
        raise UserError(f"text file not found: {path}")
    if not path.is_file():
        raise UserError(f"not a regular file: {path} (data_path must be a UTF-8 text file)")
    size = path.stat().st_size
    if size == 0:
        raise UserError(f"text file is empty: {path}")
    decoder = codecs.getincrementaldecoder("utf-8")()
    offset = 0
    with path.open("rb") as fh:
        while chunk := fh.read(1 << 20):
            try:
                decoder.decode(chunk)
            except UnicodeDecodeError as exc:
                raise UserError(
                    f"not UTF-8 text: {path} (invalid byte at offset {offset + exc.start})"
                ) from None
            if b"\x00" in chunk:
                raise UserError(
                    f"not UTF-8 text: {path} (NUL byte at offset {offset + chunk.index(0)}: binary?)"
                )
            offset += len(chunk)
        try:
            decoder.decode(b"", final=True)
        except UnicodeDecodeError:
            raise UserError(f"not UTF-8 text: {path} (truncated multi-byte character at the end)") from None
    return np.memmap(path, dtype=np.uint8, mode="r")


def load_hf_text(name: str, config: str | None, split: str, field: str) -> np.ndarray:
    """Text of a locally available Hugging Face dataset as UTF-8 bytes (uint8); never downloads."""
    try:
        import datasets
    except ImportError:
        raise UserError(
            "task language/hf needs the optional 'datasets' package (pip install 'mamba-kan[hf]')"
        ) from None
    try:
        if Path(name).expanduser().is_dir():
            ds = datasets.load_from_disk(str(Path(name).expanduser()))
            if isinstance(ds, datasets.DatasetDict):
                if split not in ds:
                    raise UserError(f"dataset {name} has no split {split!r}; valid choices: {', '.join(ds)}")
                ds = ds[split]
        else:
            ds = datasets.load_dataset(
                name, config, split=split, download_config=datasets.DownloadConfig(local_files_only=True)
            )
    except UserError:
        raise
    except (
        Exception
    ) as exc:  # datasets raises many types (FileNotFoundError, ConnectionError, ValueError, ...)
        raise UserError(
            f"could not load Hugging Face dataset {name!r} locally (no download is attempted): {exc}"
        ) from None
    if field not in ds.column_names:
        raise UserError(
            f"dataset {name!r} has no column {field!r}; valid choices: {', '.join(ds.column_names)}"
        )
    data = "\n".join(str(t) for t in ds[field]).encode("utf-8")
    if not data:
        raise UserError(f"dataset {name!r} split {split!r} has no text in column {field!r}")
    return np.frombuffer(data, dtype=np.uint8)


class LanguageTask(Task):
    family = "language"
    primary_metric = "loss"
    higher_is_better = False

    def __init__(self, config: str, seed: int, options: dict[str, Any]) -> None:
        super().__init__(config, check_seed(seed))
        self.context = as_int("context", options["context"])
        self.eval_sequences = as_int("eval_sequences", options["eval_sequences"])

    @property
    def input_spec(self) -> TokenInput:
        return TokenInput(VOCAB)

    @property
    def output_spec(self) -> NextTokenOutput:
        return NextTokenOutput(VOCAB)

    @property
    def tokens_per_sample(self) -> int:
        return self.context

    def compute_reference_values(self, split: str) -> dict[str, float]:
        """``baseline_unigram``: entropy (nats) of the byte frequencies of the split's scored targets."""
        counts = np.zeros(VOCAB, dtype=np.float64)
        for batch in self.eval_batches(split, 256):
            targets = batch.targets if batch.mask is None else batch.targets[batch.mask]
            counts += np.bincount(targets.reshape(-1).numpy(), minlength=VOCAB)
        p = counts[counts > 0] / counts.sum()
        return {"baseline_unigram": float(-(p * np.log(p)).sum())}

    @staticmethod
    def _batch(seqs: np.ndarray, mask: torch.Tensor | None = None) -> Batch:
        """(B, L + 1) bytes -> inputs (B, L) long and next-byte targets (B, L) long."""
        t = torch.from_numpy(np.ascontiguousarray(seqs, dtype=np.int64))
        return Batch(t[:, :-1], t[:, 1:], mask)


class SyntheticLanguageTask(LanguageTask):
    """Sequences from the exact-entropy Markov source (see the module docstring)."""

    def __init__(self, seed: int, options: dict[str, Any]) -> None:
        super().__init__("synthetic", seed, options)
        for name in ("data_path", "hf_dataset"):
            if options[name] is not None:
                raise UserError(
                    f"option {name} is not used by language/synthetic; use task language/text or language/hf"
                )
        self.source_seed = as_int("source_seed", options["source_seed"], 0)
        self.source = MarkovSource(
            order=as_int("order", options["order"]),
            alphabet=as_int("alphabet", options["alphabet"]),
            branching=as_int("branching", options["branching"]),
            zipf=as_float("zipf", options["zipf"], 0.0),
            source_seed=self.source_seed,
        )
        if self.context < self.source.order:
            raise UserError(
                f"context ({self.context}) must be >= order ({self.source.order}) for language/synthetic"
            )
        # a target at position t is predicted from inputs 0..t; it has its full Markov context iff t >= order - 1
        self._mask_row = torch.arange(self.context) >= self.source.order - 1
        self._train_cache: dict[tuple[int, int], np.ndarray] = {}  # (step, batch size) -> sampled sequences

    def compute_reference_values(self, split: str) -> dict[str, float]:
        """Unigram baseline plus the realised optimum (``floor``) and the entropy rate (``floor_expected``)."""
        out = super().compute_reference_values(split)
        nll, count = 0.0, 0
        for batch in self.eval_batches(split, 256):
            assert batch.mask is not None
            logp = self.source.log_prob_targets(batch.inputs.numpy(), batch.targets.numpy())
            nll -= float(logp[batch.mask.numpy()].sum())
            count += int(batch.mask.sum())
        out["floor"] = nll / count
        out["floor_expected"] = self.source.entropy_rate
        return out

    def _make(self, rng: np.random.Generator, n: int) -> Batch:
        return self._masked_batch(self.source.sample(rng, n, self.context + 1))

    def _masked_batch(self, seqs: np.ndarray) -> Batch:
        return self._batch(seqs, self._mask_row.expand(len(seqs), -1).clone())

    def train_batch(self, step: int, batch_size: int) -> Batch:
        """The batch of ``step``: its own generator as always; the next TRAIN_BLOCK steps' batches are sampled in
        the same call (one walk over all their rows) and kept, so a training loop's sequential steps pay the
        sampler's per-token-step cost once per block (same sequences: 0.55 -> ~0.2 ms per quick step in the loop,
        measured)."""
        check_step(step, batch_size)
        key = (step, batch_size)
        if key not in self._train_cache:
            block = range(step, step + TRAIN_BLOCK)
            rngs = [make_rng(self.seed, "language", "synthetic", "train", s) for s in block]
            seqs = self.source.sample_many(rngs, batch_size, self.context + 1)
            self._train_cache = {(s, batch_size): q for s, q in zip(block, seqs)}
        return self._masked_batch(self._train_cache.pop(key))

    def eval_batches(self, split: str, batch_size: int) -> Iterator[Batch]:
        check_split(split)
        check_step(0, batch_size)
        return chunked_eval(
            self.eval_sequences,
            lambda index, n: self._make(make_rng(self.seed, "language", "synthetic", split, index), n),
            batch_size,
        )

    def describe(self) -> dict[str, Any]:
        s = self.source
        return {
            "name": self.name,
            "seed": self.seed,
            "context": self.context,
            "order": s.order,
            "alphabet": s.alphabet,
            "branching": s.branching,
            "zipf_probs": s.probs.tolist(),
            "source_seed": self.source_seed,
            "entropy_rate_nats": s.entropy_rate,
            "entropy_rate_bits": s.entropy_rate / math.log(2.0),
            "eval_sequences": self.eval_sequences,
        }


class CorpusLanguageTask(LanguageTask):
    """Windows of a byte corpus split 90/5/5 by position (a text file or a local Hugging Face dataset)."""

    def __init__(self, config: str, seed: int, options: dict[str, Any]) -> None:
        super().__init__(config, seed, options)
        if config == "text":
            if options["data_path"] is None:
                raise UserError("task language/text needs option data_path (--data PATH): a UTF-8 text file")
            self.source_name = str(options["data_path"])
            data = load_text_file(options["data_path"])
        else:
            if options["hf_dataset"] is None:
                raise UserError(
                    "task language/hf needs option hf_dataset: a dataset name in the local cache or a directory"
                )
            self.source_name = str(options["hf_dataset"])
            data = load_hf_text(
                self.source_name,
                options["hf_config"],
                str(options["hf_split"]),
                str(options["hf_text_field"]),
            )
        n = len(data)
        cut1 = int(n * SPLIT_FRACTIONS[0])
        cut2 = cut1 + int(n * SPLIT_FRACTIONS[1])
        self.bounds = {"train": (0, cut1), "val": (cut1, cut2), "test": (cut2, n)}
        need = self.context + 1
        shortest = min(hi - lo for lo, hi in self.bounds.values())
        if shortest < need:
            raise UserError(
                f"{self.source_name} has {n} bytes; a 90/5/5 split needs at least {math.ceil(need / 0.05)} bytes "
                f"for windows of context {self.context} + 1 (lower the context or use more text)"
            )
        self.data = data
        self._windows = sliding_window_view(data, need)  # a view: nothing is copied until a batch is indexed

    def train_batch(self, step: int, batch_size: int) -> Batch:
        check_step(step, batch_size)
        rng = make_rng(self.seed, "language", self.config_name, "train", step)
        lo, hi = self.bounds["train"]
        starts = rng.integers(lo, hi - (self.context + 1), size=batch_size, endpoint=True)
        return self._batch(self._windows[starts])

    def eval_starts(self, split: str) -> np.ndarray:
        """Starts of the fixed evaluation windows of ``split``: non-overlapping, evenly spaced if capped."""
        check_split(split)
        lo, hi = self.bounds[split]
        count = (hi - lo - 1) // self.context
        index = np.arange(count)
        if count > self.eval_sequences:
            index = np.unique(np.linspace(0, count - 1, self.eval_sequences).round().astype(np.int64))
        return lo + index * self.context

    def eval_batches(self, split: str, batch_size: int) -> Iterator[Batch]:
        check_step(0, batch_size)
        starts = self.eval_starts(split)
        for i in range(0, len(starts), batch_size):
            yield self._batch(self._windows[starts[i : i + batch_size]])

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "seed": self.seed,
            "context": self.context,
            "source": self.source_name,
            "bytes": len(self.data),
            "bounds": {k: list(v) for k, v in self.bounds.items()},
            "eval_sequences": self.eval_sequences,
        }


def make_language_task(config: str, seed: int, **options: Any) -> LanguageTask:
    merged = merge_options("language", OPTIONS, options)
    if config == "synthetic":
        return SyntheticLanguageTask(seed, merged)
    return CorpusLanguageTask(config, seed, merged)


INFO = register_family(
    FamilyInfo(
        name="language",
        description="byte-level language modelling: an embedded Markov source with exactly known entropy rate, "
        "a UTF-8 text file, or a local Hugging Face dataset",
        configs=("synthetic", "text", "hf"),
        default_config="synthetic",
        factory=make_language_task,
        options=dict(OPTIONS),
        option_help=dict(OPTION_HELP),
        config_help={
            "synthetic": "sparse random order-2 Markov source over 16 byte values, 4 Zipf successors per "
            "context; floor = realised optimum on the test set (entropy rate 1.24 nats expected)",
            "text": "a UTF-8 text file (data_path / --data PATH), split 90/5/5 by position",
            "hf": "a locally available Hugging Face dataset (optional 'datasets' package), split 90/5/5",
        },
        input_end="tokens (vocab 256, bytes)",
        output_end="next-token (vocab 256)",
        primary_metric="loss",
        higher_is_better=False,
        metrics=(
            "loss",
            "bpb",
            "perplexity",
            "accuracy",
            "baseline_unigram",
            "floor",
            "floor_expected",
            "gap_to_floor",
        ),
        floor="synthetic: realised optimal cross-entropy on the test sequences under the true source (nats/byte; "
        "floor_expected = the exact entropy rate); every config: baseline_unigram",
    )
)
