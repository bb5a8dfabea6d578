"""Loss prediction from μP proxy runs: the power-law fit, reading runs, predicting a bigger stage, the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from flm.cli.main import app
from flm.config import config_to_dict, find_config, load_config
from flm.train.config import StageConfig
from flm.train.tools.loss_prediction import PowerLaw, PredictionError, fit_power_law, model_params, predict_loss

TRUTH = PowerLaw(a=40.0, alpha=0.3, c=1.8)
"""The synthetic proxies' law in size at the end of training; earlier, c is higher (see loss())."""
TOKENS_PER_STEP = 16 * 128


def stage(hidden: int) -> StageConfig:
    return load_config(StageConfig, find_config("tiny", "stages"), [f"model.hidden={hidden}"])


def loss(params: float, tokens: float) -> float:
    """L(N, D) = c + a·N^-alpha + b·D^-beta: a power law in N at every token count."""
    return TRUTH(params) + 6.0 * (tokens / 1e4) ** -0.4 - 6.0 * (100 * TOKENS_PER_STEP / 1e4) ** -0.4


def write_run(root: Path, hidden: int, *, noise: float = 0.002, steps: int = 100, checkpoint: bool = True,
              seed: int = 0, early_steps: int = 0) -> Path:
    """A run directory as `flm train` leaves it: metrics.jsonl and a checkpoint's meta.json. For the first
    `early_steps` the larger model is behind (as early in real training)."""
    run = root / f"proxy-{hidden}"
    run.mkdir(parents=True)
    cfg = stage(hidden)
    n = model_params(cfg.model, "non-embedding")
    rng = np.random.default_rng(seed + hidden)
    with (run / "metrics.jsonl").open("w") as fh:
        for step in range(1, steps + 1):
            tokens = step * TOKENS_PER_STEP
            value = loss(n, tokens) * (1 + noise * rng.standard_normal())
            if step <= early_steps:
                value = 12.0 + n * 1e-6
            fh.write(json.dumps({"step": step, "loss": value, "tokens_seen": tokens, "skipped": False}) + "\n")
    if checkpoint:
        ckpt = run / "checkpoints" / f"step-{steps}"
        ckpt.mkdir(parents=True)
        (ckpt / "meta.json").write_text(json.dumps({"step": steps, "format": "torch", "stage": cfg.name,
                                                    "stage_config": config_to_dict(cfg)}))
    return run


def test_fit_recovers_a_known_law() -> None:
    sizes = np.array([1e5, 3e5, 1e6, 3e6, 1e7])
    law = fit_power_law(sizes, TRUTH(sizes))
    assert law.alpha == pytest.approx(0.3, rel=1e-3) and law.c == pytest.approx(1.8, abs=1e-3)
    assert law(1e9) == pytest.approx(TRUTH(1e9), rel=1e-4)
    noisy = TRUTH(sizes) * (1 + 0.002 * np.random.default_rng(0).standard_normal(len(sizes)))
    assert fit_power_law(sizes, noisy)(1e8) == pytest.approx(TRUTH(1e8), rel=0.03)


def test_fit_refuses_what_it_cannot_support() -> None:
    with pytest.raises(PredictionError, match="at least 3 proxies"):
        fit_power_law([1e5, 1e6], [3.0, 2.5])
    with pytest.raises(PredictionError, match="do not fall with size"):
        fit_power_law([1e5, 1e6, 1e7], [2.5, 2.6, 2.8])


def test_predicts_a_wider_stage_from_proxies(tmp_path: Path) -> None:
    runs = [write_run(tmp_path, h) for h in (32, 48, 64, 96)]
    report = predict_loss(runs, ["tiny-grown"], points=6)
    assert [r["name"] for r in report["runs"]] == ["proxy-32", "proxy-48", "proxy-64", "proxy-96"]
    assert len(report["tokens"]) == 6 and report["tokens"][-1] == 100 * TOKENS_PER_STEP
    target = report["targets"][0]
    grown = load_config(StageConfig, find_config("tiny-grown", "stages")).model
    assert target["params"] == model_params(grown, "non-embedding") > report["runs"][-1]["params"]
    assert target["loss"] == pytest.approx(TRUTH(target["params"]), rel=0.02)
    assert len(target["curve"]) == 6 and target["curve"][0] > target["curve"][-1]  # learns over tokens
    holdout = report["holdout"]
    assert holdout["run"] == "proxy-96" and abs(holdout["rel_error"]) < 0.02
    assert report["warnings"] == []  # same hyperparameters, μP on
    total = predict_loss(runs, ["tiny-grown"], count="total", points=2)
    assert total["runs"][0]["params"] > report["runs"][0]["params"]  # embedding and head counted


def test_early_token_counts_without_a_law_are_skipped(tmp_path: Path) -> None:
    runs = [write_run(tmp_path, h, early_steps=10) for h in (32, 48, 64)]
    report = predict_loss(runs, ["tiny-grown"], points=6)
    assert "error" in report["fits"][0] and "error" not in report["fits"][-1]
    curve = report["targets"][0]["curve"]
    assert curve[0] is None and curve[-1] == report["targets"][0]["loss"]


def test_run_problems_are_named(tmp_path: Path) -> None:
    runs = [write_run(tmp_path, h) for h in (32, 48)]
    with pytest.raises(PredictionError, match="at least 3 proxy runs"):
        predict_loss(runs, [])
    bare = write_run(tmp_path, 64, checkpoint=False)
    with pytest.raises(PredictionError, match=f"{bare}: no checkpoint"):
        predict_loss([*runs, bare], [])
    with pytest.raises(PredictionError, match="no metrics.jsonl"):
        predict_loss([tmp_path], [])


def test_differing_hyperparameters_are_warned(tmp_path: Path) -> None:
    runs = [write_run(tmp_path, h) for h in (32, 48, 64)]
    meta = runs[0] / "checkpoints" / "step-100" / "meta.json"
    data = json.loads(meta.read_text())
    data["stage_config"]["optim"]["lr"] = 1e-2
    meta.write_text(json.dumps(data))
    warnings = predict_loss(runs, [])["warnings"]
    assert any(w.startswith("optim differs") for w in warnings), warnings


def test_cli_json_and_plot(tmp_path: Path) -> None:
    runs = [str(write_run(tmp_path, h)) for h in (32, 48, 64, 96)]
    plot = tmp_path / "prediction.png"
    result = CliRunner().invoke(app, ["predict-loss", *runs, "--target", "tiny-grown", "--plot", str(plot),
                                      "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["targets"][0]["stage"] == "tiny-grown" and report["plot"] == str(plot)
    assert plot.stat().st_size > 10_000
    table = CliRunner().invoke(app, ["predict-loss", *runs, "--target", "tiny-grown", "--plot", str(plot)])
    assert table.exit_code == 0 and "tiny-grown" in table.stdout and "held out" in table.stdout
    bad = CliRunner().invoke(app, ["predict-loss", runs[0], "--target", "tiny-grown"])
    assert bad.exit_code != 0 and "at least 3 proxy runs" in bad.output
