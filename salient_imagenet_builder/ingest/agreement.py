"""Agreement statistics of a study: per pair, per annotator, and Fleiss' kappa over all pairs.

Fleiss' kappa (Fleiss 1971): with n answers per pair and n_ij answers of choice j for pair i,
P_i = (sum_j n_ij^2 - n) / (n (n - 1)), p_j = sum_i n_ij / (N n), kappa = (mean P_i - sum p_j^2) / (1 - sum p_j^2).
"""

from collections import Counter, defaultdict

from ..core.annotations import classify, parse_band
from ..core.constants import ANSWER_CHOICES, GENERALIZE_CHOICES, SPURIOUS_ANSWERS, majority_of


def fleiss_kappa(counts: list[list[int]]) -> float:
    """counts[i][j]: answers of choice j for item i, the same total n >= 2 for every item; NaN when undefined
    (every answer the same choice: no disagreement to measure against)."""
    if not counts:
        return float("nan")
    n = sum(counts[0])
    if n < 2 or any(sum(row) != n for row in counts):
        raise ValueError("Fleiss' kappa needs the same number (>= 2) of answers for every item")
    items = len(counts)
    p_bar = sum((sum(c * c for c in row) - n) / (n * (n - 1)) for row in counts) / items
    shares = [sum(row[j] for row in counts) / (items * n) for j in range(len(counts[0]))]
    p_e = sum(p * p for p in shares)
    return float("nan") if p_e == 1 else (p_bar - p_e) / (1 - p_e)


def pair_agreement(grouped: dict, majority: int) -> list[dict]:
    """Per pair: votes, label, the share of answers agreeing with the most common answer, mean confidence."""
    table = []
    for key in sorted(grouped):
        rows = grouped[key]
        votes = Counter(r.answer for r in rows)
        kind, sub_type = classify((r.answer for r in rows), majority)
        table.append({"class_index": key[0], "feature_index": key[1], "answers": len(rows),
                      **{f"votes_{c}": votes[c] for c in ANSWER_CHOICES}, "kind": kind, "spurious_type": sub_type,
                      "agreement": round(max(votes.values()) / len(rows), 3),
                      "mean_confidence": round(sum(r.confidence for r in rows) / len(rows), 2)})
    return table


def annotator_agreement(grouped: dict, majority: int) -> list[dict]:
    """Per annotator: answers, how often the answer's side (core / spurious) matches the pair's label, how often
    it is the pair's most common answer, mean confidence."""
    stats = defaultdict(lambda: {"answers": 0, "with_label": 0, "with_plurality": 0, "confidence": 0.0})
    for rows in grouped.values():
        kind, _ = classify((r.answer for r in rows), majority)
        plurality = Counter(r.answer for r in rows).most_common(1)[0][0]
        for r in rows:
            s = stats[r.worker_id]
            s["answers"] += 1
            s["with_label"] += (r.answer in SPURIOUS_ANSWERS) == (kind == "spurious")
            s["with_plurality"] += r.answer == plurality
            s["confidence"] += r.confidence
    return [{"annotator": worker, "answers": s["answers"],
             "agrees_with_label": round(s["with_label"] / s["answers"], 3),
             "agrees_with_plurality": round(s["with_plurality"] / s["answers"], 3),
             "mean_confidence": round(s["confidence"] / s["answers"], 2)} for worker, s in sorted(stats.items())]


def kappa_of(grouped: dict) -> float:
    """Fleiss' kappa of the answers; NaN (printed "n/a") when a pair has a single answer: no agreement to measure."""
    if any(len(rows) < 2 for rows in grouped.values()):
        return float("nan")
    return fleiss_kappa([[sum(r.answer == c for r in rows) for c in ANSWER_CHOICES] for rows in grouped.values()])


# --- a generalization study -----------------------------------------------------------------------------------

def band_verdicts(grouped: dict, majority: int | None = None) -> list[dict]:
    """Per (pair, band), sorted by class, feature, band: the answers per choice and the verdict, `same` when at
    least `majority` of the band's answers are `same` (default: a majority, `majority_of`), else `not_same`."""
    table = []
    for key in sorted(grouped, key=lambda k: (k[0], k[1], parse_band(k[2]))):
        votes = Counter(r.answer for r in grouped[key])
        answers = len(grouped[key])
        table.append({"class_index": key[0], "feature_index": key[1], "band": key[2], "answers": answers,
                      **{c: votes[c] for c in GENERALIZE_CHOICES},
                      "verdict": "same" if votes["same"] >= (majority or majority_of(answers)) else "not_same"})
    return table


def band_statistics(grouped: dict, verdicts: list[dict]) -> list[dict]:
    """Per band: pairs, the share judged `same` (the paper's figure), the mean share of answers agreeing with the
    pair's most common answer, and Fleiss' kappa over the four choices (NaN when undefined)."""
    stats = []
    for band in sorted({v["band"] for v in verdicts}, key=parse_band):
        keys = [k for k in grouped if k[2] == band]
        counts = [[sum(r.answer == c for r in grouped[k]) for c in GENERALIZE_CHOICES] for k in keys]
        same = sum(v["verdict"] == "same" for v in verdicts if v["band"] == band)
        sizes = {sum(c) for c in counts}
        stats.append({"band": band, "pairs": len(keys), "same": same, "share_same": same / len(keys),
                      "agreement": sum(max(c) / sum(c) for c in counts) / len(keys),
                      "kappa": fleiss_kappa(counts) if len(sizes) == 1 and min(sizes) >= 2 else float("nan")})
    return stats
