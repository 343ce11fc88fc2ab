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
        """The image files of a class folder and its sub-folders (as torchvision's `ImageFolder` finds them), as
        paths relative to the class folder, by extension: other files (Thumbs.db, notes.txt) are no corrupt images
        but no images at all (counted in `not_images`); hidden files and folders, and broken or looping symlinks
        are passed over."""
        top = self.class_dirs[label]
        names, seen = [], set()
        for folder, dirs, files in os.walk(top, followlinks=True, onerror=lambda e: None):
            real = os.path.realpath(folder)
            if real in seen or not self._own_folder(real, top):  # a symlink loop, or a link to another class
                dirs[:] = []
                continue
            seen.add(real)
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
            relative = os.path.relpath(folder, top)
            for name in files:
                path = name if relative == "." else f"{relative}/{name}".replace(os.sep, "/")
                if name.startswith(".") or not os.path.isfile(os.path.join(folder, name)):
                    continue
                if "." in name and name.rsplit(".", 1)[1].lower() in IMAGE_EXTENSIONS:
                    names.append(path)
                else:
                    self.not_images.add(f"{top.name}/{path}")
        return sorted(names)

    def _own_folder(self, real: str, top: Path) -> bool:
        """A folder (real path) under a class folder that belongs to it: not a link back to the split folder or
        into another class's folder (a link to storage elsewhere is followed)."""
        split, mine = os.path.realpath(self.dir), os.path.realpath(top)
        inside = os.path.commonpath([real, split]) == split
        return not inside or os.path.commonpath([real, mine]) == mine

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
        self.io.total += len(data)
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
