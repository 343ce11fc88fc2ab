"""`salient-imagenet evaluate`: an `EvaluateJob`, with Ctrl-C said in one line; then the comparison printed."""

from pathlib import Path

from ..core.job import run_command
from .api import EvaluateJob, report
from .options import EvaluateConfig


def run(config: EvaluateConfig) -> int:
    """Known failures are `UserError`s: `cli.dispatch` turns them into one line and the exit code."""
    results, heads, data = run_command(EvaluateJob(config))
    report(Path(config.out), results, heads, data, config)
    return 0
