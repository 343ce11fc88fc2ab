"""What every stage of the evaluation shares: its settings, its error, and what a noisy job measures."""

import logging
import math
from dataclasses import dataclass

from ..core.constants import (
    DEFAULT_DRAWS,
    DEFAULT_EVAL_BATCH_SIZE,
    DEFAULT_NOISE_STD,
    DEFAULT_SEED,
    DEFAULT_TOP_PAIRS,
)
from ..core.errors import InputError

log = logging.getLogger(__name__)

# What a noisy job measures.
NOISE_ON_CORE, NOISE_ON_SPURIOUS, NOISE_ON_FEATURE = 0, 1, 2


class EvaluationError(InputError):
    pass


@dataclass
class EvalSettings:
    noise_std: float = DEFAULT_NOISE_STD
    draws: int = DEFAULT_DRAWS
    seed: int = DEFAULT_SEED
    batch_size: int = DEFAULT_EVAL_BATCH_SIZE
    device: str | None = None
    amp: bool = True  # float16 autocast on CUDA (never on CPU, where it is slower)
    single_feature: bool = True
    top_pairs: int = DEFAULT_TOP_PAIRS
    progress: bool = True

    def __post_init__(self):
        if not (self.noise_std >= 0 and math.isfinite(self.noise_std)):
            raise EvaluationError(f"--noise-std must be a finite number >= 0, got {self.noise_std}")
        if self.draws < 1 or self.batch_size < 1:
            raise EvaluationError(f"--draws and --batch-size must be >= 1, got {self.draws}, {self.batch_size}")


