"""Readers of ImageNet shards. Each yields `Sample(image_id, label, data, ref)` in a fixed order, and reads the
samples behind a list of refs again (pass 2 of the build reads only the selected images).

Three layouts:
- `FolderSource`: `<root>/<split>/<wnid>/<file>` (torchvision layout);
- `ParquetSource`: Hugging Face parquet (or arrow) shards with an image struct column and a label column, local or
  on the Hub (read through `HfFileSystem`, the filesystem `datasets` streams with);
- `WebDatasetSource`: tar shards with `<key>.jpg` + `<key>.cls` (+ optional `<key>.json`).
Image ids are the original file name without its extension (`n01440764_10026`), whatever the layout; only the last
extension goes, so `x.JPEG` and `x.copy.JPEG` stay two ids (`x`, `x.copy`).
Samples whose label is no ImageNet class (-1 in the Hub's test split, 1000, null) are skipped and counted in
`Source.unlabelled`, never stored as another class.
"""

import json
from collections import defaultdict
from pathlib import Path, PurePosixPath

from .base import IMAGE_EXTENSIONS, Sample, Source, SourceError, _files_for_split, image_id_from_name, is_class
from .folder import FolderSource
from .io import describe_reads
from .parquet import ParquetSource
from .webdataset import WebDatasetSource

__all__ = ["IMAGE_EXTENSIONS", "FolderSource", "ParquetSource", "Sample", "Source", "SourceError", "WebDatasetSource",
           "describe_reads", "image_id_from_name", "is_class", "open_source", "ref_location"]


COMPRESSED_TARS = (".tar.gz", ".tgz", ".tar.bz2", ".tar.xz", ".tar.zst")


def open_source(source: str, split: str = "train", kind: str | None = None) -> Source:
    """`source` is a local path (folder / parquet / arrow / tar shards, auto-detected) or a Hub dataset id."""
    from ..targets import resolve

    where = resolve(source, "--source")  # "no such folder" first; the Hub only for what could be a Hub id
    if isinstance(where, Path):
        return _open_local(where, split, kind)
    return _open_hub(source, split, kind)


def _open_local(path: Path, split: str, kind: str | None) -> Source:
    root = path.parent if path.is_file() else path
    files = [str(path)] if path.is_file() else [str(p) for p in sorted(path.rglob("*")) if p.is_file()]
    by_ext = _group_by_extension(files)
    kind = kind or _detect(path, by_ext)
    if kind == "folder":
        return FolderSource(path, split)
    # one file named on the command line is read whatever its name says; in a folder, the split picks the files
    chosen = files if path.is_file() else _split_files(by_ext, kind, split, path, relative_to=root)
    if kind == "parquet":
        return ParquetSource(chosen, where=str(path))
    info_file = root / "_info.json"
    info = json.loads(info_file.read_text()) if info_file.is_file() else None
    return WebDatasetSource(chosen, where=str(path), info=info, split=split)


def _open_hub(repo_id: str, split: str, kind: str | None) -> Source:
    from huggingface_hub import HfFileSystem

    fs = HfFileSystem()
    base = f"datasets/{repo_id}"
    try:
        files = [f for f in fs.find(base) if not f.rsplit("/", 1)[-1].startswith(".")]
    except Exception as e:
        raise SourceError(f"--source {repo_id}: cannot list the Hub dataset ({type(e).__name__}: {e}); "
                          "is it gated (accept its terms, then `hf auth login`)?") from None
    by_ext = _group_by_extension(files)
    kind = kind or _detect(None, by_ext)
    if kind == "folder":
        raise SourceError(f"--source {repo_id}: a Hub dataset must hold parquet/arrow or tar shards")
    chosen = _split_files(by_ext, kind, split, repo_id, relative_to=base)
    if kind == "parquet":
        return ParquetSource(chosen, fs=fs, where=repo_id)
    info = json.loads(fs.read_text(f"{base}/_info.json")) if fs.exists(f"{base}/_info.json") else None
    return WebDatasetSource(chosen, fs=fs, where=repo_id, info=info, split=split)


def _group_by_extension(files: list[str]) -> dict[str, list[str]]:
    groups: dict[str, list[str]] = defaultdict(list)
    for f in files:
        name = f.rsplit("/", 1)[-1].lower()
        if name.endswith((".parquet", ".arrow")):
            groups["parquet"].append(f)
        elif name.endswith(".tar"):
            groups["webdataset"].append(f)
        elif name.endswith(COMPRESSED_TARS):
            groups["compressed"].append(f)
    return groups


def _detect(path: Path | None, by_ext: dict[str, list[str]]) -> str:
    found = [k for k in ("parquet", "webdataset") if by_ext.get(k)]
    if not found and by_ext.get("compressed"):
        compressed = by_ext["compressed"]
        raise SourceError(f"{path or 'the Hub dataset'}: holds {len(compressed)} compressed tar file(s), e.g. "
                          f"{compressed[0].rsplit('/', 1)[-1]}; WebDataset shards are read by member offset and must "
                          "be plain .tar files: decompress them first (e.g. gunzip *.tar.gz), then pass the folder")
    if path is not None and path.is_dir() and not found:
        return "folder"
    if path is not None and path.is_file() and not found:
        raise SourceError(f"{path}: not a parquet, arrow or tar file; --source takes an ImageNet folder (class folders "
                          "<wnid>/, or <split>/<wnid>/), a folder or file of parquet or WebDataset shards, or a Hub "
                          "dataset id")
    if len(found) != 1:
        where = path or "the Hub dataset"
        raise SourceError(f"{where}: cannot tell the layout (found {found or 'no shards'}); pass --source-type")
    return found[0]


def _split_files(by_ext, kind, split, where, relative_to) -> list[str]:
    files = by_ext.get(kind, [])
    relative = {str(PurePosixPath(f).relative_to(PurePosixPath(str(relative_to)))): f for f in files} \
        if files else {}
    chosen = _files_for_split(list(relative), split, kind, str(where))
    return [relative[f] for f in chosen]


def ref_location(source: Source, ref: str) -> str:
    """Where the sample behind `ref` lives, in words a user can find it by (error messages)."""
    if isinstance(source, FolderSource):
        return str(source.dir / ref)
    if isinstance(source, ParquetSource):
        file_index, group, row = map(int, ref.split(":"))
        return f"{source.files[file_index]} (row group {group}, row {row})"
    if isinstance(source, WebDatasetSource):
        file_index, offset, _ = map(int, ref.split(":"))
        return f"{source.files[file_index]} (member at byte {offset})"
    return ref
