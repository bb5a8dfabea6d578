"""`flm data tokenize`: clean jsonl.zst -> Arrow token shards, bad input, resume, mismatch errors, CLI."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from bilingual_text import documents, pile_record, write_clean, wudao_record
from typer.testing import CliRunner

import flm.pipelines.token_shards as token_shards
import flm.pipelines.tokenize.pool as tokenize_mod
from flm.cli.main import app
from flm.pipelines.clean_text import CleanTextError
from flm.pipelines.token_inspect import inspect_tokens
from flm.pipelines.token_shards import Manifest, TokenShardError, TokenShards
from flm.pipelines.tokenize import tokenize_corpus, train_from_clean
from flm.tokenizer import TrainConfig, load_tokenizer

VOCAB = 700
BAD_LINES = {  # planted in the pile source: reason -> raw lines
    "empty": [json.dumps({"text": "", "id": "e1"}).encode(), json.dumps({"text": " \n\t ", "id": "e2"}).encode()],
    "non_utf8": [b'{"text": "bad \xff\xfe bytes", "id": "u1"}', b'{"text": "lone \\ud800 escape", "id": "u2"}'],
    "malformed": [b'{"text": "unterminated', json.dumps({"id": "no-text"}).encode()],
}


def _records() -> dict[str, list[dict | bytes]]:
    texts = documents(360, seed=5)
    pile: list[dict | bytes] = [pile_record(t, i, "Github" if i % 3 else "Pile-CC") for i, t in enumerate(texts[:200])]
    bad = [line for lines in BAD_LINES.values() for line in lines]
    for k, line in enumerate(bad):
        pile.insert(17 + 29 * k, line)
    wudao: list[dict | bytes] = [wudao_record(t, i) for i, t in enumerate(texts[200:])]
    return {"pile": pile, "wudao": wudao}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, list[dict | bytes]]]:
    clean = tmp_path_factory.mktemp("clean")
    records = _records()
    for source, recs in records.items():
        write_clean(clean, source, recs, per_file=40)
    return clean, records


@pytest.fixture(scope="module")
def tok_dir(corpus: tuple[Path, dict], tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("tok") / "tokenizer"
    meta = train_from_clean(corpus[0], out, TrainConfig(vocab_size=VOCAB, sample_bytes=10**7))
    assert meta.vocab_size == VOCAB and meta.corpus["skipped"] == {"empty": 2, "non_utf8": 2, "malformed": 2}
    assert set(meta.corpus["sources"]) == {"pile", "wudao"}
    return out


def _run(corpus: Path, out: Path, tok: Path, **kw) -> object:
    kw.setdefault("workers", 1)
    # files of 40 documents, ~15 kB: shards of 2 files (3 in pile, 2 in wudao), 3 batches of 16 per file
    return tokenize_corpus(corpus, out, tok, shard_input_bytes=40_000, batch_docs=16, command="test", **kw)


@pytest.fixture(scope="module")
def tokens(corpus: tuple[Path, dict], tok_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("tokens")
    _run(corpus[0], out, tok_dir)
    return out


def _flat(output: str) -> str:
    """Rich wraps long error lines; compare with whitespace collapsed."""
    return " ".join(output.split())


def _shard_bytes(directory: Path) -> dict[str, bytes]:
    return {p.relative_to(directory).as_posix(): p.read_bytes() for p in sorted(directory.rglob("*.arrow"))}


def test_shards_read_back_with_plain_pyarrow(corpus: tuple[Path, dict], tok_dir: Path, tokens: Path) -> None:
    tok = load_tokenizer(tok_dir)
    for source, recs in corpus[1].items():
        good = [r for r in recs if isinstance(r, dict) and r.get("text", "").strip()]
        manifest = Manifest.load(tokens / source)
        assert len(manifest.shards) > 1 and manifest.total_rows == len(good)
        tables = [pa.ipc.open_file(pa.memory_map(str(tokens / source / s.name))).read_all() for s in manifest.shards]
        table = pa.concat_tables(tables)
        assert table.schema.field("tokens").type == pa.list_(pa.uint32())
        assert table.column("doc_id").to_pylist() == [r["id"] for r in good]
        assert set(table.column("source").to_pylist()) == {source}
        assert table.column("subset").to_pylist() == [r["meta"].get("pile_set_name") or r["meta"]["dataType"]
                                                      for r in good]
        expected = [tok.encode(r["text"]) + [tok.eos_id] for r in good]
        assert table.column("tokens").to_pylist() == expected
        assert manifest.total_tokens == sum(map(len, expected))
        assert manifest.tokenizer_hash == tok.content_hash and manifest.vocab_size == VOCAB
        assert manifest.eos_id == tok.eos_id and manifest.command == "test"
        assert all(s.checksum == token_shards.file_checksum(tokens / source / s.name) for s in manifest.shards)
        reader = TokenShards(tokens / source, tokenizer_hash=tok.content_hash, vocab_size=VOCAB)
        assert reader.document(3).tolist() == expected[3]
        assert reader.read(0, reader.num_tokens).tolist() == [i for doc in expected for i in doc]


def test_bad_documents_are_counted_and_skipped(tokens: Path) -> None:
    extra = Manifest.load(tokens / "pile").extra
    assert extra["skipped"] == {"empty": 2, "non_utf8": 2, "malformed": 2}
    assert extra["documents_read"] == 206
    assert all(where.endswith(tuple(f":{n}" for n in range(1, 41))) for w in extra["skipped_examples"].values()
               for where in w)
    assert extra["subsets"]["Github"]["documents"] + extra["subsets"]["Pile-CC"]["documents"] == 200
    assert Manifest.load(tokens / "wudao").extra["skipped"] == {"empty": 0, "non_utf8": 0, "malformed": 0}


def test_interrupted_run_resumes_to_identical_shards(corpus: tuple[Path, dict], tok_dir: Path, tokens: Path,
                                                     tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Ctrl-C in the 2nd batch of pile's 4th file: shard 0 (files 0-1) and file 2 are done, file 3 is not."""
    out = tmp_path / "tokens"
    calls = {"write": 0, "encode": 0}
    real_write = token_shards.TokenShardWriter.write_batch
    real_encode = tokenize_mod.tokenize_file

    def write_then_crash(self, batch):  # type: ignore[no-untyped-def]
        calls["write"] += 1  # 3 batches per file, and 6 more to concatenate shard 0
        if calls["write"] == 17:
            raise KeyboardInterrupt("simulated Ctrl-C")
        real_write(self, batch)

    def counted_encode(*args, **kwargs):  # type: ignore[no-untyped-def]
        calls["encode"] += 1
        return real_encode(*args, **kwargs)

    monkeypatch.setattr(token_shards.TokenShardWriter, "write_batch", write_then_crash)
    with pytest.raises(KeyboardInterrupt):
        _run(corpus[0], out, tok_dir)
    monkeypatch.setattr(token_shards.TokenShardWriter, "write_batch", real_write)
    log = [json.loads(line) for line in (out / "pile" / ".progress.jsonl").read_text().splitlines()]
    assert [(e["kind"], e["name"]) for e in log[1:]] == [
        ("piece", "part-00000.0000.arrow"), ("piece", "part-00000.0001.arrow"), ("shard", "part-00000.arrow"),
        ("piece", "part-00001.0000.arrow")]
    with (out / "pile" / ".progress.jsonl").open("a") as fh:
        fh.write('{"kind": "piece", "name": "part-00001.0001.arr')  # killed while appending
    assert not (out / "pile" / "manifest.json").exists() and not list((out / "wudao").rglob("*.arrow"))
    with pytest.raises(TokenShardError, match="no manifest.json here or in any subfolder"):
        inspect_tokens(out)
    (out / "pile" / "part-00001.arrow.tmp").write_bytes(b"half a shard, as after kill -9")
    (out / "pile" / "part-00002.arrow").write_bytes(b"a shard the bookkeeping never recorded")
    (out / "pile" / ".pieces" / "part-00001.0001.arrow").write_bytes(b"an unrecorded piece")

    monkeypatch.setattr(tokenize_mod, "tokenize_file", counted_encode)
    result = _run(corpus[0], out, tok_dir)
    assert calls["encode"] == 10 - 3  # pile's files 0-2 are not encoded again
    assert result.shards_skipped == 1 and result.shards_written == 4
    assert _shard_bytes(out) == _shard_bytes(tokens)
    assert not list(out.rglob("*.tmp")) and not list(out.rglob(".progress.jsonl")) and not list(out.rglob(".pieces"))
    for source in ("pile", "wudao"):
        assert Manifest.load(out / source).shards == Manifest.load(tokens / source).shards
        assert Manifest.load(out / source).extra["skipped"] == Manifest.load(tokens / source).extra["skipped"]

    shutil.copytree(out / "wudao", tmp_path / "partial" / "wudao")
    (tmp_path / "partial" / "pile").mkdir()
    (tmp_path / "partial" / "pile" / ".progress.jsonl").write_text("{}")
    assert "unfinished (no manifest yet" in inspect_tokens(tmp_path / "partial").note

    again = _run(corpus[0], out, tok_dir)
    assert calls["encode"] == 7 and again.shards_written == 0 and again.shards_skipped == 5
    assert _shard_bytes(out) == _shard_bytes(tokens)


def test_worker_processes_give_identical_shards(corpus: tuple[Path, dict], tok_dir: Path, tokens: Path,
                                                tmp_path: Path) -> None:
    result = _run(corpus[0], tmp_path / "mp", tok_dir, workers=2)
    assert result.engine == "tiktoken" and result.tokens > 0
    assert _shard_bytes(tmp_path / "mp") == _shard_bytes(tokens)


def test_tokenizer_shard_mismatch_is_a_clear_error(corpus: tuple[Path, dict], tok_dir: Path, tokens: Path,
                                                   tmp_path: Path) -> None:
    other = tmp_path / "other-tok"
    train_from_clean(corpus[0], other, TrainConfig(vocab_size=600, sample_bytes=10**7))
    other_hash = load_tokenizer(other).content_hash
    with pytest.raises(TokenShardError, match=r"holds shards of tokenizer \w+ \(vocab 700\), but this run uses"):
        _run(corpus[0], tokens, other)
    with pytest.raises(TokenShardError, match="shards were made by tokenizer"):
        TokenShards(tokens / "pile", tokenizer_hash=other_hash)
    with pytest.raises(TokenShardError, match="vocab size 700, expected 600"):
        TokenShards(tokens / "pile", vocab_size=600)
    with pytest.raises(TokenShardError, match=r"but .*other-tok is \w+ \(vocab 600\)"):
        inspect_tokens(tokens, other)


def test_inspect_decodes_a_sample(corpus: tuple[Path, dict], tokens: Path) -> None:
    report = inspect_tokens(tokens, sample_doc=2)
    assert set(report.sources) == {"pile", "wudao"}
    wudao = report.sources["wudao"]
    first_texts = [r["text"] for r in corpus[1]["wudao"]]
    assert wudao.documents == 160 and wudao.sample_id == "wudao-2"
    assert wudao.sample_text == first_texts[2][:600]
    assert wudao.avg_tokens == pytest.approx(wudao.tokens / 160, abs=0.01)
    assert report.tokens == sum(s.tokens for s in report.sources.values())
    single = inspect_tokens(tokens / "pile")
    assert list(single.sources) == ["pile"]


def test_sentencepiece_tokenizer_through_the_pipeline(corpus: tuple[Path, dict], tmp_path: Path) -> None:
    spm_dir = tmp_path / "spm"
    train_from_clean(corpus[0], spm_dir, TrainConfig(vocab_size=600, backend="sentencepiece", sample_bytes=10**7))
    result = _run(corpus[0], tmp_path / "tokens", spm_dir, workers=2)
    assert result.engine == "sentencepiece" and result.vocab_size == 600
    tok = load_tokenizer(spm_dir)
    shards = TokenShards(tmp_path / "tokens" / "wudao", tokenizer_hash=tok.content_hash)
    first = corpus[1]["wudao"][0]["text"]
    assert shards.document(0).tolist() == tok.encode(first) + [tok.eos_id]
    assert inspect_tokens(tmp_path / "tokens").sources["wudao"].sample_text == first[:600]
    args = ["data", "tokenize", "--input", str(corpus[0]), "--out", str(tmp_path / "cli"), "--tokenizer", str(spm_dir),
            "--workers", "1", "--json"]
    reused = CliRunner().invoke(app, args)  # no --backend: the existing sentencepiece tokenizer is used
    assert reused.exit_code == 0, reused.output
    assert json.loads(reused.stdout)["tokenizer"]["trained"] is False
    wrong = CliRunner().invoke(app, [*args, "--backend", "hf"])
    assert wrong.exit_code == 1 and "holds a sentencepiece tokenizer, but --backend hf" in _flat(wrong.output)


def test_truncated_input_names_the_file(tmp_path: Path, tok_dir: Path) -> None:
    clean = tmp_path / "clean"
    path = write_clean(clean, "pile", [pile_record(t, i) for i, t in enumerate(documents(50))], per_file=50)[0]
    path.write_bytes(path.read_bytes()[:-40])
    with pytest.raises(CleanTextError, match=r"00000\.jsonl\.zst: cannot decompress"):
        _run(clean, tmp_path / "out", tok_dir)


def test_an_empty_input_file_is_no_documents(tmp_path: Path, tok_dir: Path) -> None:
    clean = tmp_path / "clean"
    write_clean(clean, "pile", [pile_record(t, i) for i, t in enumerate(documents(50))], per_file=50)
    (clean / "pile" / "zz.jsonl.zst").write_bytes(b"")
    result = _run(clean, tmp_path / "out", tok_dir)
    assert result.documents == 50


def test_cli_tokenize_trains_then_inspect(corpus: tuple[Path, dict], tmp_path: Path) -> None:
    runner = CliRunner()
    out, tok = tmp_path / "tokens", tmp_path / "tok"
    args = ["data", "tokenize", "--input", str(corpus[0]), "--out", str(out), "--tokenizer", str(tok),
            "--workers", "1", "--json"]
    too_big = runner.invoke(app, [*args, "--vocab", "100256"])
    assert too_big.exit_code == 1 and "(--allow-smaller)" in _flat(too_big.output) and not (tok / "meta.json").exists()

    done = runner.invoke(app, [*args, "--vocab", "600"])
    assert done.exit_code == 0, done.output
    result = json.loads(done.stdout)
    assert result["tokenizer"]["trained"] and result["tokenizer"]["vocab_size"] == 600
    assert result["tokenize"]["documents"] == 360 and result["tokenize"]["skipped"]["malformed"] == 2
    assert Manifest.load(out / "wudao").command.startswith("flm data tokenize --input")

    mismatch = runner.invoke(app, [*args, "--vocab", "512"])
    assert mismatch.exit_code == 1 and "holds a tokenizer of vocab 600, but --vocab 512" in _flat(mismatch.output)

    shown = runner.invoke(app, ["data", "inspect", str(out), "--json"])
    assert shown.exit_code == 0, shown.output
    report = json.loads(shown.stdout)
    assert report["sources"]["pile"]["documents"] == 200
    assert report["sources"]["pile"]["sample_text"] == corpus[1]["pile"][0]["text"][:600]

    human = runner.invoke(app, ["data", "inspect", str(out)])
    assert human.exit_code == 0 and "avg tokens/doc" in human.output
    negative = runner.invoke(app, ["data", "inspect", str(out), "--doc", "-1"])
    assert negative.exit_code == 2 and "--doc" in negative.output

    trained = runner.invoke(app, ["data", "train-tokenizer", "--input", str(corpus[0]), "--out", str(tmp_path / "t2"),
                                  "--vocab", "600", "--json"])
    assert trained.exit_code == 0, trained.output
    assert json.loads(trained.stdout)["content_hash"] == result["tokenizer"]["content_hash"]


def test_inspect_needs_neither_orjson_nor_zstandard() -> None:
    """`flm data inspect` runs where the tokenize dependencies are missing (the GPU image)."""
    code = ("import sys, flm.pipelines.token_inspect; "
            "print([m for m in ('orjson', 'zstandard', 'flm.pipelines.tokenize') if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr


def _source(directory: Path, docs: list[list[int]], *, vocab: int = 10, eos: int = 9, name: str = "p.arrow",
            manifest_shards: list[dict] | None = None) -> Path:
    """A one-shard token directory with the given documents, its manifest editable."""
    directory.mkdir(parents=True)
    batch = token_shards.documents_to_batch(docs, [str(i) for i in range(len(docs))], ["s"] * len(docs),
                                            [""] * len(docs))
    info = token_shards.write_shard(directory / name, [batch])
    shards = manifest_shards if manifest_shards is not None else [vars(info)]
    (directory / "manifest.json").write_text(json.dumps({"tokenizer_hash": "h", "vocab_size": vocab,
                                                          "eos_id": eos, "shards": shards}))
    return directory


@pytest.mark.parametrize(("edit", "message"), [
    ({"manifest_shards": [{"name": "../other/p.arrow", "rows": 1, "tokens": 3}]}, "must be a file name inside"),
    ({"manifest_shards": [{"name": "p.arrow", "rows": 1, "tokens": 3}] * 2}, "listed twice"),
    ({"eos": 10}, "eos_id 10 is outside the vocabulary"),
    ({"manifest_shards": [{"name": "p.arrow", "rows": 1, "tokens": 99}]}, "3 tokens but the manifest says 99"),
    ({"manifest_shards": [{"name": "p.arrow", "rows": 1, "tokens": 3, "checksum": "md5:00"}]},
     "checksum 'md5:00' is not 'xxh3_128:<hex>'"),
])
def test_a_bad_manifest_is_refused_on_open(tmp_path: Path, edit: dict, message: str) -> None:
    with pytest.raises(TokenShardError, match=message):
        TokenShards(_source(tmp_path / "src", [[1, 2, 9]], **edit))


def test_out_of_range_token_ids_are_found_before_training(tmp_path: Path) -> None:
    shards = TokenShards(_source(tmp_path / "src", [[1, 2, 9], [3, 12, 9]]))  # opening stays cheap
    with pytest.raises(TokenShardError, match=r"p\.arrow: token id 12 \(document 1\) is not below the vocabulary"):
        shards.check_token_ids()


def test_decreasing_offsets_are_refused(tmp_path: Path) -> None:
    offsets = pa.array([0, 3, 1, 4], pa.int32())
    tokens = pa.ListArray.from_arrays(offsets, pa.array([1, 2, 9, 3], pa.uint32()))
    batch = pa.record_batch([tokens, pa.array(["a", "b", "c"]), pa.array(["s"] * 3), pa.array([""] * 3)],
                            schema=token_shards.SCHEMA)
    directory = tmp_path / "src"
    directory.mkdir()
    info = token_shards.write_shard(directory / "p.arrow", [batch])
    Manifest(tokenizer_hash="h", vocab_size=10, eos_id=9, shards=[info]).save(directory)
    with pytest.raises(TokenShardError, match="offsets are not increasing"):
        TokenShards(directory)


def flip_token(path: Path, value: int) -> None:
    """Flip the low bit of the first stored token `value`: one byte changes, the Arrow file still reads."""
    data = bytearray(path.read_bytes())
    at = data.find(np.uint32(value).tobytes())
    assert at >= 0
    data[at] ^= 1
    path.write_bytes(bytes(data))


def test_a_flipped_byte_is_named_corrupt(tmp_path: Path) -> None:
    directory = _source(tmp_path / "src", [[1, 2, 7, 9], [3, 9]])
    assert Manifest.load(directory).shards[0].checksum.startswith("xxh3_128:")
    TokenShards(directory).verify()
    flip_token(directory / "p.arrow", 7)
    shards = TokenShards(directory)  # opening stays cheap: the bytes are hashed by verify()
    assert shards.document(0).tolist() == [1, 2, 6, 9]
    with pytest.raises(TokenShardError, match=r"src/p\.arrow: the shard is corrupt: its checksum xxh3_128:\w+ "
                                              r"differs from xxh3_128:\w+ recorded in manifest\.json"):
        shards.verify()


def test_damage_that_breaks_the_arrow_file_is_named_corrupt_too(tmp_path: Path) -> None:
    directory = _source(tmp_path / "src", [[1, 2, 7, 9]])
    data = bytearray((directory / "p.arrow").read_bytes())
    data[-3] ^= 0xFF  # the closing magic number
    (directory / "p.arrow").write_bytes(bytes(data))
    with pytest.raises(TokenShardError, match=r"p\.arrow: the shard is corrupt"):
        TokenShards(directory)


def test_manifests_without_checksums_still_load(tmp_path: Path) -> None:
    directory = _source(tmp_path / "src", [[1, 2, 7, 9]], manifest_shards=[{"name": "p.arrow", "rows": 1, "tokens": 4}])
    flip_token(directory / "p.arrow", 7)
    shards = TokenShards(directory)
    shards.verify()  # nothing recorded, nothing to check
    assert shards.manifest.shards[0].checksum is None and shards.document(0).tolist() == [1, 2, 6, 9]
