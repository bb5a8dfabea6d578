"""Function-preserving model growth (masked structural growth, MSG: arXiv 2305.02869, as in FLM-101B).

- `check_growth` says whether one model shape can grow into another (GrowthError if not);
- `grow_model_and_optimizer` grows a live model and optimizer into freshly built target ones and
  returns a `MaskRamp`: call `ramp.update(step)` before each training step; the masks start at 0,
  reach 1 after `ramp_steps` steps and are then folded away;
- `resume_ramp` reinstalls the masks of a growth still ramping when a checkpoint is loaded;
- `grow_checkpoint` is `flm grow` on a saved checkpoint, `plan_growth` its dry run.
"""

from flm.train.growth.grow import Grown, grow_from_state, grow_model, grow_model_and_optimizer
from flm.train.growth.masks import GrowthMasks, ramp
from flm.train.growth.ramp import MaskRamp, growth_record, ramping, resume_ramp, stage_start_step
from flm.train.growth.spec import Dims, GrowthError, GrowthSpec, check_growth

__all__ = [
    "Dims",
    "GrowthError",
    "GrowthMasks",
    "GrowthSpec",
    "Grown",
    "MaskRamp",
    "check_growth",
    "grow_from_state",
    "grow_model",
    "grow_model_and_optimizer",
    "growth_record",
    "ramp",
    "ramping",
    "resume_ramp",
    "stage_start_step",
]
