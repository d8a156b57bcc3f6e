"""Recording through a framework's own data loop (the Hugging Face Trainer, Lightning): the loader yields
example indices, a collate function turns them into `dataset.batch(indices)` and remembers them, and a forward
pre-hook matches each training forward's input against the next collated batch, so that the indices recorded
for a step are the examples the model trained on, in order."""

from __future__ import annotations

from collections import deque
from typing import Any, Literal

import numpy as np
import torch

from registry.spec.datasets import Dataset

__all__ = ["CollatedBatches", "IndexView"]


class IndexView(torch.utils.data.Dataset):  # type: ignore[type-arg,unused-ignore]
    """The indices 0 .. n-1 as a dataset: what the framework's sampler shuffles and batches."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> int:
        return int(i)


class CollatedBatches:
    """The batches a recording collate function made, consumed in order by the training forwards."""

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset
        self._pending: deque[tuple[np.ndarray, torch.Tensor]] = deque()
        self._step: list[np.ndarray] = []

    def collate(self, features: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        idx = np.asarray(features, dtype=np.int64)
        x, y = self.dataset.batch(idx)
        self._pending.append((idx, x))
        return x, y

    def match(self, args: Any, kwargs: Any) -> Literal["unmade", "mismatch"] | None:
        """None when this forward's input (`input_ids=`, else the first positional argument) is the next
        collated batch, whose indices then join the current step; "unmade" when no batch is pending, "mismatch"
        when the input is another tensor."""
        x = kwargs.get("input_ids", args[0] if args else None)
        if not self._pending:
            return "unmade"
        idx, want = self._pending.popleft()
        if not isinstance(x, torch.Tensor) or not torch.equal(x.detach().cpu(), want):
            return "mismatch"
        self._step.append(idx)
        return None

    def take_step(self) -> np.ndarray:
        """The indices of every micro-batch matched since the last call, concatenated in order."""
        idx, self._step = np.concatenate(self._step), []
        return idx
