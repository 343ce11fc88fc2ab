"""Does a change keep builds byte-identical? Builds the same generated inputs in several ways with the package this
Python imports, and saves them (`--save DIR`) or compares them with builds saved before (`--compare DIR`): every
data shard byte for byte; build_info.json and README.md equal once run-dependent values (timings, paths of the
temporary inputs) are masked.

    git stash; python tools/same_builds.py --save /tmp/before; git stash pop
    python tools/same_builds.py --compare /tmp/before
"""

import argparse
import filecmp
import json
import re
import shutil
import sys
import tempfile
from pathlib import Path

VARIANTS = {  # name -> BuildConfig fields beyond the inputs
    "crop": {"top_k": 3},
    "none": {"top_k": 3, "image_mode": "none"},
    "original_label": {"top_k": 4, "image_mode": "original", "group_by": "label"},
    "all": {"top_k": None, "group_by": "label"},
    "no_draft_units": {"top_k": 2, "draft": False, "unit_size": 3},
}
TIMING = re.compile(r'("(seconds_total|images_per_second|seconds)": )[0-9.]+|'
                    r'(build time \| )[0-9.]+ s \([0-9.]+ images/s\)')


def build_all(folder: Path) -> None:
    from salient_imagenet_builder.builder import BuildConfig, build
    from salient_imagenet_builder.builder.demo import make_inputs

    with tempfile.TemporaryDirectory(prefix="same_builds_") as tmp:
        inputs = make_inputs(Path(tmp) / "inputs", list(range(4)), per_class=5, arch="resnet18")
        for name, fields in VARIANTS.items():
            build(BuildConfig(source=inputs["source"], out=str(folder / name), model="resnet18",
                              model_checkpoint=inputs["checkpoint"], annotations=inputs["annotations"],
                              workers=0, batch_size=8, classes=list(range(4)), cache_dir=str(Path(tmp) / "cache"),
                              command="same_builds", **fields))


def masked(path: Path) -> str:
    text = path.read_text(encoding="utf-8")
    if path.name == "build_info.json":
        info = json.loads(text)
        info["stats"].pop("stage_seconds", None)
        if info["stats"].get("attached") == {}:  # an empty field builds before the engine's card parts wrote
            del info["stats"]["attached"]
        text = json.dumps(info, indent=2)
    return TIMING.sub(lambda m: (m.group(1) or m.group(3)) + "#", text)


def compare(before: Path, after: Path) -> list[str]:
    problems = []
    for name in VARIANTS:
        a, b = before / name, after / name
        files = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
        if files != sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file()):
            problems.append(f"{name}: other files")
            continue
        for rel in files:
            if rel.suffix == ".parquet" or rel.suffix == ".png":
                if not filecmp.cmp(a / rel, b / rel, shallow=False):
                    problems.append(f"{name}/{rel}: bytes differ")
            elif masked(a / rel) != masked(b / rel):
                problems.append(f"{name}/{rel}: differs beyond timings")
    return problems


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument("--save", metavar="DIR")
    what.add_argument("--compare", metavar="DIR")
    args = parser.parse_args()
    if args.save:
        shutil.rmtree(args.save, ignore_errors=True)
        build_all(Path(args.save))
        print(f"saved {len(VARIANTS)} builds in {args.save}")
        return 0
    with tempfile.TemporaryDirectory(prefix="same_builds_after_") as tmp:
        build_all(Path(tmp))
        problems = compare(Path(args.compare), Path(tmp))
    for problem in problems:
        print(problem)
    print(f"{len(VARIANTS)} builds: {'byte-identical' if not problems else f'{len(problems)} difference(s)'}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
