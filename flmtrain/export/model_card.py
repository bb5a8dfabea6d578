"""The model card (README.md) `flm export` writes beside the weights: what the model is and how it came to be.

Everything in it is read from the checkpoint (meta.json: stage, shapes, growth history, tokens seen, data
mixture), the run's metrics.jsonl (final losses) and the tokenizer's meta.json, so the card cannot drift
from the weights. Local paths are left out (exports get shared): the source checkpoint is named by its
run folder and step.
"""

from __future__ import annotations

import json
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from flm.train.checkpoint import CheckpointMeta
from flm.train.config import ModelConfig
from flm.train.model.size import param_count
from flm.train.teacher.card import teacher_card

METRICS_NAME = "metrics.jsonl"  # flm.train.trainer.metrics.METRICS_NAME; not imported: it pulls in the trainer


def flm_version() -> str:
    try:
        return version("flm")
    except PackageNotFoundError:
        return "unknown (flm is not installed)"


def final_losses(checkpoint: Path, step: int) -> dict[str, tuple[int, float]]:
    """{metric: (step, value)}: the last training loss and held-out loss at or before `step` in the run's
    metrics.jsonl (RUN/checkpoints/step-N -> RUN/metrics.jsonl); empty when the run's log is not there."""
    path = checkpoint.parent.parent / METRICS_NAME
    found: dict[str, tuple[int, float]] = {}
    if not path.is_file():
        return found
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue  # a torn last line of a killed run
        at = record.get("step")
        if not isinstance(at, int) or at > step:
            continue
        for key in ("loss", "val_loss"):
            if isinstance(record.get(key), (int, float)):
                found[key] = (at, float(record[key]))
    return found


def _architecture(cfg: ModelConfig, fmt: str, architecture: str) -> list[str]:
    mup = (f"on (base width {cfg.mup.base_width}, input x{cfg.mup.input_mult:g}, output x{cfg.mup.output_mult:g})"
           if cfg.mup.enabled else "off")
    return [
        f"| parameters | {param_count(cfg):,} |",
        f"| layers | {cfg.layers} |",
        f"| hidden size | {cfg.hidden} |",
        f"| attention heads | {cfg.heads} (key/value heads: {cfg.kv_heads or cfg.heads}, head size {cfg.head_dim}) |",
        f"| FFN size | {cfg.ffn_size} ({cfg.activation}) |",
        f"| positions | {cfg.position}, context {cfg.seq_len} tokens |",
        f"| normalization | {cfg.norm} |",
        f"| vocabulary | {cfg.vocab_size:,} (embedding padded to {cfg.padded_vocab_size:,}) |",
        f"| tied embeddings | {'yes' if cfg.tie_embeddings else 'no'} |",
        f"| μP | {mup} |",
        f"| exported as | {architecture} (`--format {fmt}`) |",
    ]


def _growth(history: list[dict[str, Any]]) -> list[str]:
    if not history:
        return ["Trained at this size from the start (no growth)."]
    lines = ["| step | tokens seen | from | to | parameters | operators |", "| --- | --- | --- | --- | --- | --- |"]
    for g in history:
        ops = ", ".join(g.get("operators") or []) or "-"
        lines.append(f"| {g['step']:,} | {g.get('tokens_seen', 0):,} | {g['from_stage']} | {g['to_stage']} | "
                     f"{g.get('params_before', 0):,} -> {g.get('params_after', 0):,} | {ops} |")
    return lines


def _tokenizer(tokenizer: dict[str, Any] | None, meta: CheckpointMeta) -> list[str]:
    trained_with = f"`{meta.tokenizer_hash[:16]}`" if meta.tokenizer_hash else "not recorded"
    if tokenizer is None:  # the note names local paths: the person exporting saw it, the card's readers need not
        hashed = (f"the one it was trained with has sha256 `{meta.tokenizer_hash[:16]}` (of its model file)"
                  if meta.tokenizer_hash else "which one it was trained with is not recorded")
        return [f"Not included: flm export found no usable tokenizer for this run; {hashed}. Export again with "
                "`--tokenizer DIR` to ship it."]
    tm = tokenizer["tokenizer_meta"]
    return [f"Included (`tokenizer.json`, `tokenizer_config.json`): byte-level BPE ({tm.backend} backend), "
            f"{tm.vocab_size:,} tokens, sha256 `{tm.content_hash[:16]}`, the one the model was trained with "
            f"({trained_with}); end of text is id {tm.eos_id}, padding id {tm.pad_id}."]


def model_card(meta: CheckpointMeta, cfg: ModelConfig, checkpoint: Path, *, fmt: str, architecture: str,
               dtype: str, tokenizer: dict[str, Any] | None, command: str | None) -> str:
    """The README.md of an export (markdown, with the YAML front matter the Hugging Face Hub reads)."""
    losses = final_losses(checkpoint, meta.step)
    sources = (meta.mixture or {}).get("sources") or []
    mixture = ", ".join(f"{s.get('name', '?')} (weight {s.get('weight', 1.0):g})" for s in sources) or "not recorded"
    loss_lines = [f"- {label}: {losses[key][1]:.4f} at step {losses[key][0]:,}"
                  for key, label in (("loss", "training loss (last logged step)"),
                                     ("val_loss", "held-out loss (the mixture's validation split)")) if key in losses]
    remote = ", trust_remote_code=True" if fmt == "flm" else ""
    source = f"{checkpoint.parent.parent.name}/{checkpoint.parent.name}/{checkpoint.name}"
    lines = [
        "---", "library_name: transformers", "pipeline_tag: text-generation", "tags: [flm]", "---", "",
        f"# {meta.stage} (step {meta.step:,})", "",
        f"A {param_count(cfg):,}-parameter decoder-only language model trained with "
        f"flm (a pretraining suite following FLM-101B's recipe) and exported with `flm export`.", "",
        "## Architecture", "", "| | |", "| --- | --- |", *_architecture(cfg, fmt, architecture), "",
        "## Training", "",
        f"- stage `{meta.stage}`, {meta.step:,} steps, {meta.tokens_seen:,} tokens seen "
        f"({meta.consumed_samples:,} samples)",
        f"- data mixture: {mixture}",
        f"- trained on {meta.device} with layout {json.dumps(meta.world) if meta.world else 'not recorded'}", "",
        "### Growth history", "", *_growth(list(meta.growth_history)), "",
        "### Final losses", "", *(loss_lines or ["Not recorded: the run's metrics.jsonl was not found beside "
                                                 "the checkpoint."]), "",
        *teacher_card(meta.mixture),
        "## Tokenizer", "", *_tokenizer(tokenizer, meta), "",
        "## Use", "", "```python", "from transformers import AutoModelForCausalLM, AutoTokenizer", "",
        "# PATH: this folder (or where it was uploaded)",
        f'model = AutoModelForCausalLM.from_pretrained("PATH"{remote})',
        f'tokenizer = AutoTokenizer.from_pretrained("PATH"{remote})' if tokenizer is not None else
        "# no tokenizer was exported with this model", "```", "",
        "## Provenance", "",
        f"- flm {flm_version()}",
        f"- source checkpoint: `{source}` (format {meta.format}, saved {meta.saved_at or 'at an unrecorded time'})",
        f"- weights: {dtype}",
        f"- command: `{command}`" if command else "- command: not recorded (exported through the Python API)",
        "",
    ]
    return "\n".join(lines)
