"""The mixture dataloader on synthetic token shards.

Every token of a synthetic document is that document's unique id (source * 1e6 + doc + 1), and the
document ends with EOS (0), so a packed sample shows exactly which documents it holds and where
each one starts.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

import flm.pipelines.token_shards as token_shards
from flm.cli.main import app
from flm.config import ConfigError, config_to_dict, load_config
from flm.pipelines.token_shards import Manifest, TokenShardWriter, documents_to_batch
from flm.train.data import Blend, Mixture
from flm.train.data.config import MixtureConfig
from flm.train.data.mixture import open_mixture
from flm.train.data.report import mixture_report

EOS = 0
SEQ = 64
PILE = {"Pile-CC": 300, "Github": 120, "ArXiv": 60}
WUDAO = {"news": 150, "": 50}


def write_source(directory: Path, source_id: int, subsets: dict[str, int], seed: int) -> dict[int, int]:
    """Two shards of two record batches each; returns document id -> length (EOS included)."""
    rng = np.random.default_rng(seed)
    directory.mkdir(parents=True)
    manifest = Manifest(tokenizer_hash="f" * 64, vocab_size=1 << 30, eos_id=EOS)
    lengths: dict[int, int] = {}
    names = [name for name, n in subsets.items() for _ in range(n)]
    rng.shuffle(names)
    for shard, part in enumerate(np.array_split(np.array(names, dtype=object), 2)):
        writer = TokenShardWriter(directory / f"shard-{shard:03d}.arrow")
        for batch in np.array_split(part, 2):
            docs = []
            for _ in batch:
                doc_id = source_id * 1_000_000 + len(lengths) + 1
                length = int(rng.integers(2, 3 * SEQ))
                tokens = np.full(length, doc_id, dtype=np.uint32)
                tokens[-1] = EOS
                lengths[doc_id] = length
                docs.append(tokens)
            writer.write_batch(documents_to_batch(docs, [str(len(lengths))] * len(docs), ["s"] * len(docs),
                                                  [str(b) for b in batch]))
        manifest.shards.append(writer.close())
    manifest.save(directory)
    return lengths


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("tokens")
    pile = write_source(root / "pile", 1, PILE, seed=1)
    wudao = write_source(root / "wudao", 2, WUDAO, seed=2)
    return {"root": root, "lengths": {**pile, **wudao}, "cache": root / "cache"}


def config(data: dict, **changes: object) -> MixtureConfig:
    raw = {
        "seq_len": SEQ, "seed": 7, "valid_fraction": 0.05, "cache_dir": str(data["cache"]),
        "sources": [
            {"name": "pile", "path": str(data["root"] / "pile"), "weight": 0.7,
             "subsets": {"Pile-CC": 2.0, "Github": 1.0}},
            {"name": "wudao", "path": str(data["root"] / "wudao"), "weight": 0.3},
        ],
    }
    raw.update(changes)
    return load_config(MixtureConfig, raw)


def take(loader, n: int) -> list[torch.Tensor]:
    out = []
    for batch in loader:
        out.append(batch["tokens"])
        if len(out) == n:
            return out
    raise AssertionError("loader ended early")


def doc_ids(tokens: torch.Tensor) -> set[int]:
    return set(torch.unique(tokens).tolist()) - {EOS}


def test_blend_is_exact_over_every_window() -> None:
    weights = np.array([0.5, 0.2, 0.15, 0.1, 0.05])
    blend = Blend(weights * 3.0)  # weights need not sum to 1
    stream, index = blend.route(np.arange(60_000))
    for k, w in enumerate(weights):
        mine = stream == k
        assert np.array_equal(index[mine], np.arange(mine.sum())), "each stream's samples are 0, 1, 2, ..."
        cum = np.concatenate([[0], np.cumsum(mine)])
        shares = (cum[10_000:] - cum[:-10_000]) / 10_000
        assert np.abs(shares - w).max() < 0.01
    assert np.array_equal(blend.counts(60_000), np.bincount(stream))
    assert all(blend.locate(n) == (stream[n], index[n]) for n in range(0, 60_000, 7))
    late, _ = blend.route(np.arange(10**12, 10**12 + 10_000))
    assert np.abs(np.bincount(late, minlength=5) / 10_000 - weights).max() < 0.01


def test_shares_and_report(data: dict) -> None:
    mixture = Mixture(config(data))
    report = mixture_report(mixture, 50_000)
    pile, wudao = report["sources"]["pile"], report["sources"]["wudao"]
    assert pile["weight"] == pytest.approx(0.7) and wudao["weight"] == pytest.approx(0.3)
    for source in (pile, wudao):
        assert abs(source["share"] - source["weight"]) < 1e-3
        assert source["max_window_error"] < 0.01
        assert source["epochs"] > 1
    for name, sub in pile["subsets"].items():
        assert abs(sub["share"] - sub["target"]) < 0.01, name
    assert pile["subsets"]["ArXiv"]["weight"] == 1.0 and wudao["subsets"]["news"]["weight"] is None
    cc, gh = pile["subsets"]["Pile-CC"], pile["subsets"]["Github"]
    assert cc["epochs"] == pytest.approx(2 * gh["epochs"], rel=0.02), "multiplier 2 doubles the epochs"
    # Shares measured on the samples the loader actually routes: every window of 10k within 1%.
    source, stream, _ = mixture.train_samples.route(np.arange(30_000))
    for s, weight in enumerate((0.7, 0.3)):
        cum = np.concatenate([[0], np.cumsum(source == s)])
        assert np.abs((cum[10_000:] - cum[:-10_000]) / 10_000 - weight).max() < 0.01


def test_deterministic_and_seeded(data: dict) -> None:
    first = take(Mixture(config(data)).train_loader(4), 6)
    again = take(Mixture(config(data)).train_loader(4), 6)
    other = take(Mixture(config(data, seed=8)).train_loader(4), 6)
    assert all(torch.equal(a, b) for a, b in zip(first, again, strict=True))
    assert not all(torch.equal(a, b) for a, b in zip(first, other, strict=True))
    assert first[0].shape == (4, SEQ + 1) and first[0].dtype == torch.int64


def test_seq_len_override_and_default(data: dict) -> None:
    assert Mixture(config(data, seq_len=None)).seq_len == 2048
    override = Mixture(config(data), seq_len=32)
    assert take(override.train_loader(2), 1)[0].shape == (2, 33)


def test_a_mixture_seq_len_overriding_the_stage_says_so(data: dict, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="flm.train.data.mixture"):
        assert open_mixture(config(data), SEQ).seq_len == SEQ  # the same length: nothing to say
        assert open_mixture(config(data, seq_len=None), 32).seq_len == 32  # the stage's applies
        assert not caplog.records
        assert open_mixture(config(data), 128).seq_len == SEQ
    assert [r.getMessage() for r in caplog.records] == [
        f"the mixture's seq_len ({SEQ}) overrides the stage's model.seq_len (128): samples and the model's context "
        f"are {SEQ} tokens; remove seq_len from the mixture to use the stage's"]


def test_dp_slices_are_disjoint_and_complete(data: dict) -> None:
    mixture = Mixture(config(data))
    single = torch.cat(take(mixture.train_loader(2, consumed_samples=10), 12))
    ranks = [take(mixture.train_loader(2, dp_rank=r, dp_size=3, consumed_samples=10), 4) for r in range(3)]
    interleaved = torch.cat([ranks[r][step] for step in range(4) for r in range(3)])
    assert torch.equal(single, interleaved)


def test_resume_mid_epoch_across_epochs_and_dp_sizes(data: dict) -> None:
    mixture = Mixture(config(data))
    loader = mixture.train_loader(8, dp_rank=1, dp_size=2, consumed_samples=800)
    iterator = iter(loader)
    for _ in range(5):
        next(iterator)
    state = loader.state_dict()
    assert state == {"consumed_samples": 800 + 5 * 16, "seed": 7}
    expected = [next(iterator)["tokens"] for _ in range(40)]
    # A wudao epoch is about 190 documents x 95 tokens, ~280 of its samples: the 40 steps cross one.
    wudao = mixture.sources[1].parts[0].train
    start, end = (mixture_report(mixture, n)["sources"]["wudao"]["samples"] * SEQ // wudao.tokens_per_epoch
                  for n in (state["consumed_samples"], state["consumed_samples"] + 40 * 16))
    assert end > start, "the resumed window must cross an epoch boundary"
    fresh = Mixture(config(data)).train_loader(8, dp_rank=1, dp_size=2, consumed_samples=state["consumed_samples"])
    assert all(torch.equal(a, b) for a, b in zip(expected, take(fresh, 40), strict=True))
    # Same global order with another data-parallel size: R=1 from the same state sees both ranks' data.
    one = take(mixture.train_loader(16, consumed_samples=state["consumed_samples"]), 40)
    assert all(torch.equal(a[8:], b) for a, b in zip(one, expected, strict=True))


def test_workers_match_main_process(data: dict) -> None:
    mixture = Mixture(config(data, reset_position_ids=True))
    plain = list(zip(range(6), mixture.train_loader(4, consumed_samples=3), strict=False))
    workers = list(zip(range(6), mixture.train_loader(4, consumed_samples=3, num_workers=2), strict=False))
    for (_, a), (_, b) in zip(plain, workers, strict=True):
        assert torch.equal(a["tokens"], b["tokens"]) and torch.equal(a["position_ids"], b["position_ids"])


def test_validation_is_held_out(data: dict) -> None:
    mixture = Mixture(config(data))
    valid = mixture.valid_loader(4, dp_rank=0, dp_size=1)
    valid_docs = set().union(*(doc_ids(b["tokens"]) for b in valid))
    assert len(valid) == mixture.num_valid_samples // 4 > 0
    assert valid_docs and doc_ids(next(iter(valid))["tokens"]) == doc_ids(next(iter(valid))["tokens"])
    seen = set().union(*(doc_ids(t) for t in take(mixture.train_loader(64), 60)))  # > 2 epochs of each stream
    held_out = {1_000_000 * (s + 1) + int(d) + 1 for s, src in enumerate(mixture.sources)
                for d in np.flatnonzero(src.index.held_out)}
    assert seen.isdisjoint(held_out) and seen.isdisjoint(valid_docs)
    assert valid_docs <= held_out
    assert seen | held_out == set(data["lengths"]), "every other document is trained on"
    ranks = [set().union(*(doc_ids(b["tokens"]) for b in mixture.valid_loader(2, r, 2))) for r in range(2)]
    assert ranks[0] | ranks[1] <= held_out


def test_document_boundaries(data: dict) -> None:
    mixture = Mixture(config(data, reset_position_ids=True, reset_attention_mask=True))
    lengths = data["lengths"]
    for batch in take_batches(mixture, 3):
        tokens, positions, mask = batch["tokens"], batch["position_ids"], batch["attention_mask"]
        assert positions.shape == (8, SEQ) and mask.shape == (8, 1, SEQ, SEQ)
        for row in range(8):
            seq = tokens[row].tolist()
            runs = run_lengths(seq)
            # Interior documents appear whole: their tokens then their EOS, exactly their length.
            for doc, length, start in runs[1:-1]:
                assert seq[start + length] == EOS and length + 1 == lengths[doc]
            doc, length, _ = runs[0]
            assert length + 1 <= lengths[doc]
            starts = [0] + [i + 1 for i in range(SEQ - 1) if seq[i] == EOS]
            expected = [i - max(s for s in starts if s <= i) for i in range(SEQ)]
            assert positions[row].tolist() == expected
            allowed = ~mask[row, 0]  # megatron's convention: True = blocked
            for i in (0, SEQ // 2, SEQ - 1):
                owner = max(s for s in starts if s <= i)
                assert allowed[i].nonzero().flatten().tolist() == list(range(owner, i + 1))


def take_batches(mixture: Mixture, n: int) -> list[dict[str, torch.Tensor]]:
    return [batch for _, batch in zip(range(n), mixture.train_loader(8, consumed_samples=100), strict=False)]


def run_lengths(seq: list[int]) -> list[tuple[int, int, int]]:
    """(document id, tokens before its EOS within the sample, start) for each document piece."""
    runs, i = [], 0
    while i < len(seq):
        if seq[i] == EOS:  # a document whose only token here is its EOS
            i += 1
            continue
        j = i
        while j < len(seq) and seq[j] == seq[i]:
            j += 1
        runs.append((seq[i], j - i, i))
        i = j + 1
    return runs


def test_epochs_reshuffle_and_cover_every_document(data: dict) -> None:
    stream = Mixture(config(data)).sources[1].parts[0].train
    shards = Mixture(config(data)).sources[1].shards
    epochs = np.zeros(2 * stream.tokens_per_epoch + 5, dtype=np.int64)
    stream.fill(shards, 0, epochs)
    first, second = epochs[:stream.tokens_per_epoch], epochs[stream.tokens_per_epoch:2 * stream.tokens_per_epoch]
    order = [t for t in first.tolist() if t != EOS]
    assert sorted(set(order)) == sorted(set(second.tolist()) - {EOS}) and len(set(order)) == len(stream.docs)
    assert list(dict.fromkeys(order)) != list(dict.fromkeys(t for t in second.tolist() if t != EOS))


def test_index_is_cached(data: dict, tmp_path: Path) -> None:
    cfg = config(data, cache_dir=str(tmp_path))
    Mixture(cfg)
    files = sorted((tmp_path / "mixture-index").glob("*.npz"))
    assert len(files) == 2
    stamps = [f.stat().st_mtime_ns for f in files]
    held = Mixture(cfg).sources[0].index.held_out
    assert [f.stat().st_mtime_ns for f in files] == stamps, "second open loads, not rebuilds"
    Mixture(config(data, cache_dir=str(tmp_path), valid_fraction=0.2))
    assert len(list((tmp_path / "mixture-index").glob("*.npz"))) == 4
    assert np.array_equal(held, Mixture(config(data, cache_dir=str(tmp_path), seed=99)).sources[0].index.held_out)


def test_shard_checksums_are_verified_once_and_name_a_corrupt_shard(data: dict, tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    source = tmp_path / "wudao"
    shutil.copytree(data["root"] / "wudao", source)
    cfg = config(data, cache_dir=str(tmp_path / "cache"), sources=[{"name": "wudao", "path": str(source)}])
    hashed = []
    real = token_shards.file_checksum
    monkeypatch.setattr(token_shards, "file_checksum", lambda path: hashed.append(path.name) or real(path))
    Mixture(cfg)
    assert sorted(hashed) == ["shard-000.arrow", "shard-001.arrow"]
    Mixture(cfg)
    assert len(hashed) == 2, "a cached index means its shards were verified: not hashed again"
    shard = source / "shard-001.arrow"
    raw = bytearray(shard.read_bytes())
    raw[raw.find(np.uint32(2_000_151).tobytes())] ^= 1  # a token of a document in the second shard
    shard.write_bytes(bytes(raw))
    with pytest.raises(ConfigError, match=r"sources\[0\] \(wudao\): .*shard-001\.arrow: the shard is corrupt"):
        Mixture(cfg)


def test_epoch_orders_on_disk_match_memory(data: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    in_memory = take(Mixture(config(data)).train_loader(16, consumed_samples=500), 30)
    monkeypatch.setattr("flm.train.data.stream.DISK_EPOCH_DOCS", 1)
    for _ in range(2):  # computed and saved, then memory-mapped from the files
        on_disk = take(Mixture(config(data, cache_dir=str(tmp_path))).train_loader(16, consumed_samples=500), 30)
        assert all(torch.equal(a, b) for a, b in zip(in_memory, on_disk, strict=True))
    assert len(list((tmp_path / "mixture-index" / "epochs").glob("*-order.npy"))) >= 4


@pytest.mark.parametrize(("change", "message"), [
    ({"sources": [{"name": "a", "path": "x", "weight": 0}]}, "sources[0]: source 'a': weight must be in (0, 1e+06]"),
    ({"sources": [{"name": "a", "path": "x", "weight": -1}]}, "weight must be in (0, 1e+06], got -1.0"),
    ({"sources": [{"name": "a", "path": "x", "weight": 1e308}]}, "weight must be in (0, 1e+06], got 1e+308"),
    ({"sources": [{"name": "a", "path": "x", "subsets": {"Github": 0}}]}, "subset 'Github' weight must be in"),
    ({"sources": [{"name": "a", "path": "x"}, {"name": "a", "path": "y"}]}, "repeated: a"),
    ({"sources": [{"name": "a"}]}, "missing required key(s): sources[0].path"),
    ({"valid_fraction": 1.0}, "valid_fraction must be in [0, 1)"),
    ({"seq_len": 0}, "seq_len must be positive"),
    ({"sources": [{"name": "a", "path": "x", "wieght": 1}]},
     "unknown key 'sources[0].wieght' (did you mean 'weight'?)"),
])
def test_config_errors(data: dict, change: dict, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        config(data, **change)
    assert message in str(err.value)


def test_data_errors_name_the_source(data: dict, tmp_path: Path) -> None:
    missing = config(data, sources=[{"name": "pile", "path": str(tmp_path / "nope")}])
    with pytest.raises(ConfigError, match=r"sources\[0\] \(pile\): path .*nope does not exist"):
        Mixture(missing)
    with pytest.raises(ConfigError, match=r"sources\[0\] \(pile\): .*no manifest.json"):
        Mixture(config(data, sources=[{"name": "pile", "path": str(tmp_path)}]))
    typo = config(data, sources=[{"name": "pile", "path": str(data["root"] / "pile"), "subsets": {"Pile-C": 2}}])
    with pytest.raises(ConfigError, match=r"sources\[0\] \(pile\): unknown subset 'Pile-C' \(did you mean 'Pile-CC'"):
        Mixture(typo)
    with pytest.raises(ConfigError, match="no sources"):
        Mixture(config(data, sources=[]))


def test_bundled_mixture_loads(repo_root: Path) -> None:
    cfg = load_config(MixtureConfig, repo_root / "configs" / "mixtures" / "sample.yaml")
    assert [s.name for s in cfg.sources] == ["pile", "wudao"] and cfg.weights["pile"] > 0


def test_mix_report_cli(data: dict, tmp_path: Path) -> None:
    path = tmp_path / "mix.yaml"
    path.write_text(json.dumps(config_to_dict(config(data))))  # JSON is YAML
    result = CliRunner().invoke(app, ["data", "mix-report", str(path), "--samples", "20000", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert set(report["sources"]) == {"pile", "wudao"}
    assert abs(report["sources"]["pile"]["share"] - 0.7) < 0.01 and report["sources"]["wudao"]["weight"] == 0.3
    table = CliRunner().invoke(app, ["data", "mix-report", str(path), "--samples", "2000"])
    assert table.exit_code == 0 and "Pile-CC" in table.stdout and "epochs" in table.stdout
    bad = CliRunner().invoke(app, ["data", "mix-report", str(path), "--set", "seq_len=0"])
    assert bad.exit_code == 1 and "seq_len must be positive" in bad.output


def test_slices_of_long_documents_are_spread_over_batches(tmp_path: Path) -> None:
    """Four documents of 40 samples each: consecutive samples come from different documents (Megatron-like
    sample shuffle), and each shuffle block serves every slice of the stream exactly once."""
    directory = tmp_path / "books"
    directory.mkdir()
    writer = TokenShardWriter(directory / "shard-000.arrow")
    docs = [np.full(40 * SEQ, doc_id, dtype=np.uint32) for doc_id in (1, 2, 3, 4)]
    writer.write_batch(documents_to_batch(docs, ["1", "2", "3", "4"], ["s"] * 4, [""] * 4))
    Manifest(tokenizer_hash="f" * 64, vocab_size=1 << 30, eos_id=EOS, shards=[writer.close()]).save(directory)
    mixture = Mixture(load_config(MixtureConfig, {"seq_len": SEQ, "seed": 3, "valid_fraction": 0.0,
                                                  "cache_dir": str(tmp_path / "cache"),
                                                  "sources": [{"name": "books", "path": str(directory)}]}))
    samples = mixture.train_samples
    assert samples.blocks == [[160]]
    starts = [samples.slice_start(0, 0, j) for j in range(320)]
    assert sorted(starts[:160]) == [i * SEQ for i in range(160)]  # block 0: every slice once
    assert sorted(starts[160:]) == [i * SEQ for i in range(160, 320)]  # block 1: the next epoch's slices
    first_doc = samples.tokens(range(160))[:, 0]
    same_neighbour = float(np.mean(first_doc[1:] == first_doc[:-1]))
    assert same_neighbour < 0.5, same_neighbour  # in order it would be 156 of 159
    assert all(len(set(first_doc[i:i + 8].tolist())) >= 2 for i in range(0, 160, 8))
    assert np.array_equal(samples.tokens(range(160)), Mixture(mixture.cfg).train_samples.tokens(range(160)))
