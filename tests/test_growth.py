"""Function-preserving growth (MSG): every operator alone and combined keeps the logits, masks ramp and
fold away without changing the function, optimizer moments are carried, checkpoints grow, and
impossible growth fails clearly. Tiny shapes with a 256-token vocabulary keep it fast on 2 cores."""

from __future__ import annotations

import json
import math
import shutil
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from flm.cli.main import app
from flm.config import config_to_dict, find_config, load_config
from flm.train.checkpoint import CheckpointMeta, list_checkpoints, load_checkpoint, read_meta, save_checkpoint
from flm.train.config import ModelConfig, MupConfig, OptimConfig, StageConfig
from flm.train.distributed.parallel import destroy_parallel, init_parallel
from flm.train.engine import CpuEngine
from flm.train.growth import (
    GrowthError,
    GrowthMasks,
    check_growth,
    grow_model,
    grow_model_and_optimizer,
    resume_ramp,
)
from flm.train.growth.dry_run import plan_growth
from flm.train.growth.layout import param_shapes
from flm.train.model.gpt import build_model
from flm.train.model.mup import param_groups
from flm.train.model.size import param_count
from flm.train.trainer.metrics import read_metrics
from flm.train.trainer.scheduled_growth import check_schedule, due_growth, grow_engine, resume_stage, stage_schedule

VOCAB = 256
BASE = ModelConfig(layers=2, hidden=64, heads=4, ffn_hidden=128, vocab_size=VOCAB, seq_len=32, dropout=0.0,
                   mup=MupConfig(enabled=True, base_width=64))
VARIANTS = {
    "flm": {},
    "tele-flm": {"norm": "rmsnorm", "activation": "swiglu", "bias": False, "tie_embeddings": False, "kv_heads": 2},
    "no-mup-untied": {"mup": MupConfig(enabled=False), "tie_embeddings": False},
}
OPERATORS = {  # "kv": how the key/value groups grow (x2 = as many per group; x1 = more heads per group)
    "depth": {"layers": 4},
    "ffn": {"ffn_hidden": 256},
    "width": {"hidden": 128, "heads": 8, "kv": 2},  # hidden + heads at the same head size
    "group_heads": {"hidden": 128, "heads": 8, "kv": 1},
    "all": {"layers": 3, "hidden": 128, "heads": 8, "ffn_hidden": 384, "kv": 2},
}


@pytest.fixture(scope="module", autouse=True)
def parallel() -> Iterator[None]:
    init_parallel(seed=3)
    yield
    destroy_parallel()


def model_pair(src: ModelConfig, dst: ModelConfig) -> tuple[torch.nn.Module, torch.nn.Module]:
    a, b = build_model(src, seed=1), build_model(dst, seed=2)
    return a.eval(), b.eval()


def ids(batch: int = 2, seq: int = 24, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, VOCAB, (batch, seq), generator=torch.Generator().manual_seed(seed))


def variant_pair(variant: str, operator: str) -> tuple[ModelConfig, ModelConfig]:
    src = replace(BASE, **VARIANTS[variant])
    grow = dict(OPERATORS[operator])
    if "kv" in grow:
        grow["kv_heads"] = (src.kv_heads or src.heads) * grow.pop("kv")
    return src, replace(src, **grow)


CASES = [(op, v) for v in ("flm", "tele-flm") for op in OPERATORS] + [("all", "no-mup-untied")]


@pytest.mark.parametrize(("operator", "variant"), CASES)
@torch.no_grad()
def test_growth_preserves_logits_and_masks_fold(variant: str, operator: str) -> None:
    src_cfg, dst_cfg = variant_pair(variant, operator)
    src, dst = model_pair(src_cfg, dst_cfg)
    x = ids()
    before = src(x, None)
    unmasked = dst(x, None)
    spec = grow_model(src.state_dict(), src_cfg, dst, dst_cfg)
    raw = dst(x, None)  # grown weights, no masks yet: new structure is live
    masks = GrowthMasks(dst, spec)
    after = dst(x, None)
    assert after.shape == before.shape
    assert (after - before).abs().max().item() < 1e-5, spec.operators
    assert (raw - before).abs().max().item() > 1e-3  # the masks are what keeps the function
    assert (unmasked - before).abs().max().item() > 1e-3
    masks.set_alpha(0.5)
    assert (dst(x, None) - before).abs().max().item() > 1e-4  # new structure ramps in
    masks.set_alpha(1.0)
    at_one = dst(x, None)
    masks.fold()
    assert not masks.active
    assert (dst(x, None) - at_one).abs().max().item() < 1e-5
    assert (dst(x, None) - raw).abs().max().item() < 1e-5  # folded = the plain grown model


def test_tiny_to_tiny_grown_stage_configs() -> None:
    """The bundled stages: depth, hidden, heads and FFN at once, μP multiplier 2x smaller."""
    src_cfg, dst_cfg = (replace(load_config(StageConfig, find_config(n, "stages")).model, vocab_size=VOCAB)
                        for n in ("tiny", "tiny-grown"))
    src, dst = model_pair(src_cfg, dst_cfg)
    spec = grow_model(src.state_dict(), src_cfg, dst, dst_cfg)
    assert spec.operators == ["depth", "hidden", "heads", "kv_heads", "ffn"]
    assert spec.logit_scale == pytest.approx(2.0) and dst.output_mult == pytest.approx(src.output_mult / 2)
    GrowthMasks(dst, spec)
    x = ids(seed=5)
    with torch.no_grad():
        assert (dst(x, None) - src(x, None)).abs().max().item() < 1e-5


def adam(model: torch.nn.Module, cfg: ModelConfig) -> torch.optim.AdamW:
    optim = OptimConfig(lr=1e-2, warmup_steps=0)
    return torch.optim.AdamW(param_groups(model, cfg, optim), lr=optim.lr, betas=(0.9, 0.95))


def train_steps(model: torch.nn.Module, opt: torch.optim.Optimizer, batches: list[torch.Tensor],
                ramp=None, start: int = 0) -> list[float]:  # noqa: ANN001 - MaskRamp | None
    model.train()
    out = []
    for i, batch in enumerate(batches):
        if ramp is not None:
            ramp.update(start + i)
        opt.zero_grad()
        loss = model(batch[:, :-1], None, labels=batch[:, 1:]).mean()
        loss.backward()
        opt.step()
        out.append(loss.item())
    return out


def pattern_batches(n: int, seed: int = 0) -> list[torch.Tensor]:
    """Learnable data: each row counts up from a random start (next token = token + 1 mod 64)."""
    g = torch.Generator().manual_seed(seed)
    return [(torch.randint(0, 64, (8, 1), generator=g) + torch.arange(25)) % 64 for _ in range(n)]


def test_optimizer_state_carried_and_training_continues() -> None:
    src_cfg = replace(BASE, tie_embeddings=False)
    dst_cfg = replace(src_cfg, layers=3, hidden=128, heads=8, ffn_hidden=256)
    src = build_model(src_cfg, seed=1)
    opt = adam(src, src_cfg)
    batches = pattern_batches(14)
    train_steps(src, opt, batches[:6])
    src.eval()
    with torch.no_grad():
        loss_before = src(batches[6][:, :-1], None, labels=batches[6][:, 1:]).mean().item()
    old = {n: {k: v.clone() for k, v in opt.state[p].items()} for n, p in src.named_parameters()}

    dst = build_model(dst_cfg, seed=2)
    dst_opt = adam(dst, dst_cfg)
    grown = grow_model_and_optimizer(src, opt, dst, dst_opt, src_cfg, dst_cfg, step=6, ramp_steps=4)
    assert grown.record["optimizer_params"] == {"carried": len(old), "zero": 12}  # layer 2's 12 tensors
    state = {n: dst_opt.state[p] for n, p in dst.named_parameters()}
    for name, param in dst.named_parameters():
        assert state[name]["exp_avg"].shape == param.shape and state[name]["exp_avg_sq"].shape == param.shape
        assert float(state[name]["step"]) == 6
    emb, new_emb = old["embedding.word_embeddings.weight"], state["embedding.word_embeddings.weight"]
    assert torch.equal(new_emb["exp_avg"][:, :64], emb["exp_avg"]) and not new_emb["exp_avg"][:, 64:].any()
    qkv = state["decoder.layers.1.self_attention.linear_qkv.weight"]  # MHA: old heads are the first rows
    assert torch.equal(qkv["exp_avg_sq"][:192, :64], old["decoder.layers.1.self_attention.linear_qkv.weight"]
                       ["exp_avg_sq"])
    assert not qkv["exp_avg_sq"][192:].any() and not qkv["exp_avg_sq"][:, 64:].any()
    fc2 = state["decoder.layers.0.mlp.linear_fc2.weight"]
    assert torch.equal(fc2["exp_avg"][:64, :128], old["decoder.layers.0.mlp.linear_fc2.weight"]["exp_avg"])
    # The final norm's gain is scaled by 2 (μP's logit multiplier halves), its moments by 1/2 and 1/4.
    norm = state["decoder.final_layernorm.weight"]
    assert torch.allclose(norm["exp_avg"][:64], old["decoder.final_layernorm.weight"]["exp_avg"] / 2)
    assert torch.allclose(norm["exp_avg_sq"][:64], old["decoder.final_layernorm.weight"]["exp_avg_sq"] / 4)
    assert all(not state[n][k].any() for n in state if n.startswith("decoder.layers.2.")
               for k in ("exp_avg", "exp_avg_sq"))

    after = train_steps(dst, dst_opt, batches[6:], ramp=grown.ramp, start=6)
    assert abs(after[0] - loss_before) <= 0.01 * loss_before  # the first step after growth: same function
    assert grown.ramp.masks.alpha == 1.0 and not grown.ramp.active  # ramped over steps 6..10, then folded
    assert all(math.isfinite(v) for v in after) and np.mean(after[-3:]) < loss_before


def test_param_shapes_match_built_models() -> None:
    for variant in VARIANTS:
        cfg = replace(BASE, **VARIANTS[variant])
        model = build_model(cfg)
        assert param_shapes(cfg) == {n: tuple(p.shape) for n, p in model.named_parameters()}, variant


@pytest.mark.parametrize(("change", "message"), [
    ({"layers": 1}, "cannot shrink layers"),
    ({"ffn_hidden": 64}, "cannot shrink ffn"),
    ({"hidden": 128}, "head size differs"),
    ({"hidden": 128, "heads": 8, "kv_heads": 8}, "heads per kv group cannot fall"),
    ({"kv_heads": 1}, "cannot shrink kv_heads"),
    ({"norm": "rmsnorm"}, "model.norm differs"),
    ({"tie_embeddings": False}, "model.tie_embeddings differs"),
    ({"vocab_size": 1000}, "vocabulary differs"),
    ({}, "nothing to grow"),
])
def test_impossible_growth_is_a_clear_error(change: dict, message: str) -> None:
    src = replace(BASE, kv_heads=2)
    with pytest.raises(GrowthError, match=message):
        check_growth(src, replace(src, **change))


def test_masks_fold_only_at_one() -> None:
    src_cfg, dst_cfg = BASE, replace(BASE, layers=3)
    src, dst = model_pair(src_cfg, dst_cfg)
    masks = GrowthMasks(dst, grow_model(src.state_dict(), src_cfg, dst, dst_cfg))
    masks.set_alpha(0.9)
    with pytest.raises(GrowthError, match="only be folded at 1"):
        masks.fold()


def test_dry_run_between_flm_stages_allocates_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_weights(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        raise AssertionError("a dry run must not build a model")

    monkeypatch.setattr("flm.train.model.gpt.build_model", no_weights)
    runner = CliRunner()
    stages = {n: load_config(StageConfig, find_config(n, "stages")) for n in ("16b", "51b", "101b")}
    for src, dst in (("16b", "51b"), ("51b", "101b")):
        result = runner.invoke(app, ["grow", "--dry-run", "--from", src, "--to", dst, "--json"])
        assert result.exit_code == 0, result.output
        plan = json.loads(result.stdout)
        assert plan["params_before"] == param_count(stages[src].model)
        assert plan["params_after"] == param_count(stages[dst].model)
        assert plan["carried_entries"] == plan["params_before"]
        assert plan["operators"] == ["depth", "hidden", "heads", "kv_heads", "ffn"]
        largest = max(hidden * vocab for hidden, vocab in ((stages[n].model.hidden, stages[n].model.padded_vocab_size)
                                                           for n in (src, dst)))
        assert plan["host_memory_gib"] == round((2 * 2**30 + 16 * largest) / 2**30, 1)  # streams: not the models
        assert plan["host_memory_gib"] < plan["optimizer_state_gib"]["before"] / 10
    assert plan_growth(stages["16b"], stages["101b"])["params_after"] == param_count(stages["101b"].model)
    shown = runner.invoke(app, ["grow", "--dry-run", "--from", "16b", "--to", "51b"])
    assert shown.exit_code == 0 and "no weights allocated" in shown.output and "host memory at most" in shown.output
    bad = runner.invoke(app, ["grow", "--dry-run", "--from", "51b", "--to", "16b"])
    assert bad.exit_code == 1 and "cannot shrink" in bad.output


def save_engine(root: Path, step: int, engine, stage: StageConfig, history: list[dict]) -> Path:  # noqa: ANN001

    meta = CheckpointMeta(step=step, format="torch", stage=stage.name, stage_config=config_to_dict(stage),
                          growth_history=history, tokens_seen=step * 8 * 24)
    return save_checkpoint(root, step, model=engine.module, optimizer=engine.optimizer, fmt="torch",
                           state={"step": step, "data": {"consumed_samples": step * 8}}, meta=meta)


def resumed_engine(path: Path, steps: int, seed: int):  # noqa: ANN201 - (CpuEngine, StageConfig)
    """Load a checkpoint into its stage's engine (masks of a ramping growth included) and train on."""

    meta = read_meta(path)
    stage = load_config(StageConfig, meta.stage_config)
    engine = CpuEngine(stage, VOCAB)
    loaded = load_checkpoint(path, model=engine.module, optimizer=engine.optimizer)
    start = loaded["state"]["step"]
    ramp = resume_ramp(engine.module, meta.growth_history, start)
    train_steps(engine.module, engine.optimizer, pattern_batches(steps, seed=seed), ramp=ramp, start=start)
    return engine, stage, ramp


def save_tiny_checkpoint(root: Path) -> tuple[Path, torch.nn.Module]:
    """tiny (vocab 256) trained 2 steps, saved, resumed, trained 2 more and saved at step 4."""

    stage = load_config(StageConfig, find_config("tiny", "stages"), [f"model.vocab_size={VOCAB}"])
    engine = CpuEngine(stage, VOCAB)
    train_steps(engine.module, engine.optimizer, pattern_batches(2, seed=8))
    first = save_engine(root, 2, engine, stage, [])
    engine, stage, _ = resumed_engine(first, 2, seed=9)
    return save_engine(root, 4, engine, stage, []), engine.module.eval()


def test_flm_grow_writes_a_checkpoint_of_the_target_stage(tmp_path: Path) -> None:

    path, src = save_tiny_checkpoint(tmp_path / "run")
    out = tmp_path / "grown" / "step-4"
    runner = CliRunner()
    result = runner.invoke(app, ["grow", "--checkpoint", str(path), "--to", "tiny-grown", "--out", str(out),
                                 "--ramp-steps", "3", "--json"])
    assert result.exit_code == 0, result.output
    record = json.loads(result.stdout)
    assert record["to_stage"] == "tiny-grown" and record["step"] == 4 and record["ramp_steps"] == 3
    meta = read_meta(out)
    assert meta.stage == "tiny-grown" and meta.growth_history[-1]["from_stage"] == "tiny"
    assert meta.param_shapes["decoder.layers.3.mlp.linear_fc2.weight"] == [128, 512]
    stage = load_config(StageConfig, meta.stage_config)
    assert (stage.model.layers, stage.model.hidden, stage.model.vocab_size) == (4, 128, VOCAB)

    # The grown checkpoint loads into the target stage's engine (optimizer included) and, with the
    # masks the record describes, computes the source's function.
    engine = CpuEngine(stage, VOCAB)
    loaded = load_checkpoint(out, model=engine.module, optimizer=engine.optimizer)
    ramp = resume_ramp(engine.module, loaded["meta"].growth_history, loaded["state"]["step"])
    assert ramp is not None and ramp.masks.alpha == 0.0
    x = ids(seed=11)
    with torch.no_grad():
        assert (engine.module.eval()(x, None) - src(x, None)).abs().max().item() < 1e-5
    assert resume_ramp(engine.module, loaded["meta"].growth_history, 7) is None  # ramp over by step 7

    again = runner.invoke(app, ["grow", "--checkpoint", str(out), "--to", "tiny-grown", "--set", "model.layers=6",
                                "--out", str(tmp_path / "again")])
    assert again.exit_code == 1 and "still ramping" in again.output

    # Resume the grown checkpoint, train through the ramp (steps 4..7; folded at 7), save, grow again.
    engine, stage, ramp = resumed_engine(out, 4, seed=10)
    assert ramp is not None and not ramp.active
    trained = save_engine(tmp_path / "run2", 8, engine, stage, loaded["meta"].growth_history)
    twice = tmp_path / "twice"
    result = runner.invoke(app, ["grow", "--checkpoint", str(trained), "--to", "tiny-grown",
                                 "--set", "model.layers=6", "--set", "model.ffn_hidden=640", "--out", str(twice)])
    assert result.exit_code == 0, result.output
    history = read_meta(twice).growth_history
    assert [(r["from_stage"], r["step"], r["operators"]) for r in history] == [
        ("tiny", 4, ["depth", "hidden", "heads", "kv_heads", "ffn"]), ("tiny-grown", 8, ["depth", "ffn"])]
    regrown, _, _ = resumed_engine(twice, 0, seed=0)
    with torch.no_grad():
        assert (regrown.module.eval()(x, None) - engine.module.eval()(x, None)).abs().max().item() < 1e-5
    exists = runner.invoke(app, ["grow", "--checkpoint", str(path), "--to", "tiny-grown", "--out", str(out)])
    assert exists.exit_code == 1 and "already exists" in exists.output


def test_scheduled_growth_in_a_training_loop() -> None:
    """The pieces `flm train` uses: growth due at a token count, engine grown in place, masks ramped,
    the target stage's LR schedule restarted at the growth step, the grown stage kept on resume."""

    tokens_per_step = 8 * 24
    stage = load_config(StageConfig, find_config("tiny", "stages"), [
        f"model.vocab_size={VOCAB}", "train.global_batch=8", "train.micro_batch=8", "optim.warmup_steps=2",
        f"growth=[{{at_tokens: {4 * tokens_per_step}, to: tiny-grown, ramp_steps: 3}}]"])
    engine = CpuEngine(stage, VOCAB)
    schedule, offset = stage_schedule(stage, 12, [])
    history: list[dict] = []
    ramp = None
    losses, lrs = [], []
    batches = pattern_batches(10, seed=4)
    for step, batch in enumerate(batches):
        entry = due_growth(stage, step * tokens_per_step)
        if entry is not None:
            with torch.no_grad():
                before = engine.module.eval()(batch[:, :-1], None, labels=batch[:, 1:]).mean().item()
            engine, stage, grown = grow_engine(engine, stage, entry, step=step, tokens_seen=step * tokens_per_step,
                                               make_engine=CpuEngine)
            history.append(grown.record)
            ramp = grown.ramp
            schedule, offset = stage_schedule(stage, 12, history)
        if ramp is not None:
            ramp.update(step)
        lrs.append(schedule.apply(engine.param_groups, step - offset))
        engine.zero_grad()
        losses.append(float(engine.forward_backward([{"tokens": batch}])))
        engine.step(engine.grad_norm(), stage.optim.clip_grad)
    assert [r["step"] for r in history] == [4] and stage.name == "tiny-grown"
    assert abs(losses[4] - before) <= 0.01 * before
    assert lrs[4] == pytest.approx(stage.optim.lr / stage.optim.warmup_steps)  # the new stage warms up again
    assert ramp is not None and not ramp.active and due_growth(stage, 10 * tokens_per_step) is None
    assert all(math.isfinite(v) for v in losses) and np.mean(losses[-2:]) < losses[0]
    meta = CheckpointMeta(step=8, format="torch", stage=stage.name, stage_config=config_to_dict(stage),
                          growth_history=history)
    tiny = load_config(StageConfig, find_config("tiny", "stages"))
    assert resume_stage(tiny, meta).model.hidden == 128
    assert resume_stage(tiny, CheckpointMeta(step=8, format="torch", stage="tiny")) is tiny


def test_impossible_scheduled_growth_fails_before_training() -> None:
    ok = load_config(StageConfig, find_config("tiny", "stages"), ["growth=[{at_tokens: 100, to: tiny-grown}]"])
    check_schedule(ok)
    bad = load_config(StageConfig, find_config("tiny", "stages"), ["growth=[{at_tokens: 100, to: 16b}]"])
    with pytest.raises(GrowthError, match="head size differs"):
        check_schedule(bad)


@pytest.fixture(scope="module")
def counting_mixture(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Token shards of counting sequences (next token = token + 1 mod 64, EOS 64) and a mixture over them."""
    from flm.pipelines.token_shards import Manifest, documents_to_batch, write_shard

    root = tmp_path_factory.mktemp("counting")
    rng = np.random.default_rng(0)
    docs = [np.append((rng.integers(0, 64) + np.arange(rng.integers(20, 200))) % 64, 64).astype(np.uint32)
            for _ in range(300)]
    batch = documents_to_batch(docs, [str(i) for i in range(len(docs))], ["count"] * len(docs), [""] * len(docs))
    info = write_shard(root / "part-00000.arrow", [batch])
    Manifest(tokenizer_hash="counting-v1", vocab_size=65, eos_id=64, shards=[info]).save(root)
    mixture = root / "mixture.yaml"
    mixture.write_text(json.dumps({"seq_len": 32, "seed": 1, "valid_fraction": 0.05, "cache_dir": str(root / "cache"),
                                   "sources": [{"name": "count", "path": str(root)}]}), encoding="utf-8")
    return mixture


SMALL_BATCH = ["--set", "train.global_batch=4", "--set", "train.micro_batch=2", "--set", "train.eval_every=0",
               "--set", "train.save_every=0", "--set", "optim.warmup_steps=2", "--set", "optim.decay_steps=20"]


def test_flm_train_grow_eval_round_trip(counting_mixture: Path, tmp_path: Path) -> None:
    """`flm train` -> `flm grow` -> `flm eval`: the grown checkpoint has the source's validation loss."""
    runner = CliRunner()
    trained = runner.invoke(app, ["train", "--stage", "tiny", "--mixture", str(counting_mixture), "--run-dir",
                                  str(tmp_path / "run"), "--steps", "6", *SMALL_BATCH, "--json"])
    assert trained.exit_code == 0, trained.output
    source = json.loads(trained.stdout)["checkpoint"]
    grown = tmp_path / "grown"
    result = runner.invoke(app, ["grow", "--checkpoint", source, "--to", "tiny-grown", "--out", str(grown),
                                 "--ramp-steps", "4", "--json"])
    assert result.exit_code == 0, result.output
    losses = []
    for path in (source, str(grown)):
        evaluated = runner.invoke(app, ["eval", "--checkpoint", path, "--batches", "4", "--micro-batch", "2",
                                        "--json"])
        assert evaluated.exit_code == 0, evaluated.output
        losses.append(json.loads(evaluated.stdout)["val_loss"])
    assert abs(losses[0] - losses[1]) < 1e-5 and losses[0] < math.log(65)


def test_flm_train_grows_in_place_and_resumes_exactly(counting_mixture: Path, tmp_path: Path) -> None:
    """From one step-4 checkpoint of tiny: with a growth scheduled at 512 tokens (step 4) the loss right after
    growth matches the ungrown model's on the same batch, and a run stopped mid-ramp resumes bit-exactly."""
    target = tmp_path / "grown.yaml"
    target.write_text(f"base: {find_config('tiny-grown', 'stages')}\nname: tiny-grown\n"
                      "train: {global_batch: 4, micro_batch: 2, eval_every: 0, save_every: 0}\n"
                      "optim: {warmup_steps: 2, decay_steps: 20}\n", encoding="utf-8")
    runner = CliRunner()

    def run(run_dir: Path, steps: int, *extra: str) -> dict:
        result = runner.invoke(app, ["train", "--stage", "tiny", "--mixture", str(counting_mixture), "--run-dir",
                                     str(run_dir), "--steps", str(steps), *SMALL_BATCH, *extra, "--json"])
        assert result.exit_code == 0, result.output
        return {r["step"]: r["loss"] for r in read_metrics(run_dir / "metrics.jsonl")}

    run(tmp_path / "base", 4)
    for name in ("plain", "grown", "split"):
        shutil.copytree(tmp_path / "base", tmp_path / name)
    schedule = ["--set", f"growth=[{{at_tokens: 512, to: {target}, ramp_steps: 3}}]"]
    plain = run(tmp_path / "plain", 5)
    grown = run(tmp_path / "grown", 10, *schedule)
    assert abs(grown[5] - plain[5]) <= 0.01 * plain[5]
    meta = read_meta(list_checkpoints(tmp_path / "grown" / "checkpoints")[-1][1])
    assert meta.stage == "tiny-grown" and [r["step"] for r in meta.growth_history] == [4]
    run(tmp_path / "split", 6, *schedule)  # stops mid-ramp (growth at step 4, masks at 2/3)
    assert run(tmp_path / "split", 10, *schedule) == grown
