"""What a mixture delivers over its first N training samples: shares, tokens and epochs per source and
subset, and the worst share deviation over any window, computed from the same routing the loader uses.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from flm.config import ConfigError
from flm.train.data.blend import Blend
from flm.train.data.mixture import Mixture

CHUNK = 1 << 20
WINDOW = 10_000
"""Window over which mix-report measures the worst deviation of a source's share from its weight."""


def window_errors(blend: Blend, num_samples: int, window: int) -> np.ndarray:
    """Per stream: max |share in window - weight| over every window of `window` consecutive samples."""
    worst = np.zeros(len(blend), dtype=np.float64)
    for first in range(0, max(num_samples - window, 0) + 1, CHUNK):
        last = min(first + CHUNK + window, num_samples)  # windows starting in [first, first + CHUNK)
        stream, _ = blend.route(np.arange(first, last))
        for k in range(len(blend)):
            cum = np.concatenate([[0], np.cumsum(stream == k)])
            counts = cum[window:] - cum[:-window]
            worst[k] = max(worst[k], float(np.abs(counts / window - blend.weights[k]).max()))
    return worst


def _delivered(stream: Any, codes: np.ndarray, num_codes: int, count: int, block: int, seq_len: int) -> np.ndarray:
    """Tokens per subset in a stream's first `count` samples: exact over whole shuffle blocks (they cover
    the same tokens in any order), the last partial block counted at its own blend of subsets."""
    full, rest = divmod(count, block)
    done = stream.tokens_by_code(codes, num_codes, full * block * seq_len)
    if not rest:
        return done
    through = stream.tokens_by_code(codes, num_codes, (full + 1) * block * seq_len)
    return done + np.rint((through - done) * rest / block).astype(np.int64)


def mixture_report(mixture: Mixture, num_samples: int, window: int = WINDOW) -> dict:
    if num_samples <= 0:
        raise ConfigError(f"num_samples must be positive, got {num_samples}")
    seq_len = mixture.seq_len
    window = min(window, num_samples)
    samples = mixture.train_samples
    per_source = samples.sources.counts(num_samples)
    per_stream = samples.stream_counts(num_samples)
    errors = window_errors(samples.sources, num_samples, window)
    sources = {}
    for s, source in enumerate(mixture.sources):
        names = source.index.subset_names
        lengths = source.shards.doc_lengths
        delivered = np.zeros(len(names), dtype=np.int64)
        available = np.zeros(len(names), dtype=np.int64)
        for c, (part, count) in enumerate(zip(source.parts, per_stream[s], strict=True)):
            codes = source.index.subset_codes
            delivered += _delivered(part.train, codes, len(names), int(count), samples.blocks[s][c], seq_len)
            available += np.bincount(codes[part.train.docs], weights=lengths[part.train.docs],
                                     minlength=len(names)).astype(np.int64)
        targets = ({p.subset: p.share for p in source.parts} if source.config.subsets
                   else {n: available[k] / available.sum() for k, n in enumerate(names)})
        tokens = int(per_source[s]) * seq_len
        subsets = {
            name: {
                "weight": source.config.subsets.get(name, 1.0) if source.config.subsets else None,
                "target": float(targets[name]),
                "share": float(delivered[k] / tokens) if tokens else 0.0,
                "tokens": int(delivered[k]),
                "epochs": float(delivered[k] / available[k]) if available[k] else 0.0,
            }
            for k, name in enumerate(names)
        }
        sources[source.config.name] = {
            "weight": float(samples.sources.weights[s]),
            "share": float(per_source[s] / num_samples),
            "samples": int(per_source[s]),
            "tokens": tokens,
            "epochs": tokens / source.train_tokens,
            "max_window_error": float(errors[s]),
            "documents": int((~source.index.held_out).sum()),
            "valid_documents": int(source.index.held_out.sum()),
            "available_tokens": source.train_tokens,
            "path": str(source.config.path),
            "subsets": subsets,
        }
    return {"samples": num_samples, "seq_len": seq_len, "tokens": num_samples * seq_len, "window": window,
            "seed": mixture.cfg.seed, "valid_samples": mixture.num_valid_samples, "sources": sources}
