"""Fixed-length blocks and a stateless batch order.

A stream of L tokens gives ``(L - 1) // S`` blocks of ``S + 1`` tokens (stride S, inputs
``block[:-1]``, targets ``block[1:]``). The order of training blocks is a pure function of
``(seed, step)``: sample ``g = step * B + j`` of the run is block ``perm_e[g mod n]`` with
``e = g // n`` and ``perm_e`` a permutation seeded by ``(seed, e)``. So resuming at any step needs
no sampler state, and a data-parallel rank ``r`` of ``W`` takes the samples ``j ≡ r (mod W)`` -
disjoint shards whose union is exactly the single-worker batch.
"""

from __future__ import annotations

import numpy as np
import torch

from tti_ray.data.tokens import DataError


def n_blocks(stream: np.ndarray, seq_len: int) -> int:
    return max((len(stream) - 1) // seq_len, 0)


def block(stream: np.ndarray, i: int, seq_len: int) -> np.ndarray:
    return np.asarray(stream[i * seq_len : i * seq_len + seq_len + 1], dtype=np.int64)


class BlockSampler:
    """Deterministic, resumable, shardable batch order over a token stream."""

    def __init__(self, stream: np.ndarray, seq_len: int, seed: int) -> None:
        self.stream, self.seq_len, self.seed = stream, seq_len, seed
        self.n = n_blocks(stream, seq_len)
        if self.n == 0:
            raise ValueError(f"token stream ({len(stream)} tokens) shorter than one block")
        self._perms: dict[int, np.ndarray] = {}

    def _perm(self, epoch: int) -> np.ndarray:
        if epoch not in self._perms:
            if len(self._perms) > 2:
                self._perms.clear()
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            self._perms[epoch] = torch.randperm(self.n, generator=g).numpy()
        return self._perms[epoch]

    def indices(self, step: int, batch_size: int, rank: int = 0, world: int = 1) -> list[int]:
        """Block indices of this rank's share of the global batch at ``step``."""
        out = []
        for j in range(rank, batch_size, world):
            g = step * batch_size + j
            out.append(int(self._perm(g // self.n)[g % self.n]))
        return out

    def batch(self, idx: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        blocks = torch.from_numpy(np.stack([block(self.stream, i, self.seq_len) for i in idx]))
        return blocks[:, :-1], blocks[:, 1:]


def eval_blocks(stream: np.ndarray, seq_len: int, count: int) -> torch.Tensor:
    """The first ``count`` blocks of a stream (fixed eval sample), ``[count, S + 1]``."""
    count = min(count, n_blocks(stream, seq_len))
    return torch.from_numpy(np.stack([block(stream, i, seq_len) for i in range(count)]))


def require_blocks(train: np.ndarray, valid: np.ndarray, seq_len: int) -> None:
    """Both splits must hold at least one block: checked before a run writes anything, so a
    corpus that is too short is a one-line ``DataError``, not a crash in the sampler."""
    for split, stream in (("train", train), ("validation", valid)):
        if n_blocks(stream, seq_len) == 0:
            raise DataError(
                f"data: the {split} split has {len(stream)} tokens, fewer than one block "
                f"(model.seq_len + 1 = {seq_len + 1}); use more data or a shorter model.seq_len"
            )
