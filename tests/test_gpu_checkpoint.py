"""A checkpoint written on GPUs reads anywhere: the committed fixture is a real one, not a mock.

tests/fixtures/gpu_tp2/checkpoint was written by `flm train` on two H200s at TP=2 (bf16, megatron-core DDP,
distributed optimizer, dist_checkpointing; see tests/fixtures/gpu_tp2/README.md for the command), with the
tokenizer beside it. On this CPU-only machine it is evaluated, generated from, exported to Hugging Face,
grown into a 2x wider and deeper stage and trained on.
"""

from __future__ import annotations

import io
import json
import math
import pickle
import shutil
from pathlib import Path

import pytest
import torch
import transformers
from bilingual_text import documents, pile_record, write_clean, wudao_record
from typer.testing import CliRunner

from flm.cli.main import app
from flm.pipelines.tokenize import tokenize_corpus
from flm.train.checkpoint import CheckpointError, read_meta
from flm.train.checkpoint.dist_tensors import (
    OPTIMIZER_PREFIX,
    DistReader,
    LazyTensor,
    optimizer_common,
    read_dist_metadata,
    write_dist,
)
from flm.train.checkpoint.integrity import write_checksums
from flm.train.checkpoint.tensors import open_tensors

FIXTURE = Path(__file__).parent / "fixtures" / "gpu_tp2"
CHECKPOINT = FIXTURE / "checkpoint"
TOKENIZER = FIXTURE / "tokenizer"
runner = CliRunner()


def flm(*args: str) -> dict:
    result = runner.invoke(app, [*args, "--json"])
    assert result.exit_code == 0, result.output
    return json.loads([line for line in result.stdout.splitlines() if line.startswith("{")][-1])


@pytest.fixture(scope="module")
def mixture(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Token shards of generated bilingual text, made with the fixture's tokenizer, and a mixture over them
    (seed 1234, as the fixture was trained with: resuming checks it)."""
    root = tmp_path_factory.mktemp("data")
    texts = documents(240, seed=11)
    write_clean(root / "clean", "pile", [pile_record(t, i, "Pile-CC") for i, t in enumerate(texts[:140])], 70)
    write_clean(root / "clean", "wudao", [wudao_record(t, i) for i, t in enumerate(texts[140:])], 50)
    tokenize_corpus(root / "clean", root / "tokens", TOKENIZER, workers=1, command="test")
    path = root / "mixture.yaml"
    path.write_text(json.dumps({"seed": 1234, "valid_fraction": 0.1, "sources": [
        {"name": s, "path": str(root / "tokens" / s), "weight": 1.0} for s in ("pile", "wudao")]}))
    return path


def test_fixture_is_a_tp2_gpu_checkpoint() -> None:
    meta = read_meta(CHECKPOINT)
    assert meta.format == "megatron" and meta.world["tp"] == 2 and "H200" in meta.device
    tensors = open_tensors(CHECKPOINT)
    assert tensors.adam_step == meta.step
    qkv = tensors.weight("decoder.layers.1.self_attention.linear_qkv.weight")
    assert qkv.dtype == torch.float32 and tuple(qkv.shape) == (192, 64)  # both TP shards, fp32 master weight
    assert set(tensors.moments("embedding.word_embeddings.weight")) == {"exp_avg", "exp_avg_sq"}


def test_eval_generate_export_on_cpu(mixture: Path, tmp_path: Path) -> None:
    result = flm("eval", "--checkpoint", str(CHECKPOINT), "--mixture", str(mixture))
    assert math.isfinite(result["val_loss"]) and result["val_loss"] < math.log(512)  # it learnt something
    gen = flm("generate", "--checkpoint", str(CHECKPOINT), "--tokenizer", str(TOKENIZER), "--prompt", "The package",
              "--temperature", "0", "--max-new-tokens", "12")
    flm("export", str(CHECKPOINT), "--out", str(tmp_path / "hf"), "--tokenizer", str(TOKENIZER), "--dtype", "fp32")
    tok = transformers.AutoTokenizer.from_pretrained(tmp_path / "hf")
    hf = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "hf", trust_remote_code=True).eval()
    ids = tok("The package", return_tensors="pt").input_ids
    out = hf.generate(ids, max_new_tokens=12, do_sample=False, eos_token_id=tok.eos_token_id)
    assert tok.decode(out[0, ids.shape[1]:], skip_special_tokens=True) == gen["generations"][0]["text"]


def test_grow_then_train_on_cpu(mixture: Path, tmp_path: Path) -> None:
    before = flm("eval", "--checkpoint", str(CHECKPOINT), "--mixture", str(mixture))["val_loss"]
    grown = tmp_path / "grown"
    record = flm("grow", "--checkpoint", str(CHECKPOINT), "--to", "tiny-grown", "--out", str(grown),
                 "--ramp-steps", "4")
    assert record["params_after"] > 4 * record["params_before"]
    after = flm("eval", "--checkpoint", str(grown), "--mixture", str(mixture))["val_loss"]
    assert abs(after - before) < 1e-4  # masks at 0: the grown model computes the GPU-trained function
    step = read_meta(CHECKPOINT).step
    trained = flm("train", "--stage", "tiny-grown", "--mixture", str(mixture), "--run-dir", str(tmp_path / "run"),
                  "--resume", str(grown), "--steps", str(step + 6), "--set", "train.eval_every=0")
    assert trained["start_step"] == step and trained["step"] == step + 6 and math.isfinite(trained["loss"])


class _Exploit:
    def __reduce__(self) -> tuple:
        return (shutil.rmtree, ("/nonexistent-flm-test",))


def test_crafted_metadata_is_refused(tmp_path: Path) -> None:
    copy = tmp_path / "ckpt"
    shutil.copytree(CHECKPOINT, copy)
    buffer = io.BytesIO()
    pickle.dump(_Exploit(), buffer)
    (copy / "dist" / ".metadata").write_bytes(buffer.getvalue())
    with pytest.raises(CheckpointError, match=r"\.metadata: refused.*shutil"):
        read_dist_metadata(copy / "dist")
    assert read_dist_metadata(CHECKPOINT / "dist").state_dict_metadata  # the real one passes


def test_a_shifted_master_weight_falls_back_to_the_weight(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A checkpoint with megatron-core 0.16.1's shifted optimizer state (saved before flm repaired it) reads
    with the parameter's own weight and without its moments, and says so."""
    reader = DistReader(CHECKPOINT / "dist")
    embedding = "embedding.word_embeddings.weight"
    entries = {}
    for key in reader.entries():
        value = reader.read(key)
        if key == f"{OPTIMIZER_PREFIX}param.{embedding}":
            value = torch.cat([value[1:], torch.zeros_like(value[:1])])  # shifted by a row, zero-padded
        entries[key] = LazyTensor.whole(tuple(value.shape), value.dtype, lambda v=value: v.clone())
    copy = tmp_path / "ckpt"
    shutil.copytree(CHECKPOINT, copy, ignore=shutil.ignore_patterns("dist"))
    write_dist(copy / "dist", entries, {}, optimizer_common(20))
    write_checksums(copy)
    tensors = open_tensors(copy)
    assert torch.equal(tensors.weight(embedding), reader.read(embedding))
    assert tensors.moments(embedding) is None and "issue #504" in caplog.text
    assert tensors.moments("decoder.final_layernorm.weight") is not None


def test_a_checkpoint_trained_in_fp8_reads_on_cpu(mixture: Path, tmp_path: Path) -> None:
    """fp8 sets only how the GEMMs compute: a checkpoint whose stage trained in fp8 evaluates and generates on a
    CPU with ordinary GEMMs, exactly as the same weights recorded as bf16 do (training fp8 there stays refused)."""
    copy = tmp_path / "fp8"
    shutil.copytree(CHECKPOINT, copy)
    meta = json.loads((copy / "meta.json").read_text())
    meta["stage_config"]["model"]["precision"] = "fp8"
    (copy / "meta.json").write_text(json.dumps(meta))
    assert read_meta(copy).load_stage().model.precision == "fp8"
    for key, args in (("val_loss", ["eval", "--mixture", str(mixture)]),
                      ("generations", ["generate", "--tokenizer", str(TOKENIZER), "--prompt", "The package",
                                       "--temperature", "0", "--max-new-tokens", "8"])):
        assert flm(*args, "--checkpoint", str(copy))[key] == flm(*args, "--checkpoint", str(CHECKPOINT))[key]
