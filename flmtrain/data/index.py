"""The per-source document index: subset of every document and the validation hold-out, cached on disk.

Built once per (manifest, valid_fraction) with vectorised numpy/pyarrow (no per-document Python), and
saved as an .npz keyed by a hash of both, so later runs, ranks and workers only load it. The hold-out
is stratified by subset and seeded by the subset's name only: it does not move when the training
seed, the source's name or the mixture's weights change, so validation documents never leak into
training across runs that share the data.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import zlib
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa

from flm.config.atomic import atomic_write
from flm.pipelines.token_shards import TokenShards

log = logging.getLogger(__name__)

INDEX_VERSION = 1
VALID_SALT = 0x666C6D76  # "flmv": fixes the hold-out independently of every training seed


@dataclass
class SourceIndex:
    subset_names: list[str]
    """Distinct subsets in order of first appearance ('' for documents without one)."""
    subset_codes: np.ndarray
    """int32 per document: position of its subset in `subset_names`."""
    held_out: np.ndarray
    """bool per document: reserved for validation, never trained on."""
    key: str = ""
    """Cache key (manifest + hold-out settings): names every file derived from this index."""

    def docs(self, *, held_out: bool) -> np.ndarray:
        """Document ids (ascending) on one side of the hold-out."""
        return np.flatnonzero(self.held_out == held_out)

    def docs_by_subset(self, *, held_out: bool) -> list[np.ndarray]:
        """Per subset code, its document ids (ascending) on one side of the hold-out; one sort in all."""
        side = self.docs(held_out=held_out)
        codes = self.subset_codes[side]
        order = np.argsort(codes, kind="stable")
        bounds = np.searchsorted(codes[order], np.arange(len(self.subset_names) + 1))
        return [side[order[bounds[c]:bounds[c + 1]]] for c in range(len(self.subset_names))]


def default_cache_dir() -> Path:
    root = os.environ.get("FLM_CACHE_DIR")
    return Path(root) if root else Path.home() / ".cache" / "flm"


def cache_key(shards: TokenShards, valid_fraction: float) -> str:
    """Changes whenever the shards (their manifest, or a file's size or mtime: a shard rewritten in place is
    checked again) or the hold-out settings change."""
    manifest = asdict(shards.manifest)
    manifest.pop("extra", None)
    manifest.pop("command", None)
    stats = [(shards.directory / s.name).stat() for s in shards.manifest.shards]
    files = [[s.st_size, s.st_mtime_ns] for s in stats]
    blob = json.dumps({"version": INDEX_VERSION, "manifest": manifest, "files": files,
                       "valid_fraction": valid_fraction}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:24]


def build_index(shards: TokenShards, valid_fraction: float) -> SourceIndex:
    """The index of a source, after checking its shards' checksums and token ids once (a cached index means they
    were checked: a pass over every byte is too slow for each start of every rank)."""
    shards.verify()
    shards.check_token_ids()
    encoded = pa.array(shards.subsets(), pa.string()).dictionary_encode()
    names = [str(n) for n in encoded.dictionary.to_pylist()]
    codes = encoded.indices.to_numpy(zero_copy_only=False).astype(np.int32)
    held_out = np.zeros(len(codes), dtype=bool)
    if valid_fraction > 0:
        order = np.argsort(codes, kind="stable")
        bounds = np.searchsorted(codes[order], np.arange(len(names) + 1))
        for code, name in enumerate(names):
            members = order[bounds[code]:bounds[code + 1]]
            n = len(members)
            k = 0 if n < 2 else min(n - 1, max(1, round(valid_fraction * n)))
            if k:
                rng = np.random.default_rng([VALID_SALT, zlib.crc32(name.encode())])
                held_out[members[rng.permutation(n)[:k]]] = True
    return SourceIndex(names, codes, held_out)


def index_dir(cache_dir: Path | None) -> Path:
    return (cache_dir or default_cache_dir()) / "mixture-index"


def load_index(shards: TokenShards, valid_fraction: float, cache_dir: Path | None = None) -> SourceIndex:
    """The source's index from the cache, building and saving it (atomically) on a miss."""
    key = cache_key(shards, valid_fraction)
    path = index_dir(cache_dir) / f"{key}.npz"
    if path.exists():
        try:
            with np.load(path, allow_pickle=False) as data:
                index = SourceIndex([str(n) for n in data["subset_names"]], data["subset_codes"], data["held_out"], key)
            if len(index.subset_codes) == shards.num_docs:
                return index
        except (OSError, KeyError, ValueError) as err:
            log.warning("%s: unreadable index cache (%s); rebuilding", path, err)
    index = build_index(shards, valid_fraction)
    index.key = key
    try:  # an unwritable cache is a warning, not an error: a miss only costs rebuilding the index
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, lambda f: np.savez(f, subset_names=np.array(index.subset_names, dtype=str),
                                              subset_codes=index.subset_codes, held_out=index.held_out))
    except OSError as err:
        log.warning("cannot write cache file %s: %s", path, err)
    return index
