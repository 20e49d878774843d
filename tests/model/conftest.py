"""One torch thread for these tests: on a shared 2-core machine, 2 OpenMP threads competing with
other processes make tiny models up to ~30x slower (spin-waiting), 1 thread is steady."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
