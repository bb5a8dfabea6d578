"""μScaling check: predict a wider model's loss from μP proxy runs, then train it and compare.

Data: by default the quickstart's data stages on the bundled sample (`flm run quickstart --stages
raw,prepare,tokenizer,tokenize,mixture`, 1.3M tokens); with `--clean DIR --tokenizer DIR`, a larger
clean corpus (CLEAN/<source>/*.jsonl.zst) tokenized with `flm data tokenize` and mixed by natural size.
Proxies: the `tiny` stage (μP, base width 64) at several widths, same hyperparameters and steps, through
`flm train` (`--set` adds stage overrides for every run). Target: the same stage at a larger width,
trained the same way. The baseline is the target's measured loss; the figure is the prediction's error,
printed as one JSON line (with the held-out check: the largest proxy predicted from the others).

    python bench/loss_prediction.py --out bench/results/loss_prediction-cpu-<date>.json

The bundled sample (1.3M tokens) is too small for the check: proxies of 25k-400k parameters are limited by
the data and land within noise of each other, and the script reports that no law could be fitted
(bench/results/loss_prediction-cpu-*.json). The meaningful run is on a GPU with a larger corpus; its exact
command is in bench/results/loss_prediction-h100-*.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import yaml
from flm_cli import REPO, flm

from flm.train.tools.loss_prediction import PredictionError, plot_prediction, predict_loss, read_run


def prepare_data(work: Path, clean: Path | None, tokenizer: Path | None) -> Path:
    """The mixture YAML the runs train on (made once per --work)."""
    mixture = work / "mixture.yaml"
    if mixture.is_file():
        return mixture
    if clean is None:
        flm("run", "quickstart", "--out", str(work), "--stages", "raw,prepare,tokenizer,tokenize,mixture")
        return mixture
    if tokenizer is None:
        raise SystemExit("--clean needs --tokenizer (a directory written by `flm data train-tokenizer`)")
    result = flm("data", "tokenize", "--tokenizer", str(tokenizer), "--input", str(clean), "--out",
                 str(work / "tokens"))
    sources = sorted(p.parent.name for p in (work / "tokens").glob("*/manifest.json"))
    mixture.write_text(yaml.safe_dump({"seed": 1234, "valid_fraction": 0.01, "sources": [
        {"name": name, "path": str(work / "tokens" / name)} for name in sources]}))
    (work / "tokenize.json").write_text(json.dumps(result))
    return mixture


def train(work: Path, name: str, hidden: int, args: argparse.Namespace) -> Path:
    run = work / "runs" / name
    if not (run / "metrics.jsonl").is_file() or not (run / "checkpoints").is_dir():
        sets = [f"model.hidden={hidden}", f"train.eval_every={args.eval_every}", "train.eval_batches=32",
                f"train.save_every={args.steps}", "train.log_every=1", *args.set]
        flm("train", "--stage", "tiny", "--mixture", str(work / "mixture.yaml"), "--run-dir", str(run),
            "--steps", str(args.steps), *[arg for value in sets for arg in ("--set", value)])
    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--work", type=Path, default=REPO / "work" / "loss-prediction")
    parser.add_argument("--clean", type=Path, help="a clean corpus to tokenize instead of the bundled sample")
    parser.add_argument("--tokenizer", type=Path, help="the tokenizer for --clean")
    parser.add_argument("--widths", default="32,48,64,96,128", help="proxy widths (model.hidden)")
    parser.add_argument("--target-width", type=int, default=256)
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--eval-every", type=int, default=100)
    parser.add_argument("--set", action="append", default=[], help="a stage override for every run")
    parser.add_argument("--metric", choices=["loss", "val_loss"], default="val_loss",
                        help="val_loss: the same held-out batches for every run (less noisy than training loss)")
    args = parser.parse_args()
    started = time.perf_counter()
    work = args.work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    prepare_data(work, args.clean, args.tokenizer)
    widths = [int(w) for w in args.widths.split(",")]
    proxies = [train(work, f"proxy-{w}", w, args) for w in widths]
    target_run = train(work, f"target-{args.target_width}", args.target_width, args)
    target_stage = work / f"tiny-{args.target_width}.yaml"
    base = REPO / "configs" / "stages" / "tiny.yaml"
    target_stage.write_text(yaml.safe_dump({"base": str(base), "name": f"tiny-{args.target_width}",
                                            "model": {"hidden": args.target_width}}))
    try:
        report = predict_loss(proxies, [str(target_stage)], metric=args.metric, points=6)
    except PredictionError as err:  # the proxies did not support a law: say so with what they measured
        measured = {run.name: round(float(run.losses[-1]), 4) for run in
                    (read_run(path, metric=args.metric) for path in [*proxies, target_run])}
        result = {"bench": "loss_prediction", "device": _device(), "error": str(err), "final_losses": measured,
                  "command": "python bench/loss_prediction.py " + " ".join(sys.argv[1:])}
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=1) + "\n")
        print(json.dumps(result))
        return
    target = read_run(target_run, metric=args.metric)
    actual = target.loss_at(report["tokens"][-1], report["window"])
    predicted = report["targets"][0]["loss"]
    try:
        plot = str(plot_prediction(report, args.out.with_suffix(".png")))
    except ImportError as err:  # matplotlib is not on every GPU image
        plot = f"not drawn: {err}"
    model = target.stage.model
    result = {
        "bench": "loss_prediction", "device": _device(),
        "command": "python bench/loss_prediction.py " + " ".join(sys.argv[1:]), "date": time.strftime("%Y-%m-%d"),
        "setup": f"tiny stage ({model.layers} layers, seq {model.seq_len}, μP base width {model.mup.base_width}), "
                 f"widths {widths} -> {args.target_width}, {args.steps} steps of {target.stage.train.global_batch} "
                 f"sequences each; overrides {args.set}; data {args.clean or 'the quickstart sample'}; "
                 f"metric {args.metric}",
        "target": {"stage": f"tiny-{args.target_width}", "params": report["targets"][0]["params"],
                   "predicted_loss": predicted, "measured_loss": round(actual, 4),
                   "abs_error": round(predicted - actual, 4), "rel_error": round((predicted - actual) / actual, 4)},
        "holdout": report["holdout"], "fit": report["fits"][-1], "tokens": report["tokens"][-1],
        "proxies": [{k: r[k] for k in ("name", "params", "loss")} for r in report["runs"]],
        "warnings": report["warnings"], "plot": plot, "wall_s": round(time.perf_counter() - started, 1),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result))


def _device() -> str:
    import torch

    return torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"


if __name__ == "__main__":
    main()
