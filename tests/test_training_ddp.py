"""Data-parallel training on CPU: 2 processes with the gloo backend follow the loss curve of one process with the
same global batch (up to float tolerance), and the per-rank loss weights make masked losses exact."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
import torch.nn.functional as F

from mamba_kan.tasks.base import Batch
from mamba_kan.training import TrainConfig, run_experiment
from mamba_kan.training.distributed import DistInfo, loss_weight, shard_batch


def _cfg() -> TrainConfig:
    return TrainConfig(
        model="mlp_transformer",
        task="language",
        task_options={"context": 16, "eval_sequences": 4},
        model_cfg={"d_model": 32, "n_layers": 1, "n_heads": 2},
        max_steps=8,
        batch_size=8,
        log_every=1,
        eval_every=4,
        eval_batch_size=4,
        threads=1,
        device="cpu",
    )


def _worker(rank: int, world: int, port: int, out_dir: str) -> None:
    os.environ.update(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        RANK=str(rank),
        WORLD_SIZE=str(world),
        LOCAL_RANK=str(rank),
    )
    result = run_experiment(_cfg())
    Path(out_dir, f"rank{rank}.json").write_text(json.dumps(result))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _series(result: dict, split: str, metric: str) -> list[float]:
    return [c["value"] for c in result["curves"] if c["split"] == split and c["metric"] == metric]


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_two_gloo_processes_follow_the_single_process_loss_curve(tmp_path: Path):
    single = run_experiment(_cfg())
    mp.spawn(_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    for r in ranks:
        assert r["status"] == "completed" and r["world_size"] == 2
    one = torch.tensor(_series(single, "train", "loss"), dtype=torch.float64)
    assert len(one) == 8
    for r in ranks:
        two = torch.tensor(_series(r, "train", "loss"), dtype=torch.float64)
        torch.testing.assert_close(two, one, rtol=1e-5, atol=0)
        # the parameters followed the same path: same validation and test metrics
        val_one, val_two = _series(single, "val", "loss"), _series(r, "val", "loss")
        torch.testing.assert_close(torch.tensor(val_two), torch.tensor(val_one), rtol=1e-5, atol=0)
        assert r["metrics"]["loss"] == pytest.approx(single["metrics"]["loss"], rel=1e-5)


def test_rank_weights_make_the_average_of_masked_means_the_global_mean():
    """DDP averages gradients of per-rank losses; with uneven masks the weights w_r = W n_r / N are what make the
    average equal the global masked mean (checked against F.cross_entropy on the whole batch)."""
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(6, 5, 7, generator=g)
    targets = torch.randint(0, 7, (6, 5), generator=g)
    mask = torch.rand(6, 5, generator=g) < 0.5
    mask[0] = True  # rank 0 gets many more counted positions than the others
    batch = Batch(torch.zeros(6, 5, dtype=torch.long), targets, mask)
    expected = F.cross_entropy(logits[mask], targets[mask])
    world = 3
    total = torch.zeros(())
    for rank in range(world):
        info = DistInfo(rank=rank, world_size=world)
        local = shard_batch(batch, info)
        lo = rank * 2
        local_logits = logits[lo : lo + 2]
        local_mean = F.cross_entropy(local_logits[local.mask], local.targets[local.mask])
        total += loss_weight(batch, local, info) * local_mean
    torch.testing.assert_close(total / world, expected, rtol=1e-6, atol=0)
    unweighted = sum(
        F.cross_entropy(
            logits[2 * r : 2 * r + 2][mask[2 * r : 2 * r + 2]],
            targets[2 * r : 2 * r + 2][mask[2 * r : 2 * r + 2]],
        )
        for r in range(world)
    )
    assert not torch.isclose(unweighted / world, expected)  # the weights matter here


def test_global_batch_must_split_evenly():
    from mamba_kan.errors import UserError

    batch = Batch(torch.zeros(5, 3), torch.zeros(5, 1))
    with pytest.raises(UserError, match="divisible"):
        shard_batch(batch, DistInfo(rank=0, world_size=2))
