"""Discovery's scan over work units: the builder's own unit runner (`build.units`), so a discovery is resumable
(rerun the same command after a crash: units already done are not read again) and runs under torchrun like a
build (ranks take units round-robin, rank 0 merges in unit order and writes the study).

The work folder lives in the study's staging folder (`.<out>.partial/work/`), fingerprinted by the source, model,
classes and scan settings; the finished study is the same whatever the number of ranks or where a run stopped.
"""

import json
import logging
from collections import Counter
from pathlib import Path

from .. import __version__, distributed
from ..build.decoding import BatchDecoder
from ..build.units import Unit, UnitFolder, fingerprint_hash, load_results, open_work, run_units
from ..constants import NUM_CLASSES, WORK_DIR
from ..stages import batched
from .scan import ScanResult, scan_unit

log = logging.getLogger(__name__)


def fingerprint(args, source, info, plan: list[Unit], classes: list[int]) -> dict:
    return {
        "package_version": __version__, "source": source.describe(), "split": args.split,
        "plan_sha256": fingerprint_hash({"plan": [u.spec for u in plan]}), "model": info.name, "arch": info.arch,
        "checkpoint_sha256": info.sha256 or info.checkpoint, "classes": classes, "limit": args.limit,
        "group_by": args.group_by, "top_images": args.top_images, "draft": not args.no_draft,
        "batch_size": args.batch_size,
    }


class ScanUnitWorker:
    """Built once per process: decode workers (shared-memory hand-over) and the model; `worker(unit)` scans one."""

    def __init__(self, source, model, classes, k, context_k, args, device, workers: int, class_filter):
        self.source, self.model, self.classes, self.k, self.context_k = source, model, classes, k, context_k
        self.args, self.device, self.class_filter = args, device, class_filter
        self.decoder = BatchDecoder(workers, args.batch_size, not args.no_draft,
                                    pin_memory=device.type == "cuda")

    def __call__(self, unit: Unit) -> ScanResult:
        self.source.unlabelled = Counter()  # labels outside 0-999 are a unit result, like the builder's
        samples = self.source.unit_samples(unit.spec, self.class_filter, self.args.limit)
        result = scan_unit(self._decoded(samples), self.model, self.classes, self.k, self.context_k,
                           self.args.group_by, self.args.batch_size, self.device)
        result.unlabelled = Counter({str(label): n for label, n in self.source.unlabelled.items()})
        return result

    def _decoded(self, samples):
        """(sample, uint8 view or None, error) in reading order, as `scan_unit` takes them."""
        for batch in batched(samples, self.args.batch_size):
            yield from self._one_batch(batch)

    def _one_batch(self, samples):
        decoded = self.decoder.collect(self.decoder.submit(samples))
        failed = {id(s): error for s, error in decoded.failed}
        views = iter(decoded.views.clone())  # the ring's slots are reused by the next batch
        for sample in samples:
            if id(sample) in failed:
                yield sample, None, failed[id(sample)]
            else:
                yield sample, next(views), None

    def close(self) -> None:
        self.decoder.close()


def scan_in_units(args, source, model, info, classes, k, context_k, device, world, staging: Path, workers: int,
                  ) -> ScanResult:
    """Run (or resume) the scan's units on this rank; every rank returns the merged result (rank 0 uses it)."""
    class_filter = None if len(classes) == NUM_CLASSES else set(classes)
    plan = [Unit(i, spec) for i, spec in enumerate(source.plan_units(class_filter, args.limit, args.unit_size))]
    work = staging / WORK_DIR
    if world.is_main:
        open_work(work, fingerprint(args, source, info, plan, classes), args.restart)
    distributed.barrier()
    folder = UnitFolder(work, "discover-scan")
    stats = run_units(plan, folder, lambda: ScanUnitWorker(source, model, classes, k, context_k, args, device,
                                                           workers, class_filter),
                      world, "discover scan", desc=f"scan: robust model over {len(plan)} units")
    total = ScanResult.empty(classes, model.num_features, k, context_k)
    for _, result in load_results(plan, folder, ScanResult):
        total.merge(result).compact()
    log.debug("discover scan units: %s", json.dumps(stats))
    return total
