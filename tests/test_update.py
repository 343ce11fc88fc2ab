"""The generalization study's answers end to end on a real build: ingest (vote counts checked by hand), update
(generalizes_to_rank by hand, image shards byte-identical, check passes, load_dataset shows the columns) and
evaluate --generalized-only (only the allowed masks, against an independent count)."""

import csv
import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import CLASSES, build_top7, built_once
from datasets import load_dataset

from salient_imagenet_builder.cli import main
from salient_imagenet_builder.core.card import BuildStats, read_build_info, write_card
from salient_imagenet_builder.core.schema import legacy_annotation_features, wordnet_ids
from salient_imagenet_builder.core.writer import ShardWriter, encode_rows
from salient_imagenet_builder.evaluation.generalized import keep_generalized
from salient_imagenet_builder.evaluation.rows import load_eval_data, mask_uint8
from salient_imagenet_builder.generalize.study_format import ANSWER_COLUMNS as GENERALIZE_ANSWER_COLUMNS
from salient_imagenet_builder.publish.validate import check

BANDS = ("6-6", "7-7")
# answers per (pair position, band): how many of the 5 say `same`, the rest split as written
SAME_COUNTS = {(0, "6-6"): 5, (0, "7-7"): 3, (1, "6-6"): 4, (1, "7-7"): 2, (2, "6-6"): 2, (2, "7-7"): 5}
# by hand: a verdict is `same` with at least 3 of 5; generalizes_to_rank: pair 0 both bands -> 7, pair 1 only the
# first -> 6, pair 2 the first fails -> 5; the other pairs were not studied -> None
EXPECTED_RANK = {0: 7, 1: 6, 2: 5}


@pytest.fixture(scope="module")
def built(inputs, tmp_path_factory) -> Path:
    return built_once(tmp_path_factory, "top7", lambda root: build_top7(inputs, root))


@pytest.fixture(scope="module")
def studied_pairs(built) -> list[tuple[int, int]]:
    """Three annotated pairs whose class has images beyond rank 5 (so the bands mean something)."""
    rows = load_dataset(str(built), "annotations", split="train")
    pairs = sorted((r["class_index"], r["feature_index"]) for r in rows if r["group_size"] >= 7)
    assert len(pairs) >= 4
    return [pairs[0], pairs[1], pairs[-1]]


def write_study(folder: Path, pairs: list[tuple[int, int]], same_counts: dict = SAME_COUNTS) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    wnids = wordnet_ids()
    with open(folder / "pairs.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["Input.class_index", "Input.feature_index", "Input.band", "Input.wordnet_id",
                         "Input.top_image_ids", "Input.band_image_ids"])
        for c, j in pairs:
            for band in BANDS:
                writer.writerow([c, j, band, wnids[c], "a;b;c;d;e", "f"])
    files = []
    for half, workers in enumerate((("w1", "w2", "w3"), ("w4", "w5"))):  # two annotators' exports, two files
        path = folder / f"answers-{half}.csv"
        with open(path, "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(GENERALIZE_ANSWER_COLUMNS)
            for position, (c, j) in enumerate(pairs):
                for band in BANDS:
                    answers = ["same"] * same_counts[(position, band)] + ["different", "A_unclear", "B_unclear",
                                                                          "different", "different"]
                    for worker in workers:
                        number = int(worker[1]) - 1
                        writer.writerow([worker, c, j, band, answers[number], 4, f"because {number}"])
        files.append(path)
    return files


def expected_csv(pairs) -> list[dict]:
    """The vote count by hand: `same` as set; the others in the order different, A_unclear, B_unclear, different,
    different fill the remaining answers."""
    rows = []
    for position, (c, j) in enumerate(pairs):
        for band in BANDS:
            same = SAME_COUNTS[(position, band)]
            rest = ["different", "A_unclear", "B_unclear", "different", "different"][:5 - same]
            rows.append({"class_index": str(c), "feature_index": str(j), "band": band, "answers": "5",
                         "same": str(same), "different": str(rest.count("different")),
                         "A_unclear": str(rest.count("A_unclear")), "B_unclear": str(rest.count("B_unclear")),
                         "verdict": "same" if same >= 3 else "not_same"})
    return rows


def read_csv(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def sha256_tree(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted((folder / "data").glob("train-*"))}


def test_ingest_counts_the_votes_per_band(studied_pairs, tmp_path, capsys):
    files = write_study(tmp_path / "study", studied_pairs)
    out = tmp_path / "generalization.csv"
    assert main(["ingest", *map(str, files), "--pairs", str(tmp_path / "study"), "--out", str(out)]) == 0
    assert read_csv(out) == expected_csv(studied_pairs)
    printed = capsys.readouterr().out
    assert "    6-6 |     3 |     2 | 0.67" in printed  # pairs 0 and 1 judged same in band 6-6
    assert "    7-7 |     3 |     2 | 0.67" in printed  # pairs 0 and 2 in band 7-7


def test_ingest_names_file_and_row_and_writes_nothing(studied_pairs, tmp_path, caplog):
    files = write_study(tmp_path / "study", studied_pairs)
    lines = files[1].read_text().splitlines()
    lines[3] = lines[3].replace(",4,", ",9,")  # confidence out of range
    fields = lines[4].split(",")
    fields[4] = "maybe"  # Answer.main_question
    lines[4] = ",".join(fields)
    files[1].write_text("\n".join(lines) + "\n")
    out = tmp_path / "generalization.csv"
    assert main(["ingest", *map(str, files), "--pairs", str(tmp_path / "study"), "--out", str(out)]) == 2
    assert not out.exists()
    assert f"{files[1]}, row 4: confidence '9' out of range" in caplog.text
    assert f"{files[1]}, row 5: bad answer 'maybe': Answer.main_question must be one of" in caplog.text


@pytest.fixture(scope="module")
def updated(built, studied_pairs, tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("updated")
    files = write_study(root / "study", studied_pairs)
    csv_path = root / "generalization.csv"
    assert main(["ingest", *map(str, files), "--pairs", str(root / "study"), "--out", str(csv_path)]) == 0
    dataset = root / "salient"
    shutil.copytree(built, dataset)
    before = sha256_tree(dataset)
    assert main(["update", str(dataset), "--generalization", str(csv_path)]) == 0
    return {"dataset": dataset, "before": before}


def test_update_records_the_study_and_keeps_the_image_shards(updated, studied_pairs):
    dataset = updated["dataset"]
    assert sha256_tree(dataset) == updated["before"] and updated["before"]
    assert not any(p.name.startswith(".") for p in dataset.parent.iterdir())  # no staging folder left
    assert check(str(dataset)) == []
    rows = load_dataset(str(dataset), "annotations", split="train")
    by_pair = {(r["class_index"], r["feature_index"]): r for r in rows}
    for position, pair in enumerate(studied_pairs):
        assert by_pair[pair]["generalizes_to_rank"] == EXPECTED_RANK[position]
        assert [b["band"] for b in by_pair[pair]["generalization"]] == list(BANDS)
        assert by_pair[pair]["generalization"][0]["same"] == SAME_COUNTS[(position, "6-6")]
    others = [r for k, r in by_pair.items() if k not in studied_pairs]
    assert others and all(r["generalizes_to_rank"] is None and r["generalization"] is None for r in others)
    card = (dataset / "README.md").read_text()
    assert "## Generalization study" in card
    assert "| 6\\-6 | 3 | 2 | 0.67 |" in card or "| 6-6 | 3 | 2 | 0.67 |" in card


def test_update_refuses_pairs_the_build_does_not_have(built, studied_pairs, tmp_path, caplog):
    files = write_study(tmp_path / "study", [(studied_pairs[0][0], 511), *studied_pairs[1:]])
    csv_path = tmp_path / "generalization.csv"
    assert main(["ingest", *map(str, files), "--pairs", str(tmp_path / "study"), "--out", str(csv_path)]) == 0
    dataset = tmp_path / "salient"
    shutil.copytree(built, dataset)
    card = (dataset / "README.md").read_bytes()
    assert main(["update", str(dataset), "--generalization", str(csv_path)]) == 2
    assert "1 pair(s) are not annotated pairs of this build, e.g. class 0 feature 511" in caplog.text
    assert (dataset / "README.md").read_bytes() == card


def test_generalized_only_keeps_only_the_allowed_masks(updated, studied_pairs):
    dataset = str(updated["dataset"])
    limits = {pair: EXPECTED_RANK[i] for i, pair in enumerate(studied_pairs)}
    data = load_eval_data(dataset, workers=0, progress=False)
    counts = keep_generalized(data, limits)
    # independently: from the rows, the entries of studied pairs within their limit, and their maxima per kind
    rows = load_dataset(dataset, split="train")
    expected_masks, used, total = {}, 0, 0
    for r in rows:
        kept = {"core": [], "spurious": []}
        for f in r["features"]:
            total += 1
            limit = limits.get((r["group"], f["feature_index"]))
            if limit is not None and f["rank"] <= limit:
                used += 1
                kept[f["kind"]].append(mask_uint8(_png(f["mask"])))
        expected_masks[r["image_id"]] = {k: np.max(v, axis=0) if v else None for k, v in kept.items()}
    assert counts["feature_masks"] == total and counts["feature_masks_used"] == used < total
    for row, image_id in enumerate(data.image_ids):
        for kind, slots in (("core", data.core_mask), ("spurious", data.spurious_mask)):
            expected = expected_masks[image_id][kind]
            if expected is None:
                assert slots[row] == -1
            else:
                assert np.array_equal(data.masks[slots[row]].numpy(), expected)
    assert len(data.feature_row) == used
    assert {(int(g), int(f)) for g, f in zip(data.pairs.group, data.pairs.feature_index)} <= set(limits)


def _png(image) -> bytes:
    import io
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def test_evaluate_generalized_only_on_the_command_line(updated, built, tmp_path, capsys, caplog):
    from salient_imagenet_builder.builder.demo import make_checkpoint

    checkpoint = make_checkpoint(tmp_path / "resnet10t.ckpt", arch="resnet10t", classes=CLASSES)
    args = ["evaluate", "--model", "resnet10t", "--checkpoint", str(checkpoint), "--draws", "1", "--workers", "0",
            "--generalized-only"]
    assert main([*args, "--dataset", str(updated["dataset"]), "--out", str(tmp_path / "results")]) == 0
    summary = json.loads((tmp_path / "results" / "resnet10t-resnet10t" / "summary.json").read_text())
    counts = summary["dataset"]["generalized_only"]
    assert f"--generalized-only: {counts['feature_masks_used']} of {counts['feature_masks']} feature masks used" in \
        capsys.readouterr().out
    assert counts["pairs"] - counts["pairs_not_studied"] == 3
    # a build with no study recorded: one line that says what to run
    assert main([*args, "--dataset", str(built), "--out", str(tmp_path / "results2")]) == 2
    assert "no pair has a generalizes_to_rank; run salient-imagenet update DATASET --generalization" in caplog.text


def make_legacy(built: Path, folder: Path) -> Path:
    """The build as builds were before the generalization columns: annotation shards, card and build_info
    without them."""
    shutil.copytree(built, folder)
    info = read_build_info(folder)
    stats = BuildStats.from_dict(info["stats"])
    stats.generalization_columns = False
    rows = load_dataset(str(folder), "annotations", split="train").to_list()
    for path in (folder / "data").glob("annotations-*.parquet"):
        path.unlink()
    legacy = legacy_annotation_features()
    writer = ShardWriter(folder / "data", "annotations", legacy)
    writer.write(encode_rows([{k: r[k] for k in legacy} for r in rows], legacy))
    writer.close()
    info["stats"] = {k: v for k, v in stats.to_dict().items() if k not in ("generalization_columns", "updates")}
    (folder / "build_info.json").write_text(json.dumps(info))
    write_card(folder, info["provenance"], stats, info["split"])
    return folder


def test_builds_without_the_columns_still_load_check_and_update(built, studied_pairs, tmp_path):
    legacy = make_legacy(built, tmp_path / "legacy")
    assert check(str(legacy)) == []
    assert "generalizes_to_rank" not in load_dataset(str(legacy), "annotations", split="train").column_names
    files = write_study(tmp_path / "study", studied_pairs)
    csv_path = tmp_path / "generalization.csv"
    assert main(["ingest", *map(str, files), "--pairs", str(tmp_path / "study"), "--out", str(csv_path)]) == 0
    before = sha256_tree(legacy)
    assert main(["update", str(legacy), "--generalization", str(csv_path)]) == 0
    assert sha256_tree(legacy) == before and check(str(legacy)) == []
    rows = load_dataset(str(legacy), "annotations", split="train")
    ranks = {(r["class_index"], r["feature_index"]): r["generalizes_to_rank"] for r in rows}
    assert [ranks[p] for p in studied_pairs] == [EXPECTED_RANK[i] for i in range(3)]
