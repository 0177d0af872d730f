"""Shared test setup: small thread counts (2-core CI machine, tests run one after another)."""

from __future__ import annotations

import os

import pytest
import torch

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture(autouse=True)
def _seed_everything():
    torch.manual_seed(0)
    yield
