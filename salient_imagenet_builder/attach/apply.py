"""`attach` as a job of the engine (`core.job.Job`: the claim of `--out`, the lock, the staging folder, resume and
the swap are the base's): check the inputs, index the ImageNet copy, join shard by shard (resumable), write the
dataset."""

import json
import logging
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import pyarrow.parquet as pq

from ..core.card import BuildStats, write_card
from ..core.constants import BUILD_INFO, MAP_SHAPE
from ..core.dataset import DatasetView
from ..core.distributed import World
from ..core.gallery import write_gallery
from ..core.job import Job
from ..core.output import OutputExists, write_text_atomic
from ..core.provenance import made_by, public_paths
from ..core.sources import Source, open_source
from ..core.stages import default_workers
from ..core.targets import resolve
from ..core.units import Unit, UnitFolder, fingerprint_hash, run_units
from ..core.writer import ShardWriter, SpilledRows
from ..version import __version__
from .errors import AttachError, MissingImages
from .fetch import fetch_blocks
from .join import ImageJob, JoinResult, JoinWorker
from .options import ATTACH_INFO, AttachConfig
from .recheck import redo_changed

__all__ = ["AttachJob", "attach"]

log = logging.getLogger(__name__)

EXAMPLES = 3  # ids named in the one-line summary


@dataclass
class Inputs:
    """The build and the copy, checked and indexed: what every stage after the index reads."""

    dataset: DatasetView
    info: dict  # the build's build_info.json
    source: Source
    split: str  # the copy's split
    refs: dict[str, str]  # image id -> where the copy holds it
    shard_ids: list[list[str]]  # every row's image_id, by image shard of the build
    missing: list[str]  # ids of the build's rows the copy lacks
    index_bytes: int  # bytes read to index the copy (a folder: none)


class AttachJob(Job):
    kind = "build"
    resumable = True
    source_option = "imagenet"


    def check(self) -> None:
        refuse_dataset_as_out(self.out, self.config.dataset)

    def prepare(self) -> None:
        """The build and the copy, indexed (no image bytes read); images the copy lacks fail here, before any."""
        config = self.config
        self.start = time.perf_counter()
        self.inputs = inputs = open_inputs(config)
        if inputs.missing and not inputs.refs and inputs.source.unnamed.rows:
            raise AttachError(no_names_line(config, inputs))  # --allow-missing or not: there is nothing to attach
        if inputs.missing and not config.allow_missing:
            raise MissingImages(not_found_line(config, inputs))

    def fingerprint(self) -> dict:
        return fingerprint(self.config, self.inputs)

    def work(self, work: Path) -> None:
        self.markers, self.images_bytes = join_units(self.config, self.inputs, work)
        unreadable = [u for m in self.markers for u in m["unreadable"]]
        if unreadable and not self.config.allow_missing:
            raise MissingImages(undecodable_line(self.config, unreadable, self.staging))

    def write(self, staging: Path) -> dict:
        return write(self.config, self.inputs, staging, self.markers, self.images_bytes, self.start)


def attach(config: AttachConfig) -> dict:
    """Write `config.out`: the build `config.dataset` with its images joined from `config.imagenet`. Returns what
    `attach_info.json` says. Images the copy lacks (or cannot decode) fail it, in one line, unless `allow_missing`."""
    return AttachJob(config).run()


def open_inputs(config: AttachConfig) -> Inputs:
    """The build (its build info, its shards' image ids) and the copy indexed by those ids (no image bytes)."""
    dataset = DatasetView(config.dataset, command="attach")
    if BUILD_INFO not in dataset.target.files:
        raise AttachError(f"attach {config.dataset}: not a build of this tool (no {BUILD_INFO})")
    info = json.loads(dataset.target.read_text(BUILD_INFO))
    resolve(config.imagenet, "--imagenet")  # "no such folder" in its own name, before the reader says --source
    split = config.split or info["split"]
    source = open_source(config.imagenet, split, config.imagenet_type)
    shard_ids = image_ids(dataset)
    refs = source.index_ids({i for ids in shard_ids for i in ids})
    missing = [i for ids in shard_ids for i in ids if i not in refs]
    return Inputs(dataset, info, source, split, refs, shard_ids, missing, source.io.total)  # all read: the index


def refuse_dataset_as_out(out: Path, dataset: str) -> None:
    path = Path(dataset).expanduser()
    if path.exists() and (out.resolve() == path.resolve() or out.resolve().is_relative_to(path.resolve())):
        raise OutputExists(f"--out {out}: is the dataset attach reads (or inside it); choose another --out")


def image_ids(dataset: DatasetView) -> list[list[str]]:
    """Every row's image_id, by image shard (that column alone is read)."""
    ids = []
    for path in dataset.image_files:
        with dataset.target.open(path, random=True) as f:
            ids.append(pq.ParquetFile(f).read(columns=["image_id"]).column(0).to_pylist())
    return ids


def not_found_line(config: AttachConfig, inputs: Inputs) -> str:
    """The one line for images the copy lacks (found before any image is read), and why where the copy tells."""
    missing, unnamed = inputs.missing, inputs.source.unnamed
    why = f"; {unnamed.rows} of its {unnamed.of} rows name no file ({unnamed.how})" if unnamed.rows else ""
    return (f"{len(missing)} image(s) of {config.dataset} not found in {config.imagenet} (split {inputs.split!r}), "
            f"e.g. {', '.join(missing[:EXAMPLES])}{why}; put them in place and rerun, or pass --allow-missing to "
            f"attach the rest {_kept_null(config)}")


def no_names_line(config: AttachConfig, inputs: Inputs) -> str:
    """The one line for a copy none of whose images could be found because its rows name no file."""
    unnamed = inputs.source.unnamed
    rows = f"all {unnamed.of}" if unnamed.rows == unnamed.of else f"{unnamed.rows} of the {unnamed.of}"
    return (f"--imagenet {config.imagenet}: {rows} rows of the copy (split {inputs.split!r}) name no image file "
            f"({unnamed.how}), so none of the {len(inputs.missing)} images of {config.dataset} can be found by "
            "image_id (the original file name); attach needs a copy that keeps ImageNet's file names: the ImageNet "
            "folder (<split>/<wnid>/<wnid>_<n>.JPEG), parquet shards whose image column keeps each file's `path` "
            "(as the Hub's ILSVRC/imagenet-1k does), or WebDataset tars whose keys (or <key>.json \"filename\") are "
            "the file names")


def undecodable_line(config: AttachConfig, unreadable: list[dict], staging: Path) -> str:
    """The one line for images found but not decoded (known once the shards are done, which are kept)."""
    first = unreadable[0]
    return (f"{len(unreadable)} image(s) of {config.dataset} in {config.imagenet} could not be decoded, e.g. "
            f"{first['image_id']} ({first['error']}); the finished shards are kept in {staging}: rerun with "
            f"--allow-missing to attach the rest {_kept_null(config)}, or replace those files and run the same command "
            "again (it joins again only the shards that hold them)")


def _kept_null(config: AttachConfig) -> str:
    return f"(their rows keep no image; {Path(config.out) / ATTACH_INFO} lists them)"


def fingerprint(config: AttachConfig, inputs: Inputs) -> dict:
    """What makes two runs the same attach: the build (its build info names its shards), the copy, the image
    column's form. Where each image was found is each unit's own (its spec): a shard whose images the copy holds
    elsewhere now is joined again, the others kept. `--allow-missing` and `--workers` are not part of it."""
    return {"package_version": __version__, "dataset": config.dataset,
            "build_info_sha256": fingerprint_hash({"info": inputs.info}),
            "imagenet": inputs.source.describe(), "split": inputs.split, "image_mode": config.image_mode}


def join_units(config: AttachConfig, inputs: Inputs, work: Path) -> tuple[list[dict], int]:
    """One unit per image shard of the build; returns their done markers, in shard order, and the bytes of images
    read from the copy (this run and the runs it resumes)."""
    plan = join_plan(inputs)
    folder = UnitFolder(work, "join")
    workers = config.workers if config.workers is not None else default_workers()
    # decoded as the build decoded (a --decode gpu build used no draft: its views came from the device decoder,
    # which Pillow's full-size decode matches within 1 level)
    draft = bool(inputs.info["provenance"]["constants"].get("jpeg_draft", True))
    with inputs.source.io.measure() as recheck:
        fixed = redo_changed(folder, plan, inputs.source, inputs.refs, ImageJob(config.image_mode, draft),
                             config.imagenet)
    rechecked = recheck.bytes
    images, fetched = fetch_blocks(inputs.source, inputs.refs, work, config.imagenet, again=fixed)
    features = output_stats(inputs.info).image_features()
    run_units(plan, folder, lambda: JoinWorker(inputs.dataset, images, inputs.refs, config.image_mode, draft,
                                               workers, folder.path, config.imagenet, features),
              World(), "attach", desc=f"attach: images of {len(plan)} shard(s) from {config.imagenet}",
              ran_with={"--workers": workers})
    markers = [folder.read_marker(unit.index) | {"path": str(folder.result_dir(unit.index) / JoinResult.file)}
               for unit in plan]
    return markers, rechecked + fetched + sum(m["bytes_read"] for m in markers)


def join_plan(inputs: Inputs) -> list[Unit]:
    """Unit i is the build's image shard i; its spec names where the copy holds the shard's images (a hash), so a
    rerun that finds them elsewhere joins that shard again (`recheck`)."""
    refs = inputs.refs
    return [Unit(index, {"shard": path, "refs_sha256": fingerprint_hash({"refs": [[i, refs.get(i)] for i in ids]})})
            for index, (path, ids) in enumerate(zip(inputs.dataset.image_files, inputs.shard_ids))]


def write(config: AttachConfig, inputs: Inputs, staging: Path, markers: list[dict], images_bytes: int,
          start: float) -> dict:
    """The joined rows in the build's order, its annotation shards, the gallery, the card and attach_info.json."""
    info = inputs.info
    stats = output_stats(info)
    rows = SpilledRows([Path(m["path"]) for m in markers])
    shards = ShardWriter(staging / "data", info["split"], stats.image_features(), config.max_shard_bytes,
                         group_column="group")
    for table in rows.sorted_batches(["group", "image_id"]):
        shards.write(table)
    stats.default_shards = [p.name for p in shards.close()]
    stats.default_bytes = shards.bytes
    del rows
    copy_annotations(inputs.dataset, staging)
    stats.gallery = write_gallery(staging, info["split"])
    summary = attach_summary(config, inputs, markers, images_bytes, start)
    stats.extras["attached"] = {k: v for k, v in summary.items() if k not in ("missing", "unreadable")}
    provenance = info["provenance"]
    provenance["constants"] = {**provenance["constants"], "image_mode": config.image_mode}
    write_card(staging, provenance, stats, info["split"], repo_id=Path(config.out).name)
    write_text_atomic(staging / ATTACH_INFO, json.dumps(summary, indent=2))
    return summary


def output_stats(info: dict) -> BuildStats:
    """The build's statistics in this version's layout: an older build's rows are upgraded as they are joined
    (`core.layouts`; the first builds recorded no map shape: theirs is the ResNet-50's)."""
    stats = BuildStats.from_dict(info["stats"])
    stats.map_shape, stats.legacy_layout = list(stats.map_shape or MAP_SHAPE), None
    return stats


def copy_annotations(dataset: DatasetView, staging: Path) -> None:
    """The annotations config is the build's, byte for byte."""
    for path in dataset.annotation_files:
        with dataset.target.open(path) as f, open(staging / path, "wb") as g:
            shutil.copyfileobj(f, g)


def attach_summary(config: AttachConfig, inputs: Inputs, markers: list[dict], images_bytes: int,
                   start: float) -> dict:
    missing = [i for m in markers for i in m["missing"]]
    unreadable = [u for m in markers for u in m["unreadable"]]
    made = made_by(config.command)
    return {
        "package": made["package"], "package_version": made["package_version"],
        "dataset": public_paths(config.dataset), "imagenet": public_paths(inputs.source.describe()),
        "split": inputs.split, "image_mode": config.image_mode, "command": made["command"],
        "rows": sum(m["rows"] for m in markers), "attached": sum(m["attached"] for m in markers),
        "not_attached": len(missing) + len(unreadable),
        "source_bytes": {"index": inputs.index_bytes, "images": images_bytes},
        "source_size": inputs.source.size(),  # bytes of the copy's files (of the split), where the listing tells
        "seconds": round(time.perf_counter() - start, 2),
        "missing": missing, "unreadable": unreadable,
    }
