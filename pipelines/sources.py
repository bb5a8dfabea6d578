"""The corpus registry: what each source is, where it is published, and how to check what arrives.

Data, not code: `flm data download` and `--list` read these tables and nothing else. A checksum is
recorded only where a public page states it (each entry says where), and only for the mirror it
was published for, because two mirrors of "the same" corpus need not hold the same bytes. Where
none is known the downloader verifies what it can (the size, when known) and records the sha256 of
what it got in a `<file>.sha256` sidecar, so later runs and `--list` can tell if the file changed.

On disk every source is one flat directory of `*.jsonl.zst` files, which is what
`flm data prepare` reads: `<out>/pile/train-00.jsonl.zst`, `<out>/wudao/wudao-00000.jsonl.zst`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from flm.config.errors import FlmError
from flm.pipelines.download import part_path, recorded_sha256


class SourceError(FlmError, ValueError):
    """An unknown source, mirror or file name; the message lists what exists."""


@dataclass(frozen=True)
class Digest:
    """What a file's bytes must be; `size` is exact bytes (None when only a rounded size is published)."""

    sha256: str | None = None
    size: int | None = None
    where: str = ""
    """The public page that states it."""


@dataclass(frozen=True)
class Mirror:
    name: str
    base_url: str
    note: str
    digests: dict[str, Digest] = field(default_factory=dict)
    """Published digests by remote path (e.g. `train/00.jsonl.zst`) for this mirror's bytes."""


@dataclass(frozen=True)
class RemoteFile:
    """One published file: its path under a mirror, its local name, and its rounded published size."""

    path: str
    approx_bytes: int

    @property
    def local_name(self) -> str:
        """Flat local name: `train/00.jsonl.zst` -> `train-00.jsonl.zst`."""
        return self.path.replace("/", "-")

    @property
    def key(self) -> str:
        """The short name users type with --files: `00`..`29`, `val`, `test`."""
        stem = self.path.removesuffix(".jsonl.zst")
        return stem.split("/", 1)[1] if stem.startswith("train/") else stem


@dataclass(frozen=True)
class Source:
    name: str
    description: str
    arrives_as: str
    """The published format, before anything of ours touches it."""
    licence: str
    files: tuple[RemoteFile, ...] = ()
    mirrors: tuple[Mirror, ...] = ()
    obtain: str = ""
    """How to get it when there is no public mirror (WuDao)."""

    @property
    def default_mirror(self) -> Mirror | None:
        return self.mirrors[0] if self.mirrors else None

    def mirror(self, name: str) -> Mirror:
        for m in self.mirrors:
            if m.name == name:
                return m
        raise SourceError(f"unknown mirror {name!r} for {self.name}; known: {', '.join(m.name for m in self.mirrors)}"
                          " (or give a URL)")

    def select(self, keys: list[str] | None) -> list[RemoteFile]:
        """Files named by key (`00`, `7`, `val`, `train-00`, `train/00.jsonl.zst`); all files for None."""
        if keys is None:
            return list(self.files)
        by_name: dict[str, RemoteFile] = {}
        for f in self.files:
            for alias in (f.key, f.path, f.local_name, f.local_name.removesuffix(".jsonl.zst")):
                by_name[alias] = f
        chosen: list[RemoteFile] = []
        for raw in keys:
            key = raw.strip()
            key = key.zfill(2) if key.isdigit() else key
            if key not in by_name:
                raise SourceError(f"unknown {self.name} file {raw!r}; known: {', '.join(f.key for f in self.files)}")
            if by_name[key] not in chosen:
                chosen.append(by_name[key])
        return chosen

    def published_digests(self, f: RemoteFile) -> dict[str, Digest]:
        """Every mirror's published digest of this file, by mirror name."""
        return {m.name: m.digests[f.path] for m in self.mirrors if f.path in m.digests}


_GB = 10**9
_MB = 10**6

_ERKHOV = "https://huggingface.co/datasets/RichardErkhov/pile-uncopyrighted/blob/main/"
_ERKHOV_COMMIT = "https://huggingface.co/datasets/RichardErkhov/pile-uncopyrighted/commit/"

PILE = Source(
    name="pile",
    description="The Pile (EleutherAI, 2020), 22 English subsets; uncopyrighted variant by default",
    arrives_as="jsonl.zst, one document a line: {text, meta: {pile_set_name}}; kept as published",
    licence="per-subset terms; the default mirror removes the five subsets not explicitly allowed for AI "
            "training (Books3, BookCorpus2, OpenSubtitles, YTSubtitles, OWT2)",
    files=(
        *(RemoteFile(f"train/{i:02d}.jsonl.zst", int(11.1 * _GB)) for i in range(30)),
        RemoteFile("val.jsonl.zst", 338 * _MB),
        RemoteFile("test.jsonl.zst", 338 * _MB),
    ),
    mirrors=(
        Mirror(
            name="hf",
            base_url="https://huggingface.co/datasets/monology/pile-uncopyrighted/resolve/main/",
            note="monology/pile-uncopyrighted on Hugging Face; no per-file checksum found published, "
                 "sha256 recorded on download",
        ),
        Mirror(
            name="hf-erkhov",
            base_url="https://huggingface.co/datasets/RichardErkhov/pile-uncopyrighted/resolve/main/",
            note="a copy of pile-uncopyrighted; Git LFS sha256 published for the files listed",
            digests={
                "val.jsonl.zst": Digest("db5e5d1532bf8dc33a6589b50ecba1a8c96f7b4b9cb343d168e603c393007c26",
                                        where=_ERKHOV + "val.jsonl.zst"),
                "train/04.jsonl.zst": Digest("e47d4f6901494c86233f8e0e777426fac934f75efefedc3bb92a672d472943a0",
                                             where=_ERKHOV + "train/04.jsonl.zst"),
                "train/14.jsonl.zst": Digest("a86440b4951d96d7169fa0b78729bf2357819299bcbd294115dbe18a7701a8ac",
                                             where=_ERKHOV + "train/14.jsonl.zst"),
                "train/15.jsonl.zst": Digest("b3cfc4bfc93751f820d94424717870d1943c98b098394b597bc1acd2cd771bc5",
                                             where=_ERKHOV + "train/15.jsonl.zst"),
                "train/16.jsonl.zst": Digest("9787e2da0a3d2af7e824a32859e996d7dd382d31b24d4ba47db3fc2247c7f19f",
                                             where=_ERKHOV + "train/16.jsonl.zst"),
                "train/17.jsonl.zst": Digest("62f0ef742c010a911257a4db51831753acb44ff66837ba2c994078a8c5e90195",
                                             where=_ERKHOV + "train/17.jsonl.zst"),
                "train/23.jsonl.zst": Digest("cb4369da09c49768227fb86e272e60993bec2f3dc422682c69ea74d617635b50",
                                             11193533120, _ERKHOV_COMMIT + "3e5630e38bd3bb5e470163316eb6b5b7686c2024"),
                "train/24.jsonl.zst": Digest("7c98c4bfdb30f373d0e870f213b4665c22e349bbb037c7c89109bca8395e742f",
                                             11134735928, _ERKHOV_COMMIT + "3e5630e38bd3bb5e470163316eb6b5b7686c2024"),
                "train/25.jsonl.zst": Digest("fae1d6b5a116f51c4483a6157bb2c7723c5d1f88f947ccf37f292048edabfe8f",
                                             where=_ERKHOV + "train/25.jsonl.zst"),
                "train/28.jsonl.zst": Digest("9b20fd6120d33f733577e81d8465a25f0409971db3efae89af5467d5d838d107",
                                             where=_ERKHOV + "train/28.jsonl.zst"),
            },
        ),
        Mirror(
            name="the-eye",
            base_url="https://the-eye.eu/public/AI/pile/",
            note="the original full Pile (with Books3 and the other copyrighted subsets; larger files); "
                 "taken down after 2023 DMCA notices, may be unreachable",
            digests={
                "val.jsonl.zst": Digest(
                    "264c875d8bbd355d8daa9d032b75fd8fb91606218bb84dd1155b203fcd5fab92", 470907480,
                    "https://huggingface.co/datasets/mit-han-lab/pile-val-backup (a backup of this URL's file)"),
            },
        ),
    ),
)

WUDAO = Source(
    name="wudao",
    description="WuDaoCorpora 2.0 base (BAAI), about 200 GB of Chinese web text",
    arrives_as="JSON-array files of {id, uniqueKey, titleUkey, dataType, title, content}, inside one archive "
               "(WuDaoCorpus2.0_base_200G.rar); converted to jsonl.zst shards of 16384 documents",
    licence="BAAI's WuDaoCorpora agreement, accepted by each user; no public mirror may redistribute it",
    obtain="accept the licence and log in at https://www.scidb.cn/en/detail?dataSetId=c6a3fe684227415a9db8e21bac4a15ab "
           "(or https://data.baai.ac.cn), then pass the download link you are given with --url, or the "
           "downloaded archive / extracted folder with --from",
)

SOURCES: dict[str, Source] = {s.name: s for s in (PILE, WUDAO)}


def get_source(name: str) -> Source:
    try:
        return SOURCES[name]
    except KeyError:
        raise SourceError(f"unknown source {name!r}; known: {', '.join(SOURCES)}") from None


@dataclass
class LocalState:
    """What is on disk for one registry file under `<root>/<source>/`."""

    path: str
    bytes: int | None
    """Size of the complete file; None when it is not there."""
    part_bytes: int
    state: str
    """missing, partial, verified, recorded (sha256 noted, nothing published matches) or unchecked."""
    verified_by: str = ""
    """The mirror whose published sha256 the file matches."""


def local_state(src: Source, f: RemoteFile, root: Path) -> LocalState:
    """Classify a file on disk from its size, `.part` and `.sha256` sidecar, without hashing it."""
    path = root / src.name / f.local_name
    part = part_path(path)
    part_bytes = part.stat().st_size if part.exists() else 0
    if not path.exists():
        return LocalState(str(path), None, part_bytes, "partial" if part.exists() else "missing")
    size = path.stat().st_size
    sha = recorded_sha256(path)
    if sha is None:
        return LocalState(str(path), size, part_bytes, "unchecked")
    for mirror, digest in src.published_digests(f).items():
        if digest.sha256 == sha and digest.size in (None, size):
            return LocalState(str(path), size, part_bytes, "verified", mirror)
    return LocalState(str(path), size, part_bytes, "recorded")
