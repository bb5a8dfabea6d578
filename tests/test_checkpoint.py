"""Checkpoints: round trip, atomicity under a crash mid-save, keep-last-K, resume resolution; LR schedule."""

from __future__ import annotations

import json
import math
import random

import numpy as np
import pytest
import torch

from flm.train import checkpoint as ckpt
from flm.train.checkpoint.integrity import write_checksums
from flm.train.config import OptimConfig
from flm.train.trainer.lr_schedule import LRSchedule
from flm.train.trainer.metrics import read_metrics, truncate_jsonl


def make_state(seed: int = 0) -> tuple[torch.nn.Module, torch.optim.Optimizer]:
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 2))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    model(torch.randn(3, 4)).sum().backward()
    opt.step()
    return model, opt


def save(root, step, model, opt, keep_last=0):
    return ckpt.save_checkpoint(root, step, model=model, optimizer=opt, fmt="torch",
                                state={"step": step, "data": {"consumed_samples": step * 4, "seed": 1}},
                                meta=ckpt.CheckpointMeta(step=step, format="torch", stage="unit"), keep_last=keep_last)


def test_round_trip_restores_model_optimizer_and_rng(tmp_path) -> None:
    model, opt = make_state(0)
    random.seed(5)
    np.random.seed(5)
    torch.manual_seed(5)
    path = save(tmp_path, 3, model, opt)
    expected_draws = (random.random(), float(np.random.rand()), float(torch.rand(())))
    assert path == tmp_path / "step-3"
    meta = ckpt.read_meta(path)
    assert meta.step == 3 and meta.format == "torch" and meta.stage == "unit"

    other, other_opt = make_state(1)
    assert not torch.equal(other[0].weight, model[0].weight)
    loaded = ckpt.load_checkpoint(path, model=other, optimizer=other_opt)
    for a, b in zip(model.state_dict().values(), other.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    sa, sb = opt.state_dict()["state"], other_opt.state_dict()["state"]
    assert all(torch.equal(sa[k]["exp_avg_sq"], sb[k]["exp_avg_sq"]) for k in sa)
    assert loaded["state"]["data"]["consumed_samples"] == 12
    ckpt.set_rng_state(loaded["rng"])
    assert (random.random(), float(np.random.rand()), float(torch.rand(()))) == expected_draws
    names = torch.load(path / "optimizer.pt", weights_only=True)["param_names"]
    assert names == [["0.weight", "0.bias", "2.weight", "2.bias"]]


def test_shape_mismatch_is_a_clear_error(tmp_path) -> None:
    model, opt = make_state(0)
    path = save(tmp_path, 1, model, opt)
    wider = torch.nn.Sequential(torch.nn.Linear(4, 16), torch.nn.Tanh(), torch.nn.Linear(16, 2))
    with pytest.raises(ckpt.CheckpointError, match=r"0\.weight: checkpoint \(8, 4\) vs model \(16, 4\)"):
        ckpt.load_checkpoint(path, model=wider)


def test_crash_mid_save_leaves_previous_checkpoint_usable(tmp_path, monkeypatch) -> None:
    model, opt = make_state(0)
    save(tmp_path, 2, model, opt)
    real_save = torch.save
    calls = []

    def crashing_save(obj, f, *args, **kwargs):  # the model file is written, then the "machine dies"
        calls.append(str(f))
        if len(calls) == 2:
            raise OSError("disk vanished")
        return real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", crashing_save)
    with pytest.raises(OSError, match="disk vanished"):
        save(tmp_path, 4, model, opt)
    monkeypatch.setattr(torch, "save", real_save)
    assert (tmp_path / ".step-4.tmp" / "model.pt").exists()  # the half-written save is there...
    assert not (tmp_path / "step-4").exists()  # ...but never under a checkpoint's name
    assert ckpt.latest_checkpoint(tmp_path) == tmp_path / "step-2"
    assert ckpt.resolve_resume(tmp_path.parent, "latest") is None  # run_dir/checkpoints is what resume looks at
    loaded = ckpt.load_checkpoint(tmp_path / "step-2", model=make_state(1)[0])
    assert loaded["state"]["step"] == 2
    save(tmp_path, 4, model, opt)  # the next save clears the debris
    assert not list(tmp_path.glob(".step-*"))
    assert [s for s, _ in ckpt.list_checkpoints(tmp_path)] == [2, 4]


def test_checkpoint_without_meta_is_not_listed(tmp_path) -> None:
    (tmp_path / "step-9").mkdir()
    (tmp_path / "step-9" / "model.pt").write_bytes(b"partial")
    assert ckpt.latest_checkpoint(tmp_path) is None
    with pytest.raises(ckpt.CheckpointError, match="no meta.json"):
        ckpt.resolve_resume(tmp_path, str(tmp_path / "step-9"))


def test_keep_last_k(tmp_path) -> None:
    model, opt = make_state(0)
    for step in (1, 2, 3, 4, 5):
        save(tmp_path, step, model, opt, keep_last=2)
    assert [s for s, _ in ckpt.list_checkpoints(tmp_path)] == [4, 5]
    save(tmp_path, 5, model, opt, keep_last=2)  # re-saving a step replaces it
    assert [s for s, _ in ckpt.list_checkpoints(tmp_path)] == [4, 5]


def test_resolve_resume(tmp_path) -> None:
    run = tmp_path / "run"
    assert ckpt.resolve_resume(run, "latest") is None
    model, opt = make_state(0)
    for step in (10, 2):
        save(ckpt.checkpoints_root(run), step, model, opt)
    assert ckpt.resolve_resume(run, "latest").name == "step-10"  # numeric, not lexical, order
    assert ckpt.resolve_resume(run, "none") is None
    assert ckpt.resolve_resume(run, str(run / "checkpoints" / "step-2")).name == "step-2"


def test_lr_schedule_shapes() -> None:
    cfg = OptimConfig(lr=1.0, min_lr=0.1, warmup_steps=10, schedule="cosine")
    cos = LRSchedule.from_config(cfg, total_steps=110)
    assert cos(0) == pytest.approx(0.1) and cos(9) == pytest.approx(1.0)
    assert cos(60) == pytest.approx(0.55)  # halfway through the decay
    assert cos(110) == pytest.approx(0.1) and cos(500) == pytest.approx(0.1)
    lin = LRSchedule.from_config(OptimConfig(lr=1.0, min_lr=0.0, warmup_steps=0, schedule="linear"), 100)
    assert lin(25) == pytest.approx(0.75)
    const = LRSchedule.from_config(OptimConfig(lr=0.5, min_lr=0.0, warmup_steps=2, schedule="constant"), 100)
    assert const(0) == pytest.approx(0.25) and const(99) == 0.5
    groups = [{"lr_mult": 0.25}, {}]
    assert cos.apply(groups, 9) == pytest.approx(1.0)
    assert groups[0]["lr"] == pytest.approx(0.25) and groups[1]["lr"] == pytest.approx(1.0)
    assert all(math.isfinite(cos(s)) for s in range(200))


def test_metrics_truncated_back_to_resume_step(tmp_path) -> None:
    path = tmp_path / "metrics.jsonl"
    path.write_text("".join(json.dumps({"step": s, "loss": 1.0 / s}) + "\n" for s in range(1, 8)) + '{"step": 8, "lo')
    truncate_jsonl(path, 4)
    assert [r["step"] for r in read_metrics(path)] == [1, 2, 3, 4]


class _RunsCode:
    """Unpickling this calls Path.touch(marker): what a crafted checkpoint file could do instead."""

    def __init__(self, marker) -> None:  # noqa: ANN001
        self.marker = marker

    def __reduce__(self):  # noqa: ANN204
        return (type(self.marker).touch, (self.marker,))


@pytest.mark.parametrize("name", ["model.pt", "optimizer.pt", "rng/rank-00000.pt"])
def test_a_crafted_checkpoint_file_runs_no_code(tmp_path, name) -> None:
    model, opt = make_state(0)
    path = save(tmp_path / "run", 3, model, opt)
    marker = tmp_path / "ran"
    torch.save({"state": _RunsCode(marker)}, path / name)
    write_checksums(path)  # a crafted checkpoint comes with matching checksums: the loader must refuse it
    with pytest.raises(ckpt.CheckpointError, match=rf"{name}: refused: holds more than tensors and plain data"):
        ckpt.load_checkpoint(path, model=make_state(1)[0], optimizer=make_state(1)[1])
    assert not marker.exists()


def test_a_truncated_or_flipped_checkpoint_file_is_found(tmp_path) -> None:
    model, opt = make_state(0)
    path = save(tmp_path / "run", 3, model, opt)
    data = (path / "model.pt").read_bytes()
    (path / "model.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(ckpt.CheckpointError, match=r"model\.pt: \d+ bytes, saved as \d+; truncated\?"):
        ckpt.load_checkpoint(path, model=make_state(1)[0])
    flipped = bytearray(data)
    flipped[-100] ^= 0xFF
    (path / "model.pt").write_bytes(bytes(flipped))
    with pytest.raises(ckpt.CheckpointError, match=r"model\.pt: contents differ from what was saved"):
        ckpt.load_checkpoint(path, model=make_state(1)[0])
    (path / "checksums.json").unlink()  # as saved by an older flm: the loader still names a cut file
    (path / "model.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(ckpt.CheckpointError, match=r"model\.pt: unreadable \(truncated or corrupt\?\)"):
        ckpt.load_checkpoint(path, model=make_state(1)[0])


def test_resume_skips_a_corrupt_newest_checkpoint(tmp_path, caplog) -> None:
    model, opt = make_state(0)
    run = tmp_path / "run"
    for step in (2, 4):
        save(ckpt.checkpoints_root(run), step, model, opt)
    newest = ckpt.checkpoints_root(run) / "step-4" / "optimizer.pt"
    data = bytearray(newest.read_bytes())
    data[len(data) // 2] ^= 0xFF
    newest.write_bytes(bytes(data))
    assert ckpt.resolve_resume(run, "latest").name == "step-2"
    assert "skipping" in caplog.text and "step-4" in caplog.text and "contents differ" in caplog.text
