"""Issue 16, inputs from the real world (the cases not about reading sources): the card's majority rule, work
folders that crashed or are shared, speed knobs on a resume, odd images, bad arguments, and the messages that
used to send the user the wrong way. Each test names its case and asserts what the user now sees."""

import csv
import io
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import ARCH
from PIL import Image
from test_evaluate import built  # noqa: F401 (the shared evaluate fixture)
from test_units import ROOT, assert_same_tables, cli_args, environment, one_shot, run_here  # noqa: F401

from salient_imagenet_builder.builder import Builder
from salient_imagenet_builder.builder.demo import make_checkpoint
from salient_imagenet_builder.cli import main
from salient_imagenet_builder.core.annotations import COLUMNS
from salient_imagenet_builder.core.card import read_build_info
from salient_imagenet_builder.core.images import CorruptImage, decode
from salient_imagenet_builder.core.schema import wordnet_ids
from salient_imagenet_builder.core.units import UnitFolder

CLASSES = [0, 1, 2]


def partial(out: Path) -> Path:
    return out.parent / f".{out.name}.partial"


def interrupt_after(monkeypatch, units: int) -> None:
    """Ctrl-C once `units` units are committed (as a user stopping the build half-way)."""
    commit, count = UnitFolder.commit, [0]

    def stop(self, *args, **kwargs):
        commit(self, *args, **kwargs)
        count[0] += 1
        if count[0] >= units:
            raise KeyboardInterrupt

    monkeypatch.setattr(UnitFolder, "commit", stop)


def annotations_with(source: Path, path: Path, answers: int | None = None, rename: dict | None = None) -> Path:
    """The fixture's annotation CSV, each pair keeping its first `answers` answers, classes renamed by `rename`."""
    with open(source, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    seen, kept, wnids = {}, [], wordnet_ids()
    for row in rows:
        key = (row["Input.class_index"], row["Input.feature_index"])
        seen[key] = seen.get(key, 0) + 1
        if answers is None or seen[key] <= answers:
            c = (rename or {}).get(int(row["Input.class_index"]), int(row["Input.class_index"]))
            kept.append({**row, "Input.class_index": str(c), "Input.wordnet_id": wnids[c]})
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(kept)
    return path


# --- the card states the study's rule --------------------------------------------------------------------------

@pytest.mark.parametrize("answers, rule", [(3, "2 of 3"), (1, "1 of 1")])
def test_card_states_the_majority_of_the_studys_answers_per_pair(inputs, tmp_path, caplog, answers, rule):
    """Case: a 3-answer study's card said "2 of 5"; a single annotator's export built as "1 of 5" without a word."""
    csv_path = annotations_with(inputs["annotations"], tmp_path / "annotations.csv", answers)
    out = tmp_path / "out"
    args = cli_args(inputs, out, "--limit", "2")
    args[args.index("--annotations") + 1] = str(csv_path)
    code, log = run_here(args, caplog)
    assert code == 0, log[-2000:]
    card = (out / "README.md").read_text()
    assert f"/ {rule} |" in card and "of 5" not in card
    single = "every pair has a single answer, so each pair's kind is that one answer (majority 1 of 1)"
    assert (single in log) == (answers == 1)


# --- work folders: markers, locks, failures, refusals, speed knobs ---------------------------------------------

def test_a_units_marker_is_not_trusted_without_its_result(inputs, one_shot, tmp_path, caplog, monkeypatch):  # noqa: F811
    """Case: deleting one finished unit's result folder made every rerun fail with FileNotFoundError."""
    out = tmp_path / "salient_imagenet"
    interrupt_after(monkeypatch, 6)
    assert run_here(cli_args(inputs, out), caplog)[0] == 130
    monkeypatch.undo()
    shutil.rmtree(partial(out) / "work" / "scan" / "00003")
    code, log = run_here(cli_args(inputs, out), caplog)
    assert code == 0, log[-2000:]
    assert "unit 3 of scan: its result is missing; computing it again" in log
    assert "pass 1: resuming from 5 of 14 units already done" in log
    assert_same_tables(out, one_shot)


def test_speed_knobs_may_change_on_a_resume_and_are_recorded(inputs, one_shot, tmp_path, caplog, monkeypatch):  # noqa: F811
    """Case: a resume after running out of GPU memory could not lower --batch-size (it was in the fingerprint)."""
    out = tmp_path / "salient_imagenet"
    interrupt_after(monkeypatch, 5)
    assert run_here(cli_args(inputs, out), caplog)[0] == 130
    monkeypatch.undo()
    args = cli_args(inputs, out)
    args[args.index("--batch-size") + 1], args[args.index("--workers") + 1] = "1", "0"
    code, log = run_here(args, caplog)
    assert code == 0, log[-2000:]
    assert ("pass 1: resuming from 5 of 14 units already done" in log and "the finished units ran 5 with "
            "--batch-size 2 --workers 1 --device cpu, the rest run with --batch-size 1 --workers 0 --device cpu") in log
    ran = read_build_info(out)["provenance"]["units_ran_with"]
    assert ran["pass 1"] == [[{"--batch-size": 2, "--workers": 1, "--device": "cpu"}, 5],
                             [{"--batch-size": 1, "--workers": 0, "--device": "cpu"}, 9]]
    assert sum(n for _, n in ran["pass 2"]) == 7
    assert_same_tables(out, one_shot)  # the same dataset whatever the batch size


def test_two_builds_into_one_out_the_second_names_the_first(inputs, one_shot, tmp_path, caplog):  # noqa: F811
    """Case: two builds into the same --out at once both died with FileNotFoundError."""
    out = tmp_path / "salient_imagenet"
    first = subprocess.Popen([sys.executable, str(ROOT / "build_dataset.py"), *cli_args(inputs, out)], cwd=ROOT,
                             env=environment(tmp_path), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    markers, deadline = partial(out) / "work" / "scan", time.monotonic() + 300
    while not list(markers.glob("*.done.json")):
        assert first.poll() is None and time.monotonic() < deadline
        time.sleep(0.01)
    code, log = run_here(cli_args(inputs, out), caplog)
    assert code == 2
    assert f"--out {out}: another run is writing it (pid {first.pid}: " in log and "build_dataset.py" in log
    assert first.wait(timeout=300) == 0, first.stderr.read()[-2000:]
    assert_same_tables(out, one_shot)  # the first build was not disturbed


def test_a_build_that_ends_with_nothing_to_write_keeps_nothing(inputs, parquet_source, tmp_path, caplog):
    """Case: `--classes 4` with no images of class 4 left `.X.partial/` and hinted --group-by label, whose run was
    then refused for "different group_by"; the message now says what is true."""
    csv_path = annotations_with(inputs["annotations"], tmp_path / "annotations.csv", rename={0: 4})
    out = tmp_path / "out"
    for group_by in ("prediction", "label"):
        args = ["--source", str(parquet_source), "--out", str(out), "--model", ARCH, "--model-checkpoint",
                str(inputs["checkpoint"]), "--annotations", str(csv_path), "--classes", "4", "--group-by", group_by,
                "--workers", "0"]
        code, log = run_here(args, caplog)
        assert code == 2
        assert (f"--source {parquet_source} has no image of the classes 4 (it holds images of the classes 0, 1, 2); "
                "check --classes; nothing to write") in log
        assert "different" not in log and "--group-by label" not in log
        assert not out.exists() and not partial(out).exists()


def test_a_refusal_of_kept_work_says_what_differs_in_the_users_words(inputs, tmp_path, caplog, monkeypatch):
    """Case: a refusal named plan_sha256 / group_by; it now names the option (old and new value) or what changed,
    and --restart."""
    source = tmp_path / "imagenet"
    shutil.copytree(inputs["folder"], source)
    out = tmp_path / "out"
    args = cli_args(inputs, out)
    args[args.index("--source") + 1] = str(source)
    interrupt_after(monkeypatch, 2)
    assert run_here(args, caplog)[0] == 130
    monkeypatch.undo()
    code, log = run_here([*args, "--group-by", "label"], caplog)
    assert code == 2
    assert (f"{partial(out)} holds the finished units of an interrupted run with other settings (--group-by was "
            "prediction, now label); rerun that command to resume it, or pass --restart to discard its units and "
            "start afresh") in log
    first_class = source / "train" / "n01440764"
    picture = min(first_class.iterdir())
    shutil.copy(picture, first_class / f"n01440764_99999{picture.suffix}")  # one more image: another plan
    code, log = run_here(args, caplog)
    assert code == 2 and "(the source's files changed); rerun that command" in log and "plan_sha256" not in log


# --- odd images and the decode buffers --------------------------------------------------------------------------

def png(width: int, height: int, mode: str = "L") -> bytes:
    buffer = io.BytesIO()
    Image.new(mode, (width, height)).save(buffer, format="PNG")
    return buffer.getvalue()


def test_odd_images_are_refused_before_decoding():
    """Case: a 162-byte 1x20000 PNG made the resize ask for 256 x 5,120,000 pixels (MemoryError); a decompression
    bomb is bounded the same way, by the header's size, before any pixel is decoded."""
    sliver = png(1, 20000)
    assert len(sliver) < 1000
    with pytest.raises(CorruptImage, match=r"^1x20000 pixels: too elongated to view \(sides more than 64:1 apart\)"):
        decode(sliver)
    with pytest.raises(CorruptImage, match=r"^10000x9000 pixels: more than 89,478,485 \(a decompression bomb\?\)"):
        decode(png(10000, 9000, "1"))
    assert decode(png(10, 600)).size == (10, 600)  # elongated but viewable


def test_odd_images_are_skipped_and_counted_by_the_build(inputs, tmp_path, config):
    """Case: one odd file aborted the build; `--batch-size 100000` on a few images allocated 30 GB of buffers."""
    source = tmp_path / "imagenet"
    shutil.copytree(inputs["folder"], source)
    (source / "train" / "n01440764" / "n01440764_00_sliver.png").write_bytes(png(1, 20000))  # among the first 3
    builder = Builder(config(source=str(source), batch_size=100000, limit=3))
    stats = builder.run()
    assert stats.skipped_ids == ["n01440764_00_sliver"] and stats.images_written > 0
    assert builder.batch_size == 3  # the most a unit (3 images of a class) can hold, not the flag
    info = read_build_info(tmp_path / "out")
    assert info["provenance"]["units_ran_with"]["pass 1"][0][0]["--batch-size"] == 3


def test_a_batch_size_that_cannot_fit_in_memory_is_one_line(inputs, webdataset_source, tmp_path, caplog):
    """Case: the decode buffers sized by --batch-size alone (a RuntimeError allocating 30 GB); where the source
    cannot say how many images can arrive, a size that cannot fit is refused before any work."""
    out = tmp_path / "out"
    args = cli_args(inputs, out)
    args[args.index("--source") + 1] = str(webdataset_source)
    args[args.index("--batch-size") + 1] = "100000000"
    code, log = run_here(args, caplog)
    assert code == 2
    assert "--batch-size 100000000: its decode buffers would take 45158.4 GB, more than half of this machine's " \
           "memory" in log and "use a smaller --batch-size" in log
    assert not out.exists() and not partial(out).exists()


# --- bad arguments ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("device, message", [
    ("banana", "--device banana: not a torch device; use cpu, cuda or cuda:N"),
    ("cuda", "--device cuda: no CUDA device is available here; use --device cpu"),
])
def test_a_bad_device_is_one_line(inputs, tmp_path, caplog, device, message):
    """Case: `--device banana` and `--device cuda` without a GPU ended in tracebacks."""
    if device == "cuda" and torch.cuda.is_available():
        pytest.skip("this machine has a CUDA device")
    out = tmp_path / "out"
    code, log = run_here(cli_args(inputs, out, "--device", device), caplog)
    assert code == 2 and message in log
    assert not out.exists() and not partial(out).exists()


@pytest.mark.parametrize("args, message", [
    (["--classes", "4-"], "--classes '4-': the range '4-' has no end; give both ends, e.g. 4-999"),
    (["--workers", "-1"], ("--workers '-1': expected 0 (decode in this process) or a positive number of decoding "
                           "processes")),
])
def test_arguments_that_used_to_mean_something_else_are_refused(tmp_path, capsys, args, message):
    """Cases: `--classes 4-` silently meant class 4; `--workers -1` was accepted."""
    from salient_imagenet_builder.cli import build_main

    with pytest.raises(SystemExit) as stopped:
        build_main(["--source", str(tmp_path), "--out", str(tmp_path / "out"), *args])
    assert stopped.value.code == 2 and message in capsys.readouterr().err


def test_demo_with_a_source_is_refused(tmp_path, caplog):
    """Case: `--demo --source X` ignored --source (decided: refused, since the demo only builds generated inputs)."""
    code, log = run_here(["--demo", "--source", str(tmp_path), "--out", str(tmp_path / "demo")], caplog)
    assert code == 2
    assert (f"--source {tmp_path}: --demo builds from generated inputs and would ignore it; drop --demo to build "
            "from your source, or drop --source to run the demo") in log
    assert not (tmp_path / "demo").exists()


# --- ingest -----------------------------------------------------------------------------------------------------

PAIRS_HEADER = "Input.wordnet_id,Input.class_index,Input.feature_index,Input.feature_rank,Input.class_name,Input.panel\n"


def study(tmp_path, wnid: str = "n01440764") -> Path:
    folder = tmp_path / "study"
    folder.mkdir()
    (folder / "pairs.csv").write_text(PAIRS_HEADER + f"{wnid},0,17,1,tench,p0.png\n"
                                      "n01443537,1,40,1,goldfish,p1.png\n")
    return folder


def answers(path: Path, worker: str, reason: str = "r", padding: int = 0, sep: str = ",", bad: str = "") -> Path:
    rows = [[worker, "n01440764", 0, 17, 1, "background", "4.0", reason],
            [worker, "n01443537", 1, 40, 1, bad or "main_object", "3.0", "r"]]
    buffer = io.StringIO()
    writer = csv.writer(buffer, delimiter=sep, lineterminator="\n")
    writer.writerow(COLUMNS)
    writer.writerows(rows)
    path.write_text(buffer.getvalue() + ",,,,,,,\n" * padding, encoding="utf-8")
    return path


def ingest(files, out, *extra) -> int:
    return main(["ingest", *map(str, files), "--answers-per-pair", "1", "--out", str(out), *extra])


def test_ingest_validates_the_pairs_before_writing_and_names_the_pairs_csv(tmp_path, caplog):
    """Case: a pairs.csv with a wrong wnid: ingest wrote its output, then rejected it, naming the output."""
    folder = study(tmp_path, wnid="n09999999")
    out = tmp_path / "annotations.csv"
    assert ingest([answers(folder / "a.csv", "w1")], out) == 2
    assert (f"{folder / 'pairs.csv'} (the study's pairs), row 2: Input.wordnet_id n09999999 is not class 0 "
            "(n01440764)") in caplog.text
    assert not out.exists()


def test_ingest_skips_spreadsheet_padding_and_hints_at_semicolons(tmp_path, caplog):
    """Case: ingest rejected `,,,,,,,` padding rows the build's parser skips; a ';' file got "missing columns"
    without the build parser's hint."""
    folder = study(tmp_path)
    out = tmp_path / "annotations.csv"
    assert ingest([answers(folder / "a.csv", "w1", padding=3)], out) == 0
    assert out.is_file()
    assert ingest([answers(folder / "b.csv", "w1", sep=";")], tmp_path / "b_out.csv") == 2
    assert "it seems to use ';' or tabs between columns: save it as comma-separated CSV UTF-8" in caplog.text


def test_ingest_counts_rows_as_a_spreadsheet_does(tmp_path, caplog):
    """Case: rows were physical lines, so a two-line reason shifted every later row by one."""
    folder = study(tmp_path)
    path = answers(folder / "a.csv", "w1", reason="first line\nsecond line", bad="maybe")
    assert ingest([path], tmp_path / "out.csv") == 2
    assert f"{path}, row 3: bad answer 'maybe'" in caplog.text  # the header is row 1; the file's line 4


# --- discover, show, evaluate -----------------------------------------------------------------------------------

def test_discover_of_a_class_without_images_says_so(inputs, tmp_path, caplog):
    """Case: `discover --classes 7` with no images of class 7 suggested --group-by label."""
    code = main(["discover", "--source", str(inputs["folder"]), "--model", ARCH, "--model-checkpoint",
                 str(inputs["checkpoint"]), "--out", str(tmp_path / "study"), "--classes", "7", "--workers", "0"])
    assert code == 2
    assert (f"--source {inputs['folder']} has no image of the classes 7 (it holds images of the classes 0, 1, 2); "
            "check --classes; nothing to rank") in caplog.text
    assert "--group-by label" not in caplog.text


def test_show_names_the_splits_a_build_has(one_shot, tmp_path, caplog):  # noqa: F811
    """Case: `show --split validation` on a train-only build said "not a Salient ImageNet build"."""
    code = main(["show", str(one_shot), "--class", "0", "--split", "validation", "--out", str(tmp_path / "x.png")])
    assert code == 2
    assert f"{one_shot}: has no split 'validation'; its image split(s): train (pass --split train)" in caplog.text


def test_evaluate_rerun_with_another_model_keeps_folder_and_comparison_consistent(built, tmp_path, caplog):  # noqa: F811
    """Case: an evaluate rerun into its own --out with another model left the old model's folder beside a
    comparison that no longer listed it (decided: the old model's folder is removed, and the run says so)."""
    out = tmp_path / "results"
    other = make_checkpoint(tmp_path / "other.ckpt", arch="resnet10t", seed=1, classes=CLASSES)
    common = ["evaluate", "--dataset", str(built["crop"]), "--model", "resnet10t", "--draws", "1",
              "--no-single-feature", "--workers", "0", "--out", str(out)]
    assert main([*common, "--checkpoint", str(built["checkpoint"])]) == 0
    assert (out / "resnet10t-resnet10t" / "summary.json").is_file()
    caplog.clear()
    with caplog.at_level("INFO"):
        assert main([*common, "--checkpoint", str(other)]) == 0
    assert (f"{out}: removed the earlier results of resnet10t-resnet10t (this run evaluates resnet10t-other; the "
            "comparison lists these only)") in caplog.text
    with open(out / "comparison.csv", newline="") as f:
        listed = [row["model"] for row in csv.DictReader(f)]
    assert listed == ["resnet10t-other"] == json.loads((out / "evaluate_info.json").read_text())["models"]
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == listed
