"""The tensors of a "megatron" checkpoint (`dist/`, megatron-core's torch_dist format on top of PyTorch
Distributed Checkpoint), read and written one tensor at a time, on any machine, without megatron.

What is on disk: one entry per sharded key, each the *global* tensor whatever TP/PP/DP layout wrote it,
split into chunks (one per writing rank). Decoder layers are stacked: `decoder.layers.<rest>` has the
layer as its first axis, so `decoder.layers.3.<rest>` is row 3 of it. With the fully reshardable
optimizer format, Adam's state lies beside the weights as `optimizer.state.{param,exp_avg,exp_avg_sq}.<key>`
(fp32, same global shape), and the step in `common.pt`.

Reading: `DistReader` reads any region of an entry (a layer of a stacked one) and nothing else.
`.metadata` is a pickle: it is read through an unpickler that only builds checkpoint-metadata classes,
so a crafted file is refused instead of running code.

Writing: `write_dist` takes `LazyTensor`s (shape, dtype and a function per chunk) and writes each chunk
when DCP's writer asks for it, so a checkpoint far larger than memory is written one chunk at a time.
"""

from __future__ import annotations

import io
import pickle
import re
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.distributed.checkpoint import FileSystemReader, FileSystemWriter
from torch.distributed.checkpoint import save as dcp_save
from torch.distributed.checkpoint.default_planner import DefaultSavePlanner
from torch.distributed.checkpoint.metadata import (
    BytesStorageMetadata,
    ChunkStorageMetadata,
    Metadata,
    MetadataIndex,
    TensorProperties,
    TensorStorageMetadata,
)
from torch.distributed.checkpoint.planner import LoadPlan, ReadItem, TensorWriteData, WriteItem, WriteItemType
from torch.distributed.checkpoint.planner_helpers import create_read_items_for_chunk_list

from flm.train.checkpoint.meta import CheckpointError

DIST_DIR = "dist"
METADATA_NAME = ".metadata"
COMMON_NAME = "common.pt"
BACKEND_NAME = "metadata.json"
BACKEND = '{"sharded_backend": "torch_dist", "sharded_backend_version": 1, "common_backend": "torch", ' \
          '"common_backend_version": 1}'
OPTIMIZER_PREFIX = "optimizer.state."
SHARDING = "fully_reshardable"
MOMENTS = ("exp_avg", "exp_avg_sq")
LAYER_KEY = re.compile(r"^decoder\.layers\.(\d+)\.(.+)$")
STACKED_PREFIX = "decoder.layers."


def stacked_key(name: str) -> tuple[str, int | None]:
    """Parameter name -> (checkpoint key, layer row): `decoder.layers.3.mlp.x` -> (`decoder.layers.mlp.x`, 3)."""
    match = LAYER_KEY.match(name)
    if match:
        return f"{STACKED_PREFIX}{match.group(2)}", int(match.group(1))
    return name, None


def saved_adam_step(optimizer_state: dict[str, Any]) -> float:
    """Adam's step in a checkpoint's common optimizer state: megatron keeps it in the param groups (without
    Apex or Transformer Engine)."""
    groups = (optimizer_state.get("optimizer") or {}).get("param_groups") or []
    steps = [float(g["step"]) for g in groups if "step" in g]
    return max(steps, default=0.0)


# ------------------------------------------------------------------------------------------------ reading

_ALLOWED_MODULES = ("torch.distributed.checkpoint.", "collections")
_ALLOWED = {("torch", "Size"), ("torch", "device"), ("builtins", "set"), ("builtins", "frozenset"),
            ("builtins", "slice"), ("torch.serialization", "_get_layout"),
            ("pathlib", "PosixPath"), ("pathlib", "PurePosixPath")}


class _MetadataUnpickler(pickle.Unpickler):
    """Builds only DCP's metadata classes, torch.Size and torch's dtype/layout/memory-format constants."""

    def find_class(self, module: str, name: str) -> Any:
        if module.startswith(_ALLOWED_MODULES) or (module, name) in _ALLOWED:
            return super().find_class(module, name)
        if module == "torch" and isinstance(getattr(torch, name, None), torch.dtype | torch.layout |
                                            torch.memory_format):
            return getattr(torch, name)
        raise pickle.UnpicklingError(f"refused to build {module}.{name}")


def read_dist_metadata(directory: Path) -> Metadata:
    """`dist/.metadata`, built by the restricted unpickler; CheckpointError naming the file otherwise."""
    path = Path(directory) / METADATA_NAME
    try:
        with path.open("rb") as fh:
            metadata = _MetadataUnpickler(fh).load()
    except FileNotFoundError as err:
        raise CheckpointError(f"{path}: missing; not a complete megatron checkpoint") from err
    except (pickle.UnpicklingError, EOFError, AttributeError, ImportError, TypeError) as err:
        raise CheckpointError(f"{path}: refused: not plain checkpoint metadata ({err})") from err
    if not isinstance(metadata, Metadata):
        raise CheckpointError(f"{path}: refused: holds a {type(metadata).__name__}, not checkpoint metadata")
    return metadata


class _SafeReader(FileSystemReader):
    def __init__(self, path: Path, metadata: Metadata) -> None:
        super().__init__(str(path))
        self._metadata = metadata

    def read_metadata(self, *args: Any, **kwargs: Any) -> Metadata:
        return self._metadata


class _Into:
    """The one-request load planner `FileSystemReader.read_data` needs: copies each read into `dest`."""

    def __init__(self, dest: torch.Tensor) -> None:
        self.dest = dest

    def resolve_tensor(self, item: ReadItem) -> torch.Tensor:
        view = self.dest
        for dim, (start, length) in enumerate(zip(item.dest_offsets, item.lengths, strict=True)):
            view = view.narrow(dim, start, length)
        return view

    def commit_tensor(self, item: ReadItem, tensor: torch.Tensor) -> None:
        pass

    def load_bytes(self, item: ReadItem, value: io.BytesIO) -> None:
        raise CheckpointError(f"{item.dest_index.fqn}: expected a tensor, found an object")


class DistReader:
    """Reads single tensors (or one layer of a stacked one) from a `dist/` directory."""

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)
        self.metadata = read_dist_metadata(self.directory)
        self._reader = _SafeReader(self.directory, self.metadata)
        self._reader.set_up_storage_reader(self.metadata, True)

    def entries(self) -> dict[str, TensorStorageMetadata]:
        return {k: v for k, v in self.metadata.state_dict_metadata.items() if isinstance(v, TensorStorageMetadata)}

    def has(self, key: str) -> bool:
        return isinstance(self.metadata.state_dict_metadata.get(key), TensorStorageMetadata)

    def read(self, key: str, row: int | None = None) -> torch.Tensor:
        """Entry `key` (only its row `row` along the first axis, if given), in its stored dtype."""
        md = self.metadata.state_dict_metadata.get(key)
        if not isinstance(md, TensorStorageMetadata):
            raise CheckpointError(f"{self.directory}: no tensor {key!r}")
        shape = list(md.size)
        offsets = [0] * len(shape)
        if row is not None:
            if not shape or not 0 <= row < shape[0]:
                raise CheckpointError(f"{self.directory}: {key!r} has no row {row} (shape {tuple(shape)})")
            offsets[0], shape[0] = row, 1
        dest = torch.empty(shape, dtype=md.properties.dtype)
        items = create_read_items_for_chunk_list(key, md, [ChunkStorageMetadata(torch.Size(offsets),
                                                                                torch.Size(shape))])
        self._reader.read_data(LoadPlan(items), _Into(dest)).wait()
        return dest[0] if row is not None else dest


# ------------------------------------------------------------------------------------------------ writing


@dataclass
class LazyTensor:
    """A tensor to write, made chunk by chunk on demand: `chunks[i]` = (offsets, sizes, make).

    Each `make()` returns a tensor of its own: once written, the writer frees its memory."""

    shape: tuple[int, ...]
    dtype: torch.dtype
    chunks: list[tuple[tuple[int, ...], tuple[int, ...], Callable[[], torch.Tensor]]]

    @classmethod
    def stacked(cls, shape: tuple[int, ...], dtype: torch.dtype,
                rows: list[Callable[[], torch.Tensor]]) -> LazyTensor:
        """A stacked tensor written one row (layer) at a time."""
        rest = tuple(shape[1:])
        return cls(tuple(shape), dtype, [((i,) + (0,) * len(rest), (1, *rest), make)
                                         for i, make in enumerate(rows)])

    @classmethod
    def whole(cls, shape: tuple[int, ...], dtype: torch.dtype, make: Callable[[], torch.Tensor]) -> LazyTensor:
        return cls(tuple(shape), dtype, [((0,) * len(shape), tuple(shape), make)])

    def __create_write_items__(self, fqn: str, obj: Any) -> list[WriteItem]:
        properties = TensorProperties(dtype=self.dtype)
        return [WriteItem(index=MetadataIndex(fqn, torch.Size(offsets)), type=WriteItemType.SHARD,
                          tensor_data=TensorWriteData(chunk=ChunkStorageMetadata(torch.Size(offsets),
                                                                                 torch.Size(sizes)),
                                                      properties=properties, size=torch.Size(self.shape)))
                for offsets, sizes, _ in self.chunks]

    def make(self, offsets: tuple[int, ...]) -> torch.Tensor:
        for chunk_offsets, sizes, make in self.chunks:
            if tuple(chunk_offsets) == tuple(offsets):
                tensor = make().to(self.dtype).contiguous()
                if tuple(tensor.shape) != tuple(sizes):
                    tensor = tensor.reshape(sizes)
                return tensor
        raise KeyError(offsets)


class _LazyPlanner(DefaultSavePlanner):
    """Makes each LazyTensor chunk when the writer reaches it, and frees the one written before.

    DCP's writer asks for the chunks one at a time and writes each before asking for the next, but it
    keeps a reference to the last chunk of every tensor (for its safetensors format), which would hold a
    layer's worth of every tensor to the end: so the chunk written last is emptied when the next is made.
    """

    def __init__(self) -> None:
        super().__init__(flatten_state_dict=False, flatten_sharded_tensors=False)
        self._written: torch.Tensor | None = None

    def lookup_object(self, index: MetadataIndex) -> Any:
        obj = self.state_dict[index.fqn]
        if not isinstance(obj, LazyTensor):
            return super().lookup_object(index)
        if self._written is not None:
            self._written.untyped_storage().resize_(0)
        self._written = obj.make(tuple(index.offset))
        return self._written


def optimizer_common(adam_step: float) -> dict[str, Any]:
    """common.pt of a checkpoint whose optimizer state is per parameter, as megatron-core writes and loads it
    (flm's loader takes the param groups' hyperparameters from the run's config; the step comes from here)."""
    return {"optimizer": {"optimizer": {"param_groups": [{"step": float(adam_step)}]},
                          "param_state_sharding_type": SHARDING},
            "content_metadata": {"distrib_optim_sharding_type": SHARDING}}


def write_dist(directory: Path, tensors: dict[str, LazyTensor], objects: dict[str, Any],
               common: dict[str, Any]) -> None:
    """Write a `dist/` directory that megatron-core's dist_checkpointing (and DistReader) loads.

    `tensors` in the order to write them; `objects` (megatron's ShardedObjects, e.g. `_extra_state`) are
    stored as torch-saved bytes; `common` is the non-sharded state (common.pt).
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    state: dict[str, Any] = dict(tensors)
    for key, value in objects.items():
        buffer = io.BytesIO()
        torch.save(value, buffer)
        state[key] = buffer
    with warnings.catch_warnings():  # "torch.distributed is disabled ...": one writer is what we mean
        warnings.filterwarnings("ignore", message="torch.distributed is disabled", category=UserWarning)
        # one thread, nothing copied ahead: the serial loader, which writes each chunk before making the next
        writer = FileSystemWriter(str(directory), single_file_per_rank=True, thread_count=1, per_thread_copy_ahead=0)
        dcp_save(state, storage_writer=writer, planner=_LazyPlanner(), no_dist=True)
    torch.save(common, directory / COMMON_NAME)
    (directory / BACKEND_NAME).write_text(BACKEND + "\n", encoding="utf-8")


def sharded_objects(reader: DistReader) -> Iterator[str]:
    """Keys of the stored objects (not tensors), e.g. megatron's per-layer `_extra_state`."""
    for key, md in reader.metadata.state_dict_metadata.items():
        if isinstance(md, BytesStorageMetadata):
            yield key
