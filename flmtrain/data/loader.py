"""torch side of the mixture: a Dataset over the global sample order, a data-parallel sampler, and a
loader whose whole state is (consumed_samples, seed).

Rank r of R takes, from each global batch of micro_batch * R consecutive samples, the r-th block of
micro_batch (Megatron's pretraining sampler). `consumed_samples` counts global samples, so a run
resumed with another R continues the very same global order.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from flm.config import ConfigError
from flm.train.data.boundaries import attention_mask, position_ids
from flm.train.data.samples import Samples


class MixtureDataset(Dataset):
    """Global sample n -> {"tokens": [seq_len + 1]}; `__getitems__` assembles a whole batch at once."""

    def __init__(self, samples: Samples, eos_id: int, *, reset_position_ids: bool = False,
                 reset_attention_mask: bool = False) -> None:
        self.samples = samples
        self.eos_id = eos_id
        self.reset_position_ids = reset_position_ids
        self.reset_attention_mask = reset_attention_mask

    def __len__(self) -> int:
        if self.samples.length is None:
            raise TypeError("the training order is infinite")
        return self.samples.length

    def __getitems__(self, indices: list[int]) -> dict[str, torch.Tensor]:
        tokens = self.samples.tokens(indices)
        batch = {"tokens": torch.from_numpy(tokens)}
        inputs = tokens[:, :-1]
        if self.reset_position_ids:
            batch["position_ids"] = torch.from_numpy(position_ids(inputs, self.eos_id))
        if self.reset_attention_mask:
            batch["attention_mask"] = torch.from_numpy(attention_mask(inputs, self.eos_id))
        return batch

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return {k: v[0] for k, v in self.__getitems__([index]).items()}


def _as_is(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """collate_fn: `__getitems__` already returns a collated batch."""
    return batch


class RankSampler(Sampler[int]):
    """This rank's global sample indices from `start`: blocks of micro_batch, strided by micro_batch * R."""

    def __init__(self, start: int, micro_batch: int, dp_rank: int, dp_size: int, end: int | None = None) -> None:
        if micro_batch <= 0 or dp_size <= 0 or not 0 <= dp_rank < dp_size or start < 0:
            raise ValueError(f"need micro_batch > 0, 0 <= dp_rank < dp_size and start >= 0; got "
                             f"micro_batch={micro_batch}, dp_rank={dp_rank}, dp_size={dp_size}, start={start}")
        self.start, self.micro_batch, self.dp_rank, self.dp_size, self.end = start, micro_batch, dp_rank, dp_size, end

    @property
    def global_batch(self) -> int:
        return self.micro_batch * self.dp_size

    def num_batches(self) -> int | None:
        """Micro-batches this rank yields (None: endless); only whole global batches, so ranks stay in step."""
        return None if self.end is None else max(0, (self.end - self.start) // self.global_batch)

    def __len__(self) -> int:
        batches = self.num_batches()
        if batches is None:
            raise TypeError("the training sampler is endless")
        return batches * self.micro_batch

    def __iter__(self) -> Iterator[int]:
        step = 0
        batches = self.num_batches()
        while batches is None or step < batches:
            first = self.start + step * self.global_batch + self.dp_rank * self.micro_batch
            yield from range(first, first + self.micro_batch)
            step += 1


def _data_loader(dataset: MixtureDataset, sampler: RankSampler, num_workers: int, pin_memory: bool) -> DataLoader:
    """A DataLoader with its own generator: each iterator it starts draws its workers' base seed from that one,
    not from torch's global RNG, which dropout draws from. (A resumed run starts its loader inside its first
    step; that draw would shift every dropout mask after the resume.) The samples are random-free, so a fixed
    seed loses nothing."""
    return DataLoader(dataset, batch_size=sampler.micro_batch, sampler=sampler, collate_fn=_as_is,
                      num_workers=num_workers, pin_memory=pin_memory, generator=torch.Generator().manual_seed(0))


class TrainLoader:
    """Endless micro-batches for one data-parallel rank; `state_dict()` is enough to resume exactly."""

    def __init__(self, dataset: MixtureDataset, *, micro_batch: int, dp_rank: int, dp_size: int,
                 consumed_samples: int, seed: int, num_workers: int = 0, pin_memory: bool = False) -> None:
        self.dataset = dataset
        self.micro_batch, self.dp_rank, self.dp_size = micro_batch, dp_rank, dp_size
        self.consumed_samples = consumed_samples
        """Global samples (all ranks) handed out so far; the next batch starts the next global batch."""
        self.seed = seed
        self.num_workers, self.pin_memory = num_workers, pin_memory
        RankSampler(consumed_samples, micro_batch, dp_rank, dp_size)  # check the arguments now

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        sampler = RankSampler(self.consumed_samples, self.micro_batch, self.dp_rank, self.dp_size)
        for batch in _data_loader(self.dataset, sampler, self.num_workers, self.pin_memory):
            self.consumed_samples += sampler.global_batch
            yield batch

    def state_dict(self) -> dict[str, int]:
        return {"consumed_samples": self.consumed_samples, "seed": self.seed}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from a saved state (call before iterating); a different seed would be another order."""
        if int(state["seed"]) != self.seed:
            raise ConfigError(f"loader state was saved with seed {state['seed']}, this mixture has seed "
                             f"{self.seed}: the sample order would differ")
        self.consumed_samples = int(state["consumed_samples"])


class EvalLoader:
    """The finite validation order for one rank; every iteration starts again from its first batch."""

    def __init__(self, dataset: MixtureDataset, *, micro_batch: int, dp_rank: int, dp_size: int,
                 num_workers: int = 0, pin_memory: bool = False) -> None:
        self.dataset = dataset
        self.sampler = RankSampler(0, micro_batch, dp_rank, dp_size, end=len(dataset))
        self.num_workers, self.pin_memory = num_workers, pin_memory

    def __len__(self) -> int:
        return self.sampler.num_batches() or 0

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        return iter(_data_loader(self.dataset, self.sampler, self.num_workers, self.pin_memory))
