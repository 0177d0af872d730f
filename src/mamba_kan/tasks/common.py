"""Helpers shared by the task families: seeded random streams, option validation, re-batching.

Every random draw of a task comes from a generator built here from explicit keys (seed, task salt, split, step or
chunk index); nothing reads the global numpy/torch RNG, so a model's initialisation or dropout can never change
the data another model sees for the same seed.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

import numpy as np
import torch

from mamba_kan.errors import UserError, unknown_choice
from mamba_kan.tasks.base import SPLITS, Batch

# Fixed chunk size for evaluation sets generated on demand: the examples of a split do not depend on the batch
# size the caller asks for (chunks are generated with their own keys, then re-batched).
EVAL_CHUNK = 16


def stable_hash(text: str) -> int:
    """A process-independent 32-bit hash (Python's ``hash`` of a str is salted per process)."""
    return zlib.crc32(text.encode("utf-8"))


def make_rng(seed: int, *keys: int | str) -> np.random.Generator:
    """A numpy Generator determined only by ``seed`` and ``keys`` (strings are hashed stably).

    SeedSequence mixes the whole key tuple, so (seed, 'train', 3) and (seed, 'val', 3) give independent streams.
    """
    entropy = [int(seed)] + [stable_hash(k) if isinstance(k, str) else int(k) for k in keys]
    if any(e < 0 for e in entropy):
        raise UserError(f"seeds and step numbers must be >= 0, got {entropy}")
    return np.random.default_rng(np.random.SeedSequence(entropy))


def check_seed(seed: int) -> int:
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise UserError(f"seed must be a non-negative integer, got {seed!r}")
    return int(seed)


def check_split(split: str, allowed: Iterable[str] = ("val", "test")) -> str:
    allowed = tuple(allowed)
    if split not in allowed:
        raise unknown_choice("split", split, allowed)
    return split


def check_step(step: int, batch_size: int) -> None:
    if isinstance(step, bool) or not isinstance(step, int | np.integer) or step < 0:
        raise UserError(f"step must be a non-negative integer, got {step!r}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int | np.integer) or batch_size < 1:
        raise UserError(f"batch_size must be a positive integer, got {batch_size!r}")


# --- options ---------------------------------------------------------------------------------------------------
def merge_options(family: str, defaults: Mapping[str, Any], given: Mapping[str, Any]) -> dict[str, Any]:
    """Defaults overridden by ``given``; unknown names raise a UserError listing the valid ones."""
    unknown = sorted(set(given) - set(defaults))
    if unknown:
        raise UserError(
            f"unknown option(s) {', '.join(unknown)} for task '{family}'; valid: {', '.join(sorted(defaults))}"
        )
    return {**defaults, **given}


def as_int(name: str, value: Any, minimum: int = 1) -> int:
    """An integer option (ints or integer strings such as from a command line) that must be >= ``minimum``."""
    if isinstance(value, bool):
        raise UserError(f"option {name} must be an integer, got {value!r}")
    try:
        out = int(value)
        if isinstance(value, float) and out != value:
            raise ValueError
    except (TypeError, ValueError):
        raise UserError(f"option {name} must be an integer, got {value!r}") from None
    if out < minimum:
        what = "positive" if minimum == 1 else f">= {minimum}"
        raise UserError(f"option {name} must be {what}, got {out}")
    return out


def as_float(name: str, value: Any, low: float | None = None, high: float | None = None) -> float:
    """A real option within [low, high] (either bound optional)."""
    if isinstance(value, bool):
        raise UserError(f"option {name} must be a number, got {value!r}")
    try:
        out = float(value)
    except (TypeError, ValueError):
        raise UserError(f"option {name} must be a number, got {value!r}") from None
    if not np.isfinite(out) or (low is not None and out < low) or (high is not None and out > high):
        raise UserError(f"option {name} must be a finite number in [{low}, {high}], got {value!r}")
    return out


def as_bool(name: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "1", "yes", "false", "0", "no"):
        return value.lower() in ("true", "1", "yes")
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    raise UserError(f"option {name} must be true or false, got {value!r}")


def as_int_list(name: str, value: Any, minimum: int = 1) -> tuple[int, ...]:
    """A list of integers: a sequence, a single int, or a comma-separated string ('512,1024'); empty allowed."""
    if value is None:
        return ()
    if isinstance(value, str):
        items: list[Any] = [v for v in value.replace(" ", "").split(",") if v]
    elif isinstance(value, int | np.integer) and not isinstance(value, bool):
        items = [value]
    elif isinstance(value, Iterable):
        items = list(value)
    else:
        raise UserError(f"option {name} must be a list of integers, got {value!r}")
    return tuple(as_int(name, v, minimum) for v in items)


# --- batches ---------------------------------------------------------------------------------------------------
def rebatch(chunks: Iterable[Batch], batch_size: int) -> Iterator[Batch]:
    """Concatenate/split a stream of batches into batches of ``batch_size`` (the last one may be smaller)."""
    if batch_size < 1:
        raise UserError(f"batch_size must be a positive integer, got {batch_size}")
    pending: list[Batch] = []
    have = 0
    for chunk in chunks:
        pending.append(chunk)
        have += chunk.size
        while have >= batch_size:
            merged = concat_batches(pending)
            yield slice_batch(merged, 0, batch_size)
            rest = slice_batch(merged, batch_size, merged.size)
            pending, have = ([rest], rest.size) if rest.size else ([], 0)
    if have:
        yield concat_batches(pending)


def concat_batches(batches: list[Batch]) -> Batch:
    if len(batches) == 1:
        return batches[0]
    masks = [b.mask for b in batches]
    return Batch(
        torch.cat([b.inputs for b in batches]),
        torch.cat([b.targets for b in batches]),
        None if masks[0] is None else torch.cat([m for m in masks if m is not None]),
        {k: torch.cat([b.extra[k] for b in batches]) for k in batches[0].extra},
    )


def slice_batch(batch: Batch, start: int, stop: int) -> Batch:
    return Batch(
        batch.inputs[start:stop],
        batch.targets[start:stop],
        None if batch.mask is None else batch.mask[start:stop],
        {k: v[start:stop] for k, v in batch.extra.items()},
    )


def chunked_eval(
    n_examples: int, make_chunk: Callable[[int, int], Batch], batch_size: int
) -> Iterator[Batch]:
    """Evaluation batches over ``n_examples`` generated in fixed chunks of EVAL_CHUNK examples.

    ``make_chunk(chunk_index, n)`` must be deterministic in its arguments; the examples therefore do not depend
    on ``batch_size`` and only EVAL_CHUNK + batch_size examples are in memory at once.
    """

    def chunks() -> Iterator[Batch]:
        for index, start in enumerate(range(0, n_examples, EVAL_CHUNK)):
            yield make_chunk(index, min(EVAL_CHUNK, n_examples - start))

    return rebatch(chunks(), batch_size)


def split_index(split: str) -> int:
    return SPLITS.index(split)
