"""update's sections of a dataset card: the generalization studies and the validation against human segmentations
it recorded (`core.registry.CardPart`s, rendered by the card from the build's statistics)."""

from ..core.markdown import md_text

__all__ = ["generalization_section", "generalization_studies", "validation_section"]


def generalization_studies(summary: dict | None) -> list[dict]:
    """The study files `update --generalization` recorded, in order, as {file, sha256} (builds updated before
    studies accumulated name one file)."""
    if not summary:
        return []
    return summary.get("studies") or [{"file": summary["file"], "sha256": summary["sha256"]}]


def generalization_section(summary: dict | None) -> str:
    """The generalization studies `update` recorded: a table per band (pairs studied, share judged same)."""
    if not summary:
        return ""
    rows = "\n".join(f"| {b['band']} | {b['pairs']} | {b['same']} | {b['share_same']:.2f} |" for b in summary["bands"])
    files = "; ".join(f"{md_text(s['file'])}, sha256 `{s['sha256']}`" for s in generalization_studies(summary))
    return ("\n## Generalization study\n\nDo a pair's lower-ranked images show the same visual attribute as its top "
            f"{summary['top_images']}? Annotators compared the top images with a band of lower ranks; a band's verdict "
            "is `same` when enough of its answers are `same` (a majority unless `ingest --majority` set another "
            f"count). Recorded from these studies, in order: {files}; a pair's band studied again keeps the later "
            "answers. The `annotations` config has each pair's bands (`generalization`) and `generalizes_to_rank` (the "
            f"last rank of the unbroken run from rank {summary['top_images'] + 1} up that a band judged `same` covers "
            "and no band judged `not_same` does); `salient-imagenet evaluate --generalized-only` uses only those "
            "masks.\n\n"
            f"| band (ranks) | pairs studied | judged same | share judged same |\n|---|---|---|---|\n{rows}\n")


def _number(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def validation_section(summary: dict | None) -> str:
    """The scores against human segmentations `update --validation` recorded: per kind, the pairs' energy_inside."""
    if not summary:
        return ""
    rows = "\n".join(f"| {k['kind']} | {k['pairs']} | {k['scored']} | {_number(k['mean'])} | "
                     f"{_number(k['median'])} |" for k in summary["kinds"])
    source = (f" against {md_text(summary['human_masks'])} (format `{summary['format']}`)"
              if summary.get("human_masks") else "")
    return ("\n## Validation against human segmentations\n\nThe soft masks were scored"
            f"{source} by `salient-imagenet validate`: per image and feature, `energy_inside = sum(m * H) / sum(m)`, "
            "the share of the mask's mass on the human object mask H; per pair, the mean over its images with a human "
            "mask; here the mean and median over pairs (file "
            f"{md_text(summary['file'])}, sha256 `{summary['sha256']}`). Core masks should put most of their mass on "
            "the object, spurious masks little.\n\n"
            f"| kind | pairs | pairs scored | mean energy_inside | median |\n|---|---|---|---|---|\n{rows}\n")
