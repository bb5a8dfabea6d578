"""The loss picture of a recipe run: one PNG that tells the story of training, growth, and training on.

What is drawn is computed first, as a `LossStory` (tested as data); `plot_story` only draws it: each
run's raw training loss faint, its smoothed curve (a debiased EMA, so step noise does not hide a jump
or its absence) solid, validation points, and the growth marker with the sizes before and after and
the measured continuity (held-out loss of the same batches just before and just after growth).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SMOOTHING = 0.9
"""EMA weight of the past (TensorBoard's smoothing slider): about a 10-step window."""


@dataclass
class Curve:
    run: str
    params: int | None
    train: list[tuple[int, float]]
    smoothed: list[tuple[int, float]]
    val: list[tuple[int, float]]


@dataclass
class Growth:
    step: int
    from_run: str
    to_run: str
    params_before: int
    params_after: int
    val_before: float
    val_after: float
    eval_batches: int

    @property
    def change(self) -> float:
        """Relative change of the held-out loss across growth (0 for an exactly function-preserving growth)."""
        return (self.val_after - self.val_before) / self.val_before

    def continuity(self) -> str:
        """'5.9299 -> 5.9299 (-1.2e-06%)'."""
        return f"{self.val_before:.4f} -> {self.val_after:.4f} ({percent_change(self.change)})"


@dataclass
class LossStory:
    title: str
    curves: list[Curve]
    growth: Growth | None = None
    notes: list[str] = field(default_factory=list)


def percent_change(change: float) -> str:
    """A relative change as a percentage that keeps a tiny change's digits (-1.2e-06%, not 0.000%)."""
    if change == 0:
        return "unchanged"
    pct = change * 100
    return f"{pct:+.1e}%" if abs(pct) < 0.01 else f"{pct:+.3f}%"


def read_curve(path: Path, key: str = "loss") -> list[tuple[int, float]]:
    """(step, value) pairs of `key` in a run's metrics.jsonl (the last value of a step wins on resume)."""
    if not path.exists():
        return []
    by_step: dict[int, float] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        rec = json.loads(line)
        if rec.get(key) is not None and "step" in rec:
            by_step[int(rec["step"])] = float(rec[key])
    return sorted(by_step.items())


def ema(points: list[tuple[int, float]], weight: float = SMOOTHING,
        start: float | None = None) -> list[tuple[int, float]]:
    """Exponential moving average, debiased (the first values are not pulled toward 0); `start` continues
    an average from an earlier curve (a run resumed after growth continues its predecessor's)."""
    out: list[tuple[int, float]] = []
    avg, norm = (start, 1.0) if start is not None else (0.0, 0.0)
    for step, value in points:
        avg = weight * avg + (1 - weight) * value
        norm = weight * norm + (1 - weight)
        out.append((step, avg / norm))
    return out


def human(n: int | None) -> str:
    """1234567 -> '1.23M'."""
    if n is None:
        return "?"
    for unit, scale in (("B", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= scale:
            return f"{n / scale:.3g}{unit}"
    return str(n)


def loss_story(name: str, runs: list[tuple[str, Path]], growth: Growth | None,
               params: dict[str, int | None]) -> LossStory:
    """The story of `runs` (name, metrics.jsonl) trained one after the other, `growth` between the first two."""
    curves = []
    last: float | None = None
    for run, metrics in runs:
        train = read_curve(metrics)
        smoothed = ema(train, start=last)
        last = smoothed[-1][1] if smoothed else last
        curves.append(Curve(run, params.get(run), train, smoothed, read_curve(metrics, "val_loss")))
    sizes = " -> ".join(f"{c.run} ({human(c.params)} params)" for c in curves)
    tokens = [t for _, metrics in runs for _, t in read_curve(metrics, "tokens_seen")]
    steps = max((s for c in curves for s, _ in c.train), default=0)
    title = f"flm run {name}: {sizes}\n{steps} steps, {human(int(tokens[-1])) if tokens else '?'} tokens"
    notes = []
    if growth is not None:
        notes.append(f"growth at step {growth.step}: {human(growth.params_before)} -> {human(growth.params_after)} "
                     f"params; held-out loss {growth.continuity()} on the same {growth.eval_batches} batches")
    return LossStory(title, curves, growth, notes)


def plot_story(story: LossStory, path: Path) -> None:
    """Draw `story` as a PNG at `path`: the whole run, and an inset around the growth step."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(10, 5.5))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    _draw(ax, story, colors, legend=True)
    _fit_y(ax, story.curves, skip_start=True)
    ax.set_title(story.title, fontsize=11)
    ax.set_xlabel("step")
    ax.set_ylabel("loss (nats per token)")
    ax.legend(fontsize=8, loc="lower left")
    if story.growth is not None:
        g = story.growth
        low, high = ax.get_xlim()
        at = (g.step - low) / (high - low)  # the growth line, in axes coordinates
        left = at + 0.04 if at + 0.04 <= 0.67 else 0.57  # right of the growth line when it leaves room
        inset = ax.inset_axes((left, 0.5, 0.97 - left, 0.38))
        _draw(inset, story, colors, legend=False)
        span = max(10, (max(s for c in story.curves for s, _ in c.train) if story.curves else 0) // 12)
        inset.set_xlim(g.step - span, g.step + span)
        _fit_y(inset, story.curves, window=(g.step - span, g.step + span), extra=[g.val_before, g.val_after])
        inset.set_title(f"growth at step {g.step}: {human(g.params_before)} -> {human(g.params_after)} params\n"
                        f"held-out loss {g.continuity()}", fontsize=8)
        inset.tick_params(labelsize=7)
        ax.indicate_inset_zoom(inset, edgecolor="grey")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _draw(ax: Any, story: LossStory, colors: list[str], *, legend: bool) -> None:
    for i, curve in enumerate(story.curves):
        color = colors[i % len(colors)]
        if curve.train:
            ax.plot(*zip(*curve.train, strict=True), color=color, alpha=0.25, linewidth=0.8)
            ax.plot(*zip(*curve.smoothed, strict=True), color=color, linewidth=2,
                    label=f"{curve.run} ({human(curve.params)} params), training loss, EMA {SMOOTHING}" if legend
                    else None)
        if curve.val:
            ax.plot(*zip(*curve.val, strict=True), linestyle="none", marker="o", markersize=5, color=color,
                    markeredgecolor="black", label=f"{curve.run}, held-out loss" if legend else None)
    if story.growth is not None:
        g = story.growth
        ax.axvline(g.step, color="grey", linestyle="--", linewidth=1)
        ax.plot([g.step, g.step], [g.val_before, g.val_after], linestyle="none", marker="D", markersize=6,
                color="black", label="held-out loss just before / after growth" if legend else None)
    ax.grid(alpha=0.3)


def _fit_y(ax: Any, curves: list[Curve], *, skip_start: bool = False, window: tuple[int, int] | None = None,
           extra: list[float] = ()) -> None:  # type: ignore[assignment]
    """Y limits from the smoothed curves and held-out points (raw noise may leave the frame): without the first
    5% of steps (the loss near log(vocab) would flatten the rest), or only those within `window`."""
    def inside(step: int) -> bool:
        return window is None or window[0] <= step <= window[1]

    values = list(extra)
    for c in curves:
        smoothed = [v for s, v in c.smoothed if inside(s)]
        values += smoothed[max(1, len(smoothed) // 20):] if skip_start else smoothed
        values += [v for s, v in c.val if inside(s)]
    if not values:
        return
    low, high = min(values), max(values)
    pad = 0.15 * (high - low) if high > low else 0.05
    ax.set_ylim(low - pad, high + pad)
