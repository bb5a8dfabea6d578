"""FreeLM's teacher signal: propositions from task data (malformed lines named and counted), the teacher loss
(read only at the judge token, padding ignored), its interleaving in `flm train` with exact resume, the teacher
head through growth, and `flm eval --propositions`. A 68-token counting vocabulary keeps the models tiny."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from flm.cli.main import app
from flm.config import ConfigError, load_config
from flm.pipelines.propositions import PropositionShards, TaskMapping
from flm.pipelines.propositions.build import build_propositions
from flm.pipelines.propositions.convert import Dropped, propositions
from flm.pipelines.token_shards import TokenShardError
from flm.train.config import ModelConfig, MupConfig
from flm.train.data.config import MixtureConfig, mixture_record
from flm.train.distributed.parallel import destroy_parallel, init_parallel
from flm.train.growth import GrowthMasks, grow_model
from flm.train.model.gpt import build_model
from flm.train.teacher import TeacherConfig, collate, teacher_logits
from flm.train.teacher.counting import EOS, FALSE, JUDGE, TOKEN_IDS, TRUE, VOCAB, write_counting_data
from flm.train.teacher.data import TeacherOrder
from flm.train.trainer.metrics import read_metrics

VERDICTS = torch.tensor([FALSE, TRUE])


# ---------------------------------------------------------------- propositions from task data

def test_each_kind_becomes_true_and_false_propositions() -> None:
    mc = TaskMapping(name="mc", kind="multiple_choice", file=Path("x"), template="{question} {option}")
    assert propositions(mc, {"question": "2 + 2 =", "options": ["3", "4", "5"], "answer": 1}) == [
        ("2 + 2 = 3", False), ("2 + 2 = 4", True), ("2 + 2 = 5", False)]
    assert [t for _, t in propositions(mc, {"question": "q", "options": ["a", "b"], "answer": "B"})] == [False, True]
    assert [t for _, t in propositions(mc, {"question": "q", "options": ["a", "b"], "answer": "a"})] == [True, False]
    nli = TaskMapping(name="nli", kind="classification", file=Path("x"),
                      verbalizers={"yes": "{p}，所以{h}。", "no": "{p}，所以不是{h}。"})
    assert propositions(nli, {"p": "下雨了", "h": "地湿了", "label": "yes"}) == [
        ("下雨了，所以地湿了。", True), ("下雨了，所以不是地湿了。", False)]
    facts = TaskMapping(name="facts", kind="statement", file=Path("x"))
    assert propositions(facts, {"text": "Water boils at 100 C.", "label": "true"}) == [("Water boils at 100 C.", True)]
    assert propositions(facts, {"text": "太阳从西边升起。", "label": 0}) == [("太阳从西边升起。", False)]
    for task, record, reason in [
        (mc, {"question": "q", "options": ["a", "b"], "answer": 2}, "bad_answer"),
        (mc, {"question": "q", "options": "ab", "answer": 0}, "bad_options"),
        (mc, {"options": ["a", "b"], "answer": 0}, "missing_field"),
        (nli, {"p": "a", "h": "b", "label": "maybe"}, "bad_label"),
        (facts, {"text": "x", "label": "perhaps"}, "bad_label"),
        (facts, {"text": "   ", "label": True}, "empty"),
        (facts, ["not", "an", "object"], "malformed"),
    ]:
        with pytest.raises(Dropped) as err:
            propositions(task, record)
        assert err.value.reason == reason


class _Tok:
    """A stand-in tokenizer: one id per character (mod 64), the teacher's reserved ids beside EOS."""

    content_hash, vocab_size, eos_id = "chars-v1", VOCAB, EOS

    class meta:  # noqa: N801 - mirrors Tokenizer.meta
        special_ids = {"<|endoftext|>": EOS, "<|reserved_0|>": JUDGE, "<|reserved_1|>": FALSE,
                       "<|reserved_2|>": TRUE}

    def encode_arrays(self, texts: list[str]) -> list[np.ndarray]:
        return [np.array([ord(c) % 64 for c in t], dtype=np.uint32) for t in texts]


@pytest.fixture
def fake_tokenizer(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("flm.tokenizer.load.load_tokenizer", lambda path: _Tok())


def test_flm_data_propositions_accounts_for_every_line(tmp_path: Path, fake_tokenizer: None) -> None:
    (tmp_path / "mc.jsonl").write_text(
        '{"question": "1 + 1 =", "options": ["2", "3"], "answer": 0}\n'
        "{not json\n"
        "\n"
        '{"question": "2 + 1 =", "options": ["2", "3"], "answer": 7}\n'
        '{"question": "首都是", "options": ["北京", "上海", "广州"], "answer": "北京"}\n', encoding="utf-8")
    (tmp_path / "facts.jsonl").write_text(
        '{"text": "Ice is cold.", "label": true}\n{"text": "Fire is cold.", "label": false}\n'
        '{"text": "' + "very long " * 20 + '", "label": true}\n', encoding="utf-8")
    mapping = tmp_path / "mapping.yaml"
    mapping.write_text("max_tokens: 40\ntasks:\n"
                       "  - {name: mc, kind: multiple_choice, file: mc.jsonl, lang: en}\n"
                       "  - {name: facts, kind: statement, file: facts.jsonl, lang: en}\n", encoding="utf-8")
    result = CliRunner().invoke(app, ["data", "propositions", str(mapping), "--tokenizer", "tok", "--out",
                                      str(tmp_path / "out"), "--json"])
    assert result.exit_code == 0, result.output
    stats = json.loads(result.stdout)
    assert stats["instances_in"] == 7 == stats["kept"] + sum(stats["dropped"].values())
    assert stats["dropped"] == {"malformed": 1, "bad_answer": 1, "too_long": 1}
    assert any(line.startswith(f"{tmp_path / 'mc.jsonl'}:2: malformed") for line in stats["malformed"])
    assert any(f"{tmp_path / 'mc.jsonl'}:4: bad_answer" in line for line in stats["malformed"])
    assert (stats["true"], stats["false"]) == (3, 4)
    shards = PropositionShards(tmp_path / "out" / "train", tokenizer_hash="chars-v1")
    assert len(shards) == 7 and shards.token_ids == TOKEN_IDS
    assert list(shards.labels) == [1, 0, 1, 0, 0, 1, 0]
    assert shards.groups[0] == shards.groups[1] != shards.groups[2]
    assert shards.tokens(0).tolist() == [ord(c) % 64 for c in "1 + 1 = 2"] + [JUDGE]
    assert not (tmp_path / "out" / "valid").exists()
    # a rerun replaces its own shards; another tokenizer's model is refused when reading them
    assert CliRunner().invoke(app, ["data", "propositions", str(mapping), "--tokenizer", "tok", "--out",
                                    str(tmp_path / "out"), "--json"]).exit_code == 0
    with pytest.raises(TokenShardError, match="tokenized by"):
        PropositionShards(tmp_path / "out" / "train", tokenizer_hash="other")


def test_bundled_set_is_bilingual_and_holds_out_a_fifth(repo_root: Path, tmp_path: Path,
                                                        fake_tokenizer: None) -> None:
    stats = build_propositions(repo_root / "data" / "sample" / "propositions" / "mapping.yaml", "tok",
                               tmp_path / "out", overrides=["max_tokens=256"])  # one token per character here
    assert stats.dropped == {} and stats.kept == stats.instances_in == 3600
    assert {t["lang"] for t in stats.by_task.values()} == {"en", "zh"}
    assert {t["kind"] for t in stats.by_task.values()} == {"multiple_choice", "classification", "statement"}
    valid = stats.propositions["valid"] / (stats.propositions["train"] + stats.propositions["valid"])
    assert 0.15 < valid < 0.25
    train, held = (PropositionShards(tmp_path / "out" / s) for s in ("train", "valid"))
    assert not set(train.groups) & set(held.groups)  # an instance's propositions stay together


# ---------------------------------------------------------------- the teacher head and its loss

@pytest.fixture
def parallel() -> Iterator[None]:
    """Per test: `flm train` below must start in a fresh process group, which seeds its dropout RNG."""
    init_parallel(seed=3)
    yield
    destroy_parallel()


BASE = ModelConfig(layers=2, hidden=64, heads=4, ffn_hidden=128, vocab_size=VOCAB, seq_len=32, dropout=0.0,
                   mup=MupConfig(enabled=True, base_width=64))


def _batch() -> dict[str, torch.Tensor]:
    return collate([np.array([1, 2, 3, JUDGE]), np.array([5, 9, 2, 7, 7, 1, JUDGE])], [1, 0], 16)


def test_teacher_logits_are_the_verdict_logits_at_the_judge_token(parallel: None) -> None:
    model = build_model(BASE, seed=1).eval()
    batch = _batch()
    with torch.no_grad():
        logits = teacher_logits(model, batch, VERDICTS, torch.device("cpu"))
        full = model(batch["tokens"], None)  # [b, s, vocab]
    expected = full[torch.arange(2), batch["judge"]][:, [FALSE, TRUE]]
    assert logits.shape == (2, 2) and torch.allclose(logits, expected, atol=1e-5)
    padded = {**batch, "tokens": batch["tokens"].clone()}
    padded["tokens"][0, 4:] = 33  # whatever follows the judge token is never read
    with torch.no_grad():
        assert torch.allclose(teacher_logits(model, padded, VERDICTS, torch.device("cpu")), logits, atol=1e-6)


def test_teacher_loss_reaches_only_the_verdict_rows_of_the_output_layer(parallel: None) -> None:
    model = build_model(replace(BASE, tie_embeddings=False), seed=1)
    batch = _batch()
    logits = teacher_logits(model, batch, VERDICTS, torch.device("cpu"))
    torch.nn.functional.cross_entropy(logits, batch["label"]).backward()
    grad = model.output_layer.weight.grad
    rows = grad.abs().sum(dim=1)
    assert rows[FALSE] > 0 and rows[TRUE] > 0
    assert rows[[i for i in range(grad.shape[0]) if i not in (FALSE, TRUE)]].abs().sum() == 0


@pytest.mark.parametrize("variant", [{}, {"norm": "rmsnorm", "activation": "swiglu", "bias": False,
                                          "tie_embeddings": False, "kv_heads": 2}])
def test_grown_model_gives_the_same_teacher_logits(parallel: None, variant: dict) -> None:
    src_cfg = replace(BASE, **variant)
    dst_cfg = replace(src_cfg, layers=3, hidden=128, heads=8, ffn_hidden=384,
                      kv_heads=None if not src_cfg.kv_heads else src_cfg.kv_heads * 2)
    src, dst = build_model(src_cfg, seed=1).eval(), build_model(dst_cfg, seed=2).eval()
    batch = _batch()
    with torch.no_grad():
        before = teacher_logits(src, batch, VERDICTS, torch.device("cpu"))
        spec = grow_model(src.state_dict(), src_cfg, dst, dst_cfg)
        GrowthMasks(dst, spec)
        after = teacher_logits(dst, batch, VERDICTS, torch.device("cpu"))
    assert (after - before).abs().max().item() < 1e-5


# ---------------------------------------------------------------- the order of teacher data

def test_teacher_order_depends_only_on_the_position() -> None:
    order = TeacherOrder([50, 7], [3.0, 1.0], seed=5)
    straight = order.items(0, 9000)
    assert TeacherOrder([50, 7], [3.0, 1.0], seed=5).items(5000, 4000) == straight[5000:]
    sources = np.array([s for s, _ in straight])
    assert abs((sources == 0).mean() - 0.75) < 0.02
    first_epoch = [r for s, r in straight if s == 1][:7]
    assert sorted(first_epoch) == list(range(7))  # each source is read in full before it repeats
    assert TeacherOrder([50, 7], [3.0, 1.0], seed=6).items(0, 50) != straight[:50]


def test_teacher_config_is_checked() -> None:
    with pytest.raises(ConfigError, match="every"):
        load_config(TeacherConfig, {"every": 1})
    with pytest.raises(ConfigError, match="unique"):
        load_config(TeacherConfig, {"sources": [{"name": "a", "path": "x"}, {"name": "a", "path": "y"}]})


# ---------------------------------------------------------------- training, resume and evaluation

@pytest.fixture(scope="module")
def teacher_mixture(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Counting token shards and propositions about counting (flm.train.teacher.counting): a run of counting
    is true, the same run with two tokens swapped is false (a multiple-choice task of the two)."""
    return write_counting_data(tmp_path_factory.mktemp("freelm"), documents=300, doc_len=(20, 200),
                               splits={"train": 200, "valid": 40}, run_len=(6, 14),
                               mixture={"seq_len": 32, "valid_fraction": 0.05,
                                        "teacher": {"every": 3, "batch": 8, "micro_batch": 4}})


@pytest.mark.parametrize("broken_by", ["swap", "reverse"])
def test_counting_propositions_pair_a_run_with_its_broken_copy(tmp_path: Path, broken_by: str) -> None:
    write_counting_data(tmp_path, documents=4, doc_len=(5, 9), splits={"valid": 6}, run_len=(6, 10), mixture={},
                        broken_by=broken_by)
    shards = PropositionShards(tmp_path / "valid")
    for i in range(0, len(shards), 2):
        true, false = shards.tokens(i), shards.tokens(i + 1)
        assert (shards.labels[i], shards.labels[i + 1]) == (1, 0) and true[-1] == false[-1] == JUDGE
        assert np.all(np.diff(true[:-1]) % 64 == 1) and sorted(true) == sorted(false)
        if broken_by == "reverse":
            assert np.array_equal(false[:-1], true[-2::-1])
        else:
            assert int(np.sum(true != false)) == 2
    with pytest.raises(ValueError, match="broken_by"):
        write_counting_data(tmp_path, documents=1, doc_len=(5, 9), splits={}, run_len=(6, 10), mixture={},
                            broken_by="shuffle")


SMALL = ["--set", "train.global_batch=4", "--set", "train.micro_batch=2", "--set", "train.eval_every=0",
         "--set", "train.save_every=0", "--set", "optim.warmup_steps=2", "--set", "optim.decay_steps=20"]


def _train(mixture: Path, run: Path, steps: int) -> dict:
    result = CliRunner().invoke(app, ["train", "--stage", "tiny", "--mixture", str(mixture), "--run-dir", str(run),
                                      "--steps", str(steps), *SMALL, "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_flm_train_interleaves_teacher_steps_and_resumes_exactly(teacher_mixture: Path, tmp_path: Path) -> None:
    _train(teacher_mixture, tmp_path / "straight", 9)
    _train(teacher_mixture, tmp_path / "resumed", 4)  # stops after a language step; a teacher step comes next
    _train(teacher_mixture, tmp_path / "resumed", 9)
    straight = read_metrics(tmp_path / "straight" / "metrics.jsonl")
    resumed = read_metrics(tmp_path / "resumed" / "metrics.jsonl")
    assert [r["signal"] for r in straight] == ["language", "language", "teacher"] * 3
    for record in straight:
        teacher = record["signal"] == "teacher"
        assert (record["loss"] is None) == teacher and ("teacher_loss" in record) == teacher
        if teacher:
            assert 0 <= record["teacher_acc"] <= 1 and record["teacher_loss"] > 0
    assert [r["step"] for r in resumed] == list(range(1, 10))
    for a, b in zip(straight, resumed, strict=True):
        for key in ("loss", "teacher_loss", "teacher_acc", "grad_norm"):
            assert a.get(key) == b.get(key), (a["step"], key)
    state = json.loads((tmp_path / "straight" / "checkpoints" / "step-9" / "state.json").read_text())
    assert state["data"]["teacher"] == {"consumed": 3 * 8, "seed": 1, "sources": ["count"]}


def test_flm_eval_propositions_reports_accuracy_per_task(teacher_mixture: Path, tmp_path: Path) -> None:
    trained = _train(teacher_mixture, tmp_path / "run", 3)
    result = CliRunner().invoke(app, ["eval", "--checkpoint", trained["checkpoint"], "--propositions",
                                      str(teacher_mixture.parent / "valid"), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    task = report["tasks"]["count"]
    assert report["count"] == task["propositions"] == 80 and task["instances"] == task["choice_instances"] == 40
    assert task["chance"] == 0.5 and task["majority"] == 0.5 and 0 <= task["choice_accuracy"] <= 1
    table = CliRunner().invoke(app, ["eval", "--checkpoint", trained["checkpoint"], "--propositions",
                                     str(teacher_mixture.parent / "valid")])
    assert table.exit_code == 0 and "count" in table.output
    wrong = CliRunner().invoke(app, ["eval", "--checkpoint", trained["checkpoint"], "--propositions",
                                     str(teacher_mixture.parent / "lang")])
    assert wrong.exit_code == 1 and "not proposition shards" in wrong.output

    # the exported model judges propositions with its ordinary logits, as its model card says
    import transformers

    from flm.train.export.huggingface import export_checkpoint

    export_checkpoint(Path(trained["checkpoint"]), tmp_path / "hf", dtype="fp32")
    assert "Judging propositions" in (tmp_path / "hf" / "README.md").read_text(encoding="utf-8")
    hf = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "hf", trust_remote_code=True).eval()
    shards = PropositionShards(teacher_mixture.parent / "valid")
    right = []
    with torch.no_grad():
        for i in range(len(shards)):
            logits = hf(torch.from_numpy(shards.tokens(i).astype(np.int64))[None]).logits[0, -1]
            right.append(bool(logits[TRUE] > logits[FALSE]) == bool(shards.labels[i]))
    assert abs(float(np.mean(right)) - report["accuracy"]) < 1e-9


# ---------------------------------------------------------------- the quickstart's teacher stage and the model card

def test_quickstart_teacher_stage_adds_teacher_steps_on_top(tmp_path: Path) -> None:
    from flm.recipe.run import RecipeRun, load_recipe

    for name in ("off", "on"):
        (tmp_path / name).mkdir()
    off = RecipeRun(load_recipe("quickstart", ["teacher.enabled=false"]), tmp_path / "off")
    assert off.stage_propositions() == {"enabled": False} and off._steps(300) == 300
    off.stage_mixture()
    assert not load_config(MixtureConfig, tmp_path / "off" / "mixture.yaml").teacher.enabled
    on = RecipeRun(load_recipe("quickstart"), tmp_path / "on")  # on by default
    assert on._steps(300) == 600  # every 2nd step a teacher step: the same 300 language steps
    on.stage_mixture()
    mixture = load_config(MixtureConfig, tmp_path / "on" / "mixture.yaml")
    assert (mixture.teacher.every, mixture.teacher.batch) == (2, 16)
    assert mixture.teacher.sources[0].path == (tmp_path / "on" / "propositions" / "train").resolve()


def test_model_card_says_how_to_judge_propositions(teacher_mixture: Path) -> None:
    from flm.train.teacher.card import teacher_card

    record = mixture_record(load_config(MixtureConfig, teacher_mixture))
    text = "\n".join(teacher_card(record))
    assert f"<|reserved_0|> (id {JUDGE})" in text and f"logit[<|reserved_2|> (id {TRUE})]" in text
    assert teacher_card({"sources": []}) == [] and teacher_card(None) == []
