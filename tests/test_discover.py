"""Discovery: the one pass-1 scan (shared with the build) against an independent computation, its tie-break against
a plain heap, discovery and build agreeing on the same source, the feature attack's formula, and the study folder
the real command writes (pairs, panels, page)."""

import copy
import csv
import heapq
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import ARCH, CLASSES, STUDY_ARGS
from PIL import Image

from salient_imagenet_builder.cli import main
from salient_imagenet_builder.core import render
from salient_imagenet_builder.core.images import CorruptImage, center_view, decode, to_uint8_tensor
from salient_imagenet_builder.core.model import create_feature_model
from salient_imagenet_builder.core.runner import ModelRunner, Numerics
from salient_imagenet_builder.core.scan import ScanResult, ScanSpec
from salient_imagenet_builder.core.scan_units import ScanWorker, UnitScan
from salient_imagenet_builder.core.sources import Sample, open_source
from salient_imagenet_builder.core.stages import StageTimer
from salient_imagenet_builder.core.units import Unit
from salient_imagenet_builder.discovery.attack import activation_maps, feature_attack
from salient_imagenet_builder.discovery.study_format import STUDY_PAIR_COLUMNS

ROOT = Path(__file__).resolve().parents[1]

K = 3


@pytest.fixture(scope="module")
def model(inputs):
    return create_feature_model(ARCH, str(inputs["checkpoint"]))[0].eval()


@pytest.fixture(scope="module")
def reference(inputs, model):
    """Pooled features of every decodable fixture image, one image at a time, by plain code."""
    source = open_source(str(inputs["folder"]), "train")
    ids, labels, views = [], [], []
    for sample in source.samples(set(CLASSES)):
        try:
            views.append(to_uint8_tensor(center_view(decode(sample.data))))
        except CorruptImage:
            continue
        ids.append(sample.image_id)
        labels.append(sample.label)
    with torch.inference_mode():
        pooled = model(torch.stack(views).float() / 255)[1]
    return ids, torch.tensor(labels), pooled.double()


def expected_top(ids, labels, pooled, c, j, k=K):
    """The builder's rule, spelled out: the k largest (activation, image id) of group c."""
    ranked = sorted(((float(pooled[i, j]), ids[i]) for i in range(len(ids)) if labels[i] == c), reverse=True)
    return [image_id for _, image_id in ranked[:k]]


SPEC = ScanSpec(CLASSES, K, "label", context_k=2)  # discovery's scan: every feature of every class


def scan_units_here(inputs, model, unit_size, batch_size=4) -> list[ScanResult]:
    """Each unit's result, from the real scan worker (decoder, model runner) over the source's own unit plan."""
    source = open_source(str(inputs["folder"]), "train")
    worker = ScanWorker(source, ModelRunner(model, torch.device("cpu"), Numerics(), StageTimer()), SPEC,
                        batch_size=batch_size, workers=0)
    return [worker(Unit(i, spec)) for i, spec in enumerate(source.plan_units(set(CLASSES), None, unit_size))]


def run_scan(inputs, model, unit_size, batch_size=4) -> ScanResult:
    total = ScanResult.empty(SPEC, model.num_features)
    for result in scan_units_here(inputs, model, unit_size, batch_size):
        total.merge(result).compact()
    return total


def test_scan_matches_an_independent_computation(inputs, model, reference):
    ids, labels, pooled = reference
    scan = run_scan(inputs, model, unit_size=5)  # many units, many merges
    assert scan.scanned == len(ids) and len(scan.skipped) == 1  # the truncated fixture file
    for c in CLASSES:
        members = labels == c
        assert int(scan.fi.counts[c]) == int(members.sum())
        torch.testing.assert_close(scan.fi.sums[c], pooled[members].sum(0), rtol=1e-4, atol=1e-4)
        for j in range(pooled.shape[1]):
            got = scan.top_images(c, j)
            assert [str(scan.images.ids[i]) for i, _ in got] == expected_top(ids, labels, pooled, c, j), (c, j)
            np.testing.assert_allclose([a for _, a in got], sorted(pooled[members, j].tolist(), reverse=True)[:K],
                                       rtol=1e-4, atol=1e-5)
    assert len(scan.images) <= len(ids)  # compacted to the images some list refers to


def test_merge_order_and_unit_cuts_do_not_change_the_result(inputs, model):
    units = scan_units_here(inputs, model, unit_size=4)
    forward = copy.deepcopy(units[0])
    for unit in units[1:]:
        forward.merge(copy.deepcopy(unit))
    backward = copy.deepcopy(units[-1])
    for unit in reversed(units[:-1]):
        backward.merge(copy.deepcopy(unit))
    forward.compact(), backward.compact()
    assert list(forward.images.ids) == list(backward.images.ids)
    assert torch.equal(forward.top_img, backward.top_img) and torch.equal(forward.top_act, backward.top_act)
    assert torch.equal(forward.context_img, backward.context_img)
    assert torch.equal(forward.fi.counts, backward.fi.counts)


def test_ties_are_broken_by_image_id_like_the_builders_top_k():
    rng = random.Random(0)
    classes, features, k = [3, 7], 4, 3
    samples = [Sample(f"img_{rng.randint(0, 10**6):07d}", 0, b"", f"r{i}") for i in range(40)]
    pooled = torch.tensor([[float(rng.randint(0, 2)) for _ in range(features)] for _ in samples])  # many ties
    groups = torch.tensor([rng.choice(classes) for _ in samples])
    logits = torch.randn(len(samples), 1000)
    spec = ScanSpec(classes, k, "label", context_k=2)
    total = ScanResult.empty(spec, features)
    for unit_parts in (((0, 5), (5, 13)), ((13, 29),), ((29, 33), (33, 36), (36, 40))):  # batches within units
        unit = UnitScan(spec, features)
        for start, end in unit_parts:
            unit.add(samples[start:end], pooled[start:end], logits[start:end], groups[start:end])
        total.merge(unit.result())
    total.compact()
    heaps = {(c, j): [] for c in classes for j in range(features)}  # the rule by a plain heap of (activation, id)
    for i, sample in enumerate(samples):
        for j in range(features):
            heap = heaps[(int(groups[i]), j)]
            heapq.heappush(heap, (float(pooled[i, j]), sample.image_id))
            if len(heap) > k:
                heapq.heappop(heap)
    for c in classes:
        for j in range(features):
            got = [str(total.images.ids[i]) for i, _ in total.top_images(c, j)]
            assert got == [image_id for _, image_id in sorted(heaps[(c, j)], reverse=True)], (c, j)


def test_feature_attack_is_normalised_gradient_ascent(model):
    torch.manual_seed(0)
    views = (torch.rand(2, 3, 64, 64) * 255).to(torch.uint8)
    with torch.no_grad():  # features active on these images (a dead one has no gradient to follow)
        features = model(views.float() / 255)[1].topk(2, dim=1).indices[:, 1]
    x = views.float() / 255
    x.requires_grad_(True)
    r = model(x)[1]
    (grad,) = torch.autograd.grad(r[torch.arange(2), features].sum(), x)
    step = (x.detach() + 10 * grad / grad.flatten(1).norm(dim=1).view(-1, 1, 1, 1)).clamp(0, 1)
    one = feature_attack(model, views, features, steps=1)
    assert (one.int() - (step * 255).round().int()).abs().max() <= 1
    three = feature_attack(model, views, features, steps=3)
    with torch.no_grad():
        before = model(views.float() / 255)[1][torch.arange(2), features]
        after = model(three.float() / 255)[1][torch.arange(2), features]
    assert (after > before).all()
    alone = feature_attack(model, views[1:], features[1:], steps=3)  # batching does not mix images
    assert (alone.int() - three[1:].int()).abs().max() <= 1


def test_activation_maps_are_the_normalised_upsampled_channel(model):
    torch.manual_seed(1)
    views = (torch.rand(2, 3, 64, 64) * 255).to(torch.uint8)
    maps = activation_maps(model, views, torch.tensor([3, 4]))
    with torch.no_grad():
        spatial = model.net.forward_features((views.float() / 255 - model.mean) / model.std)
    for i, j in enumerate((3, 4)):
        channel = spatial[i, j] / spatial[i, j].max()
        expected = F.interpolate(channel[None, None], size=(64, 64), mode="bilinear", align_corners=False)[0, 0]
        torch.testing.assert_close(maps[i], expected, rtol=1e-4, atol=1e-5)


def test_overlay_is_red_where_the_mask_is_high():
    image = np.full((8, 8, 3), 128, dtype=np.uint8)
    mask = np.zeros((8, 8), dtype=np.float32)
    mask[:4] = 1.0
    out = render.overlay(image, mask)
    high, low = out[0, 0].astype(int), out[7, 7].astype(int)
    assert high[0] > high[2] and low[2] > low[0]  # red on top, blue below


def test_discover_writes_pairs_panels_and_page(study, reference, model):
    ids, labels, pooled = reference
    weight = model.classifier_weight.detach().double()
    with open(study / "pairs.csv", newline="") as f:
        reader = csv.DictReader(f)
        assert tuple(reader.fieldnames) == STUDY_PAIR_COLUMNS
        rows = list(reader)
    for c in CLASSES:  # the top 2 features by FI = mean r(x) * W[c], computed here from scratch
        fi = pooled[labels == c].mean(0) * weight[c]
        expected = torch.argsort(fi, descending=True, stable=True)[:2].tolist()
        got = [int(r["Input.feature_index"]) for r in rows if int(r["Input.class_index"]) == c]
        assert got == expected, c
    info = json.loads((study / "discover_info.json").read_text())
    for pair in info["pairs"]:
        assert pair["top_image_ids"] == expected_top(ids, labels, pooled, pair["class_index"],
                                                     pair["feature_index"], 3)
    for row in rows:
        panel = Image.open(study / row["Input.panel"])
        assert panel.format == "PNG" and panel.width == render.row_width(3) and panel.height > 4 * render.CELL
    html = (study / "index.html").read_text()
    assert "http://" not in html and "https://" not in html  # offline: nothing to fetch
    assert all(row["Input.panel"] in html for row in rows)


def test_discover_refuses_to_overwrite_an_annotators_file(tmp_path, inputs, study, caplog):
    copy_of_study = tmp_path / "study"
    shutil.copytree(study, copy_of_study)
    (copy_of_study / "answers-ann1.csv").write_text("WorkerId\n")
    code = main(["discover", "--source", str(inputs["folder"]), "--model", ARCH, "--out", str(copy_of_study),
                 "--overwrite"])
    assert code == 2
    assert "answers-ann1.csv" in caplog.text
    assert (copy_of_study / "answers-ann1.csv").read_text() == "WorkerId\n"


@pytest.mark.parametrize("spec", [SPEC, ScanSpec(CLASSES, K, "label", {0: [5, 9], 1: [7], 2: [1, 2, 3]},
                                                  keep_maps=True)], ids=["discovery", "build"])
def test_a_unit_result_reads_back_as_it_was_saved(inputs, model, tmp_path, spec):
    source = open_source(str(inputs["folder"]), "train")
    worker = ScanWorker(source, ModelRunner(model, torch.device("cpu"), Numerics(), StageTimer()), spec,
                        batch_size=4, workers=0)
    saved = worker(Unit(0, source.plan_units(set(CLASSES), None, 6)[0]))
    saved.save(tmp_path)
    loaded = ScanResult.load(tmp_path)
    assert loaded.classes == saved.classes and (loaded.k, loaded.context_k) == (saved.k, saved.context_k)
    assert (loaded.scanned, loaded.skipped) == (saved.scanned, saved.skipped)
    for name in ("top_act", "top_img", "context_score", "context_img", "image_maps", "tracked"):
        a, b = getattr(loaded, name), getattr(saved, name)
        unused = spec is SPEC and name in ("image_maps", "tracked")  # a discovery keeps no maps, tracks every feature
        assert (a is None and b is None) if unused else torch.equal(a, b), name
    assert torch.equal(loaded.fi.sums, saved.fi.sums) and torch.equal(loaded.fi.counts, saved.fi.counts)
    for a, b in zip(loaded.images.columns(), saved.images.columns()):
        assert list(a) == list(b)


def test_a_killed_discovery_resumes_and_writes_the_same_study(inputs, study, tmp_path, caplog):
    """SIGKILL after two finished scan units; the same command again (here, in this process, on one thread as the
    killed one) reads only the other units."""
    out = tmp_path / "study"
    args = [sys.executable, "-m", "salient_imagenet_builder.cli", "discover", "--source", str(inputs["folder"]),
            "--model", ARCH, "--model-checkpoint", str(inputs["checkpoint"]), "--out", str(out), *STUDY_ARGS,
            "--unit-size", "2", "--workers", "1"]
    env = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    markers = tmp_path / ".study.partial" / "work" / "discover-scan"
    process = subprocess.Popen(args, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               start_new_session=True)
    deadline = time.monotonic() + 300
    while len(list(markers.glob("*.done.json"))) < 2:
        assert process.poll() is None and time.monotonic() < deadline, "discovery ended before it could be killed"
        time.sleep(0.01)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    done = len(list(markers.glob("*.done.json")))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with caplog.at_level("INFO"):
            assert main(args[3:]) == 0, caplog.text
    finally:
        torch.set_num_threads(threads)
    assert f"resuming from {done} of" in caplog.text
    assert (out / "pairs.csv").read_text() == (study / "pairs.csv").read_text()
    got, expected = (json.loads((folder / "discover_info.json").read_text())["pairs"] for folder in (out, study))
    assert got == expected
    assert not (tmp_path / ".study.partial").exists()


def test_ctrl_c_keeps_the_finished_scan_units_and_says_so(inputs, tmp_path):
    """SIGINT (a terminal's Ctrl-C) once a scan unit is done: exit 130, one line naming the kept work, no study."""
    out = tmp_path / "study"
    args = [sys.executable, "-m", "salient_imagenet_builder.cli", "discover", "--source", str(inputs["folder"]),
            "--model", ARCH, "--model-checkpoint", str(inputs["checkpoint"]), "--out", str(out), *STUDY_ARGS,
            "--unit-size", "2"]
    env = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    markers = tmp_path / ".study.partial" / "work" / "discover-scan"
    process = subprocess.Popen(args, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                               text=True, start_new_session=True)
    deadline = time.monotonic() + 300
    while not list(markers.glob("*.done.json")):
        assert process.poll() is None and time.monotonic() < deadline, "discovery ended before it could be stopped"
        time.sleep(0.01)
    os.killpg(process.pid, signal.SIGINT)
    stderr = process.communicate(timeout=120)[1]
    assert process.returncode == 130 and "Traceback" not in stderr, stderr[-3000:]
    assert stderr.rstrip().endswith(f"interrupted; the finished work is kept in {tmp_path / '.study.partial'}: run "
                                    "the same command again to resume")
    assert list(markers.glob("*.done.json")) and not out.exists()


def test_a_stopped_discovery_keeps_its_finished_panel_units(inputs, tmp_path, monkeypatch, caplog):
    """Panels are drawn in units (one class each here): stopped in the second, the rerun draws only the others and
    the study equals one drawn in one go."""
    from salient_imagenet_builder.discovery import panels

    monkeypatch.setattr(panels, "CHUNK_CLASSES", 1)
    args = ["discover", "--source", str(inputs["folder"]), "--model", ARCH, "--model-checkpoint",
            str(inputs["checkpoint"]), *STUDY_ARGS]
    assert main([*args, "--out", str(tmp_path / "one_go")]) == 0
    draw = panels.PanelWorker.__call__
    calls = []

    def stop_in_the_second_unit(self, unit):
        calls.append(unit.index)
        if len(calls) == 2:
            raise KeyboardInterrupt  # what Ctrl-C raises in the main thread
        return draw(self, unit)

    monkeypatch.setattr(panels.PanelWorker, "__call__", stop_in_the_second_unit)
    out = tmp_path / "study"
    assert main([*args, "--out", str(out)]) == 130
    monkeypatch.setattr(panels.PanelWorker, "__call__", draw)
    caplog.clear()
    with caplog.at_level("INFO"):
        assert main([*args, "--out", str(out)]) == 0
    assert "panels: resuming from 1 of 3 units already done" in caplog.text
    assert "discover scan: resuming from" in caplog.text
    one_go = tmp_path / "one_go"
    assert sorted(p.name for p in (out / "panels").iterdir()) == sorted(p.name for p in (one_go / "panels").iterdir())
    for png in (one_go / "panels").iterdir():
        assert (out / "panels" / png.name).read_bytes() == png.read_bytes(), png.name
    assert (out / "pairs.csv").read_text() == (one_go / "pairs.csv").read_text()
    assert not (tmp_path / ".study.partial").exists()
