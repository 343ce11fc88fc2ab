"""What we publish is safe to publish: the card names inputs by file name and sha256 (no local absolute path), and
data strings (ids, paths, the command) cannot inject headings, links or HTML: the card is rendered with a real
CommonMark + GFM renderer (tables, autolinks) and compared with the same card made from harmless data."""

import html as html_module
import json
import re

import pytest
from conftest import ARCH
from datasets import ClassLabel, Dataset, Features, Image
from markdown_it import MarkdownIt

from salient_imagenet_builder.builder import BuildConfig, build
from salient_imagenet_builder.core.card import BuildStats, md_text, public_paths, render
from salient_imagenet_builder.core.schema import class_names

HOSTILE_IDS = ["<script>x</script>", "# [x](http://e)", "<img src=x onerror=alert(1)>", "`code` | cell *em* _u_",
               "[y]: http://evil", "line\n# heading", "https://autolink.example", "&amp; &#60;"]


def _html(card: str) -> str:
    body = card.split("\n---\n", 1)[1]  # after the YAML front matter
    return MarkdownIt("gfm-like").render(body)


def _shape(html: str) -> tuple:
    """What data must not change: the headings, the links, every HTML tag but text."""
    return (re.findall(r"<h\d>.*?</h\d>", html), re.findall(r'href="([^"]*)"', html),
            sorted(set(re.findall(r"<(\w+)", html))))


def _provenance_and_stats(ids: list[str], source: str, command: str) -> tuple[dict, BuildStats]:
    ann = {"pairs": 15, "answers": 75, "workers": 9, "core": 10, "spurious": 5, "spurious_background": 2,
           "spurious_separate_object": 2, "spurious_mixed": 1, "classes": 3, "classes_with_spurious": 2,
           "mean_confidence": 3.1}
    stats = BuildStats(images_written=4, default_bytes=1000, annotation_bytes=100, annotation_stats=ann,
                       top5_agreement={"agree": 1, "pairs": 15, "pairs_with_images": 10}, images_scanned=9,
                       masks_written=8, skipped_images=len(ids), skipped_ids=ids, classes_without_annotations=[],
                       seconds_total=1.0, images_per_second=9.0, skipped_labels=2,
                       skipped_label_values={ids[0]: 1, "-1": 1}, skipped_non_image_files=1)
    constants = {"resize": 256, "crop": 224, "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225],
                 "top_k": 65, "group_by": "prediction", "majority": 3, "image_mode": "crop", "jpeg_draft": True}
    provenance = {"package_version": "0", "command": command, "source": source, "split": "train", "model": "m",
                  "arch": "resnet50", "checkpoint": source, "checkpoint_sha256": "0" * 64, "annotations": source,
                  "annotations_sha256": "1" * 64, "constants": constants, "classes": [0, 1, 2], "demo": False,
                  "python": "3.11", "torch": "2", "device": "cpu"}
    return provenance, stats


@pytest.mark.parametrize("hostile", HOSTILE_IDS)
def test_data_strings_cannot_change_the_cards_structure(hostile):
    harmless = _html(render(*_provenance_and_stats(["n01440764_1"], "folder imagenet", "python build_dataset.py"),
                            split="train"))
    provenance, stats = _provenance_and_stats([hostile, "n01440764_1"], f"folder {hostile}",
                                              f"python build_dataset.py --source '{hostile}'")
    html = _html(render(provenance, stats, split="train"))
    assert _shape(html) == _shape(harmless)
    flat = " ".join(hostile.split())
    text = re.sub(r"<[^>]+>", "", html)  # what a reader sees, with entities still escaped
    assert flat in html_module.unescape(text)  # shown as the very text it is


def test_md_text_is_plain_text():
    assert md_text("# [x](http://e)") == r"\# \[x\]\(http\://e\)"
    assert md_text("<script>x</script>") == r"&lt;script&gt;x&lt;/script&gt;"


def test_public_paths():
    assert public_paths("ImageNet folder /home/alice/data/imagenet/train") == "ImageNet folder train"
    assert public_paths("python build_dataset.py --source /home/alice/x --out=/tmp/tmpab12/out "
                        "--model-checkpoint ~/ckpt/r.ckpt --annotations https://raw.example.com/a/b.csv "
                        "--source ILSVRC/imagenet-1k --cache-dir rel/dir") == (
        "python build_dataset.py --source x --out=out --model-checkpoint r.ckpt --annotations "
        "https://raw.example.com/a/b.csv --source ILSVRC/imagenet-1k --cache-dir rel/dir")


def test_a_real_card_has_no_local_path_and_escapes_skipped_ids(inputs, tmp_path):
    folder = tmp_path / "home" / "alice" / "imagenet-parquet"
    folder.mkdir(parents=True)
    rows = [(name, label, data) for name, label, data in inputs["written"] if label in (1, 2)]
    rows += [("<img src=x onerror=alert(1)>.JPEG", 1, b"not an image"), ("# [x](javascript:alert(1)).JPEG", 2, b"")]
    features = Features({"image": Image(), "label": ClassLabel(names=class_names())})
    Dataset.from_dict({"image": [{"bytes": d, "path": n} for n, _, d in rows], "label": [y for _, y, _ in rows]},
                      features=features).to_parquet(folder / "train-00000-of-00001.parquet")
    out = tmp_path / "private" / "out"
    command = f"python build_dataset.py --source {folder} --out {out} --model-checkpoint {inputs['checkpoint']}"
    stats = build(BuildConfig(source=str(folder), out=str(out), model=ARCH, model_checkpoint=str(inputs["checkpoint"]),
                              annotations=str(inputs["annotations"]), workers=0, top_k=2, group_by="label",
                              classes=[1, 2], command=command, cache_dir=str(tmp_path / "cache")))
    assert stats.skipped_images == 2
    card = (out / "README.md").read_text()
    info = (out / "build_info.json").read_text()
    for text in (card, info):
        for local in (str(tmp_path), "/home/alice", str(inputs["root"]), "pytest-of"):
            assert local not in text
    provenance = json.loads(info)["provenance"]
    assert provenance["checkpoint"] == inputs["checkpoint"].name and len(provenance["checkpoint_sha256"]) == 64
    assert provenance["annotations"] == inputs["annotations"].name and len(provenance["annotations_sha256"]) == 64
    assert provenance["source"] == "parquet shards imagenet-parquet (1 files)"
    html = _html(card)
    images = re.findall(r"<img [^>]*>", html)  # the gallery, the card's only picture, and nothing from the data
    assert len(images) <= 1 and all('src="gallery.png"' in image for image in images)
    assert "javascript:" not in re.findall(r'href="([^"]*)"', html).__str__()
    assert "&lt;img src=x onerror=alert(1)&gt;" in html
