"""Every command in a real process, where what happens at interpreter exit (a hang, an abort after the work is done)
shows: its exit status is checked at least once. A build whose train shard has many row groups streams, in a user's
script and in `check`, and the process exits.

Commands run in a real process by other modules (a successful run, exit code checked) are named in
`ELSEWHERE`; this module runs the rest, so every command of `cli.HANDLERS` is covered."""

import csv
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from conftest import ARCH, as_legacy_build, build_top7, built_once
from PIL import Image

from salient_imagenet_builder.core.card import BuildStats, read_build_info, write_card
from salient_imagenet_builder.core.registry import commands
from salient_imagenet_builder.core.schema import annotation_features, wordnet_ids
from salient_imagenet_builder.core.writer import ShardWriter
from salient_imagenet_builder.generalize.study_format import ANSWER_COLUMNS as GENERALIZE_ANSWER_COLUMNS

ROOT = Path(__file__).resolve().parents[1]
TIMEOUT = 120  # a hang is a failure, not a stuck suite
ELSEWHERE = {"build": "test_fail_safe.py", "push": "test_hub.py", "evaluate": "test_evaluate.py",
             "show": "test_show.py", "generalize": "test_generalize.py", "attach": "test_attach.py"}
COPIES = 3  # the top7 build's rows, three times over with new ids, one per row group: ~60 row groups


def command(*args, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "salient_imagenet_builder.cli", *map(str, args)], cwd=cwd,
                          capture_output=True, text=True, timeout=TIMEOUT)


def test_every_command_has_a_real_process_run():
    here = {"check", "ingest", "update", "validate", "discover"}
    assert {c.name for c in commands()} == here | set(ELSEWHERE)
    for name, module in ELSEWHERE.items():  # each runs the command in a subprocess and checks its exit code
        text = (ROOT / "tests" / module).read_text()
        assert (f'"salient_imagenet_builder.cli", "{name}"' in text or
                (name in ("build", "push") and '"build_dataset.py"' in text)), (name, module)


@pytest.fixture(scope="module")
def top7(inputs, tmp_path_factory) -> Path:
    return built_once(tmp_path_factory, "top7", lambda root: build_top7(inputs, root))


def many_row_groups(build: Path, out: Path) -> Path:
    """`build` with its rows repeated under new ids and written one row per row group (the real writer), and its
    card made for them: a build of many row groups, as a large build has."""
    import shutil

    shutil.copytree(build, out)
    info = read_build_info(out)
    shard = next((out / "data").glob("train-*.parquet"))
    table = pq.read_table(shard)
    copies = [table.set_column(table.schema.get_field_index("image_id"), "image_id",
                               pc.binary_join_element_wise(table.column("image_id"), f"_{n}", ""))
              for n in range(COPIES)]
    rows = pa.concat_tables(copies).sort_by([("group", "ascending"), ("image_id", "ascending")])
    shard.unlink()
    stats = BuildStats.from_dict(info["stats"])
    writer = ShardWriter(out / "data", "train", stats.image_features(), row_group_rows=1)
    writer.write(rows.replace_schema_metadata(stats.image_features().arrow_schema.metadata))
    stats.default_shards = [p.name for p in writer.close()]
    stats.images_written = len(rows)
    annotations = next((out / "data").glob("annotations-*.parquet"))  # its config in row groups of one pair too
    table = pq.read_table(annotations)
    annotations.unlink()
    writer = ShardWriter(out / "data", "annotations", annotation_features(), row_group_rows=1)
    writer.write(table)
    stats.annotation_shards = [p.name for p in writer.close()]
    write_card(out, info["provenance"], stats, info["split"])
    return out


@pytest.fixture(scope="module")
def many(top7, tmp_path_factory) -> Path:
    out = many_row_groups(top7, tmp_path_factory.mktemp("many") / "many")
    groups = pq.ParquetFile(next((out / "data").glob("train-*.parquet"))).metadata.num_row_groups
    assert groups >= 50  # an Array2D build of this many row groups hung at exit (20 did not)
    return out


STREAM = ("import sys\nfrom datasets import load_dataset\n"
          "it = iter(load_dataset(sys.argv[1], split='train', streaming=True))\nprint(next(it)['image_id'])\n")


def test_a_build_of_many_row_groups_streams_and_the_process_exits(many):
    """The most common peek at a dataset: `next(iter(...))` and exit. With Array2D maps the process never ended."""
    done = subprocess.run([sys.executable, "-c", STREAM, str(many)], capture_output=True, text=True, timeout=TIMEOUT)
    first = pq.read_table(next((many / "data").glob("train-*.parquet")), columns=["image_id"]).column(0)[0]
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == first.as_py()


def test_check_streams_a_build_of_many_row_groups_and_exits(many):
    """`check` streams the first rows; with Array2D maps it printed OK, then aborted at exit (134)."""
    done = command("check", many)
    assert (done.returncode, done.stdout.strip()) == (0, f"{many}: OK"), done.stderr


def test_check_of_an_older_layout_with_many_row_groups_says_ok_and_exits(many, tmp_path):
    """A build of 0.x (Array2D maps), as published before: `check` checks it all but streaming its default config
    (which can hang or abort a process at exit), says so in one line, and ends with OK."""
    older = as_legacy_build(many, tmp_path / "older", "array2d", row_group_rows=1)
    done = command("check", older)
    assert (done.returncode, done.stdout.strip()) == (0, f"{older}: OK"), done.stderr
    assert "Array2D (a build of 0.x)" in done.stderr and "not streamed" in done.stderr


def write_generalization_study(folder: Path, pairs: list[tuple[int, int]]) -> list[Path]:
    """A study of band 6-6 of each pair and its answers: 5 annotators, 4 say `same` for the first pair, 2 for the
    others (so the verdicts are same, not_same, ...)."""
    folder.mkdir(parents=True)
    with open(folder / "pairs.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["Input.class_index", "Input.feature_index", "Input.band", "Input.wordnet_id"])
        writer.writerows([c, j, "6-6", wordnet_ids()[c]] for c, j in pairs)
    with open(folder / "answers.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(GENERALIZE_ANSWER_COLUMNS)
        for position, (c, j) in enumerate(pairs):
            same = 4 if position == 0 else 2
            for worker in range(5):
                writer.writerow([f"w{worker}", c, j, "6-6", "same" if worker < same else "different", 4, "why"])
    return [folder / "answers.csv"]


def test_ingest_update_and_validate_in_real_processes(top7, tmp_path):
    import shutil

    from datasets import load_dataset

    dataset = tmp_path / "salient"
    shutil.copytree(top7, dataset)
    pairs = [(r["class_index"], r["feature_index"])
             for r in load_dataset(str(dataset), "annotations", split="train") if r["group_size"] >= 6][:2]
    answers = write_generalization_study(tmp_path / "study", pairs)
    ingested = command("ingest", *answers, "--pairs", tmp_path / "study", "--out", tmp_path / "g.csv")
    assert ingested.returncode == 0, ingested.stderr
    with open(tmp_path / "g.csv", newline="") as f:
        assert [r["verdict"] for r in csv.DictReader(f)] == ["same", "not_same"]
    updated = command("update", dataset, "--generalization", tmp_path / "g.csv")
    assert updated.returncode == 0, updated.stderr
    ranks = {(r["class_index"], r["feature_index"]): r["generalizes_to_rank"]
             for r in load_dataset(str(dataset), "annotations", split="train")}
    assert [ranks[p] for p in pairs] == [6, 5]
    humans = human_masks(dataset, tmp_path / "humans")
    validated = command("validate", dataset, "--human-masks", humans, "--format", "binary", "--out",
                        tmp_path / "report")
    assert validated.returncode == 0, validated.stderr
    assert (tmp_path / "report" / "validation.csv").is_file()


def human_masks(dataset: Path, folder: Path) -> Path:
    """A binary mask per image (its left half), of the image's size as displayed, as the build recorded it."""
    table = pq.read_table(next((dataset / "data").glob("train-*.parquet")),
                          columns=["image_id", "wordnet_id", "original_width", "original_height"])
    for row in table.to_pylist():
        mask = np.zeros((row["original_height"], row["original_width"]), np.uint8)
        mask[:, :row["original_width"] // 2] = 255
        (folder / row["wordnet_id"]).mkdir(parents=True, exist_ok=True)
        Image.fromarray(mask).save(folder / row["wordnet_id"] / f"{row['image_id']}.png")
    return folder


def test_discover_in_a_real_process(inputs, tmp_path):
    done = command("discover", "--source", inputs["folder"], "--model", ARCH, "--model-checkpoint",
                   inputs["checkpoint"], "--out", tmp_path / "study", "--classes", "0-1", "--features-per-class", "1",
                   "--top-images", "2", "--attack-steps", "1", "--group-by", "label", "--workers", "0")
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "study" / "index.html").is_file()
