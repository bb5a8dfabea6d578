"""`flm export`: checkpoints exported for Hugging Face transformers compute flm's function.

The "flm" layout is loaded through its remote code, the "llama" layout by transformers' own
LlamaForCausalLM; logits, padded batches, the loss with labels and greedy generation are compared
with flm's megatron-core model in fp32. Tiny shapes keep it fast on 2 cores.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from flm.cli.main import app
from flm.config import config_to_dict
from flm.train.checkpoint import CheckpointError, CheckpointMeta, save_checkpoint
from flm.train.config import ModelConfig, MupConfig, StageConfig
from flm.train.distributed.parallel import destroy_parallel, init_parallel
from flm.train.export.convert import ExportError
from flm.train.export.huggingface import export_checkpoint
from flm.train.model.gpt import build_model
from flm.train.tools.generate import sample_tokens

transformers = pytest.importorskip("transformers")

VOCAB = 300  # padded to 384: ids 300..383 exist in the embedding but are never generated
SEQ = 32
FLM = ModelConfig(layers=3, hidden=64, heads=4, kv_heads=2, ffn_hidden=96, vocab_size=VOCAB, seq_len=SEQ,
                  dropout=0.0, xpos_scale_base=16.0,
                  mup=MupConfig(enabled=True, base_width=32, input_mult=1.5, output_mult=3.0))
"""xPos (short scale base, so its decay matters), μP, LayerNorm, GeLU, biases, tied, GQA, 1/layer scaling."""
LLAMA = {
    # Llama as it is: RoPE, RMSNorm, SwiGLU, no biases, no 1/layer; μP's scales fold into the weights.
    "plain": replace(FLM, position="rope", norm="rmsnorm", activation="swiglu", bias=False,
                     scale_attn_by_inverse_layer_idx=False, mup=MupConfig(enabled=True, base_width=32)),
    # Biases (Llama's attention_bias/mlp_bias), 1/layer and an input multiplier (the head unties) fold too.
    "folded": replace(FLM, position="rope", norm="rmsnorm", activation="swiglu", rotary_base=500.0),
}


@pytest.fixture(scope="module", autouse=True)
def parallel() -> Iterator[None]:
    init_parallel(seed=5)
    yield
    destroy_parallel()


def trained_like(cfg: ModelConfig, seed: int = 0) -> torch.nn.Module:
    """A model whose norms and biases are not at their init (ones / zeros), so every tensor matters."""
    model = build_model(cfg, seed=seed).eval()
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in model.parameters():
            if param.ndim == 1:
                param.add_(torch.randn(param.shape, generator=gen) * 0.2)
    return model


def save(cfg: ModelConfig, root: Path, step: int = 5, **meta: object) -> tuple[Path, torch.nn.Module]:
    model = trained_like(cfg)
    stage = StageConfig(name="test", model=cfg)
    path = save_checkpoint(root, step, model=model, optimizer=torch.optim.AdamW(model.parameters()), fmt="torch",
                           state={"step": step},
                           meta=CheckpointMeta(step=step, format="torch", stage="test",
                                               stage_config=config_to_dict(stage), **meta))
    return path, model


def ids(batch: int = 2, seq: int = 20, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, VOCAB, (batch, seq), generator=torch.Generator().manual_seed(seed))


def load_hf(out: Path, *, remote: bool) -> torch.nn.Module:
    model, info = transformers.AutoModelForCausalLM.from_pretrained(out, trust_remote_code=remote,
                                                                    output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"], info
    return model.eval()


@pytest.fixture(scope="module")
def flm_export(tmp_path_factory: pytest.TempPathFactory) -> tuple[torch.nn.Module, torch.nn.Module, dict]:
    root = tmp_path_factory.mktemp("flm")
    path, model = save(FLM, root / "run")
    summary = export_checkpoint(path, root / "hf", dtype="fp32")
    return model, load_hf(root / "hf", remote=True), summary


@pytest.fixture(scope="module", params=list(LLAMA))
def llama_export(request: pytest.FixtureRequest,
                 tmp_path_factory: pytest.TempPathFactory) -> tuple[torch.nn.Module, torch.nn.Module, dict]:
    root = tmp_path_factory.mktemp(request.param)
    path, model = save(LLAMA[request.param], root / "run")
    summary = export_checkpoint(path, root / "hf", fmt="llama", dtype="fp32")
    return model, load_hf(root / "hf", remote=False), summary


@torch.no_grad()
def test_flm_format_computes_flms_logits(flm_export: tuple) -> None:
    model, hf, summary = flm_export
    assert type(hf).__name__ == "FLMForCausalLM"
    assert summary["format"] == "flm" and summary["params"] == sum(p.numel() for p in model.parameters())
    assert sorted(summary["files"]) == ["README.md", "config.json", "configuration_flm.py", "generation_config.json",
                                        "model.safetensors", "modeling_flm.py"]
    assert "tokenizer" in summary["tokenizer_note"]  # no mixture recorded, none given
    x = ids()
    expected = model(x, None)
    assert (hf(x).logits - expected).abs().max().item() < 1e-5
    assert expected.abs().max().item() > 0.1  # not trivially small


@torch.no_grad()
def test_llama_format_loads_without_remote_code(llama_export: tuple) -> None:
    model, hf, summary = llama_export
    assert type(hf) is transformers.LlamaForCausalLM and not summary["trust_remote_code"]
    x = ids(seed=1)
    assert (hf(x).logits - model(x, None)).abs().max().item() < 1e-5
    assert any("μP" in fold for fold in summary["folded"])


def check_padded_batch(model: torch.nn.Module, hf: torch.nn.Module) -> None:
    """Left- and right-padded rows give, at their real tokens, the logits of the unpadded sequences."""
    short, long = ids(1, 12, seed=2), ids(1, 20, seed=3)
    for side in ("left", "right"):
        pad = torch.zeros(1, 8, dtype=torch.long)
        padded = torch.cat([pad, short] if side == "left" else [short, pad], dim=1)
        mask = torch.cat([torch.zeros(1, 8), torch.ones(1, 12)] if side == "left"
                         else [torch.ones(1, 12), torch.zeros(1, 8)], dim=1).long()
        logits = hf(torch.cat([padded, long]), attention_mask=torch.cat([mask, torch.ones(1, 20).long()])).logits
        real = logits[0, 8:] if side == "left" else logits[0, :12]
        assert (real - model(short, None)[0]).abs().max().item() < 1e-4, side
        assert (logits[1] - model(long, None)[0]).abs().max().item() < 1e-5


@torch.no_grad()
def test_padded_batch_with_attention_mask(flm_export: tuple) -> None:
    check_padded_batch(*flm_export[:2])


@torch.no_grad()
def test_loss_with_labels_matches_flm(flm_export: tuple) -> None:
    model, hf, _ = flm_export
    x = ids(seed=4)
    flm_loss = model(x[:, :-1], None, labels=x[:, 1:]).mean()
    assert abs(hf(x, labels=x).loss.item() - flm_loss.item()) < 1e-5
    ignored = x.clone()
    ignored[:, :10] = -100  # positions whose targets are ignored
    partial = model(x[:, :-1], None, labels=x[:, 1:])[:, 9:].mean()
    assert abs(hf(x, labels=ignored).loss.item() - partial.item()) < 1e-5


def flm_greedy(model: torch.nn.Module, prompt: list[int], new: int = 6) -> list[int]:
    return sample_tokens(model, prompt, vocab_size=VOCAB, seq_len=SEQ, max_new_tokens=new, eos_id=-1, temperature=0.0)


@torch.no_grad()
def test_generate_matches_flm_greedy(flm_export: tuple) -> None:
    """HF greedy generate = flm's greedy sampling, past the context window too, and in a left-padded batch."""
    model, hf, _ = flm_export
    prompts = [ids(1, 5, seed=6)[0].tolist(), ids(1, 29, seed=7)[0].tolist()]  # 29 + 6 > SEQ: the window slides
    expected = [flm_greedy(model, p) for p in prompts]
    out = hf.generate(torch.tensor([prompts[1]]), do_sample=False, max_new_tokens=6, pad_token_id=0)
    assert out[0, 29:].tolist() == expected[1]
    batch = torch.tensor([[0] * 24 + prompts[0], prompts[1]])
    mask = torch.tensor([[0] * 24 + [1] * 5, [1] * 29])
    out = hf.generate(batch, attention_mask=mask, do_sample=False, max_new_tokens=6, pad_token_id=0)
    assert out[:, 29:].tolist() == expected


@torch.no_grad()
def test_llama_format_padding_and_generate(llama_export: tuple) -> None:
    model, hf, _ = llama_export
    check_padded_batch(model, hf)
    prompt = ids(1, 8, seed=6)[0].tolist()
    out = hf.generate(torch.tensor([prompt]), do_sample=False, max_new_tokens=6, pad_token_id=0)
    assert out[0, 8:].tolist() == flm_greedy(model, prompt)


def test_bf16_export_and_shards(tmp_path: Path) -> None:
    path, model = save(FLM, tmp_path / "run")
    summary = export_checkpoint(path, tmp_path / "hf", max_shard_bytes=40_000)
    assert "model.safetensors.index.json" in summary["files"] and summary["dtype"] == "bf16"
    hf = load_hf(tmp_path / "hf", remote=True)
    assert hf.model.embed_tokens.weight.dtype == torch.bfloat16
    x = ids(seed=8)
    with torch.no_grad():
        assert (hf.float()(x).logits - model(x, None)).abs().max().item() < 0.05


def test_tokenizer_shipped_given_or_found_from_the_run(tmp_path: Path) -> None:
    from flm.pipelines.token_shards import Manifest
    from flm.tokenizer import TrainConfig, load_tokenizer, train_tokenizer

    small = TrainConfig(vocab_size=VOCAB, sample_bytes=10**6, allow_smaller=True)
    docs = [("en", f"document {i}: the quick brown fox jumps over the lazy dog {i * 7} times.") for i in range(200)]
    tok_dir = tmp_path / "tok"
    meta = train_tokenizer(docs, tok_dir, small)
    shards = tmp_path / "tokens"
    shards.mkdir()
    Manifest(tokenizer_hash=meta.content_hash, vocab_size=meta.vocab_size, eos_id=meta.eos_id,
             extra={"tokenizer_dir": str(tok_dir)}).save(shards)
    mixture = {"sources": [{"name": "en", "path": str(shards)}]}
    path, _ = save(FLM, tmp_path / "run", mixture=mixture, tokenizer_hash=meta.content_hash)

    found = export_checkpoint(path, tmp_path / "found", dtype="fp32")
    given = export_checkpoint(path, tmp_path / "given", dtype="fp32", tokenizer=tok_dir)
    for summary in (found, given):
        assert summary["tokenizer"] == str(tok_dir) and not summary["tokenizer_note"]
        assert {"tokenizer.json", "tokenizer_config.json"} <= set(summary["files"])
    hf_tok = transformers.AutoTokenizer.from_pretrained(tmp_path / "found")
    text = "the quick brown fox, 1234 times"
    assert hf_tok(text)["input_ids"] == load_tokenizer(tok_dir).encode(text)
    assert hf_tok.eos_token_id == meta.eos_id and hf_tok.pad_token_id == meta.pad_id
    config = json.loads((tmp_path / "found" / "generation_config.json").read_text())
    assert config["eos_token_id"] == meta.eos_id
    assert config["suppress_tokens"] == list(range(VOCAB, FLM.padded_vocab_size))  # padding ids never generated

    other = tmp_path / "other"
    train_tokenizer([("en", t.upper()) for _, t in docs], other, small)
    with pytest.raises(ExportError, match="differs from the one the checkpoint was trained with"):
        export_checkpoint(path, tmp_path / "wrong", tokenizer=other)
    shutil.rmtree(tok_dir)  # the run's tokenizer is gone: export without one, and say so
    summary = export_checkpoint(path, tmp_path / "gone")
    assert summary["tokenizer"] is None and "tok" in summary["tokenizer_note"]


def test_clear_errors(tmp_path: Path) -> None:
    path, _ = save(FLM, tmp_path / "run")
    with pytest.raises(ExportError, match=r"model\.position is 'xpos'.*model\.norm is 'layernorm'"):
        export_checkpoint(path, tmp_path / "llama", fmt="llama")
    (tmp_path / "exists").mkdir()
    with pytest.raises(ExportError, match="already exists"):
        export_checkpoint(path, tmp_path / "exists")

    def edited(name: str, **changes: object) -> Path:
        copy = tmp_path / name / path.name
        shutil.copytree(path, copy)
        meta = json.loads((copy / "meta.json").read_text())
        (copy / "meta.json").write_text(json.dumps({**meta, **changes}))
        return copy

    with pytest.raises(CheckpointError, match=r"dist/\.metadata: missing"):  # says megatron, holds no dist/
        export_checkpoint(edited("gpu", format="megatron"), tmp_path / "a")
    with pytest.raises(ExportError, match="unknown checkpoint format 'jax'"):
        export_checkpoint(edited("jax", format="jax"), tmp_path / "b")
    stage = config_to_dict(StageConfig(model=replace(FLM, layers=2)))
    with pytest.raises(CheckpointError, match="missing.*decoder.layers.2"):
        export_checkpoint(edited("shape", stage_config=stage), tmp_path / "d")
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary directory left


def test_grown_checkpoint_exports_once_its_masks_are_at_one(tmp_path: Path) -> None:
    """`flm grow` output is refused while its masks ramp; past the ramp it exports the grown model's function."""
    from flm.config import find_config, load_config
    from flm.train.checkpoint import load_checkpoint
    from flm.train.engine import CpuEngine
    from flm.train.growth import resume_ramp
    from flm.train.growth.grow_checkpoint import grow_checkpoint

    stage = load_config(StageConfig, find_config("tiny", "stages"), [f"model.vocab_size={VOCAB}"])
    engine = CpuEngine(stage, VOCAB)
    engine.module(ids(), None, labels=ids(seed=1)).mean().backward()
    engine.optimizer.step()
    path = save_checkpoint(tmp_path / "run", 4, model=engine.module, optimizer=engine.optimizer, fmt="torch",
                           state={"step": 4},
                           meta=CheckpointMeta(step=4, format="torch", stage="tiny",
                                               stage_config=config_to_dict(stage)))
    grown = tmp_path / "grown"
    grow_checkpoint(path, load_config(StageConfig, find_config("tiny-grown", "stages")), grown, ramp_steps=2)
    with pytest.raises(ExportError, match="still ramping its masks until step 6"):
        export_checkpoint(grown, tmp_path / "early")
    meta = json.loads((grown / "meta.json").read_text())
    (grown / "meta.json").write_text(json.dumps({**meta, "step": 6}))  # as if trained through the ramp
    export_checkpoint(grown, tmp_path / "hf", dtype="fp32")

    loaded = load_config(StageConfig, meta["stage_config"])
    target = CpuEngine(loaded, VOCAB, train=False)
    load_checkpoint(grown, model=target.module)
    assert resume_ramp(target.module, meta["growth_history"], 6) is None  # masks at 1: the plain grown model
    x = ids(seed=10)
    with torch.no_grad():
        assert (load_hf(tmp_path / "hf", remote=True)(x).logits - target.module.eval()(x, None)).abs().max() < 1e-5


def test_cli_export_json_and_errors(tmp_path: Path) -> None:
    path, model = save(LLAMA["plain"], tmp_path / "run")
    runner = CliRunner()
    result = runner.invoke(app, ["export", str(path), "--out", str(tmp_path / "hf"), "--format", "llama",
                                 "--dtype", "fp32", "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["architecture"] == "LlamaForCausalLM" and summary["step"] == 5
    hf = load_hf(tmp_path / "hf", remote=False)
    x = ids(seed=9)
    with torch.no_grad():
        assert (hf(x).logits - model(x, None)).abs().max().item() < 1e-5
    shown = runner.invoke(app, ["export", str(path), "--out", str(tmp_path / "shown")])
    assert shown.exit_code == 0, shown.output
    assert "FLMForCausalLM" in shown.output and "trust_remote_code=True" in shown.output
    again = runner.invoke(app, ["export", str(path), "--out", str(tmp_path / "hf")])
    assert again.exit_code == 1 and "already exists" in " ".join(again.output.split())  # rich wraps lines
    bad = runner.invoke(app, ["export", str(path), "--out", str(tmp_path / "x"), "--dtype", "fp8"])
    assert bad.exit_code == 2 and "'fp8'" in bad.output and "bf16" in bad.output  # --dtype lists its choices


def test_exported_code_is_standalone() -> None:
    """The remote code travels alone: it may import torch and transformers, never flm."""
    from flm.train.export.huggingface import HF_SOURCE, REMOTE_CODE

    for name in REMOTE_CODE:
        source = (HF_SOURCE / name).read_text(encoding="utf-8")
        imports = [line.split()[1] for line in source.splitlines() if line.startswith(("import ", "from "))]
        assert all(m.split(".")[0] in {"__future__", "math", "functools", "typing", "torch", "transformers", ""}
                   for m in imports), imports
