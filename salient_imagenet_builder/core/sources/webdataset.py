"""WebDataset tar shards: `<key>.jpg` + `<key>.cls` (+ optional `<key>.json` with the original file name)."""

import json
import tarfile
from collections import Counter, defaultdict
from pathlib import PurePosixPath

from .base import IMAGE_EXTENSIONS, SPLIT_ALIASES, Sample, Source, SourceError, image_id_from_name, is_class
from .labels import normalize_label


class WebDatasetSource(Source):
    """Tars are streamed whole for a full pass. A trial (`--classes`, `--limit`) of local tars first indexes each
    tar by its headers and small members (labels, json), seeking past the images, then reads only the wanted images
    by offset; remote tars are streamed (an index there costs a request per member). Refs are
    `file:offset:size` of the image member."""

    kind = "webdataset"

    def __init__(self, files: list[str], fs=None, where: str = "", info: dict | None = None, split: str = ""):
        if not files:
            raise SourceError(f"{where}: no tar files")
        self.files, self.fs, self.where, self.info, self.split = files, fs, where, info, split

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
            with self.open(path, sequential=True) as f, tarfile.open(fileobj=f, mode="r|") as tar:
                yield from self._samples(tar, file_index, path)

    def _samples(self, tar, file_index, path, images: bool = True):
        """Samples in member order; without `images`, an image member is recorded by offset and not read. A
        sample's members usually follow each other; one whose members are apart (all images first, then all labels)
        waits until its label comes."""
        pending: dict[str, dict] = {}  # key -> parts of a sample not yet complete
        key = None
        for member in tar:
            if not member.isfile():
                continue
            base = PurePosixPath(member.name)
            member_key = str(base.parent / base.name.split(".")[0])
            ext = base.name.split(".", 1)[1].lower() if "." in base.name else ""
            if member_key != key and key in pending and _complete(pending[key]):
                yield self._sample(key, pending.pop(key), path)
            key = member_key
            parts = pending.setdefault(key, {})
            if ext in IMAGE_EXTENSIONS:
                data = tar.extractfile(member).read() if images else None
                parts["image"] = (data, f"{file_index}:{member.offset_data}:{member.size}")
            elif ext in ("cls", "json"):
                parts[ext] = tar.extractfile(member).read()
        for key, parts in pending.items():
            yield self._sample(key, parts, path)

    @staticmethod
    def _sample(key, parts, path) -> Sample:
        if "image" not in parts:
            raise SourceError(f"{path}: sample {key!r} has no image member ({'/'.join(IMAGE_EXTENSIONS)})")
        meta = _json(parts, key, path)
        if "cls" in parts:
            text = parts["cls"].decode(errors="replace").strip()
        elif "label" in meta:
            text = str(meta["label"])
        else:
            raise SourceError(f"{path}: sample {key!r} has an image but no label: neither a {key}.cls member nor a "
                              f"\"label\" in {key}.json anywhere in the tar")
        label = normalize_label(text, None, f"{path}: sample {key!r}")
        image_id = image_id_from_name(meta.get("filename") or key)
        data, ref = parts["image"]
        return Sample(image_id, label, data, ref)

    def plan_units(self, classes, limit_per_class, unit_size):
        """One unit per tar; a trial of local tars lists each unit's wanted samples from the tars' index."""
        if classes is None and limit_per_class is None:
            return [{"file": i} for i in range(len(self.files))]
        if self.fs is not None:  # labels live inside the tars: a per-class limit needs one ordered pass
            return [{"all": True}] if limit_per_class is not None else [{"file": i} for i in range(len(self.files))]
        seen, units = defaultdict(int), []
        for file_index, path in enumerate(self.files):
            members, unlabelled = [], Counter()
            for sample in self._index(file_index, path):
                if not is_class(sample.label):
                    unlabelled[str(sample.label)] += 1
                elif (classes is None or sample.label in classes) and (limit_per_class is None
                                                                       or seen[sample.label] < limit_per_class):
                    seen[sample.label] += 1
                    members.append([sample.image_id, sample.label, sample.ref])
            if members or unlabelled:
                units.append({"file": file_index, "members": members,
                              **({"unlabelled": dict(unlabelled)} if unlabelled else {})})
        return units

    def _index(self, file_index, path):
        """The tar's samples without their image bytes: headers and small members only, seeking past the rest."""
        with self.open(path) as f, tarfile.open(fileobj=f, mode="r:") as tar:
            yield from self._samples(tar, file_index, path, images=False)

    def _unit_iter(self, spec, classes, limit_per_class):
        if "members" in spec:  # a trial's wanted samples, read by offset (see `plan_units`)
            members = {ref: (image_id, label) for image_id, label, ref in spec["members"]}
            for ref, data in self.read_many(list(members)):
                yield Sample(*members[ref], data, ref)
            return
        if spec.get("all"):
            yield from self.samples(classes, limit_per_class)
            return
        path = self.files[spec["file"]]
        with self.open(path, sequential=True) as f, tarfile.open(fileobj=f, mode="r|") as tar:
            for sample in self._samples(tar, spec["file"], path):
                if classes is None or sample.label in classes:
                    yield sample

    def read_many(self, refs):
        """Each image member by offset, without read-ahead, in file order."""
        by_file: dict[int, list[tuple[int, int, str]]] = defaultdict(list)
        for ref in refs:
            file_index, offset, size = map(int, ref.split(":"))
            by_file[file_index].append((offset, size, ref))
        for file_index in sorted(by_file):
            with self.open(self.files[file_index]) as f:
                for offset, size, ref in sorted(by_file[file_index]):
                    f.seek(offset)
                    yield ref, f.read(size)

    def index_ids(self, ids):
        found = {}
        for file_index, path in enumerate(self.files):
            samples = self._index(file_index, path) if self.fs is None else self._stream(file_index, path)
            for sample in samples:
                if sample.image_id in ids:
                    found.setdefault(sample.image_id, sample.ref)
        return found

    def _stream(self, file_index, path):
        with self.open(path, sequential=True) as f, tarfile.open(fileobj=f, mode="r|") as tar:
            yield from self._samples(tar, file_index, path, images=False)

    def describe(self):
        return f"WebDataset shards {self.where} ({len(self.files)} tar files)"


def _complete(parts: dict) -> bool:
    """An image and a label (a .cls member, or a json member holding one)."""
    if "image" not in parts:
        return False
    if "cls" in parts:
        return True
    try:
        return "label" in json.loads(parts.get("json") or b"{}")
    except (ValueError, TypeError):
        return "json" in parts  # a bad json member: `_sample` says so


def _json(parts: dict, key: str, path: str) -> dict:
    if "json" not in parts:
        return {}
    try:
        meta = json.loads(parts["json"])
    except ValueError:
        raise SourceError(f"{path}: sample {key!r}: its .json member is not JSON") from None
    return meta if isinstance(meta, dict) else {}
