"""Resuming a run explains itself: another stage is named, a changed LR schedule is reported, a wrong path is
"does not exist", and an unknown recipe stage gets no resume hint."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import zstandard
from typer.testing import CliRunner

from flm.cli.main import app
from flm.config import find_config, load_config
from flm.pipelines.token_shards import Manifest, documents_to_batch, write_shard
from flm.train.checkpoint import CheckpointError
from flm.train.config import StageConfig
from flm.train.data.config import MixtureConfig
from flm.train.trainer.loop import train
from flm.train.trainer.resume_check import check_resume

EOS = 256
FAST = ["train.global_batch=4", "train.micro_batch=2", "train.eval_every=0", "train.save_every=1",
        "optim.warmup_steps=1"]


@pytest.fixture(scope="module")
def run(sample_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A 2-step tiny run on byte-level shards of the Pile sample: (its mixture YAML, its run directory)."""
    root = tmp_path_factory.mktemp("resume")
    path = sorted((sample_dir / "pile").glob("*.jsonl.zst"))[0]
    with path.open("rb") as fh:
        lines = zstandard.ZstdDecompressor().stream_reader(fh).read().decode("utf-8").splitlines()[:300]
    docs = [np.append(np.frombuffer(json.loads(line)["text"].encode(), dtype=np.uint8).astype(np.uint32), EOS)
            for line in lines]
    batch = documents_to_batch(docs, [str(i) for i in range(len(docs))], ["pile"] * len(docs), [""] * len(docs))
    shards = root / "shards"
    shards.mkdir()
    Manifest(tokenizer_hash="bytes-v1", vocab_size=EOS + 1, eos_id=EOS,
             shards=[write_shard(shards / "part-00000.arrow", [batch])]).save(shards)
    mixture = {"seq_len": 32, "seed": 7, "valid_fraction": 0.05, "cache_dir": str(root / "index"),
               "sources": [{"name": "pile", "path": str(shards)}]}
    mix_yaml = root / "mix.yaml"
    mix_yaml.write_text(json.dumps(mixture))
    train(stage("tiny", *FAST), load_config(MixtureConfig, mixture), root / "run", steps=2)
    return mix_yaml, root / "run"


def stage(name: str, *overrides: str) -> StageConfig:
    return load_config(StageConfig, find_config(name, "stages"), list(overrides))


def train_args(mix_yaml: Path, run_dir: Path, stage_name: str, *extra: str) -> list[str]:
    return ["train", "--stage", stage_name, "--mixture", str(mix_yaml), "--run-dir", str(run_dir),
            *[a for kv in FAST for a in ("--set", kv)], *extra]


def test_same_settings_change_nothing(run: tuple[Path, Path]) -> None:
    info = check_resume(stage("tiny", *FAST), run[1], steps=2)
    assert info is not None and info.step == 2 and info.schedule_changes == {}
    assert check_resume(stage("tiny", *FAST), run[1], resume="none") is None


def test_a_longer_run_reports_its_new_schedule(run: tuple[Path, Path]) -> None:
    info = check_resume(stage("tiny", *FAST, "optim.lr=1e-3"), run[1], steps=10)
    assert info is not None
    assert info.schedule_changes["decay_steps"] == (2, 10)
    assert info.schedule_changes["lr"][1] == 1e-3
    assert info.schedule["decay_steps"] == 10
    assert info.lr_saved == pytest.approx(stage("tiny").optim.min_lr)  # the old schedule had ended at step 2
    assert info.lr_now > info.lr_saved


def test_the_cli_warns_before_resuming_with_another_schedule(run: tuple[Path, Path], tmp_path: Path) -> None:
    mix_yaml, run_dir = run
    copy = tmp_path / "run"  # the module's run stays at step 2 for the other tests
    copy.mkdir()
    shutil.copytree(run_dir / "checkpoints", copy / "checkpoints")
    result = CliRunner().invoke(app, train_args(mix_yaml, copy, "tiny", "--steps", "3"))
    assert result.exit_code == 0, result.output
    warning = " ".join(result.stderr.split())
    assert "changed LR schedule: decay_steps 2 -> 3" in warning and "It becomes: cosine" in warning


def test_another_stage_is_named_not_a_state_dict(run: tuple[Path, Path]) -> None:
    mix_yaml, run_dir = run
    with pytest.raises(CheckpointError, match="this run was trained as stage 'tiny', not 'tiny-grown'"):
        check_resume(stage("tiny-grown", *FAST), run_dir)
    result = CliRunner().invoke(app, train_args(mix_yaml, run_dir, "tiny-grown", "--steps", "3"))
    assert result.exit_code == 1
    message = " ".join(result.stderr.split())
    assert "this run was trained as stage 'tiny'" in message and "--stage tiny" in message
    assert "state_dict" not in message and "Missing key" not in message
    reshaped = CliRunner().invoke(app, train_args(mix_yaml, run_dir, "tiny", "--set", "model.layers=3"))
    assert reshaped.exit_code == 1 and "model.layers 2 -> 3" in reshaped.stderr


def test_a_missing_resume_path_does_not_exist(run: tuple[Path, Path], tmp_path: Path) -> None:
    mix_yaml, _ = run
    result = CliRunner().invoke(app, train_args(mix_yaml, tmp_path / "new", "tiny", "--resume",
                                                str(tmp_path / "nosuch" / "step-1")))
    assert result.exit_code == 1 and "nosuch/step-1: does not exist" in result.stderr


def test_an_unknown_recipe_stage_gets_no_resume_hint(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["run", "--stages", "trian", "--out", str(tmp_path / "out")])
    assert result.exit_code == 1
    assert "unknown stage(s) trian; choose from raw" in result.stderr and "rerun" not in result.stderr
    assert not (tmp_path / "out").exists()


def test_train_itself_refuses_another_models_run(run: tuple[Path, Path]) -> None:
    """Every caller of `train` (the CLI, `flm run`'s train stages, benches) gets the named refusal."""
    mix_yaml, run_dir = run
    with pytest.raises(CheckpointError, match=r"model.layers 2 -> 3"):
        train(stage("tiny", *FAST, "model.layers=3"), load_config(MixtureConfig, mix_yaml), run_dir, steps=3)
