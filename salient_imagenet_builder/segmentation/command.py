"""`salient-imagenet validate`: a build's soft masks scored against human segmentations of the same images, as a job
of the engine (`core.job.Job`: the claim of `--out`, the lock, the staging folder and the swap are the base's)."""

from pathlib import Path

from ..core.dataset import DatasetView
from ..core.errors import InputError
from ..core.job import Job, run_command
from .human import HumanMasks
from .options import ValidateConfig
from .report import summary, write_report
from .scoring import score_dataset


class ValidateJob(Job):
    kind = "report"


    def check(self) -> None:
        self.humans = HumanMasks(self.config.human_masks, self.config.format)

    def prepare(self) -> None:
        config = self.config
        view = DatasetView(config.dataset, config.split, command="validate")
        self.scores = score_dataset(view, self.humans)
        if self.scores.images and self.scores.without_mask == self.scores.images:
            raise InputError(f"--human-masks {config.human_masks}: no mask for any of the build's "
                             f"{self.scores.images} images (expected <folder>/<wnid>/<image_id>.png)")

    def write(self, staging: Path) -> dict:
        facts = summary(self.scores, self.config.dataset, self.config.human_masks, self.config.format,
                        self.config.command)
        return {"facts": facts, "files": [self.out / p.name for p in write_report(staging, self.scores, facts)]}


def run(config: ValidateConfig) -> int:
    job = ValidateJob(config)
    done = run_command(job)
    for kind, numbers in done["facts"]["kinds"].items():
        mean = "n/a" if numbers["energy_inside"] is None else f"{numbers['energy_inside']:.3f}"
        print(f"{kind}: energy_inside {mean} over {numbers['pairs']} pairs")
    print(f"{job.scores.scored} masks scored; {job.scores.without_mask} of {job.scores.images} images without a "
          "human mask")
    print("Wrote " + ", ".join(str(p) for p in done["files"]))
    return 0
