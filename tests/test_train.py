"""The training loop on CPU: tiny learns, resume is bit-exact, NaN steps are skipped, eval and CLI work.

Data: byte-level token shards (token = byte, EOS 256) made from the bundled Pile sample, so the
model has real text to learn from without waiting for a trained tokenizer.
"""

from __future__ import annotations

import errno
import json
import math
import os
import signal
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import zstandard
from typer.testing import CliRunner

from flm.cli.main import app
from flm.config import ConfigError, find_config, load_config
from flm.pipelines.token_shards import Manifest, documents_to_batch, write_shard
from flm.train.checkpoint import list_checkpoints, read_meta
from flm.train.checkpoint.integrity import verify_checkpoint
from flm.train.config import StageConfig
from flm.train.data.config import MixtureConfig
from flm.train.engine import cpu as cpu_engine
from flm.train.model.size import param_count
from flm.train.trainer import loop as train_mod
from flm.train.trainer.evaluate import evaluate_checkpoint
from flm.train.trainer.loop import TrainingDiverged
from flm.train.trainer.metrics import read_metrics

EOS = 256
FAST = ["train.global_batch=4", "train.micro_batch=2", "train.log_every=1",
        "train.eval_every=0", "train.save_every=0", "optim.warmup_steps=2"]
"""A smaller, faster tiny for the loop-mechanics tests (two micro-batches: accumulation is exercised)."""


@pytest.fixture(scope="module")
def byte_shards(sample_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("bytes")
    docs = []
    for path in sorted((sample_dir / "pile").glob("*.jsonl.zst")):
        with path.open("rb") as fh:
            text = zstandard.ZstdDecompressor().stream_reader(fh).read().decode("utf-8")
        docs += [json.loads(line)["text"].encode("utf-8") for line in text.splitlines()]
    tokens = [np.append(np.frombuffer(d, dtype=np.uint8).astype(np.uint32), EOS) for d in docs]
    batch = documents_to_batch(tokens, [str(i) for i in range(len(tokens))], ["pile"] * len(tokens),
                               [""] * len(tokens))
    info = write_shard(out / "part-00000.arrow", [batch])
    Manifest(tokenizer_hash="bytes-v1", vocab_size=EOS + 1, eos_id=EOS, shards=[info]).save(out)
    return out


@pytest.fixture(scope="module")
def mixture_dict(byte_shards: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The mixture sets seq_len 32 (tiny's stage default is 128): the mixture's length wins."""
    return {"seq_len": 32, "seed": 7, "valid_fraction": 0.02, "cache_dir": str(tmp_path_factory.mktemp("index")),
            "sources": [{"name": "pile", "path": str(byte_shards)}]}


@pytest.fixture(scope="module")
def mixture(mixture_dict: dict) -> MixtureConfig:
    return load_config(MixtureConfig, mixture_dict)


def stage(*overrides: str) -> StageConfig:
    return load_config(StageConfig, find_config("tiny", "stages"), list(overrides))


def losses(run_dir: Path) -> dict[int, float]:
    return {r["step"]: r["loss"] for r in read_metrics(run_dir / "metrics.jsonl")}


def test_tiny_stage_learns(mixture_dict: dict, tmp_path: Path) -> None:
    """tiny's own defaults (LR, warmup, batch, and its seq_len: the mixture sets none) visibly learn:
    the loss falls by >= 30% in 60 steps."""
    mixture = load_config(MixtureConfig, {k: v for k, v in mixture_dict.items() if k != "seq_len"})
    result = train_mod.train(stage("train.eval_every=60", "train.eval_batches=4"), mixture, tmp_path, steps=60)
    assert result.status == "completed" and result.step == 60 and result.skipped_steps == 0
    curve = losses(tmp_path)
    first, last = np.mean([curve[s] for s in (1, 2, 3)]), np.mean([curve[s] for s in (58, 59, 60)])
    assert first == pytest.approx(math.log(EOS + 1), rel=0.1)  # starts at chance over the byte vocabulary
    assert last < 0.7 * first, f"loss fell only from {first:.3f} to {last:.3f}"
    assert result.val_loss is not None and result.val_loss < 0.75 * first
    record = read_metrics(tmp_path / "metrics.jsonl")[-1]
    for key in ("step", "loss", "lr", "grad_norm", "tokens_per_s", "tflops_per_gpu", "mfu", "val_loss"):
        assert key in record
    assert record["tokens_per_s"] > 0 and record["tflops_per_gpu"] > 0
    assert list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))
    meta = read_meta(Path(result.checkpoint))
    assert meta.stage == "tiny" and meta.step == 60 and meta.tokens_seen == 60 * 16 * 128
    assert meta.stage_config["model"]["vocab_size"] == EOS + 1  # from the shards' manifest
    assert meta.stage_config["model"]["seq_len"] == 128


def test_resume_after_signal_and_after_crash_is_bit_exact(mixture: MixtureConfig, tmp_path: Path) -> None:
    cfg = stage(*FAST, "train.save_every=3", "train.keep_last=2")
    train_mod.train(cfg, mixture, tmp_path / "straight", steps=9)
    reference = losses(tmp_path / "straight")

    def sigterm_at_4(record: dict) -> None:
        if record["step"] == 4:
            os.kill(os.getpid(), signal.SIGTERM)

    stopped = train_mod.train(cfg, mixture, tmp_path / "resumed", steps=9, on_step=sigterm_at_4)
    assert stopped.status == "interrupted" and stopped.step == 4
    assert [s for s, _ in list_checkpoints(tmp_path / "resumed" / "checkpoints")] == [3, 4]

    class Crash(Exception):
        pass

    def crash_at_8(record: dict) -> None:
        if record["step"] == 8:
            raise Crash

    with pytest.raises(Crash):  # resumes at 4, checkpoints at 6, dies at 8 without saving
        train_mod.train(cfg, mixture, tmp_path / "resumed", steps=9, on_step=crash_at_8)
    final = train_mod.train(cfg, mixture, tmp_path / "resumed", steps=9)
    assert final.start_step == 6 and final.step == 9 and final.resumed_from.endswith("step-6")
    resumed = losses(tmp_path / "resumed")
    assert sorted(resumed) == list(range(1, 10))  # steps 7-8 of the crashed attempt were dropped from the log
    assert resumed == reference  # bit-identical at every step
    again = train_mod.train(cfg, mixture, tmp_path / "resumed", steps=9)
    assert again.status == "already-done" and again.step == 9


def test_resume_with_dropout_is_bit_exact(mixture: MixtureConfig, tmp_path: Path) -> None:
    """Dropout's masks after a resume are the straight run's: restoring the RNG is not undone by the data loader
    starting (inside the resumed run's first step) and drawing from torch's global RNG."""
    cfg = stage(*FAST, "model.dropout=0.1")
    train_mod.train(cfg, mixture, tmp_path / "straight", steps=6)

    def sigterm_at_4(record: dict) -> None:
        if record["step"] == 4:
            os.kill(os.getpid(), signal.SIGTERM)

    stopped = train_mod.train(cfg, mixture, tmp_path / "resumed", steps=6, on_step=sigterm_at_4)
    assert stopped.status == "interrupted" and stopped.step == 4  # same target: the LR schedule is the same
    final = train_mod.train(cfg, mixture, tmp_path / "resumed", steps=6)
    assert final.start_step == 4 and final.step == 6
    assert losses(tmp_path / "resumed") == losses(tmp_path / "straight")


def test_a_run_in_an_existing_process_group_is_seeded(mixture: MixtureConfig, tmp_path: Path) -> None:
    """train.seed seeds weights and dropout also when the caller set up the process group and megatron's groups."""
    from flm.train.distributed.parallel import destroy_parallel, init_parallel

    cfg = stage(*FAST, "model.dropout=0.1")
    train_mod.train(cfg, mixture, tmp_path / "fresh", steps=2)
    init_parallel(backend="gloo", seed=99)
    try:
        torch.rand(5)  # the caller's own draws move the global RNG
        train_mod.train(cfg, mixture, tmp_path / "in-group", steps=2)
    finally:
        destroy_parallel()
    assert losses(tmp_path / "in-group") == losses(tmp_path / "fresh")


def test_non_finite_steps_are_skipped_then_training_stops(mixture: MixtureConfig, tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """Step 2: NaN gradient (finite loss); step 4: inf loss; steps 6-8: NaN loss, three in a row -> stop."""
    engines = []
    real_make_engine = train_mod.make_engine

    def poisoned_engine(*args, **kwargs):  # noqa: ANN202
        engine = real_make_engine(*args, **kwargs)
        engines.append(engine)
        calls = {"forward": 0}

        def step() -> int:
            return (calls["forward"] + 1) // 2  # two micro-batches per step

        def poison_loss(module, inputs, output):  # noqa: ANN001, ANN202
            calls["forward"] += 1
            if step() == 4:
                return output * float("inf")
            return output * float("nan") if step() >= 6 else output

        next(engine.module.parameters()).register_hook(lambda g: g * float("nan") if step() == 2 else g)
        engine.module.register_forward_hook(poison_loss)
        return engine

    monkeypatch.setattr(train_mod, "make_engine", poisoned_engine)
    snapshots = {}

    def snapshot(record: dict) -> None:
        snapshots[record["step"]] = [p.detach().clone() for p in engines[0].module.parameters()]

    cfg = stage(*FAST, "train.max_bad_steps=3")
    with pytest.raises(TrainingDiverged, match="3 consecutive steps had a NaN/inf loss or gradient"):
        train_mod.train(cfg, mixture, tmp_path, steps=20, on_step=snapshot)
    records = {r["step"]: r for r in read_metrics(tmp_path / "metrics.jsonl")}
    assert [s for s, r in records.items() if r["skipped"]] == [2, 4, 6, 7, 8]
    assert math.isfinite(records[2]["loss"]) and records[2]["grad_norm"] is None  # NaN is logged as null
    assert records[4]["loss"] is None and records[8]["skipped_total"] == 5
    for step in (2, 4):  # a skipped step leaves the weights as they were
        assert all(torch.equal(a, b) for a, b in zip(snapshots[step - 1], snapshots[step], strict=True))
    assert not all(torch.equal(a, b) for a, b in zip(snapshots[2], snapshots[3], strict=True))
    assert list_checkpoints(tmp_path / "checkpoints") == []  # the stop saves nothing


def test_divergence_keeps_the_good_checkpoints(mixture: MixtureConfig, tmp_path: Path) -> None:
    """20 healthy steps (checkpoints at 15 and 20, keep_last=2), then retries at an absurd LR: whatever they do,
    no ruined weights are saved and keep_last never prunes a good checkpoint for a bad one."""
    cfg = stage(*FAST, "train.save_every=5", "train.keep_last=2")
    train_mod.train(cfg, mixture, tmp_path, steps=20)
    good = {step: (path / "model.pt").read_bytes() for step, path in list_checkpoints(tmp_path / "checkpoints")}
    assert sorted(good) == [15, 20]
    for _ in range(2):
        ruined = stage(*FAST, "train.save_every=5", "train.keep_last=2", "optim.lr=1e6", "optim.warmup_steps=0")
        try:
            result = train_mod.train(ruined, mixture, tmp_path, steps=40)
            assert result.checkpoint.endswith("step-20")  # finished with an insane loss: nothing saved
        except TrainingDiverged as err:
            assert "nothing was saved" in str(err) and "step-20" in str(err)
        kept = {step: (path / "model.pt").read_bytes() for step, path in list_checkpoints(tmp_path / "checkpoints")}
        assert kept == good


def test_cli_train_eval_and_rerun(mixture_dict: dict, tmp_path: Path) -> None:
    mix_yaml = tmp_path / "mix.yaml"
    mix_yaml.write_text(json.dumps(mixture_dict))
    run_dir = tmp_path / "run"
    def args(steps: int) -> list[str]:
        return ["train", "--stage", "tiny", "--mixture", str(mix_yaml), "--run-dir", str(run_dir), "--steps",
                str(steps), "--json", *[a for kv in FAST for a in ("--set", kv)], "--set", "train.eval_every=4",
                "--set", "train.eval_batches=3"]

    runner = CliRunner()
    result = runner.invoke(app, args(4))
    assert result.exit_code == 0, result.output
    trained = json.loads(result.stdout)
    assert trained["status"] == "completed" and trained["step"] == 4 and trained["val_loss"] > 0
    evaluated = runner.invoke(app, ["eval", "--checkpoint", trained["checkpoint"], "--batches", "3", "--json"])
    assert evaluated.exit_code == 0, evaluated.output
    val = json.loads(evaluated.stdout)
    assert val["step"] == 4 and val["val_loss"] == pytest.approx(trained["val_loss"], rel=1e-6)
    assert read_meta(Path(trained["checkpoint"])).stage_config["model"]["seq_len"] == 32  # the mixture's
    full = evaluate_checkpoint(Path(trained["checkpoint"]), micro_batch=64)  # the whole held-out split
    assert full.tokens > val["tokens"] and math.isfinite(full.val_loss)
    rerun = runner.invoke(app, args(6))  # the same command with a higher target continues the run
    assert rerun.exit_code == 0, rerun.output
    continued = json.loads(rerun.stdout)
    assert continued["start_step"] == 4 and continued["step"] == 6


def test_eval_by_source(mixture_dict: dict, sample_dir: Path, tmp_path: Path) -> None:
    """English (Pile) and Chinese (WuDao) held-out documents evaluated apart; the blend lies between them."""
    zh = tmp_path / "zh-bytes"
    zh.mkdir()
    docs = [np.append(np.frombuffer(d["content"].encode("utf-8"), dtype=np.uint8).astype(np.uint32), EOS)
            for d in json.loads(sorted((sample_dir / "wudao").glob("*.json"))[0].read_text(encoding="utf-8"))]
    batch = documents_to_batch(docs, [str(i) for i in range(len(docs))], ["wudao"] * len(docs), [""] * len(docs))
    Manifest(tokenizer_hash="bytes-v1", vocab_size=EOS + 1, eos_id=EOS,
             shards=[write_shard(zh / "part-00000.arrow", [batch])]).save(zh)
    mix = {**mixture_dict, "sources": [*mixture_dict["sources"], {"name": "wudao", "path": str(zh)}]}
    mix_yaml = tmp_path / "mix.yaml"
    mix_yaml.write_text(json.dumps(mix))
    runner = CliRunner()
    trained = runner.invoke(app, ["train", "--stage", "tiny", "--mixture", str(mix_yaml), "--run-dir",
                                  str(tmp_path / "run"), "--steps", "4", "--json",
                                  *[a for kv in FAST for a in ("--set", kv)]])
    assert trained.exit_code == 0, trained.output
    checkpoint = json.loads(trained.stdout)["checkpoint"]
    result = runner.invoke(app, ["eval", "--checkpoint", checkpoint, "--by-source", "--batches", "4", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    losses = {name: source["val_loss"] for name, source in report["by_source"].items()}
    assert set(losses) == {"pile", "wudao"} and losses["pile"] != losses["wudao"]
    assert min(losses.values()) - 1e-6 <= report["val_loss"] <= max(losses.values()) + 1e-6
    sources = report["by_source"].values()
    # the blend's tokens are the sources' shares of it (by weight), which need not be what each reads alone
    assert sum(s["blend_tokens"] for s in sources) == report["tokens"]
    assert all(0 < s["tokens"] <= s["held_out_tokens"] for s in sources)
    assert report["micro_batch_tokens"] > 0 and report["tokens"] % report["micro_batch_tokens"] == 0
    table = runner.invoke(app, ["eval", "--checkpoint", checkpoint, "--by-source", "--batches", "2"])
    assert table.exit_code == 0 and "wudao: val_loss" in table.stdout
    assert "of the blend's tokens" in table.stdout and "need not add up to the blend's" in table.stdout


def test_cli_errors_are_clear(tmp_path: Path) -> None:
    runner = CliRunner()
    missing = runner.invoke(app, ["train", "--stage", "tiny"])
    assert missing.exit_code == 1 and "--mixture and --run-dir are required" in missing.output
    bad = runner.invoke(app, ["eval", "--checkpoint", str(tmp_path)])
    assert bad.exit_code == 1 and "no meta.json" in bad.output


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only machine's answer")
def test_device_choice() -> None:
    """train.device=cuda without a GPU is a clear error; cpu and auto both take the CPU path here."""
    from flm.train.distributed.parallel import distributed

    stage = load_config(StageConfig, find_config("tiny", "stages"), ["train.device=cuda"])
    with pytest.raises(ValueError, match="no CUDA GPU is visible"), distributed(stage, seed=0):
        pass
    for device in ("cpu", "auto"):
        stage.train.device = device
        with distributed(stage, seed=0) as parallel:
            assert not parallel.cuda and parallel.device_name == "cpu"
    bad = CliRunner().invoke(app, ["config", "show", "tiny", "--set", "train.device=tpu"])
    assert bad.exit_code != 0 and "train.device" in bad.output


def test_scheduled_growth_in_the_loop_and_resume_across_it(mixture: MixtureConfig, tmp_path: Path) -> None:
    """stage.growth grows tiny into tiny-grown in place at a token count; the loss goes on smoothly, the
    LR schedule restarts, and a run resumed from a checkpoint taken mid-ramp reproduces the straight run."""
    tokens_per_step = 4 * 32
    cfg = stage(*FAST, "train.save_every=5", f"growth=[{{at_tokens: {4 * tokens_per_step}, to: tiny-grown, "
                "ramp_steps: 3}]")
    straight = train_mod.train(cfg, mixture, tmp_path / "straight", steps=8)
    records = read_metrics(tmp_path / "straight" / "metrics.jsonl")
    assert [r["stage"] for r in records] == ["tiny"] * 4 + ["tiny-grown"] * 4
    assert straight.growth_history == [{"from_stage": "tiny", "to_stage": "tiny-grown", "step": 4,
                                        "tokens_seen": 4 * tokens_per_step}]
    assert records[4]["lr"] < records[3]["lr"]  # warmup restarts with the new stage
    assert abs(records[4]["loss"] - records[3]["loss"]) < 0.05 * records[3]["loss"]  # the function was preserved
    meta = read_meta(Path(straight.checkpoint))
    assert meta.stage == "tiny-grown" and meta.stage_config["model"]["hidden"] == 128

    def stop_at_6(record: dict) -> None:  # mid-ramp (masks still below 1 until step 7)
        if record["step"] == 6:
            os.kill(os.getpid(), signal.SIGINT)

    assert train_mod.train(cfg, mixture, tmp_path / "resumed", steps=8, on_step=stop_at_6).step == 6
    resumed = train_mod.train(cfg, mixture, tmp_path / "resumed", steps=8)
    assert resumed.start_step == 6 and resumed.stage == "tiny-grown"
    assert losses(tmp_path / "resumed") == losses(tmp_path / "straight")


def test_two_rank_data_parallel_matches_one_rank(mixture_dict: dict, mixture: MixtureConfig, tmp_path: Path) -> None:
    """torchrun with 2 CPU ranks (gloo, torch DDP, each rank its half of every global batch) trains the
    same curve as one process, and the validation loss covers the same samples."""
    import subprocess
    import sys

    mix_yaml = tmp_path / "mix.yaml"
    mix_yaml.write_text(json.dumps(mixture_dict))
    sets = [*FAST, "train.eval_every=3", "train.eval_batches=4"]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "-m", "flm.cli.main",
           "train", "--stage", "tiny", "--mixture", str(mix_yaml), "--run-dir", str(tmp_path / "dp2"), "--steps", "3",
           "--json", *[a for kv in sets for a in ("--set", kv)]]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=240, cwd=Path(__file__).resolve().parent.parent,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads(done.stdout.strip().splitlines()[-1])["step"] == 3  # one JSON object, from rank 0 only
    assert len(list((tmp_path / "dp2" / "checkpoints" / "step-3" / "rng").iterdir())) == 2
    train_mod.train(stage(*sets), mixture, tmp_path / "dp1", steps=3)
    two = read_metrics(tmp_path / "dp2" / "metrics.jsonl")
    one = read_metrics(tmp_path / "dp1" / "metrics.jsonl")
    assert [r["loss"] for r in two] == pytest.approx([r["loss"] for r in one], rel=1e-5)
    assert two[-1]["val_loss"] == pytest.approx(one[-1]["val_loss"], rel=1e-5)


def test_eval_refuses_shards_of_another_tokenizer(mixture: MixtureConfig, byte_shards: Path, tmp_path: Path) -> None:
    result = train_mod.train(stage(*FAST), mixture, tmp_path / "run", steps=2)
    other = tmp_path / "other-tokenizer"
    other.mkdir()
    for shard in byte_shards.glob("*.arrow"):
        (other / shard.name).symlink_to(shard)
    manifest = json.loads((byte_shards / "manifest.json").read_text())
    (other / "manifest.json").write_text(json.dumps({**manifest, "tokenizer_hash": "another-v2"}))
    mix = tmp_path / "other.yaml"
    mix.write_text(json.dumps({"sources": [{"name": "bytes", "path": str(other)}], "seq_len": 128,
                               "cache_dir": str(tmp_path / "index")}))
    refused = CliRunner().invoke(app, ["eval", "--checkpoint", result.checkpoint, "--mixture", str(mix)])
    assert refused.exit_code == 1
    assert "was trained on tokenizer bytes-v1, not another-v2 (the mixture's token shards)" in refused.stderr


def test_eval_takes_a_run_directory_and_names_what_is_missing(mixture: MixtureConfig, tmp_path: Path) -> None:
    train_mod.train(stage(*FAST, "train.save_every=1"), mixture, tmp_path / "run", steps=2)
    runner = CliRunner()
    by_run = runner.invoke(app, ["eval", "--checkpoint", str(tmp_path / "run"), "--batches", "1", "--json"])
    assert by_run.exit_code == 0, by_run.output
    assert json.loads(by_run.stdout)["checkpoint"].endswith("step-2")
    missing = runner.invoke(app, ["eval", "--checkpoint", str(tmp_path / "nosuch" / "step-1")])
    assert missing.exit_code == 1 and "nosuch/step-1: does not exist" in missing.stderr
    empty = runner.invoke(app, ["eval", "--checkpoint", str(tmp_path)])
    assert empty.exit_code == 1 and "neither a checkpoint" in empty.stderr


@pytest.mark.parametrize("args", [["train", "--stage", "tiny", "--steps", "-5", "--dry-run"],
                                  ["generate", "--checkpoint", ".", "--prompt", "x", "--temperature", "-1"]])
def test_negative_counts_are_refused_by_the_cli(args: list[str]) -> None:
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2 and "Invalid value" in result.output


def test_disk_full_during_a_save_is_one_message(mixture_dict: dict, mixture: MixtureConfig, tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """ENOSPC while writing step-4: one line naming the step, folder and the intact step-2; no .tmp folder left."""
    real_save = torch.save

    def fills_the_disk(obj: object, path: object, *args: object, **kwargs: object) -> None:
        if ".step-4.tmp" in str(path):
            Path(path).write_bytes(b"partial")
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        real_save(obj, path, *args, **kwargs)

    monkeypatch.setattr(torch, "save", fills_the_disk)
    cfg = stage(*FAST, "train.save_every=2")
    root = tmp_path / "run" / "checkpoints"
    with pytest.raises(train_mod.DiskFull) as err:
        train_mod.train(cfg, mixture, tmp_path / "run", steps=6)
    assert str(err.value) == (f"no space left on device while saving checkpoint step-4 in {root}; "
                              f"the previous checkpoint {root / 'step-2'} is intact")
    assert sorted(p.name for p in root.iterdir()) == ["step-2"]
    verify_checkpoint(root / "step-2")
    mix_yaml = tmp_path / "mix.yaml"
    mix_yaml.write_text(json.dumps(mixture_dict))
    result = CliRunner().invoke(app, ["train", "--stage", "tiny", "--mixture", str(mix_yaml), "--run-dir",
                                      str(tmp_path / "run"), "--steps", "6", *[a for kv in FAST for a in ("--set", kv)],
                                      "--set", "train.save_every=2"])
    assert result.exit_code == 1
    assert "no space left on device while saving checkpoint step-4" in result.output
    assert "Traceback" not in result.output


def test_a_model_too_large_for_this_cpu_is_refused_before_allocating(mixture: MixtureConfig, tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigError, match=r"^stage tiny needs about [\d,.]+ GiB for weights and Adam state on this "
                                          r"CPU, [\d,.]+ GiB is available"):
        train_mod.train(stage(*FAST, "model.hidden=65536"), mixture, tmp_path / "huge", steps=1)
    assert not (tmp_path / "huge" / "checkpoints").exists()
    monkeypatch.setattr(cpu_engine, "available_memory", lambda: 2**30)
    wide = stage(*FAST, "model.hidden=2048", "model.vocab_size=257")  # the shards' vocabulary
    need = param_count(wide.model) * 16 / 2**30
    with pytest.raises(ConfigError, match=rf"needs about {need:.1f} GiB for weights and Adam state on this CPU, "
                                          r"1\.0 GiB is available"):
        train_mod.train(wide, mixture, tmp_path / "wide", steps=1)


def test_sigterm_during_a_long_step_stops_it_between_micro_batches(mixture: MixtureConfig, tmp_path: Path) -> None:
    """A 3000-micro-batch step (several seconds) signalled after 0.5 s stops within a micro-batch or two: the step
    is dropped, the checkpoint saved is the previous step's (step 1), and resuming matches a straight run."""
    cfg = stage(*FAST, "train.micro_batch=1", "train.global_batch=3000")
    few = stage(*FAST)
    train_mod.train(few, mixture, tmp_path / "run", steps=1)
    timer = threading.Timer(0.5, os.kill, (os.getpid(), signal.SIGTERM))
    started = time.perf_counter()
    timer.start()
    try:
        stopped = train_mod.train(cfg, mixture, tmp_path / "run", steps=2)
    finally:
        timer.cancel()
    assert time.perf_counter() - started < 3.0
    assert stopped.status == "interrupted" and stopped.step == 1 and stopped.checkpoint.endswith("step-1")
    assert [s for s, _ in list_checkpoints(tmp_path / "run" / "checkpoints")] == [1]
    assert sorted(losses(tmp_path / "run")) == [1]
    assert read_meta(Path(stopped.checkpoint)).consumed_samples == 4
    train_mod.train(few, mixture, tmp_path / "run", steps=2)
    train_mod.train(few, mixture, tmp_path / "straight", steps=2)
    assert losses(tmp_path / "run") == losses(tmp_path / "straight")


def test_absurd_global_batches_are_refused_up_front(mixture: MixtureConfig, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"train.global_batch \(2000000\) makes 2,000,000 micro-batches per step"):
        train_mod.micro_batches_per_step(stage("train.global_batch=2000000", "train.micro_batch=1"), 1)
    with pytest.raises(ConfigError, match=r"^train.global_batch \(1048576\) x seq_len \(32\) is 33,554,432 tokens "
                                          r"per step, more than the mixture's training data holds \([\d,]+ tokens\)"):
        train_mod.train(stage("train.global_batch=1048576"), mixture, tmp_path / "run", steps=1)
