"""The training loop: one for CPU and GPU, resumable bit-exactly from its checkpoints.

Per step: draw global_batch / (micro_batch x dp) micro-batches, accumulate gradients, agree on the
loss across ranks, then clip and step, or skip the step when the loss or gradient is NaN/inf
(stopping after `train.max_bad_steps` skips in a row). Checkpoints every `train.save_every` steps,
on SIGTERM/SIGINT (a step it arrives in is dropped, however many micro-batches it has) and at the end;
`--steps` is the run's total, so rerunning the same command resumes from the run directory's latest
checkpoint and goes on to the same target.
"""

from __future__ import annotations

import errno
import logging
import math
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from flm.config import ConfigError, config_to_dict
from flm.config.errors import FlmError
from flm.config.folder_lock import folder_lock
from flm.config.progress import Progress
from flm.train.checkpoint import (
    CheckpointMeta,
    checkpoints_root,
    latest_checkpoint,
    load_checkpoint,
    read_meta,
    save_checkpoint,
    set_rng_state,
)
from flm.train.checkpoint.layout import discard_partial
from flm.train.checkpoint.rng import rng_state
from flm.train.config import StageConfig
from flm.train.data.config import MixtureConfig, mixture_record
from flm.train.data.mixture import open_mixture
from flm.train.distributed.collectives import all_reduce_sum, all_reduce_tensor, data_parallel, rank, world_size
from flm.train.distributed.parallel import ParallelInfo, distributed
from flm.train.distributed.params import whole_model_params
from flm.train.engine import make_engine
from flm.train.growth.ramp import resume_ramp
from flm.train.model.size import flops_per_token
from flm.train.teacher import TeacherData
from flm.train.trainer.evaluate import validation_loss
from flm.train.trainer.fit import fit_stage
from flm.train.trainer.metrics import MetricsLogger, peak_tflops
from flm.train.trainer.resume_check import check_resume
from flm.train.trainer.scheduled_growth import (
    GROWN_DIR,
    check_schedule,
    due_growth,
    grow_engine,
    grow_saved_checkpoint,
    resume_stage,
    stage_schedule,
)

log = logging.getLogger(__name__)

OnStep = Callable[[dict[str, Any]], None]

SANE_LOSS_FACTOR = 1.5
"""A loss above 1.5 x ln(vocabulary) (half again worse than guessing uniformly) means diverged weights."""

MAX_MICRO_BATCHES = 1_000_000
"""More micro-batches per step than this is a typo (a step of hours), not a batch size."""


class TrainingDiverged(FlmError, RuntimeError):
    """Too many consecutive steps had a NaN/inf loss or gradient."""


class DiskFull(FlmError):
    """A checkpoint save ran out of disk space; its partial folder was removed, earlier checkpoints stand."""


@dataclass
class TrainResult:
    run_dir: str
    stage: str
    device: str
    start_step: int
    step: int
    target_steps: int
    status: str
    """completed | interrupted (signal; a checkpoint was saved) | already-done."""
    loss: float | None
    val_loss: float | None
    skipped_steps: int
    tokens_seen: int
    checkpoint: str | None
    resumed_from: str | None
    seconds: float
    params: int
    save_seconds: list[float]
    """Wall time of each checkpoint save of this run."""
    load_seconds: float | None
    growth_history: list[dict[str, Any]]
    """Growths of the model so far (from, to, step, tokens seen), this run's in-place ones included."""


def micro_batches_per_step(stage: StageConfig, dp_size: int) -> int:
    per_pass = stage.train.micro_batch * dp_size
    if stage.train.global_batch % per_pass:
        raise ConfigError(f"train.global_batch ({stage.train.global_batch}) must be a multiple of "
                         f"train.micro_batch x data-parallel size ({stage.train.micro_batch} x {dp_size})")
    count = stage.train.global_batch // per_pass
    if count > MAX_MICRO_BATCHES:
        raise ConfigError(f"train.global_batch ({stage.train.global_batch}) makes {count:,} micro-batches per step "
                          f"(micro_batch {stage.train.micro_batch} x data-parallel size {dp_size}), more than "
                          f"{MAX_MICRO_BATCHES:,}: one step would run for hours; lower train.global_batch")
    return count


class _StepInterrupted(Exception):
    """A signal arrived while a step was gathering or computing its micro-batches; the step is dropped."""


class _MicroBatches:
    """A step's micro-batches drawn from the loader as the engine asks for them, so it holds one at a time and a
    signal stops the step between two (raising _StepInterrupted) rather than after all of them."""

    def __init__(self, batches: Iterator[Any], count: int, stopped: Callable[[], bool]) -> None:
        self.batches, self.count, self.stopped = batches, count, stopped

    def __len__(self) -> int:
        return self.count

    def __iter__(self) -> Iterator[Any]:
        for _ in range(self.count):
            if self.stopped():
                raise _StepInterrupted
            yield next(self.batches)


class _StopOnSignal:
    """SIGTERM/SIGINT set a flag that the loop checks after each step and between micro-batches (a second SIGINT
    aborts)."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self._old: dict[int, Any] = {}

    def __enter__(self) -> _StopOnSignal:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                self._old[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        if self.signum is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.signum = signum

    def __exit__(self, *exc: Any) -> None:
        for sig, handler in self._old.items():
            signal.signal(sig, handler)


class Trainer:
    """One training run in a live process group: sets up data, model and optimizer, resumes, runs the loop.

    Build it inside `distributed(stage)` and pass what that yields (or call `train`, which does both).
    """

    def __init__(self, stage: StageConfig, mixture_cfg: MixtureConfig, run_dir: Path | str, *,
                 parallel: ParallelInfo, steps: int | None = None, resume: str = "latest",
                 progress: Progress | None = None, on_step: OnStep | None = None) -> None:
        self.started = time.perf_counter()
        self.parallel = parallel
        self.mixture_cfg = mixture_cfg
        self.run_dir = Path(run_dir)
        self.target = steps if steps is not None else stage.train.steps
        self.progress = progress
        self.on_step = on_step
        self.mixture = open_mixture(mixture_cfg, stage.model.seq_len)
        self.stage = fit_stage(stage, self.mixture)
        self.teacher = TeacherData(mixture_cfg.teacher, seed=mixture_cfg.seed,
                                   tokenizer_hash=self.mixture.tokenizer_hash, vocab_size=self.stage.model.vocab_size,
                                   max_seq=self.stage.model.seq_len) if mixture_cfg.teacher.enabled else None
        self.stage.train.steps = self.target
        check_schedule(self.stage)  # an impossible scheduled growth fails now, not hours into the run
        self.dp_rank, self.dp_size = data_parallel()
        if self.teacher is not None:
            self.teacher.micro_batches_per_step(self.dp_size)  # a teacher batch that cannot split fails now
        self.step = self.consumed = self.skipped = 0
        self.growth_history: list[dict[str, Any]] = []
        self.ramp: Any = None
        self.rng: dict[str, Any] | None = None
        self.data_state: dict[str, Any] | None = None
        self.save_seconds: list[float] = []
        self.load_seconds: float | None = None
        resumed = check_resume(self.stage, self.run_dir, resume, self.target)  # another model's run: named, refused
        self.resumed_from = Path(resumed.checkpoint) if resumed is not None else None
        if self.resumed_from is not None:  # a run that grew resumes in the stage it grew into
            self.stage = resume_stage(self.stage, read_meta(self.resumed_from))
            self.stage.train.steps = self.target
        self.engine = make_engine(self.stage, self.stage.model.vocab_size, parallel)
        if self.resumed_from is not None:
            self._load(self.resumed_from)
            self.ramp = resume_ramp(self.engine.module, self.growth_history, self.step)
        self._stage_changed()

    def _stage_changed(self) -> None:
        """What follows from the current stage: batch split, LR schedule (restarted at its growth step)."""
        self.num_micro = micro_batches_per_step(self.stage, self.dp_size)
        self.schedule, self.schedule_offset = stage_schedule(self.stage, self.target, self.growth_history)
        self.tokens_per_step = self.stage.train.global_batch * self.stage.model.seq_len
        self.flops_per_token = float(flops_per_token(self.stage.model))
        self.sane_loss = SANE_LOSS_FACTOR * math.log(self.stage.model.vocab_size)

    def _load(self, path: Path) -> None:
        started = time.perf_counter()
        loaded = load_checkpoint(path, model=self.engine.module, optimizer=self.engine.optimizer)
        self.load_seconds = time.perf_counter() - started
        meta, state = loaded["meta"], loaded["state"]
        meta.check_tokenizer(self.mixture.tokenizer_hash, "the mixture's token shards")
        self.step = state["step"]
        self.data_state = state["data"]
        self.consumed = state["data"]["consumed_samples"]
        if self.teacher is not None:  # a checkpoint without teacher state starts the propositions from the top
            self.teacher.load_state_dict(state["data"].get("teacher"))
            if self.parallel.pp > 1:
                log.warning("resuming teacher steps under pipeline parallelism (pp=%d) is not exact yet: on 2 H200s "
                            "the second step after a resume differed from an unbroken run's (README, Teacher "
                            "signal; bench/results/freelm-gpu-h200x2-2026-12-01.json)", self.parallel.pp)
        self.skipped = state.get("skipped_steps", 0)
        self.growth_history = meta.growth_history
        self.rng = loaded["rng"]
        log.info("resumed from %s at step %d (%d samples consumed)", path, self.step, self.consumed)

    def _open_loader(self) -> None:
        """The train loader at the current consumed-samples position (order is global: any micro-batch)."""
        self.loader = self.mixture.train_loader(self.stage.train.micro_batch, dp_rank=self.dp_rank,
                                                dp_size=self.dp_size)
        state = self.data_state or {"seed": self.mixture_cfg.seed}
        self.loader.load_state_dict({**state, "consumed_samples": self.consumed})  # checks the seed too
        self.batches = iter(self.loader)

    def _grow_if_due(self) -> None:
        """Scheduled in-place growth (stage.growth at a token count): continue in the target stage."""
        if self.ramp is not None and self.ramp.active:
            return  # growing again mid-ramp would switch the previous growth's structure on at once
        entry = due_growth(self.stage, self.tokens_seen)
        if entry is None:
            return
        if self.engine.checkpoint_format == "torch":
            self.engine, self.stage, grown = grow_engine(
                self.engine, self.stage, entry, step=self.step, tokens_seen=self.tokens_seen,
                make_engine=lambda stage, vocab: make_engine(stage, vocab, self.parallel))
            self.growth_history = [*self.growth_history, grown.record]
            self.ramp = grown.ramp
        else:  # GPU: save, grow the checkpoint (streaming, rank 0), load it into the target stage's engine
            out = self.run_dir / GROWN_DIR / f"step-{self.step}"
            target = grow_saved_checkpoint(self._save(), self.stage, entry, out)
            self.engine = None
            torch.cuda.empty_cache()
            self.engine = make_engine(target, target.model.vocab_size, self.parallel)
            loaded = load_checkpoint(out, model=self.engine.module, optimizer=self.engine.optimizer)
            self.stage, self.growth_history = target, loaded["meta"].growth_history
            self.ramp = resume_ramp(self.engine.module, self.growth_history, self.step)
        self.stage.train.steps = self.target
        self._stage_changed()
        self._open_loader()
        log.info("grew into stage %s at step %d (%d tokens seen)", self.stage.name, self.step, self.tokens_seen)

    @property
    def tokens_seen(self) -> int:
        return self.consumed * self.stage.model.seq_len

    def _save_if(self, healthy: bool, loss: float) -> Path | None:
        """Save unless the last step's loss is NaN/inf or above `sane_loss`: a diverging run never writes (or, by
        keep_last, prunes good checkpoints for) ruined weights. Returns the newest checkpoint either way."""
        if healthy:
            return self._save()
        last = latest_checkpoint(checkpoints_root(self.run_dir))
        log.warning("step %d: loss %s is not finite or above %.2f (1.5 x ln vocab); not saving, the newest good "
                    "checkpoint stays %s", self.step, loss, self.sane_loss, last)
        return last

    def _save(self) -> Path:
        self.engine.sync_params()
        state = {"step": self.step, "skipped_steps": self.skipped, "scheduler": self.schedule.state_dict(),
                 "schedule_offset": self.schedule_offset,
                 "data": {**self.loader.state_dict(), "consumed_samples": self.consumed}}
        if self.teacher is not None:
            state["data"]["teacher"] = self.teacher.state_dict()
        meta = CheckpointMeta(
            step=self.step, format=self.engine.checkpoint_format, stage=self.stage.name,
            stage_config=config_to_dict(self.stage), mixture=mixture_record(self.mixture_cfg),
            tokenizer_hash=self.mixture.tokenizer_hash, tokens_seen=self.tokens_seen, consumed_samples=self.consumed,
            growth_history=self.growth_history, device=self.parallel.device_name,
            world={"tp": self.parallel.tp, "pp": self.parallel.pp, "dp": self.parallel.dp},
            param_shapes={n: list(p.shape) for n, p in self.engine.module.named_parameters()},
            saved_at=time.strftime("%Y-%m-%dT%H:%M:%S"))
        started = time.perf_counter()
        root = checkpoints_root(self.run_dir)
        try:
            path = save_checkpoint(root, self.step, model=self.engine.module, optimizer=self.engine.optimizer,
                                   fmt=self.engine.checkpoint_format, state=state, meta=meta,
                                   keep_last=self.stage.train.keep_last,
                                   optimizer_sharding=self.stage.parallel.optimizer_checkpoint)
        except OSError as err:
            if err.errno != errno.ENOSPC:
                raise
            discard_partial(root, self.step)
            last = latest_checkpoint(root)
            kept = f"the previous checkpoint {last} is intact" if last else "no earlier checkpoint exists"
            raise DiskFull(f"no space left on device while saving checkpoint step-{self.step} in "
                           f"{root}; {kept}") from err
        self.save_seconds.append(time.perf_counter() - started)
        log.info("saved %s in %.1fs", path, self.save_seconds[-1])
        return path

    def _micro_batches(self, stop: _StopOnSignal) -> list[Any] | _MicroBatches:
        """This step's micro-batches: drawn lazily where the engine takes them one at a time (the CPU engine), so
        that a signal on any rank, between two, interrupts the step on every rank; else gathered up front."""
        def any_rank_stopped() -> bool:
            return all_reduce_sum([float(stop.signum is not None)])[0] > 0

        if getattr(self.engine, "streams_micro_batches", False):
            return _MicroBatches(self.batches, self.num_micro, any_rank_stopped)
        # Gathering is quick; a signal that lands meanwhile is seen by the step's own collective.
        return [next(self.batches) for _ in range(self.num_micro)]

    def _train_step(self, stop: _StopOnSignal) -> tuple[float, float, float, bool, bool]:
        """One optimizer step over a global batch: (lr, loss, grad norm, whether the update was applied, whether
        any rank was signalled to stop).

        The host waits for the GPU only twice a step: for the gradient norm (clipping needs it) and for one
        small tensor that a single collective filled with the loss summed over ranks and the ranks signalled,
        read when the norm's wait has already drained the stream.

        _StepInterrupted when a signal stops it midway: weights, optimizer, data position and RNG are then as
        before the step, so the checkpoint saved next is the previous step's, exactly."""
        micro = self._micro_batches(stop)
        rng = rng_state() if isinstance(micro, _MicroBatches) else None  # only a lazy step stops mid-compute
        if self.ramp is not None:
            self.ramp.update(self.step)  # growth masks for this step (folded away once they reach 1)
        lr = self.schedule.apply(self.engine.param_groups, self.step - self.schedule_offset)
        self.engine.zero_grad()
        try:
            local_loss = self.engine.forward_backward(micro)
        except _StepInterrupted:
            set_rng_state(rng)  # the dropped micro-batches' dropout drew from it
            raise
        signals = all_reduce_tensor([local_loss, float(stop.signum is not None)])
        self.consumed += self.stage.train.global_batch
        grad_norm = self.engine.grad_norm()
        loss_sum, stopped = signals.tolist()
        loss = loss_sum / world_size()
        finite = math.isfinite(loss) and math.isfinite(grad_norm)
        if finite:
            self.engine.step(grad_norm, self.stage.optim.clip_grad)
        return lr, loss, grad_norm, finite, stopped > 0

    def _teacher_due(self) -> bool:
        """FreeLM's interleaving: step s (counting from 1) is a teacher step when s % teacher.every == 0."""
        return self.teacher is not None and (self.step + 1) % self.teacher.cfg.every == 0

    def _teacher_step(self, stop: _StopOnSignal) -> tuple[float, float, float, float, bool, bool]:
        """One optimizer step on the teacher signal alone: (lr, teacher loss, teacher accuracy, grad norm, whether
        the update was applied, whether any rank was signalled to stop).

        Draws teacher.batch propositions (this rank's slice); the language data position does not move."""
        batches = self.teacher.step_batches(self.dp_rank, self.dp_size)
        if self.ramp is not None:
            self.ramp.update(self.step)
        lr = self.schedule.apply(self.engine.param_groups, self.step - self.schedule_offset)
        self.engine.zero_grad()
        verdicts = torch.tensor([self.teacher.token_ids["false"], self.teacher.token_ids["true"]])
        sums = [float(v) for v in self.engine.teacher_forward_backward(batches, verdicts)]
        total, right, count, stopped = all_reduce_sum([*sums, float(stop.signum is not None)])
        grad_norm = self.engine.grad_norm()
        loss = total / count
        finite = math.isfinite(loss) and math.isfinite(grad_norm)
        if finite:
            self.engine.step(grad_norm, self.stage.optim.clip_grad)
        return lr, loss, right / count, grad_norm, finite, stopped > 0

    def run(self) -> TrainResult:  # noqa: C901 - the loop reads top to bottom on purpose
        """Train to the target step (all ranks call this); returns the run's summary."""
        started = self.started
        start_step = self.step
        if self.step >= self.target:
            return self._result(started, start_step, "already-done", None, None,
                                str(self.resumed_from) if self.resumed_from else None)
        self._open_loader()
        metrics = MetricsLogger(self.run_dir, enabled=rank() == 0, resume_step=self.step, logging=self.stage.logging,
                                config=config_to_dict(self.stage))
        peak = peak_tflops(self.stage.train.peak_tflops, self.parallel.device_name)
        loss = val_loss = None
        bad_in_a_row = 0
        healthy = True
        status = "completed"
        if self.rng is not None:
            set_rng_state(self.rng)
        try:
            with _StopOnSignal() as stop:
                while self.step < self.target:
                    self._grow_if_due()
                    cfg = self.stage.train
                    t0 = time.perf_counter()
                    teacher_step = self._teacher_due()
                    try:
                        if teacher_step:
                            lr, teacher_loss, teacher_acc, grad_norm, finite, stopped = self._teacher_step(stop)
                        else:
                            lr, loss, grad_norm, finite, stopped = self._train_step(stop)
                    except _StepInterrupted:
                        status = "interrupted"
                        log.warning("signal received during step %d: dropping it, saving step %d and stopping",
                                    self.step + 1, self.step)
                        break
                    self.step += 1
                    if finite:
                        bad_in_a_row = 0
                    else:
                        self.skipped += 1
                        bad_in_a_row += 1
                        log.warning("step %d: non-finite loss %s or grad norm %s; step skipped (%d in a row)",
                                    self.step, loss, grad_norm, bad_in_a_row)
                    seconds = time.perf_counter() - t0  # in steady state, one step: the reads above wait for it
                    step_tokens = self.teacher.step_tokens if teacher_step else self.tokens_per_step
                    tokens_per_s = step_tokens / seconds
                    tflops = self.flops_per_token * tokens_per_s / world_size() / 1e12
                    record = {"step": self.step, "loss": None if teacher_step else loss, "lr": lr,
                              "grad_norm": grad_norm, "tokens_per_s": tokens_per_s, "tflops_per_gpu": tflops,
                              "mfu": tflops / peak if peak else None, "step_time_s": seconds,
                              "skipped": not finite, "skipped_total": self.skipped, "tokens_seen": self.tokens_seen,
                              "stage": self.stage.name}
                    if self.teacher is not None:
                        record["signal"] = "teacher" if teacher_step else "language"
                    if teacher_step:
                        record.update(teacher_loss=teacher_loss, teacher_acc=teacher_acc)
                        healthy = finite  # the saved weights' health is judged on language steps
                    else:
                        healthy = finite and loss <= self.sane_loss
                    if bad_in_a_row >= cfg.max_bad_steps:
                        metrics.log(record)
                        last = latest_checkpoint(checkpoints_root(self.run_dir))
                        raise TrainingDiverged(
                            f"stopping at step {self.step}: {bad_in_a_row} consecutive steps had a NaN/inf loss or "
                            f"gradient (train.max_bad_steps={cfg.max_bad_steps}); nothing was saved, so the last "
                            f"good weights are {last or 'not saved yet (no checkpoint)'}. Lower optim.lr or raise "
                            "optim.warmup_steps, then resume.")
                    if cfg.eval_every and (self.step % cfg.eval_every == 0 or self.step == self.target):
                        val_loss, _ = validation_loss(self.engine, self.mixture, cfg.micro_batch, cfg.eval_batches)
                        record["val_loss"] = val_loss
                    metrics.log(record)
                    if self.on_step is not None and rank() == 0:
                        self.on_step(record)
                    if self.progress is not None and rank() == 0:
                        self.progress("train", self.step, self.target)
                    if cfg.log_every and self.step % cfg.log_every == 0:
                        what = (f"teacher_loss {teacher_loss:.4f} teacher_acc {teacher_acc:.3f}" if teacher_step
                                else f"loss {loss:.4f}")
                        log.info("step %d %s lr %.3g grad_norm %.3f %.0f tok/s", self.step, what, lr, grad_norm,
                                 tokens_per_s)
                    if stopped:  # any rank signalled (all ranks read the same reduced flag)
                        status = "interrupted"
                        log.warning("signal received: saving a checkpoint at step %d and stopping", self.step)
                        break
                    if cfg.save_every and self.step % cfg.save_every == 0 and self.step < self.target:
                        self._save_if(healthy, loss)
                checkpoint = self._save_if(healthy, loss)
        finally:
            metrics.close()
        return self._result(started, start_step, status, loss, val_loss, str(checkpoint) if checkpoint else None)

    def _result(self, started: float, start_step: int, status: str, loss: float | None, val_loss: float | None,
                checkpoint: str | None) -> TrainResult:
        return TrainResult(
            run_dir=str(self.run_dir), stage=self.stage.name, device=self.parallel.device_name, start_step=start_step,
            step=self.step, target_steps=self.target, status=status, loss=loss, val_loss=val_loss,
            skipped_steps=self.skipped, tokens_seen=self.tokens_seen, checkpoint=checkpoint,
            resumed_from=str(self.resumed_from) if self.resumed_from else None,
            seconds=time.perf_counter() - started, params=whole_model_params(self.engine.module),
            save_seconds=self.save_seconds, load_seconds=self.load_seconds,
            growth_history=[{k: r[k] for k in ("from_stage", "to_stage", "step", "tokens_seen")}
                            for r in self.growth_history])


def train(stage: StageConfig, mixture_cfg: MixtureConfig, run_dir: Path | str, **kwargs: Any) -> TrainResult:
    """Train `stage` on `mixture_cfg` in `run_dir` in this process's group (see Trainer for the keyword arguments)."""
    with distributed(stage, seed=stage.train.seed) as parallel:
        lock = folder_lock(run_dir, "a run directory trains in") if parallel.rank == 0 else nullcontext()
        with lock:
            return Trainer(stage, mixture_cfg, run_dir, parallel=parallel, **kwargs).run()
