"""A recipe: every stage of the suite, chained, from raw text to a grown, trained, evaluated model.

`flm run quickstart` runs the bundled recipe on the sample corpus; the same file with real paths
and stages is the shape of the real run. Each stage calls the same library functions as its own
command, writes its result to `<out>/.recipe/<stage>.json`, and is skipped when that file exists,
so a rerun picks up where the last one stopped (the stages resume on their own inside, too).
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, is_dataclass
from pathlib import Path
from typing import Any

import yaml

from flm.config import ConfigError, FlmError, find_config, load_config
from flm.config.bundled import sample_dir
from flm.config.folder_lock import folder_lock
from flm.config.progress import Progress
from flm.pipelines.config import BenchmarkConfig
from flm.train.config import StageConfig

OnStage = Callable[[str, str], None]
"""Called with (stage name, "start" | "skip" | "done")."""

class RecipeError(FlmError):
    """A recipe's stage cannot run: its input is missing (the message names the path)."""


STAGES = ("raw", "prepare", "tokenizer", "tokenize", "propositions", "mixture", "train", "grow", "train_grown",
          "evaluate", "generate", "report")
RESULTS_DIR = ".recipe"


@dataclass
class DataRecipe:
    """The raw corpora and how `prepare` cleans them."""

    pile: Path | None = None
    """A folder of Pile-format *.jsonl.zst files (what `flm data download pile` writes); None: the bundled sample."""
    wudao: Path | None = None
    """WuDao JSON arrays, archives or a folder of them (what `flm data download wudao --from` reads); None: the
    bundled sample."""
    workers: int = 2
    """Tasks run at once by prepare and tokenize."""
    pile_pipeline: str = "pile"
    """The pipeline config prepare uses for The Pile (a bundled name or a YAML path)."""
    wudao_pipeline: str = "wudao"
    """The pipeline config prepare uses for WuDao (a bundled name or a YAML path)."""
    pipeline_overrides: list[str] = field(default_factory=list)
    """`key=value` overrides applied to both pipeline configs (as `flm data prepare --set`)."""
    decontaminate: bool = True
    """Remove training documents that share n-grams with the evaluation sets (prepare's decontam step)."""
    eval_sets: list[BenchmarkConfig] = field(default_factory=list)
    """Evaluation sets to decontaminate against; empty: the bundled sample's (data/sample/eval)."""


def sample_eval_sets() -> list[BenchmarkConfig]:
    """The bundled evaluation sets; a few of their items occur in the sample corpus, so the counts are not zero."""
    folder = sample_dir() / "eval"
    return [BenchmarkConfig(name="sample_qa_en", path=str(folder / "sample_qa_en.jsonl"), id_field="id",
                            fields=["question", "passage", "answer"], language="en"),
            BenchmarkConfig(name="sample_choice_zh", path=str(folder / "sample_choice_zh.jsonl"), id_field="id",
                            fields=["question", "choices"], language="zh")]


@dataclass
class TokenizerRecipe:
    """The BPE tokenizer trained on the clean text."""

    vocab_size: int = 100256
    """Exact vocabulary size, special tokens included (FLM-101B: 100256)."""
    allow_smaller: bool = False
    """Keep a smaller vocabulary when the corpus cannot support vocab_size, instead of failing."""
    backend: str = "hf"
    """hf (byte-level BPE, tiktoken fast path) or sentencepiece."""


@dataclass
class MixRecipe:
    """The mixture written to OUT/mixture.yaml over the tokenized sources."""

    weights: dict[str, float] = field(default_factory=lambda: {"pile": 0.7, "wudao": 0.3})
    """Each source's share of training samples (relative weights)."""
    seq_len: int | None = None
    """Tokens per sample; None: the stage's model.seq_len."""
    valid_fraction: float = 0.01
    """Fraction of each source's documents held out for validation."""
    seed: int = 1234
    """Seed of the mixture's document shuffles."""


@dataclass
class TrainRecipe:
    """Training, growth and training again."""

    stage: str = "tiny"
    """The stage trained first (a bundled name or a YAML path)."""
    steps: int = 300
    """Steps trained before growth."""
    overrides: list[str] = field(default_factory=list)
    """`key=value` overrides of both stages (as `flm train --set`); --set train.overrides=[...] replaces the list."""
    grow_to: str = "tiny-grown"
    """The stage the trained model grows into."""
    ramp_steps: int = 50
    """Steps over which the grown structure's masks ramp from 0 to 1."""
    grown_steps: int = 200
    """Steps trained after growth (on top of `steps`)."""
    eval_batches: int = 16
    """Held-out micro-batches of every validation loss the recipe reports (during training, across growth,
    at the end), so one checkpoint has one figure."""


@dataclass
class TeacherRecipe:
    """FreeLM's teacher signal: propositions interleaved with the language steps (the quickstart turns it on)."""

    enabled: bool = False
    """Interleave teacher steps (propositions judged true/false) with the language steps. Off unless the recipe
    says so: a real run's recipe chooses its own task data (mapping) rather than inherit the sample's."""
    mapping: Path | None = None
    """A `flm data propositions` mapping YAML; None: the bundled bilingual set (data/sample/propositions)."""
    every: int = 2
    """Every k-th step is a teacher step; the runs get steps / (k - 1) more steps, so the language data is the
    same as without the teacher signal."""
    batch: int = 32
    """Propositions per teacher step (the quickstart's 16 keeps its cost on 2 CPU cores under a minute)."""
    micro_batch: int = 32
    """Propositions per forward/backward pass of a teacher step (bounds memory; batch must be a multiple)."""


@dataclass
class Recipe:
    """A recipe: every stage from raw text to a grown, trained, evaluated model (`flm run`)."""

    name: str = "quickstart"
    """The recipe's name, in its summary and the token shards' manifests."""
    data: DataRecipe = field(default_factory=DataRecipe)
    tokenizer: TokenizerRecipe = field(default_factory=TokenizerRecipe)
    mixture: MixRecipe = field(default_factory=MixRecipe)
    train: TrainRecipe = field(default_factory=TrainRecipe)
    teacher: TeacherRecipe = field(default_factory=TeacherRecipe)
    prompts: list[str] = field(default_factory=lambda: ["The Debian package manager", "中文"])
    """Prompts the final model continues."""
    max_new_tokens: int = 40
    """Tokens generated per prompt at most."""


def plain(obj: Any) -> Any:
    """JSON-ready view of a stage's result (dataclasses, paths)."""
    if hasattr(obj, "to_dict"):
        return obj.to_dict()
    if is_dataclass(obj) and not isinstance(obj, type):
        return plain(asdict(obj))
    if isinstance(obj, dict):
        return {str(k): plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [plain(v) for v in obj]
    return str(obj) if isinstance(obj, Path) else obj


class RecipeRun:
    """Runs a recipe's stages in order into `out`, recording each stage's result and time."""

    def __init__(self, recipe: Recipe, out: Path, *, progress: Progress | None = None,
                 on_stage: OnStage | None = None, on_step: Callable[[dict], None] | None = None) -> None:
        self.recipe = recipe
        self.out = Path(out)
        self.progress: Progress = progress or (lambda label, done, total: None)
        self.on_stage = on_stage or (lambda name, event: None)
        self.on_step = on_step
        self.results: dict[str, dict[str, Any]] = {}

    # Paths of the on-disk contract between stages.
    raw = property(lambda self: self.out / "raw")
    clean = property(lambda self: self.out / "clean")
    tokenizer_dir = property(lambda self: self.out / "tokenizer")
    tokens = property(lambda self: self.out / "tokens")
    mixture_path = property(lambda self: self.out / "mixture.yaml")
    propositions = property(lambda self: self.out / "propositions")
    runs = property(lambda self: self.out / "runs")

    def run(self, stages: tuple[str, ...] = STAGES) -> dict[str, Any]:
        unknown = [s for s in stages if s not in STAGES]
        if unknown:
            raise ConfigError(f"unknown stage(s) {', '.join(unknown)}; stages: {', '.join(STAGES)}")
        (self.out / RESULTS_DIR).mkdir(parents=True, exist_ok=True)
        with folder_lock(self.out, "a recipe runs in its output folder"):
            self._run_stages(stages)
        return self.summary()

    def _run_stages(self, stages: tuple[str, ...]) -> None:
        for name in STAGES:
            if name not in stages:
                continue
            marker = self.out / RESULTS_DIR / f"{name}.json"
            if marker.exists():
                self.results[name] = json.loads(marker.read_text(encoding="utf-8"))
                self.on_stage(name, "skip")
                continue
            self.on_stage(name, "start")
            start = time.perf_counter()
            result = plain(getattr(self, f"stage_{name}")())
            result["seconds"] = round(time.perf_counter() - start, 2)
            self.results[name] = result
            marker.write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
            self.on_stage(name, "done")

    def stage_raw(self) -> dict[str, Any]:
        """Raw corpora in the downloader's layout: Pile files linked as published, WuDao converted to shards."""
        from flm.pipelines.wudao import convert

        pile_in = self.recipe.data.pile or sample_dir() / "raw" / "pile"
        wudao_in = self.recipe.data.wudao or sample_dir() / "raw" / "wudao"
        pile_out = self.raw / "pile"
        pile_out.mkdir(parents=True, exist_ok=True)
        files = sorted(Path(pile_in).glob("*.jsonl.zst"))
        if not files:
            raise RecipeError(f"{pile_in}: no *.jsonl.zst files")
        for path in files:  # linked, not copied: the real Pile is hundreds of GB
            link = pile_out / path.name
            link.unlink(missing_ok=True)
            link.symlink_to(path.resolve())
        report = convert(Path(wudao_in), self.raw / "wudao", progress=self.progress)
        return {"pile_files": len(files), "wudao": report}

    def stage_prepare(self) -> dict[str, Any]:
        from flm.pipelines.config import PipelineConfig
        from flm.pipelines.prepare.run import prepare

        data = self.recipe.data
        overrides = [*data.pipeline_overrides, f"executor.workers={data.workers}"]
        configs = [load_config(PipelineConfig, find_config(name, "pipelines"), overrides)
                   for name in (data.pile_pipeline, data.wudao_pipeline)]
        if data.decontaminate:
            for cfg in configs:
                cfg.decontam.enabled = True
                cfg.decontam.benchmarks = list(data.eval_sets) or sample_eval_sets()
                cfg.decontam.validate()
        return prepare(configs, self.raw, self.clean, progress=self.progress).to_dict()

    def stage_tokenizer(self) -> dict[str, Any]:
        from flm.pipelines.tokenize import train_from_clean
        from flm.tokenizer.train import TrainConfig

        tok = self.recipe.tokenizer
        config = TrainConfig(vocab_size=tok.vocab_size, allow_smaller=tok.allow_smaller, backend=tok.backend)
        return train_from_clean(self.clean, self.tokenizer_dir, config, overwrite=True, progress=self.progress)

    def stage_tokenize(self) -> dict[str, Any]:
        from flm.pipelines.tokenize import tokenize_corpus

        return tokenize_corpus(self.clean, self.tokens, self.tokenizer_dir, workers=self.recipe.data.workers,
                               command=f"flm run {self.recipe.name}", progress=self.progress)

    def stage_propositions(self) -> dict[str, Any]:
        """Task data as proposition shards (OUT/propositions/train and valid) when the teacher signal is on."""
        teacher = self.recipe.teacher
        if not teacher.enabled:
            return {"enabled": False}
        from flm.pipelines.propositions import build_propositions

        mapping = teacher.mapping or sample_dir() / "propositions" / "mapping.yaml"
        return {"enabled": True, **plain(build_propositions(mapping, self.tokenizer_dir, self.propositions,
                                                            progress=self.progress))}

    def _steps(self, language_steps: int) -> int:
        """Optimizer steps that hold `language_steps` language steps (teacher steps come on top)."""
        teacher = self.recipe.teacher
        return language_steps + language_steps // (teacher.every - 1) if teacher.enabled else language_steps

    def stage_mixture(self) -> dict[str, Any]:
        mix = self.recipe.mixture
        mixture = {"seed": mix.seed, "valid_fraction": mix.valid_fraction,
                   "sources": [{"name": name, "path": str((self.tokens / name).resolve()), "weight": weight}
                               for name, weight in mix.weights.items()]}
        if mix.seq_len is not None:
            mixture["seq_len"] = mix.seq_len
        teacher = self.recipe.teacher
        if teacher.enabled:
            mixture["teacher"] = {"every": teacher.every, "batch": teacher.batch, "micro_batch": teacher.micro_batch,
                                  "sources": [{"name": "tasks", "path": str((self.propositions / "train").resolve())}]}
        self.mixture_path.write_text(yaml.safe_dump(mixture, sort_keys=False, allow_unicode=True), encoding="utf-8")
        return {"path": str(self.mixture_path), **mixture}

    def _mixture_cfg(self) -> Any:
        from flm.train.data.config import MixtureConfig

        return load_config(MixtureConfig, self.mixture_path)

    def _stage(self, name: str) -> StageConfig:
        t = self.recipe.train
        return load_config(StageConfig, find_config(name, "stages"),
                           [*t.overrides, f"train.eval_batches={t.eval_batches}"])

    def stage_train(self) -> dict[str, Any]:
        from flm.train.trainer.loop import train

        t = self.recipe.train
        return train(self._stage(t.stage), self._mixture_cfg(), self.runs / t.stage, steps=self._steps(t.steps),
                     progress=self.progress, on_step=self.on_step)

    def stage_grow(self) -> dict[str, Any]:
        from flm.train.checkpoint import latest_checkpoint
        from flm.train.growth.grow_checkpoint import grow_checkpoint
        from flm.train.trainer.evaluate import evaluate_checkpoint

        t = self.recipe.train
        src = latest_checkpoint(self.runs / t.stage / "checkpoints")
        if src is None:
            raise RecipeError(f"{self.runs / t.stage}: no checkpoint to grow")
        out = self.runs / "grown-init" / src.name
        shutil.rmtree(out, ignore_errors=True)  # a half-written growth from an interrupted run
        out.parent.mkdir(parents=True, exist_ok=True)
        record = grow_checkpoint(src, self._stage(t.grow_to), out, ramp_steps=t.ramp_steps, progress=self.progress)
        before = evaluate_checkpoint(src, max_batches=t.eval_batches)
        after = evaluate_checkpoint(out, max_batches=t.eval_batches)
        return {"from": str(src), "to": str(out), "record": record, "val_loss_before": before.val_loss,
                "val_loss_after": after.val_loss,
                "relative_change": abs(after.val_loss - before.val_loss) / before.val_loss}

    def stage_train_grown(self) -> dict[str, Any]:
        from flm.train.trainer.loop import train

        t = self.recipe.train
        grown = Path(self.results["grow"]["to"]) if "grow" in self.results else None
        run_dir = self.runs / t.grow_to
        resume = "latest" if (run_dir / "checkpoints").exists() or grown is None else str(grown)
        stage = self._stage(t.grow_to)
        return train(stage, self._mixture_cfg(), run_dir, steps=self._steps(t.steps + t.grown_steps), resume=resume,
                     progress=self.progress, on_step=self.on_step)

    def stage_evaluate(self) -> dict[str, Any]:
        from flm.train.checkpoint import latest_checkpoint
        from flm.train.trainer.evaluate import evaluate_checkpoint

        t = self.recipe.train
        results = {}
        for run in (t.stage, t.grow_to):
            ckpt = latest_checkpoint(self.runs / run / "checkpoints")
            if ckpt is not None:
                results[run] = evaluate_checkpoint(ckpt, max_batches=t.eval_batches)
                if self.recipe.teacher.enabled and (self.propositions / "valid" / "manifest.json").exists():
                    from flm.train.teacher.evaluate import evaluate_propositions

                    judged = evaluate_propositions(ckpt, self.propositions / "valid")
                    results.setdefault("teacher", {})[run] = {
                        k: getattr(judged, k) for k in ("accuracy", "majority", "choice_accuracy", "chance", "tasks")}
        return results

    def stage_generate(self) -> dict[str, Any]:
        from flm.train.checkpoint import latest_checkpoint, read_meta
        from flm.train.model.size import param_count
        from flm.train.tools.generate import generate

        ckpt = latest_checkpoint(self.runs / self.recipe.train.grow_to / "checkpoints")
        if ckpt is None:
            raise RecipeError(f"{self.runs / self.recipe.train.grow_to}: no checkpoint to generate from")
        gens = generate(ckpt, list(self.recipe.prompts), tokenizer_dir=self.tokenizer_dir,
                        max_new_tokens=self.recipe.max_new_tokens)
        meta = read_meta(ckpt)
        return {"checkpoint": str(ckpt), "generations": gens, "params": param_count(meta.load_stage().model),
                "tokens_seen": meta.tokens_seen}

    def recorded(self, name: str) -> dict[str, Any] | None:
        """A stage's result: from this run, else as an earlier run recorded it (`--stages` left it out)."""
        if name in self.results:
            return self.results[name]
        marker = self.out / RESULTS_DIR / f"{name}.json"
        return json.loads(marker.read_text(encoding="utf-8")) if marker.exists() else None

    def stage_report(self) -> dict[str, Any]:
        """Loss curves of both runs, growth marked, as numbers and a PNG (flm.recipe.plot)."""
        from flm.recipe.plot import Growth, loss_story, plot_story

        t = self.recipe.train
        grow = self.recorded("grow")
        growth, params = None, {}
        if grow is not None:
            record = grow["record"]
            params = {t.stage: record["params_before"], t.grow_to: record["params_after"]}
            growth = Growth(step=record["step"], from_run=t.stage, to_run=t.grow_to,
                            params_before=record["params_before"], params_after=record["params_after"],
                            val_before=grow["val_loss_before"], val_after=grow["val_loss_after"],
                            eval_batches=t.eval_batches)
        story = loss_story(self.recipe.name, [(run, self.runs / run / "metrics.jsonl") for run in (t.stage, t.grow_to)],
                           growth, params)
        png = self.out / "loss.png"
        plot_story(story, png)
        every = max(1, (t.steps + t.grown_steps) // 10)
        sampled = {c.run: [(step, round(loss, 4)) for step, loss in c.smoothed if step % every == 0 or step == 1]
                   for c in story.curves}
        return {"plot": str(png), "title": story.title, "notes": story.notes, "curves": sampled}

    def summary(self) -> dict[str, Any]:
        r = self.results
        out: dict[str, Any] = {"recipe": self.recipe.name, "out": str(self.out.resolve()),
                               "seconds": {k: v.get("seconds") for k, v in r.items()}}
        if "prepare" in r:
            prep = r["prepare"]
            out["documents"] = {k: prep[k] for k in ("docs_in", "docs_kept", "bytes_in", "bytes_kept")}
            out["dropped"] = prep["dropped"]
            out["pii_redacted"] = prep.get("redacted", {})
            out["decontaminated"] = {
                f"{source}/{bench}": {k: b[k] for k in ("items_found", "docs_removed")}
                for source, src in prep["sources"].items() if src.get("decontamination")
                for bench, b in src["decontamination"]["benchmarks"].items()}
        if "tokenize" in r:
            out["tokens"] = r["tokenize"].get("tokens")
        out["eval_batches"] = self.recipe.train.eval_batches  # of every val_loss below
        for key in ("train", "train_grown"):
            if key in r:
                out[key] = {k: r[key].get(k) for k in ("step", "loss", "val_loss", "checkpoint")}
        if "grow" in r:
            out["growth"] = {k: r["grow"][k] for k in ("val_loss_before", "val_loss_after", "relative_change")}
            out["growth"].update({k: r["grow"]["record"].get(k) for k in ("params_before", "params_after")})
        if "evaluate" in r:
            out["val_loss"] = {k: v.get("val_loss") for k, v in r["evaluate"].items()
                               if isinstance(v, dict) and k != "teacher"}
            if "teacher" in r["evaluate"]:  # held-out propositions, each figure beside what it must beat
                out["teacher"] = {run: {k: v.get(k) for k in ("accuracy", "majority", "choice_accuracy", "chance")}
                                  for run, v in r["evaluate"]["teacher"].items()}
        if "generate" in r:
            out["generations"] = r["generate"]["generations"]
            out["generation_model"] = {k: r["generate"].get(k) for k in ("params", "tokens_seen")}
        if "report" in r:
            out["loss_plot"] = r["report"]["plot"]
            out["loss_curve"] = r["report"]["curves"]
        out["artefacts"] = {name: str(getattr(self, name).resolve())
                            for name in ("raw", "clean", "tokenizer_dir", "tokens", "mixture_path", "runs")}
        return out


def load_recipe(name: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> Recipe:
    return load_config(Recipe, find_config(name, "recipes"), list(overrides))


OUTPUTS = ("raw", "clean", "tokenizer", "tokens", "propositions", "mixture.yaml", "runs", "loss.png", RESULTS_DIR)
"""Everything a recipe writes into its output folder; --fresh removes these and nothing else."""


def fresh(out: Path) -> list[str]:
    """Remove what an earlier recipe run wrote into `out` (for --fresh); returns the names removed.

    Only a folder that a recipe wrote (it holds .recipe/) is touched, and in it only the recipe's own
    outputs: files of the user's that sit beside them stay.
    """
    out = Path(out)
    if not out.exists():
        return []
    if not (out / RESULTS_DIR).is_dir():
        raise RecipeError(f"{out} holds no {RESULTS_DIR}/, so flm did not write it: --fresh deletes only a "
                          "recipe's own outputs; choose another --out or remove the folder yourself")
    removed = []
    with folder_lock(out, "a recipe runs in its output folder"):
        for name in OUTPUTS:
            path = out / name
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            elif path.exists() or path.is_symlink():
                path.unlink()
            else:
                continue
            removed.append(name)
    return removed

