"""Ingest an annotation study: merge the answer CSVs exported from the annotation page (or a crowdsourcing
platform's results in the same format) into the one CSV that records them: the annotation CSV a build reads (a
discovery study), the generalization CSV `update` records (a generalization study). The study's format is the one
its pairs.csv has, as the capability that made the study registered it (`core.studies.StudyFormat`).

The stages, in order:
1. `answers.unreadable` / `answers.read_answers`: read every file, validate each row against the study's `pairs.csv`
   (unknown task, bad answer, confidence out of range, one annotator answering a task twice), each problem naming
   file and row;
2. `answers.check_quorum`: every task needs its answers (default 5; fewer is a problem naming the task);
3. the format's `merge`: its statistics printed (labels by the majority rule and agreement; verdicts per band), the
   CSV to write, read back as it will be read;
4. `command`: the handler of `salient-imagenet ingest` (`options` declares `IngestConfig` and the command): writes
   the CSV only when all is right (atomically).
"""

from ..core.lazy import lazy_exports
from .options import IngestConfig

__all__ = ["IngestConfig", "IngestError", "by_pair", "check_quorum", "read_answers"]
__getattr__, __dir__ = lazy_exports(__name__, {"IngestError": ".answers", "by_pair": ".answers",
                                               "check_quorum": ".answers", "read_answers": ".answers"})
