"""Feature ranking: the top features of each class by importance, as the builder ranks them, and `pairs.csv`.

FI[c, j] = mean over the images grouped into c of r_j(x) * W[c, j] (`core.scan.FeatureImportance`); the
`features_per_class` largest give the (class, feature) pairs to annotate, with rank 1 = most important.
`pairs.csv` holds one row per pair with the task inputs under the published results CSV's `Input.*` names, so the
same file can be uploaded as a crowdsourcing batch and `ingest` can check answers against it.
"""

import csv
import io
import logging
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..core.output import write_text_atomic
from ..core.scan import ScanResult
from ..core.schema import class_definition, class_names, wordnet_ids
from .study_format import STUDY_PAIR_COLUMNS

log = logging.getLogger(__name__)


@dataclass
class PairTask:
    class_index: int
    feature_index: int
    feature_rank: int
    importance: float
    top: list[tuple[int, float]] = field(default_factory=list)  # (position in the scan's image table, r_j(x))
    context: list[int] = field(default_factory=list)  # positions of the class's context images

    @property
    def wordnet_id(self) -> str:
        return wordnet_ids()[self.class_index]

    @property
    def class_name(self) -> str:
        return class_names()[self.class_index]

    @property
    def definition(self) -> str:
        return class_definition(self.class_index)

    @property
    def key(self) -> str:
        return f"{self.class_index}:{self.feature_index}"

    @property
    def panel(self) -> str:
        return f"panels/class{self.class_index:03d}_feature{self.feature_index:04d}.png"

    def page_task(self) -> dict:
        """The pair as the annotation page shows it."""
        return {"key": self.key, "class_index": self.class_index, "wordnet_id": self.wordnet_id,
                "class_name": self.class_name, "definition": self.definition, "feature_index": self.feature_index,
                "feature_rank": self.feature_rank, "panel": self.panel}


def rank_pairs(result: ScanResult, weight: torch.Tensor, features_per_class: int) -> list[PairTask]:
    """The top features of every scanned class that received images, in (class, rank) order."""
    importance = result.fi.importance(weight)
    tasks, empty = [], [c for c in result.classes if int(result.fi.counts[c]) == 0]
    if empty and len(empty) < len(result.classes):
        log.warning("%d class(es) received no image, so no pairs: %s%s", len(empty), empty[:20],
                    " ..." if len(empty) > 20 else "")
    for c in result.classes:
        if int(result.fi.counts[c]) == 0:
            continue
        order = torch.argsort(importance[c].nan_to_num(float("-inf")), descending=True, stable=True)
        for rank, j in enumerate(order[:features_per_class].tolist(), start=1):
            tasks.append(PairTask(c, j, rank, float(importance[c, j]), result.top_images(c, j),
                                  result.context_images(c)))
    return tasks


def write_pairs(path: Path, tasks: list[PairTask]) -> None:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(STUDY_PAIR_COLUMNS)
    for t in tasks:
        writer.writerow([t.wordnet_id, t.class_index, t.feature_index, t.feature_rank, t.class_name, t.panel])
    write_text_atomic(path, buffer.getvalue())
