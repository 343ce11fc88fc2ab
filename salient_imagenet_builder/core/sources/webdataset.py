"""WebDataset tar shards: `<key>.jpg` + `<key>.cls` (+ optional `<key>.json` with the original file name)."""

import json
import tarfile
from collections import defaultdict
from pathlib import PurePosixPath

from .base import IMAGE_EXTENSIONS, SPLIT_ALIASES, Sample, Source, SourceError, image_id_from_name


class WebDatasetSource(Source):
    kind = "webdataset"

    def __init__(self, files: list[str], fs=None, where: str = "", info: dict | None = None, split: str = ""):
        if not files:
            raise SourceError(f"{where}: no tar files")
        self.files, self.fs, self.where, self.info, self.split = files, fs, where, info, split

    def _open(self, path):
        return self.fs.open(path, "rb") if self.fs is not None else open(path, "rb")

    def _label_counts(self):
        return None  # labels live inside the tars; _info.json gives only the total (see count)

    def count(self, classes=None, limit_per_class=None):
        if classes is not None or limit_per_class is not None or not self.info:
            return None
        for split in self.info.get("splits", []):
            if split.get("name") in (self.split, SPLIT_ALIASES.get(self.split)):
                return split.get("num_samples")
        return None

    def _iter(self, classes):
        for file_index, path in enumerate(self.files):
            with self._open(path) as f, tarfile.open(fileobj=f, mode="r|") as tar:
                yield from self._samples(tar, file_index, path)

    def _samples(self, tar, file_index, path):
        key, parts = None, {}
        for member in tar:
            if not member.isfile():
                continue
            name = member.name
            base = PurePosixPath(name)
            member_key = str(base.parent / base.name.split(".")[0])
            ext = base.name.split(".", 1)[1].lower() if "." in base.name else ""
            if member_key != key:
                if key is not None:
                    yield self._sample(key, parts, path)
                key, parts = member_key, {}
            if ext in IMAGE_EXTENSIONS:
                parts["image"] = (tar.extractfile(member).read(), f"{file_index}:{member.offset_data}:{member.size}")
            elif ext in ("cls", "json"):
                parts[ext] = tar.extractfile(member).read()
        if key is not None:
            yield self._sample(key, parts, path)

    @staticmethod
    def _sample(key, parts, path) -> Sample:
        if "image" not in parts:
            raise SourceError(f"{path}: sample {key!r} has no image member ({'/'.join(IMAGE_EXTENSIONS)})")
        meta = json.loads(parts["json"]) if "json" in parts else {}
        if "cls" in parts:
            text = parts["cls"].decode(errors="replace").strip()
        elif "label" in meta:
            text = str(meta["label"])
        else:
            raise SourceError(f"{path}: sample {key!r} has neither a .cls member nor a json label")
        try:
            label = int(text)
        except ValueError:
            raise SourceError(f"{path}: sample {key!r} has the label {text[:40]!r}, "
                              "not an integer class index") from None
        image_id = image_id_from_name(meta.get("filename") or key)
        data, ref = parts["image"]
        return Sample(image_id, label, data, ref)

    def plan_units(self, classes, limit_per_class, unit_size):
        if limit_per_class is not None:  # labels live inside the tars: a per-class limit needs one ordered pass
            return [{"all": True}]
        return [{"file": i} for i in range(len(self.files))]

    def _unit_iter(self, spec, classes, limit_per_class):
        if spec.get("all"):
            yield from self.samples(classes, limit_per_class)
            return
        path = self.files[spec["file"]]
        with self._open(path) as f, tarfile.open(fileobj=f, mode="r|") as tar:
            for sample in self._samples(tar, spec["file"], path):
                if classes is None or sample.label in classes:
                    yield sample

    def read_many(self, refs):
        by_file: dict[int, list[tuple[int, int, str]]] = defaultdict(list)
        for ref in refs:
            file_index, offset, size = map(int, ref.split(":"))
            by_file[file_index].append((offset, size, ref))
        for file_index in sorted(by_file):
            with self._open(self.files[file_index]) as f:
                for offset, size, ref in sorted(by_file[file_index]):
                    f.seek(offset)
                    yield ref, f.read(size)

    def describe(self):
        return f"WebDataset shards {self.where} ({len(self.files)} tar files)"
