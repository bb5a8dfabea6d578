"""Lines of a multi-frame zstd stream: the one decompressor of raw and clean `*.jsonl.zst` files, and the
compression datatrove's writers use for them.

A damaged stream raises ZstdStreamError instead of ending early, so a caller never mistakes a cut-off
file for a short one; each caller turns it into its own error accounting.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import IO

import fsspec.compression
import zstandard

from flm.config.errors import FlmError

CHUNK = 1 << 20
WRITE_LEVEL = 3
"""zstd's default level. fsspec's own "zstd" writes at level 10: six times slower, for files a seventh smaller."""
FSSPEC_ZSTD = "flm-zstd"
"""The compression name datatrove writers are given (registered with fsspec when this module is imported, so in
every process that unpickles such a writer: a Slurm or Ray task too)."""


def _fsspec_zstd(infile: IO[bytes], mode: str = "rb") -> IO[bytes]:
    if "r" in mode:
        return zstandard.ZstdDecompressor().stream_reader(infile)
    return zstandard.ZstdCompressor(level=WRITE_LEVEL).stream_writer(infile)


if FSSPEC_ZSTD not in fsspec.compression.compr:
    fsspec.compression.register_compression(FSSPEC_ZSTD, _fsspec_zstd, [])


class ZstdStreamError(FlmError, ValueError):
    """The stream is corrupt (not zstd) or `truncated` (it ends inside a frame)."""

    def __init__(self, detail: str, truncated: bool) -> None:
        super().__init__(detail)
        self.truncated = truncated


def zstd_chunks(fh: IO[bytes], on_read: Callable[[], None] | None = None) -> Iterator[bytes]:
    """Decompressed chunks of all frames in `fh`; `on_read()` after each compressed read (for progress).

    An empty file is no frames and yields nothing; callers that require data check for that themselves.
    """
    dctx = zstandard.ZstdDecompressor()
    dobj = dctx.decompressobj()
    in_frame = False
    while raw := fh.read(CHUNK):
        if on_read is not None:
            on_read()
        while raw:
            try:
                out = dobj.decompress(raw)
            except zstandard.ZstdError as err:
                raise ZstdStreamError(str(err), truncated=False) from err
            if dobj.eof:
                raw, dobj, in_frame = dobj.unused_data, dctx.decompressobj(), False
            else:
                raw, in_frame = b"", True
            if out:
                yield out
    if in_frame:
        raise ZstdStreamError("the stream ends inside a zstd frame", truncated=True)


def split_lines(chunks: Iterator[bytes]) -> Iterator[bytes]:
    """Lines without their newline; a last line without newline is yielded too."""
    rest = b""
    for chunk in chunks:
        lines = (rest + chunk).split(b"\n")
        rest = lines.pop()
        yield from lines
    if rest:
        yield rest
