"""Loss prediction from μP proxy runs (μScaling: Yao et al. 2023, as used for FLM-101B).

Under μP, models of different widths trained with one set of hyperparameters stay near the same loss
basin, so their losses at a given token count follow a power law in model size,
L(N) = c + a · N^(-alpha), with N the non-embedding parameters by default (with a 100k vocabulary the
embedding dominates a small proxy's total and bends the law). A few small proxy runs fix the law; the
largest proxy, predicted from the others, shows how far to trust it; the target stages' losses are read
off it at every token count the proxies share, which gives a predicted loss curve and not one number.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from flm.config import config_to_dict, find_config, load_config
from flm.config.errors import FlmError
from flm.train.checkpoint import checkpoints_root, latest_checkpoint, read_meta
from flm.train.config import ModelConfig, StageConfig
from flm.train.model.size import padded_vocab, param_count
from flm.train.trainer.metrics import METRICS_NAME, read_metrics

Count = Literal["non-embedding", "total"]
Metric = Literal["loss", "val_loss"]
SAME_ACROSS_PROXIES = ("optim", "train.global_batch", "train.steps", "model.seq_len", "model.mup.base_width",
                       "model.mup.enabled", "model.vocab_size")
"""What μScaling keeps fixed across proxies: a difference is reported as a warning."""


class PredictionError(FlmError, ValueError):
    """The proxy runs cannot support a fit (too few, unreadable, or losses that do not fall with size)."""


@dataclass(frozen=True)
class PowerLaw:
    """L(N) = c + a · N^(-alpha)."""

    a: float
    alpha: float
    c: float

    def __call__(self, n: float | np.ndarray) -> float | np.ndarray:
        return self.c + self.a * np.power(n, -self.alpha)


def fit_power_law(params: Sequence[float], losses: Sequence[float]) -> PowerLaw:
    """Least-squares fit of L(N) = c + a · N^(-alpha) with a > 0, alpha > 0 and 0 <= c < min(L).

    For a fixed c the law is a line in log(L - c) against log N, so (a, alpha) come from a linear fit and
    only c is searched: a grid over [0, min L), then a ternary refinement around the best grid point.
    """
    n, y = np.asarray(params, dtype=float), np.asarray(losses, dtype=float)
    if len(n) < 3 or len(np.unique(n)) < 3:
        raise PredictionError(f"a fit of L(N) = c + a·N^-alpha needs at least 3 proxies of different sizes, "
                              f"got sizes {sorted(set(n.astype(int).tolist()))}")
    if not (np.all(np.isfinite(y)) and np.all(y > 0)):
        raise PredictionError(f"losses must be positive and finite, got {y.tolist()}")

    def solve(c: float) -> tuple[float, PowerLaw]:
        slope, intercept = np.polyfit(np.log(n), np.log(y - c), 1)
        law = PowerLaw(a=math.exp(intercept), alpha=-slope, c=c)
        return float(np.sum((law(n) - y) ** 2)), law

    grid = np.linspace(0.0, y.min(), 257)[:-1]
    errors = [solve(c)[0] for c in grid]
    best = int(np.argmin(errors))
    lo = grid[best - 1] if best > 0 else 0.0
    hi = grid[best + 1] if best + 1 < len(grid) else y.min() * (1 - 1e-9)
    for _ in range(80):
        m1, m2 = lo + (hi - lo) / 3, hi - (hi - lo) / 3
        if solve(m1)[0] <= solve(m2)[0]:
            hi = m2
        else:
            lo = m1
    law = solve((lo + hi) / 2)[1]
    if law.alpha <= 0:
        raise PredictionError("the proxies' losses do not fall with size (fitted exponent "
                              f"{law.alpha:.3g} <= 0): sizes {n.astype(int).tolist()}, losses "
                              f"{np.round(y, 4).tolist()}; train them longer or check their hyperparameters")
    return law


@dataclass
class ProxyRun:
    """One proxy's loss curve (tokens seen -> loss) and its size."""

    name: str
    path: Path
    stage: StageConfig
    params: int
    tokens: np.ndarray
    losses: np.ndarray

    def loss_at(self, tokens: float, window: float) -> float:
        """Mean loss over records with tokens in [tokens·(1 - window), tokens] (per-step losses are noisy);
        interpolated between the records around `tokens` when none falls in the window (val_loss is sparse)."""
        inside = (self.tokens <= tokens) & (self.tokens >= tokens * (1 - window))
        if inside.any():
            return float(self.losses[inside].mean())
        if tokens < self.tokens[0]:
            raise PredictionError(f"{self.path}: no record at or before {tokens:,.0f} tokens")
        return float(np.interp(tokens, self.tokens, self.losses))


def model_params(cfg: ModelConfig, count: Count) -> int:
    """Parameters of `cfg`: all of them, or without the token embedding and output head."""
    total = param_count(cfg)
    if count == "total":
        return total
    embedding = padded_vocab(cfg) * cfg.hidden
    return total - embedding * (1 if cfg.tie_embeddings else 2)


def read_run(run_dir: Path, *, metric: Metric = "loss", count: Count = "non-embedding") -> ProxyRun:
    """A finished proxy run: its metrics.jsonl and the stage config its newest checkpoint records."""
    run_dir = Path(run_dir)
    metrics_path = run_dir / METRICS_NAME
    if not metrics_path.is_file():
        raise PredictionError(f"{run_dir}: no {METRICS_NAME}; is this an `flm train` run directory?")
    checkpoint = latest_checkpoint(checkpoints_root(run_dir))
    if checkpoint is None:
        raise PredictionError(f"{run_dir}: no checkpoint, so its model size is unknown (train with save_every "
                              "> 0 or to the end)")
    meta = read_meta(checkpoint)
    if meta.growth_history:
        raise PredictionError(f"{checkpoint}: the model grew during this run; a proxy must keep one size")
    if not meta.stage_config:
        raise PredictionError(f"{checkpoint}/meta.json: no stage_config; cannot tell the model size")
    stage = meta.load_stage()
    records = [r for r in read_metrics(metrics_path)
               if r.get(metric) is not None and not r.get("skipped") and math.isfinite(r[metric])]
    if not records:
        raise PredictionError(f"{metrics_path}: no finite '{metric}' records")
    if any("tokens_seen" not in r for r in records):
        raise PredictionError(f"{metrics_path}: records without 'tokens_seen'")
    records.sort(key=lambda r: r["tokens_seen"])
    return ProxyRun(name=run_dir.name, path=run_dir, stage=stage, params=model_params(stage.model, count),
                    tokens=np.array([r["tokens_seen"] for r in records], dtype=float),
                    losses=np.array([r[metric] for r in records], dtype=float))


def _setting(stage: StageConfig, dotted: str) -> Any:
    value: Any = config_to_dict(stage)
    for key in dotted.split("."):
        value = value[key]
    return value


def consistency_warnings(runs: Sequence[ProxyRun]) -> list[str]:
    """Where the proxies differ in what μScaling keeps fixed, or do not use μP."""
    warnings = []
    for key in SAME_ACROSS_PROXIES:
        values = {run.name: _setting(run.stage, key) for run in runs}
        if len({repr(v) for v in values.values()}) > 1:
            warnings.append(f"{key} differs across proxies: " + ", ".join(f"{k}={v}" for k, v in values.items()))
    if not all(run.stage.model.mup.enabled for run in runs):
        warnings.append("not every proxy uses μP (model.mup.enabled): losses at different widths need not "
                        "share one loss basin, and the extrapolation is less reliable")
    return warnings


def target_model(name: str, proxies: Sequence[ProxyRun]) -> tuple[str, ModelConfig]:
    """A target stage (bundled name or YAML path) on the proxies' tokenizer (their vocabulary)."""
    stage = load_config(StageConfig, find_config(name, "stages"))
    model = copy.deepcopy(stage.model)
    model.vocab_size = proxies[0].stage.model.vocab_size
    return stage.name, model


def predict_loss(run_dirs: Sequence[Path], targets: Sequence[str], *, metric: Metric = "loss",
                 count: Count = "non-embedding", points: int = 8, window: float = 0.1) -> dict[str, Any]:
    """Fit the proxies' power law at `points` token counts over the range they all cover and predict the
    targets' losses there (None at an early count where the losses do not fall with size yet; the last
    count must fit). Returns a JSON-ready report (runs, fits, holdout check, targets, warnings)."""
    runs = [read_run(path, metric=metric, count=count) for path in run_dirs]
    runs.sort(key=lambda run: run.params)
    if len({run.params for run in runs}) < 3:
        raise PredictionError(f"need at least 3 proxy runs of different sizes; got {len(runs)} run(s) with "
                              f"{count} sizes {sorted({run.params for run in runs})}")
    start = max(run.tokens[0] for run in runs)
    end = min(run.tokens[-1] for run in runs)
    if end <= 0 or start > end:
        raise PredictionError("the proxies share no token range: " + ", ".join(
            f"{run.name} {run.tokens[0]:,.0f}-{run.tokens[-1]:,.0f}" for run in runs))
    grid = np.unique(np.geomspace(max(start, end / 64), end, max(points, 1)).round())
    sizes = np.array([run.params for run in runs], dtype=float)
    curves = np.array([[run.loss_at(t, window) for t in grid] for run in runs])  # [run, token]
    laws = [_fit_or_none(sizes, curves[:, j]) for j in range(len(grid) - 1)] + [fit_power_law(sizes, curves[:, -1])]
    final = laws[-1]
    target_models = [target_model(name, runs) for name in targets]
    return {
        "metric": metric, "count": count, "window": window, "tokens": grid.astype(int).tolist(),
        "runs": [{"name": run.name, "path": str(run.path), "params": run.params,
                  "loss": round(float(curves[i, -1]), 5), "curve": np.round(curves[i], 5).tolist()}
                 for i, run in enumerate(runs)],
        "fits": [{"tokens": int(t), "a": law.a, "alpha": round(law.alpha, 5), "c": round(law.c, 5),
                  "rmse": round(float(np.sqrt(np.mean((law(sizes) - curves[:, j]) ** 2))), 5)}
                 if law is not None else {"tokens": int(t), "error": "losses do not fall with size yet"}
                 for j, (t, law) in enumerate(zip(grid, laws, strict=True))],
        "holdout": _holdout(sizes, curves[:, -1], runs),
        "targets": [{"stage": name, "params": model_params(model, count),
                     "loss": round(float(final(model_params(model, count))), 4),
                     "curve": [None if law is None else round(float(law(model_params(model, count))), 4)
                               for law in laws]}
                    for name, model in target_models],
        "warnings": consistency_warnings(runs),
    }


def _fit_or_none(sizes: np.ndarray, losses: np.ndarray) -> PowerLaw | None:
    """The law at an intermediate token count, or None where it does not hold yet (early in training the
    larger proxies need not be ahead)."""
    try:
        return fit_power_law(sizes, losses)
    except PredictionError:
        return None


def _holdout(sizes: np.ndarray, losses: np.ndarray, runs: Sequence[ProxyRun]) -> dict[str, Any] | None:
    """The largest proxy predicted from the smaller ones (needs three others to fit)."""
    if len(runs) < 4:
        return None
    try:
        law = fit_power_law(sizes[:-1], losses[:-1])
    except PredictionError as err:
        return {"run": runs[-1].name, "error": str(err)}
    predicted = float(law(sizes[-1]))
    return {"run": runs[-1].name, "params": int(sizes[-1]), "actual": round(float(losses[-1]), 5),
            "predicted": round(predicted, 5), "abs_error": round(predicted - float(losses[-1]), 5),
            "rel_error": round((predicted - float(losses[-1])) / float(losses[-1]), 5)}


def plot_prediction(report: dict[str, Any], path: Path) -> Path:
    """Two panels: loss against size at the last shared token count (fit extended to the targets), and
    loss against tokens (proxies measured, targets predicted)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (by_size, by_tokens) = plt.subplots(1, 2, figsize=(12, 4.8))
    fit = report["fits"][-1]
    law = PowerLaw(fit["a"], fit["alpha"], fit["c"])
    sizes = [run["params"] for run in report["runs"]] + [t["params"] for t in report["targets"]]
    line = np.geomspace(min(sizes) / 1.5, max(sizes) * 1.5, 200)
    by_size.plot(line, law(line), color="tab:gray", linestyle="--",
                 label=f"L = {law.c:.3f} + {law.a:.3g}·N^-{law.alpha:.3f}")
    by_size.scatter([r["params"] for r in report["runs"]], [r["loss"] for r in report["runs"]],
                    color="tab:blue", zorder=3, label="proxies (measured)")
    for i, target in enumerate(report["targets"], start=1):
        by_size.scatter([target["params"]], [target["loss"]], marker="*", s=160, zorder=3, color=f"C{i}",
                        label=f"{target['stage']} (predicted {target['loss']:.3f})")
    by_size.set_xscale("log")
    by_size.set_xlabel(f"{report['count']} parameters")
    by_size.set_ylabel(report["metric"])
    by_size.set_title(f"at {report['tokens'][-1]:,} tokens")
    by_size.legend(fontsize=8)
    tokens = report["tokens"]
    for run in report["runs"]:
        by_tokens.plot(tokens, run["curve"], marker="o", markersize=3, label=run["name"])
    for target in report["targets"]:
        points = [(t, v) for t, v in zip(tokens, target["curve"], strict=True) if v is not None]
        by_tokens.plot(*zip(*points, strict=True), linestyle="--", label=f"{target['stage']} (predicted)")
    by_tokens.set_xscale("log")
    by_tokens.set_xlabel("tokens seen")
    by_tokens.set_ylabel(report["metric"])
    by_tokens.legend(fontsize=8)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
