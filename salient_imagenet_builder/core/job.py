"""One run of a command that writes an output folder, owned by the engine, in the spirit of `datasets`'
`DatasetBuilder`: the base owns the run, a command fills in only its own steps.

The base (`Job.run`), in order:
1. the world: one process, or (a `distributed` job) every rank torchrun or another launcher started
   (RANK / WORLD_SIZE / MASTER_ADDR in the environment), in one process group;
2. on rank 0, `--out` checked (`core.output.check_out`): what it may be, and nothing there this tool did not write
   when the job replaces the folder; then `check()` on every rank: the inputs that can be checked without writing;
3. the claim, on rank 0: one run at a time (a lock), the staging folder `.<out>.partial`, an interrupted swap
   finished or undone;
4. `prepare()` on every rank; for a `resumable` job, the work folder kept by an interrupted run with the same
   `fingerprint()` (another one is refused, or dropped with `restart`);
5. `work(work_folder)` on every rank (the job's work units, `core.units`);
6. `write(staging)` on rank 0, then the swap into place.
A failure on rank 0 reaches every rank (they stop with "rank 0 stopped: ..."), and one on any rank during the steps
every rank runs stops the others too; nobody waits at a barrier for a rank that gave up. On a failure or Ctrl-C the
staging folder goes, but for the finished work a rerun resumes from (never the work of another run); the output
stays as it was. A job returns whatever `write` returned.
"""

import logging
import shutil
from pathlib import Path

from . import distributed
from .constants import WORK_DIR
from .distributed import World
from .output import check_out, staging_folder
from .staging import discard_staging, interruptible, move_into_place, prepare_output
from .units import WorkLock, open_work

__all__ = ["Job", "run_command"]

log = logging.getLogger(__name__)


class Job:
    kind: str = ""  # the registered output kind it writes (`core.registry.OutputKind`)
    distributed = False  # runs on every rank of a torchrun job
    resumable = False  # keeps its finished work units in <staging>/work for a rerun with the same fingerprint
    replacing = True  # False: keeps every file of the earlier output (it is updated, not replaced)
    source_option = "source"  # the config's input folder, which --out must stay out of ("": none)

    def __init__(self, config, out=None):
        """`config`: the command's options; the lifecycle reads the shared ones it has (`--out` unless `out` is
        given, `--overwrite`, `--restart`, `--device`, the `source_option`)."""
        self.config = config
        self.out = Path(config.out if out is None else out)
        self.overwrite, self.restart = getattr(config, "overwrite", False), getattr(config, "restart", False)
        self.source_path = getattr(config, self.source_option, None) if self.source_option else None
        self.requested_device = getattr(config, "device", None)
        self.world, self.device = World(), None
        self.staging = staging_folder(self.out)
        self.lock = None
        self.ours = False  # the work folder is this run's (not that of an earlier run with other settings)

    # --- the steps a command fills in -------------------------------------------------------------------------

    def check(self) -> None:
        """Every rank, before anything is claimed: the inputs that can be checked without writing."""

    def prepare(self) -> None:
        """Every rank, after the claim: models, sources, the plan."""

    def fingerprint(self) -> dict:
        """A resumable job: what makes two runs the same (a work folder of another is refused)."""
        raise NotImplementedError

    def work(self, work: Path) -> None:
        """Every rank: the job's work units, under `work` (a resumable job's finished units survive a failure)."""

    def write(self, staging: Path):
        """Rank 0: the output's files, into the staging folder; returns what the job returns."""
        raise NotImplementedError

    def keeps_nothing(self, error: BaseException) -> bool:
        """After this failure nothing is worth keeping for a rerun (it would fail the same way)."""
        return False

    # --- the run (the base's) ---------------------------------------------------------------------------------

    @property
    def work_folder(self) -> Path:
        return self.staging / WORK_DIR

    def run(self):
        if self.distributed:
            self.world = distributed.world_from_env()
            self.device = distributed.device_for(self.world, self.requested_device)
        joined = distributed.init(self.world, self.device) if self.distributed else False
        try:
            distributed.on_main(self.world, self._check_out)  # --out first: a refusal names nothing else
            distributed.together(self.world, self.check)
            distributed.on_main(self.world, self._claim)
            try:
                return self._run()
            finally:
                if self.lock is not None:
                    self.lock.release()
        finally:
            if joined:
                distributed.destroy()

    def _run(self):
        try:
            distributed.together(self.world, self.prepare)
            if self.resumable:
                distributed.on_main(self.world, lambda: open_work(self.work_folder, self.fingerprint(),
                                                                  self.restart))
            self.ours = True
            distributed.together(self.world, lambda: self.work(self.work_folder))
            result = distributed.on_main(self.world, lambda: self.write(self.staging))
            distributed.on_main(self.world, lambda: move_into_place(self.staging, self.out))
        except BaseException as error:
            if self.world.is_main:
                self._clean_up(error)
            raise
        return result

    def _check_out(self) -> None:
        check_out(self.out, self.overwrite, self.source_path, self.kind, self.replacing)

    def _claim(self) -> None:
        """Rank 0: --out checked again (the inputs' checks took time), then locked (one run at a time), then the
        staging folder made."""
        self._check_out()
        self.lock = WorkLock(self.work_folder, f"--out {self.out}")
        try:
            prepare_output(self.out, self.overwrite, self.source_path, self.kind, self.replacing)
        except BaseException:
            discard_staging(self.staging)
            self.lock.release()
            self.lock = None
            raise

    def _clean_up(self, error: BaseException) -> None:
        """The output stays as it was; the staging folder goes, but for finished work a rerun resumes from."""
        if self.ours and self.keeps_nothing(error):
            shutil.rmtree(self.staging, ignore_errors=True)
        elif not self.ours or self.resumable:
            discard_staging(self.staging)
        else:  # nothing of it can be resumed
            shutil.rmtree(self.staging, ignore_errors=True)


def run_command(job: Job):
    """A job run by the command line: Ctrl-C is one line that says whether finished work was kept."""
    with interruptible(job.out):
        return job.run()
