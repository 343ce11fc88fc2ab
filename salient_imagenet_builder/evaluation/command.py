"""`salient-imagenet evaluate`: the command line's options -> `api.evaluate`."""

from pathlib import Path

from ..core.output import interruptible
from .api import EvaluateConfig, check_inputs, evaluate


def config_from_args(args) -> EvaluateConfig:
    return EvaluateConfig(
        dataset=args.dataset, model=args.model, checkpoint=args.checkpoint,
        zero_shot_head=args.zero_shot_head, cache_dir=args.cache_dir, split=args.split, imagenet=args.imagenet,
        imagenet_type=args.imagenet_type, noise_std=args.noise_std, draws=args.draws, seed=args.seed,
        batch_size=args.batch_size, device=args.device, amp=not args.no_amp,
        single_feature=not args.no_single_feature, top_pairs=args.top_pairs, workers=args.workers, out=args.out,
        generalized_only=args.generalized_only)


def run(args) -> int:
    """Known failures are `UserError`s: `cli.dispatch` turns them into one line and the exit code."""
    config = config_from_args(args)
    check_inputs(config)  # "no such folder" at once
    with interruptible(Path(config.out)):  # Ctrl-C: one line saying that --out is as it was
        evaluate(config)
    return 0
