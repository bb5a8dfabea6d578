"""`flm export`: a trained checkpoint as a directory that Hugging Face transformers loads.

Reads a torch-format checkpoint (model.pt + meta.json, the CPU path's layout) without building the
megatron model, so an export needs neither megatron-core nor a GPU. Writes, atomically (a temporary
directory renamed at the end):
- `model.safetensors` (or shards + `model.safetensors.index.json` past `max_shard_bytes`);
- `config.json` and `generation_config.json` (the tokenizer's special ids; padding ids suppressed);
- fmt "flm": `configuration_flm.py` + `modeling_flm.py` (remote_code/, loaded with trust_remote_code);
- fmt "llama": nothing more, transformers' own LlamaForCausalLM reads it (flm.train.export.convert says what folds);
- the tokenizer (tokenizer.json + tokenizer_config.json), when one is given or the run records it;
- `README.md`, the model card (flm.train.export.model_card).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any, Literal

import torch

from flm.config.errors import FlmError
from flm.config.progress import Progress
from flm.tokenizer.meta import TokenizerError, TokenizerMeta
from flm.train.checkpoint import META_NAME, CheckpointError, CheckpointMeta, read_meta, resolve_checkpoint
from flm.train.checkpoint.integrity import verify_checkpoint
from flm.train.checkpoint.store import FORMATS as CHECKPOINT_FORMATS
from flm.train.checkpoint.tensors import open_tensors
from flm.train.config import ModelConfig
from flm.train.export.convert import (
    ExportError,
    flm_config,
    generation_config,
    hf_tensors,
    llama_config,
    llama_incompatible,
    llama_tensors,
)
from flm.train.export.model_card import model_card
from flm.train.growth.layout import param_shapes
from flm.train.growth.ramp import ramping

HF_SOURCE = Path(__file__).resolve().parent / "remote_code"
REMOTE_CODE = ("configuration_flm.py", "modeling_flm.py")
DTYPES = {"bf16": torch.bfloat16, "fp32": torch.float32}
FORMATS = ("flm", "llama")
MAX_SHARD_BYTES = 5 * 2**30
"""Past this, weights go into several safetensors files (transformers' usual sharding)."""


def export_checkpoint(checkpoint: Path, out: Path, *, fmt: Literal["flm", "llama"] = "flm",
                      dtype: Literal["bf16", "fp32"] = "bf16", tokenizer: Path | None = None,
                      progress: Progress | None = None, max_shard_bytes: int = MAX_SHARD_BYTES,
                      command: str | None = None) -> dict[str, Any]:
    """Export `checkpoint` to the new directory `out`; returns a summary (params, files, format, tokenizer, ...).

    `command` (the command line that asked for it) goes into the model card's provenance.

    `tokenizer` is a directory written by `flm data train-tokenizer`; without it the run's own tokenizer
    (named by its token shards' manifest) is used when it can be found, else the export has none and
    the summary's `tokenizer_note` says why.
    """
    checkpoint, out = Path(checkpoint), Path(out)
    if fmt not in FORMATS:
        raise ExportError(f"unknown export format {fmt!r}; allowed: {', '.join(FORMATS)}")
    if dtype not in DTYPES:
        raise ExportError(f"unknown dtype {dtype!r}; allowed: {', '.join(DTYPES)}")
    if out.exists():
        raise ExportError(f"{out} already exists; choose a new --out")
    checkpoint = resolve_checkpoint(checkpoint)
    meta = read_meta(checkpoint)
    cfg = _model_config(checkpoint, meta)
    if fmt == "llama" and (bad := llama_incompatible(cfg)):
        raise ExportError(f"{checkpoint}: not a Llama-compatible model: {'; '.join(bad)}. Export with --format flm")
    tok, tokenizer_note = _find_tokenizer(meta, cfg, tokenizer)
    report = progress or (lambda label, done, total: None)

    weights = _load_weights(checkpoint, cfg)
    # provenance in config.json; no local paths, since exports get shared
    source = {"stage": meta.stage, "step": meta.step, "tokens_seen": meta.tokens_seen,
              "growths": len(meta.growth_history)}
    special = tok["meta"] if tok is not None else None
    folded: list[str] = []
    if fmt == "llama":
        tensors, tied, folded = llama_tensors(cfg, weights)
        config = llama_config(cfg, dtype=dtype, tokenizer=special, tied=tied, source=source)
    else:
        tensors = hf_tensors(cfg, weights)
        config = flm_config(cfg, dtype=dtype, tokenizer=special, source=source)
    del weights

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.export.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        files = _save_tensors(tensors, tmp, DTYPES[dtype], max_shard_bytes, report)
        _write_json(tmp / "config.json", config)
        _write_json(tmp / "generation_config.json",
                    generation_config(cfg, special, use_cache=fmt == "llama"))
        files += ["config.json", "generation_config.json"]
        if fmt == "flm":
            for name in REMOTE_CODE:
                shutil.copyfile(HF_SOURCE / name, tmp / name)
            files += list(REMOTE_CODE)
        if tok is not None:
            files += _write_tokenizer(tok, cfg, tmp)
        card = model_card(meta, cfg, checkpoint, fmt=fmt, architecture=config["architectures"][0], dtype=dtype,
                          tokenizer=tok, command=command)
        (tmp / "README.md").write_text(card, encoding="utf-8")
        files.append("README.md")
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return {"checkpoint": str(checkpoint), "out": str(out), "format": fmt, "dtype": dtype,
            "architecture": config["architectures"][0], "params": sum(t.numel() for t in tensors.values()),
            "files": sorted(files), "stage": meta.stage, "step": meta.step,
            "vocab_size": cfg.vocab_size, "padded_vocab_size": cfg.padded_vocab_size,
            "tokenizer": tok and str(tok["dir"]), "tokenizer_note": tokenizer_note, "folded": folded,
            "trust_remote_code": fmt == "flm"}


def _model_config(checkpoint: Path, meta: CheckpointMeta) -> ModelConfig:
    """The checkpoint's model config, once it is known to be a complete, readable, exportable checkpoint."""
    fmt = meta.format
    if fmt not in CHECKPOINT_FORMATS:
        raise ExportError(f"{checkpoint / META_NAME}: unknown checkpoint format {fmt!r}; flm export reads "
                          f"{', '.join(CHECKPOINT_FORMATS)}")
    if not meta.stage_config:
        raise ExportError(f"{checkpoint / META_NAME}: no stage_config; cannot tell the model's architecture")
    step = meta.step
    record = ramping(list(meta.growth_history), step)
    if record is not None:
        raise ExportError(f"{checkpoint}: the growth at step {record['step']} is still ramping its masks until step "
                          f"{record['step'] + record['ramp_steps']} (this checkpoint is step {step}), so the model "
                          "does not have its final function yet; export a checkpoint saved after the ramp")
    stage = meta.load_stage()
    stage.model.validate()
    return stage.model


def _load_weights(checkpoint: Path, cfg: ModelConfig) -> dict[str, torch.Tensor]:
    """The checkpoint's weights (megatron names; any engine, any layout), checked against the names and shapes
    `cfg` builds."""
    verify_checkpoint(checkpoint)
    tensors = open_tensors(checkpoint)
    want = param_shapes(cfg)
    missing = sorted(set(want) - set(tensors.shapes))
    unexpected = sorted(set(tensors.shapes) - set(want))
    wrong = [f"{k} {tensors.shapes[k]} (config says {want[k]})" for k in want
             if k in tensors.shapes and tensors.shapes[k] != want[k]]
    if missing or unexpected or wrong:
        raise CheckpointError(f"{checkpoint}: weights do not match meta.json's stage_config: "
                              f"missing {missing[:5]}, unexpected {unexpected[:5]}, shape mismatches {wrong[:5]}")
    return {name: tensors.weight(name) for name in want}


def _save_tensors(tensors: dict[str, torch.Tensor], directory: Path, dtype: torch.dtype, max_shard_bytes: int,
                  report: Progress) -> list[str]:
    """safetensors file(s) in `dtype`; an index maps names to shards when there is more than one."""
    from safetensors.torch import save_file

    shards: list[dict[str, torch.Tensor]] = [{}]
    size = 0
    for name, tensor in tensors.items():
        nbytes = tensor.numel() * dtype.itemsize
        if shards[-1] and size + nbytes > max_shard_bytes:
            shards.append({})
            size = 0
        shards[-1][name] = tensor
        size += nbytes
    if len(shards) == 1:
        names = ["model.safetensors"]
    else:
        names = [f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors" for i in range(len(shards))]
    for i, (name, shard) in enumerate(zip(names, shards, strict=True)):
        report("export", i, len(shards))
        # Own, contiguous copies: q/k/v and gate/up are views of one fused tensor, which safetensors refuses.
        save_file({k: v.to(dtype).contiguous().clone() for k, v in shard.items()}, str(directory / name),
                  metadata={"format": "pt"})
        os.chmod(directory / name, directory.stat().st_mode & 0o666)  # safetensors writes 0600; others may load it
    report("export", len(shards), len(shards))
    if len(shards) > 1:
        index = {"metadata": {"total_size": sum(t.numel() * dtype.itemsize for t in tensors.values())},
                 "weight_map": {k: name for name, shard in zip(names, shards, strict=True) for k in shard}}
        _write_json(directory / "model.safetensors.index.json", index)
        names.append("model.safetensors.index.json")
    return names


def _find_tokenizer(meta: CheckpointMeta, cfg: ModelConfig,
                    given: Path | None) -> tuple[dict[str, Any] | None, str]:
    """({dir, meta, token names}, note): the tokenizer to ship. A given one that does not fit is an error;
    the run's own one that cannot be used is left out, and the note says why."""
    if given is None:
        try:
            directory = meta.tokenizer_dir()
        except (FlmError, OSError) as err:  # e.g. the run's token shards moved (no manifest.json)
            return None, f"exported without a tokenizer: {err}"
    else:
        directory = Path(given)
    try:
        tmeta = TokenizerMeta.load(directory)
        problem = _tokenizer_problem(directory, tmeta, meta, cfg)
    except (TokenizerError, OSError) as err:
        problem = str(err)
    if problem is None:
        return {"dir": directory, "meta": {"eos_id": tmeta.eos_id, "pad_id": tmeta.pad_id}, "tokenizer_meta": tmeta,
                "names": {i: name for name, i in tmeta.special_ids.items()}}, ""
    if given is not None:
        raise ExportError(problem)
    return None, f"exported without a tokenizer: the run's tokenizer {directory} cannot be used: {problem}"


def _tokenizer_problem(directory: Path, tmeta: Any, meta: CheckpointMeta, cfg: ModelConfig) -> str | None:
    if tmeta.backend != "hf":
        return (f"{directory}: a {tmeta.backend} tokenizer; only the byte-level BPE (hf backend, tokenizer.json) "
                "exports to transformers")
    if not (directory / tmeta.model_file).is_file():
        return f"{directory}: no {tmeta.model_file}"
    run_hash = meta.tokenizer_hash
    if run_hash and run_hash != tmeta.content_hash:
        return (f"{directory}: tokenizer hash {tmeta.content_hash[:12]} differs from the one the checkpoint was "
                f"trained with ({run_hash[:12]}, meta.json's tokenizer_hash)")
    if tmeta.vocab_size > cfg.vocab_size:
        return f"{directory}: tokenizer vocabulary {tmeta.vocab_size} exceeds the model's {cfg.vocab_size}"
    return None


def _write_tokenizer(tok: dict[str, Any], cfg: ModelConfig, directory: Path) -> list[str]:
    """tokenizer.json as trained, and a tokenizer_config.json for PreTrainedTokenizerFast / AutoTokenizer."""
    shutil.copyfile(tok["dir"] / "tokenizer.json", directory / "tokenizer.json")
    names, ids = tok["names"], tok["meta"]
    config = {"tokenizer_class": "PreTrainedTokenizerFast", "bos_token": names[ids["eos_id"]],
              "eos_token": names[ids["eos_id"]], "pad_token": names[ids["pad_id"]],
              "model_max_length": cfg.seq_len, "clean_up_tokenization_spaces": False}
    _write_json(directory / "tokenizer_config.json", config)
    return ["tokenizer.json", "tokenizer_config.json"]


def _write_json(path: Path, obj: Any) -> None:
    path.write_text(json.dumps(obj, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
