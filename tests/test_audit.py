"""The audit trail of `flm data prepare` (dropped documents beside the clean output, through datatrove's
exclusion writers) and `flm data inspect` on it; and `flm data inspect` on one token-shard file."""

from __future__ import annotations

import json
import random
from pathlib import Path

import orjson
import pytest
import zstandard
from bilingual_text import english
from typer.testing import CliRunner

from flm.cli.main import app
from flm.config import find_config, load_config
from flm.pipelines import token_shards
from flm.pipelines.config import AuditConfig, GopherQualityConfig, PipelineConfig, ProfileConfig, QualityConfig
from flm.pipelines.prepare import PrepareResult, prepare
from flm.pipelines.prepare.audit import AuditWriter, iter_dropped, reason_counts, sampled
from flm.pipelines.prepare.quality import QualityFilters
from flm.pipelines.prepare.schema import make_document
from flm.pipelines.token_shards import Manifest

runner = CliRunner()


def pile_line(text: str, doc_id: str, subset: str = "Wikipedia (en)") -> bytes:
    return orjson.dumps({"text": text, "id": doc_id, "meta": {"pile_set_name": subset}})


def raw_corpus(root: Path) -> None:
    """English prose, exact copies, navigation pages, French and near-empty documents: every kind of drop."""
    rng = random.Random(3)
    texts = [english(rng, 16) for _ in range(20)]
    lines = [pile_line(t, f"en{i}") for i, t in enumerate(texts)]
    lines += [pile_line(texts[i], f"copy{i}") for i in range(4)]
    nav = "\n".join(["Home", "Sign in", "Privacy policy", "Cookie settings", "Terms of use", "Subscribe"] * 3)
    lines += [pile_line(nav, f"nav{i}", "Pile-CC") for i in range(3)]
    lines += [pile_line("Le chat dort sur le canapé pendant que la pluie tombe doucement sur la ville. " * 6,
                        "french")]
    lines += [pile_line("\u200b \u200b", "invisible")]
    (root / "pile").mkdir(parents=True)
    (root / "pile" / "00.jsonl.zst").write_bytes(zstandard.ZstdCompressor().compress(b"\n".join(lines) + b"\n"))


def run_prepare(root: Path, *overrides: str) -> PrepareResult:
    cfg = load_config(PipelineConfig, find_config("pile", "pipelines"),
                      ["executor.workers=1", "audit.enabled=true", *overrides])
    return prepare([cfg], root / "raw", root / "clean")


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, PrepareResult]:
    root = tmp_path_factory.mktemp("audit")
    raw_corpus(root / "raw")
    return root / "clean", run_prepare(root)


def test_every_dropped_document_is_written_with_its_reason(run) -> None:
    clean, result = run
    dropped = result.sources["pile"].totals.dropped
    assert dropped.get("dedup/exact") == 4 and dropped.get("normalize/empty") == 1
    assert dropped.get("langid/other_language") == 1
    assert sum(n for r, n in dropped.items() if r.startswith("quality/")) >= 3
    assert reason_counts(clean / "pile") == dict(sorted(dropped.items(), key=lambda kv: -kv[1]))
    steps = {p.name for p in (clean / "pile" / "dropped").iterdir()}
    assert {"normalize", "langid", "quality", "exact_dedup"} <= steps
    french = [d for d in iter_dropped(clean, "langid") if d["id"] == "french"]
    assert french and french[0]["text"].startswith("Le chat") and french[0]["subset"] == "Wikipedia (en)"
    copies = {d["id"] for d in iter_dropped(clean, "dedup/exact")}
    assert len(copies) == 4  # one of each pair, whichever dedup kept the other
    shards = {p.name for p in (clean / "pile").glob("*.jsonl.zst")}
    assert shards and all("dropped" not in s for s in shards)  # never read as clean text


def test_inspect_dropped_shows_examples_of_a_reason(run) -> None:
    clean, _ = run
    result = runner.invoke(app, ["data", "inspect", str(clean), "--dropped", "quality", "--json", "--limit", "2"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.output)
    assert len(out["examples"]) == 2 and all(e["reason"].startswith("quality/") for e in out["examples"])
    assert out["matching"] and all(k.startswith("quality/") for k in out["matching"])
    result = runner.invoke(app, ["data", "inspect", str(clean / "pile"), "--dropped", "langid/other_language"])
    assert result.exit_code == 0 and "french" in result.output and "Le chat" in result.output
    result = runner.invoke(app, ["data", "inspect", str(clean), "--dropped", "decontam"])
    assert result.exit_code != 0 and "no dropped document with reason 'decontam'" in result.output


def test_inspect_dropped_without_an_audit_trail_says_how_to_get_one(tmp_path: Path) -> None:
    result = runner.invoke(app, ["data", "inspect", str(tmp_path), "--dropped", "all"])
    assert result.exit_code != 0 and "audit.enabled=true" in result.output


def test_a_seeded_sample_per_reason_is_the_same_on_every_run(tmp_path: Path) -> None:
    cfg = AuditConfig(enabled=True, sample=0.3, seed=4)
    picked = [sampled(f"doc{i}", "quality/x", cfg) for i in range(4000)]
    assert picked == [sampled(f"doc{i}", "quality/x", cfg) for i in range(4000)]
    assert 0.25 < sum(picked) / len(picked) < 0.35
    assert picked != [sampled(f"doc{i}", "quality/y", cfg) for i in range(4000)]  # drawn per reason
    raw_corpus(tmp_path / "raw")
    result = run_prepare(tmp_path, "audit.sample=0.5", "audit.seed=1")
    written = reason_counts(tmp_path / "clean")
    dropped = result.sources["pile"].totals.dropped
    assert sum(written.values()) < sum(dropped.values())
    assert all(written.get(r, 0) <= n for r, n in dropped.items())


def test_quality_filters_run_through_basefilter_and_feed_its_exclusion_writer(tmp_path: Path) -> None:
    """datatrove's BaseFilter.run drives the chain, so the exclusion writer receives every document it drops."""
    writer = AuditWriter(str(tmp_path), "quality", AuditConfig(enabled=True))
    cfg = QualityConfig(profiles={"prose": ProfileConfig(gopher_quality=GopherQualityConfig())})
    step = QualityFilters(cfg, exclusion_writer=writer)
    docs = [make_document(english(random.Random(i), 16), f"d{i}", "pile", "x", {}, 10) for i in range(3)]
    docs.append(make_document("short", "tiny", "pile", "x", {}, 5))
    kept = [d.id for d in step.run(iter(docs))]
    assert "tiny" not in kept and len(kept) == 3
    assert [(d["id"], d["reason"]) for d in iter_dropped(tmp_path)] == [
        ("tiny", "quality/gopher_quality:gopher_short_doc")]


def test_inspect_one_shard_file(tmp_path: Path) -> None:
    directory = tmp_path / "pile"
    directory.mkdir()
    infos = []
    for name, docs, subsets in (("part-00000.arrow", [[1, 2, 9], [3, 9]], ["a", "b"]),
                                ("part-00001.arrow", [[4, 5, 6, 9], [7, 9], [8, 9]], ["b", "b", "c"])):
        batch = token_shards.documents_to_batch(docs, [f"{name}-{i}" for i in range(len(docs))],
                                                ["pile"] * len(docs), subsets)
        infos.append(token_shards.write_shard(directory / name, [batch]))
    Manifest(tokenizer_hash="h", vocab_size=10, eos_id=9, shards=infos).save(directory)
    result = runner.invoke(app, ["data", "inspect", str(directory / "part-00001.arrow"), "--doc", "1", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)["sources"]["pile"]
    assert (report["documents"], report["tokens"], report["shards"]) == (3, 8, 1)
    assert report["subsets"] == {"b": {"documents": 2, "tokens": 6}, "c": {"documents": 1, "tokens": 2}}
    assert report["sample_id"] == "part-00001.arrow-1" and report["sample_ids"] == [7, 9]
    stray = tmp_path / "stray.arrow"
    stray.write_bytes((directory / "part-00000.arrow").read_bytes())
    result = runner.invoke(app, ["data", "inspect", str(stray)])
    assert result.exit_code != 0 and "manifest.json beside it" in result.output
