"""The stage fitted to its data: the mixture decides sequence length and vocabulary, not the stage file."""

from __future__ import annotations

import copy
import logging

from flm.config import ConfigError
from flm.train.config import StageConfig
from flm.train.data.mixture import Mixture

log = logging.getLogger(__name__)


def fit_stage(stage: StageConfig, mixture: Mixture) -> StageConfig:
    """The stage with the mixture's sequence length and the token shards' vocabulary."""
    stage = copy.deepcopy(stage)
    cfg = mixture.cfg
    if cfg.reset_position_ids and not cfg.reset_attention_mask and stage.model.position in ("xpos", "rope"):
        raise ConfigError(f"the mixture resets position ids but not the attention mask; {stage.model.position} "
                          "positions are relative, so that alone changes nothing: set reset_attention_mask: true")
    if mixture.seq_len != stage.model.seq_len:
        log.info("sequence length %d from the mixture (stage default %d)", mixture.seq_len, stage.model.seq_len)
        stage.model.seq_len = mixture.seq_len
    if mixture.vocab_size != stage.model.vocab_size:
        log.info("vocabulary %d from the token shards' manifest (stage config says %d)",
                 mixture.vocab_size, stage.model.vocab_size)
        stage.model.vocab_size = mixture.vocab_size
    _check_batch_fits_data(stage, mixture)
    return stage


def _check_batch_fits_data(stage: StageConfig, mixture: Mixture) -> None:
    """A step larger than an epoch of the training data repeats every sample within the step: a typo'd
    global_batch, refused before it makes a step that takes hours."""
    per_step = stage.train.global_batch * stage.model.seq_len
    held = sum(source.train_tokens for source in mixture.sources)
    if per_step > held:
        raise ConfigError(f"train.global_batch ({stage.train.global_batch}) x seq_len ({stage.model.seq_len}) is "
                          f"{per_step:,} tokens per step, more than the mixture's training data holds ({held:,} "
                          "tokens); lower train.global_batch")
