"""The ImageNet folder layout: `<root>/<split>/<wnid>/<file>` (torchvision's `ImageFolder`)."""

import functools
import logging
import os
from pathlib import Path

from ..schema import wordnet_ids
from .base import IMAGE_EXTENSIONS, SPLIT_ALIASES, Sample, Source, SourceError, image_id_from_name

log = logging.getLogger(__name__)


class FolderSource(Source):
    kind = "folder"

    def __init__(self, root: str | os.PathLike, split: str):
        root = Path(root)
        candidates = [root / split, root / SPLIT_ALIASES.get(split, split), root]
        wnids = set(wordnet_ids())
        self.dir = next((d for d in candidates if d.is_dir() and any(p.name in wnids for p in d.iterdir())), None)
        if self.dir is None:
            splits = sorted(d.name for d in root.iterdir() if d.is_dir() and any(p.name in wnids for p in d.iterdir()))
            hint = f"; they are under {', '.join(splits)}: pass --split {splits[0]}" if splits else ""
            raise SourceError(f"{root}: no ImageNet class folders (<wnid>/) under {root / split} or {root}{hint}")
        self.class_dirs = {i: self.dir / w for i, w in enumerate(wordnet_ids()) if (self.dir / w).is_dir()}
        self.not_images: set[str] = set()
        others = sorted(p.name for p in self.dir.iterdir() if p.is_dir() and p.name not in wnids
                        and not p.name.startswith("."))
        if others:
            log.warning("%s: ignoring %d folder(s) that are not ImageNet class ids (wnids such as n01440764): %s%s",
                        self.dir, len(others), ", ".join(others[:10]), " ..." if len(others) > 10 else "")

    @functools.lru_cache(maxsize=None)
    def _files(self, label: int) -> list[str]:
        """The image files of a class folder, by extension: other files (Thumbs.db, notes.txt) are no corrupt
        images but no images at all (counted in `not_images`); hidden files, sub-folders and broken or looping
        symlinks are passed over."""
        names = []
        for entry in os.scandir(self.class_dirs[label]):
            if entry.name.startswith(".") or not _is_file(entry):
                continue
            if "." in entry.name and entry.name.rsplit(".", 1)[1].lower() in IMAGE_EXTENSIONS:
                names.append(entry.name)
            else:
                self.not_images.add(f"{self.class_dirs[label].name}/{entry.name}")
        return sorted(names)

    def _label_counts(self):
        return {label: len(self._files(label)) for label in self.class_dirs}

    def locate(self, image_id):
        return [str(self.class_dirs[label] / name) for label in sorted(self.class_dirs)
                for name in self._files(label) if image_id_from_name(name) == image_id]

    def _iter(self, classes):
        for label in sorted(self.class_dirs):
            if classes is not None and label not in classes:
                continue
            for name in self._files(label):
                ref = f"{self.class_dirs[label].name}/{name}"
                yield Sample(image_id_from_name(name), label, self._read(ref), ref)

    def _read(self, ref: str) -> bytes:
        data = (self.dir / ref).read_bytes()
        self.io.bytes += len(data)
        return data

    def read_many(self, refs):
        for ref in refs:
            yield ref, self._read(ref)

    def index_ids(self, ids):
        """By file name alone (no file is opened); an id that starts with a wnid is looked for in that class's
        folder only, others in every class folder."""
        by_wnid = {d.name: label for label, d in self.class_dirs.items()}
        labels = {by_wnid.get(image_id.split("_", 1)[0]) for image_id in ids}
        search = sorted(self.class_dirs) if None in labels else sorted(labels)
        found = {}
        for label in search:
            for name in self._files(label):
                image_id = image_id_from_name(name)
                if image_id in ids:
                    found.setdefault(image_id, f"{self.class_dirs[label].name}/{name}")
        return found

    def plan_units(self, classes, limit_per_class, unit_size):
        units = []
        for label in sorted(self.class_dirs):
            if classes is None or label in classes:
                n = min(len(self._files(label)), limit_per_class or len(self._files(label)))
                units += [{"label": label, "start": s, "stop": min(s + unit_size, n)} for s in range(0, n, unit_size)]
        return units

    def _unit_iter(self, spec, classes, limit_per_class):
        label = spec["label"]
        for name in self._files(label)[spec["start"]:spec["stop"]]:
            ref = f"{self.class_dirs[label].name}/{name}"
            yield Sample(image_id_from_name(name), label, self._read(ref), ref)

    def describe(self):
        return f"ImageNet folder {self.dir}"


def _is_file(entry: os.DirEntry) -> bool:
    try:
        return entry.is_file()
    except OSError:  # a symlink loop (ELOOP) or a link that vanished
        return False
