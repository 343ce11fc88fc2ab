"""What every stage of the evaluation shares: its settings and its error (declared in `options`), and what a noisy
job measures."""

import logging

from .options import EvalSettings, EvaluationError

__all__ = ["NOISE_ON_CORE", "NOISE_ON_FEATURE", "NOISE_ON_SPURIOUS", "EvalSettings", "EvaluationError", "log"]

log = logging.getLogger(__name__)

# What a noisy job measures.
NOISE_ON_CORE, NOISE_ON_SPURIOUS, NOISE_ON_FEATURE = 0, 1, 2
