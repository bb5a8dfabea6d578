"""`flm export` writes a model card (README.md): architecture, training, growth, final losses, tokenizer, provenance."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from flm.cli.main import app
from flm.config import config_to_dict
from flm.train.checkpoint import CheckpointMeta, save_checkpoint
from flm.train.config import ModelConfig, StageConfig
from flm.train.distributed.parallel import destroy_parallel, init_parallel
from flm.train.export.huggingface import export_checkpoint
from flm.train.export.model_card import final_losses, flm_version
from flm.train.model.gpt import build_model
from flm.train.model.size import param_count

CFG = ModelConfig(layers=2, hidden=64, heads=4, ffn_hidden=96, vocab_size=300, seq_len=32, dropout=0.0)
GROWTH = {"from_stage": "tiny", "to_stage": "tiny-grown", "operators": ["width", "depth"], "step": 300,
          "tokens_seen": 614_400, "ramp_steps": 50, "params_before": 362_112, "params_after": 1_320_000}


@pytest.fixture(scope="module", autouse=True)
def parallel() -> Iterator[None]:
    init_parallel(seed=5)
    yield
    destroy_parallel()


def checkpoint(run: Path, step: int = 500, **meta: object) -> Path:
    model = build_model(CFG, seed=0)
    stage = StageConfig(name="tiny-grown", model=CFG)
    fields = {"tokens_seen": 1_024_000, "consumed_samples": 8000, "growth_history": [GROWTH],
              "mixture": {"sources": [{"name": "pile", "path": "/somewhere/pile", "weight": 0.6},
                                      {"name": "wudao", "path": "/somewhere/wudao", "weight": 0.4}]},
              "saved_at": "2026-12-01T03:00:00", **meta}
    return save_checkpoint(run / "checkpoints", step, model=model, optimizer=torch.optim.AdamW(model.parameters()),
                           fmt="torch", state={"step": step},
                           meta=CheckpointMeta(step=step, format="torch", stage="tiny-grown",
                                               stage_config=config_to_dict(stage), **fields))


def write_metrics(run: Path) -> None:
    records = [{"step": 490, "loss": 5.61, "val_loss": 5.70}, {"step": 500, "loss": 5.5432},
               {"step": 510, "loss": 5.1, "val_loss": 5.2}]  # after the checkpoint: not its figures
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records) + '{"step": 5', "utf-8")


def test_cli_export_writes_the_model_card(tmp_path: Path) -> None:
    run = tmp_path / "runs" / "tiny-grown"
    path = checkpoint(run)
    write_metrics(run)
    out = tmp_path / "hf"
    result = CliRunner().invoke(app, ["export", str(path), "--out", str(out), "--dtype", "fp32", "--json"])
    assert result.exit_code == 0, result.output
    assert "README.md" in json.loads(result.stdout)["files"]
    card = (out / "README.md").read_text(encoding="utf-8")

    assert card.startswith("---\nlibrary_name: transformers\n")
    assert "# tiny-grown (step 500)" in card
    assert f"| parameters | {param_count(CFG):,} |" in card
    assert "| layers | 2 |" in card and "| hidden size | 64 |" in card
    assert "| attention heads | 4 (key/value heads: 4, head size 16) |" in card
    assert "| exported as | FLMForCausalLM (`--format flm`) |" in card
    assert "stage `tiny-grown`, 500 steps, 1,024,000 tokens seen (8,000 samples)" in card
    assert "data mixture: pile (weight 0.6), wudao (weight 0.4)" in card
    assert "| 300 | 614,400 | tiny | tiny-grown | 362,112 -> 1,320,000 | width, depth |" in card
    assert "training loss (last logged step): 5.5432 at step 500" in card
    assert "held-out loss (the mixture's validation split): 5.7000 at step 490" in card
    assert "Not included: flm export found no usable tokenizer for this run; which one it was trained" in card
    assert f"- flm {flm_version()}" in card
    assert "- source checkpoint: `tiny-grown/checkpoints/step-500` (format torch, saved 2026-12-01T03:00:00)" in card
    assert f"- command: `flm export {path} --out {out} --format flm --dtype fp32`" in card
    assert "/somewhere" not in card  # the data's local paths stay out of a card that gets shared
    assert 'AutoModelForCausalLM.from_pretrained("PATH", trust_remote_code=True)' in card


def test_card_without_metrics_or_growth_says_so(tmp_path: Path) -> None:
    path = checkpoint(tmp_path / "run", step=7, growth_history=[], mixture=None, tokens_seen=0)
    assert final_losses(path, 7) == {}
    export_checkpoint(path, tmp_path / "hf", fmt="flm", dtype="fp32")
    card = (tmp_path / "hf" / "README.md").read_text(encoding="utf-8")
    assert "Trained at this size from the start (no growth)." in card
    assert "Not recorded: the run's metrics.jsonl was not found beside the checkpoint." in card
    assert "data mixture: not recorded" in card
    assert "command: not recorded (exported through the Python API)" in card


def test_card_names_the_shipped_tokenizer(tmp_path: Path) -> None:
    from flm.pipelines.token_shards import Manifest
    from flm.tokenizer import TrainConfig, train_tokenizer

    docs = [("en", f"document {i}: the quick brown fox jumps over the lazy dog {i * 7} times.") for i in range(200)]
    meta = train_tokenizer(docs, tmp_path / "tok", TrainConfig(vocab_size=300, sample_bytes=10**6, allow_smaller=True))
    shards = tmp_path / "tokens"
    shards.mkdir()
    Manifest(tokenizer_hash=meta.content_hash, vocab_size=meta.vocab_size, eos_id=meta.eos_id,
             extra={"tokenizer_dir": str(tmp_path / "tok")}).save(shards)
    path = checkpoint(tmp_path / "run", mixture={"sources": [{"name": "en", "path": str(shards)}]},
                      tokenizer_hash=meta.content_hash)
    export_checkpoint(path, tmp_path / "hf", dtype="fp32")
    card = (tmp_path / "hf" / "README.md").read_text(encoding="utf-8")
    assert (f"byte-level BPE (hf backend), {meta.vocab_size:,} tokens, sha256 `{meta.content_hash[:16]}`, the one "
            f"the model was trained with (`{meta.content_hash[:16]}`)") in card
    assert 'tokenizer = AutoTokenizer.from_pretrained("PATH", trust_remote_code=True)' in card  # --format flm
