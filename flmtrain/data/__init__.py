"""The mixture dataloader: token-shard sources blended by weight into packed seq_len + 1 samples.

    mixture = Mixture(load_config(MixtureConfig, "configs/mixtures/sample.yaml"))
    loader = mixture.train_loader(micro_batch=8, dp_rank=rank, dp_size=world, consumed_samples=0)
    for batch in loader:            # endless; batch["tokens"]: int64 [8, seq_len + 1]
        ...
    state = loader.state_dict()     # {"consumed_samples": global samples, "seed": ...}
"""

from flm.train.data.blend import Blend
from flm.train.data.loader import EvalLoader, MixtureDataset, RankSampler, TrainLoader
from flm.train.data.mixture import Mixture
from flm.train.data.stream import Stream

__all__ = ["Blend", "EvalLoader", "Mixture", "MixtureDataset", "RankSampler", "Stream", "TrainLoader"]
