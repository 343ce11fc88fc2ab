"""Feature ranking: the top features of each class by importance, as the builder ranks them, and `pairs.csv`.

FI[c, j] = mean over the images grouped into c of r_j(x) * W[c, j] (`build.selection.FeatureImportance`); the
`features_per_class` largest give the (class, feature) pairs to annotate, with rank 1 = most important.
`pairs.csv` holds one row per pair with the task inputs under the published results CSV's `Input.*` names, so the
same file can be uploaded as a crowdsourcing batch and `ingest` can check answers against it.
"""

import csv
import io
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..annotations import csv_reader
from ..build.output import write_text_atomic
from ..constants import PAIRS_FILE
from ..errors import InputError
from ..schema import class_names, imagenet_info, wordnet_ids
from .scan import ScanResult

log = logging.getLogger(__name__)

PAIR_COLUMNS = ("Input.wordnet_id", "Input.class_index", "Input.feature_index", "Input.feature_rank",
                "Input.class_name", "Input.panel")


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
        detailed = imagenet_info().index_to_description(self.class_index, detailed=True)
        return detailed.partition(": ")[2] or detailed

    @property
    def key(self) -> str:
        return f"{self.class_index}:{self.feature_index}"

    @property
    def panel(self) -> str:
        return f"panels/class{self.class_index:03d}_feature{self.feature_index:04d}.png"


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
    writer.writerow(PAIR_COLUMNS)
    for t in tasks:
        writer.writerow([t.wordnet_id, t.class_index, t.feature_index, t.feature_rank, t.class_name, t.panel])
    write_text_atomic(path, buffer.getvalue())


def read_pairs(path: str | os.PathLike) -> dict[tuple[int, int], dict]:
    """(class_index, feature_index) -> the row of a `pairs.csv`; errors name the file and row."""
    path = Path(path)
    if path.is_dir() and (path / PAIRS_FILE).is_file():  # the study folder itself
        path = path / PAIRS_FILE
    if not path.exists():
        raise InputError(f"pairs file not found: {path} (discover writes it into its --out folder)")
    with csv_reader(path) as reader:
        missing = [c for c in PAIR_COLUMNS[:4] if c not in (reader.fieldnames or [])]
        if missing:
            raise InputError(f"{path}: not a pairs.csv: missing column(s) {', '.join(missing)}")
        pairs = {}
        for row in reader:
            try:
                key = (int(row["Input.class_index"]), int(row["Input.feature_index"]))
                row["Input.feature_rank"] = int(row["Input.feature_rank"])
            except (TypeError, ValueError):
                raise InputError(f"{path}, row {reader.line_num}: class, feature and rank must be integers") from None
            pairs[key] = row
    return pairs
