"""`--bands`: ranges of ranks within a pair's top-k that Section B shows, checked against the build."""

from ..core.constants import ANNOTATOR_TOP_IMAGES
from ..core.errors import InputError
from .study_format import parse_band


def parse_bands(text: str | tuple | list) -> list[tuple[int, int]]:
    """"6-10,31-35" (or a list of such texts) -> [(6, 10), (31, 35)], in rank order, each once."""
    items = text.split(",") if isinstance(text, str) else list(text)
    bands = []
    for item in (i.strip() for i in items):
        try:
            band = parse_band(item)
        except InputError as e:
            raise InputError(f"--bands {text if isinstance(text, str) else ','.join(items)}: {e}") from None
        if band[0] <= ANNOTATOR_TOP_IMAGES:
            raise InputError(f"--bands: {item} overlaps Section A (ranks 1-{ANNOTATOR_TOP_IMAGES}, the top images "
                             f"annotators labelled); bands start at rank {ANNOTATOR_TOP_IMAGES + 1} or later")
        if band not in bands:
            bands.append(band)
    if not bands:
        raise InputError("--bands: give at least one band of ranks, e.g. 6-10,31-35,61-65")
    return sorted(bands)


def check_within(bands: list[tuple[int, int]], top_k: int | None, dataset: str) -> None:
    """A band beyond the build's top-k has no masks to show: one line that says which ranks exist."""
    if top_k is None:  # --top-k all: every image of the group is ranked
        return
    beyond = [f"{a}-{b}" for a, b in bands if b > top_k]
    if beyond:
        inside = f"; bands within {ANNOTATOR_TOP_IMAGES + 1}-{top_k}" if top_k > ANNOTATOR_TOP_IMAGES else ""
        raise InputError(f"--bands {','.join(beyond)}: beyond the top-k of {dataset} ({top_k}): each pair has masks "
                         f"for its top {top_k} images only{inside}")
