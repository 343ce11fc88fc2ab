"""A finished shard is kept on a rerun only while its images are as they were: one the copy holds elsewhere now
(another file name, an image that was missing) or one that did not decode and decodes now (the user replaced the
file) joins that shard again; the other shards are kept. Images that did not decode are read again to know: a file
still bad keeps its shard as it was, and the same line fails the command again."""

import logging
from collections import defaultdict

from ..core.sources import Source
from ..core.units import Unit, UnitFolder
from .errors import reading_copy
from .join import ImageJob

log = logging.getLogger(__name__)


def redo_changed(folder: UnitFolder, plan: list[Unit], source: Source, refs: dict[str, str], job: ImageJob,
                 imagenet: str) -> set[str]:
    """Discard the finished units whose images changed (see the module); returns the refs of the images that
    decode now (a copy read by row group reads their row groups again too)."""
    for unit in folder.discard_changed(plan):  # its spec names where the copy holds its images
        log.info("attach: the copy holds images of %s elsewhere now (or holds some it lacked): joining that shard "
                 "again", unit.spec["shard"])
    failed = {u["image_id"]: unit.index for unit in plan if unit.index in folder.done()
              for u in folder.read_marker(unit.index)["unreadable"]}
    if not failed:
        return set()
    fixed: dict[int, list[str]] = defaultdict(list)
    with reading_copy(imagenet):
        for image_id, data in source.read_ids({i: refs[i] for i in failed}):
            if job((image_id, data))[2] is None:
                fixed[failed[image_id]].append(image_id)
    for index, ids in sorted(fixed.items()):
        log.info("attach: %d image(s) of %s that did not decode before decode now (e.g. %s): joining that shard "
                 "again; the other shards' finished work is kept", len(ids), plan[index].spec["shard"], ids[0])
        folder.discard(index)
    return {refs[i] for ids in fixed.values() for i in ids}
