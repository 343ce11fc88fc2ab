"""`salient-imagenet check`: is a dataset folder or Hub repo what `load_dataset` and the dataset viewer need?

Checks the card's YAML (configs, dataset_info, metadata), that every config's shards exist and share one schema,
that the schema is the declared `Features` (parquet metadata and card alike), split sizes, shard and row-group
sizes, the page index (present, and agreeing with the pages' layout), uncompressed image bytes, and that the first rows stream; and what the Hub's dataset viewer
would reject: a first-rows preview over its byte budget, or a page of rows whose read exceeds its scan limit.
"""

import fnmatch
import gc
import io
import json
import logging
import re

import pyarrow.parquet as pq
import yaml
from datasets import Features
from datasets import Image as ImageFeature

from ..core.card import yaml_features
from ..core.constants import (
    ANNOTATIONS_CONFIG,
    HUB_MAX_ROW_GROUP_BYTES,
    HUB_MAX_SHARD_BYTES,
    VIEWER_FIRST_ROWS_MAX_BYTES,
    VIEWER_FIRST_ROWS_MIN_ROWS,
    VIEWER_MIN_CELL_BYTES,
    VIEWER_PAGE_ROWS,
    VIEWER_SCAN_MAX_BYTES,
)
from ..core.errors import UserError
from ..core.pages import page_index_problems
from ..core.schema import annotation_features, image_features, layout_of, legacy_annotation_features
from ..core.targets import Target

DECLARED = {"default": image_features, ANNOTATIONS_CONFIG: annotation_features}
log = logging.getLogger(__name__)
REQUIRED_METADATA = ("license", "pretty_name", "task_categories", "configs", "dataset_info")


def parse_card(text: str) -> dict:
    match = re.match(r"^---\n(.*?)\n---\n", text, re.S)
    if not match:
        raise ValueError("README.md has no YAML front matter (--- ... ---)")
    return yaml.safe_load(match.group(1)) or {}


def check(target: str, stream: bool = True) -> list[str]:
    """Problems found (empty: all good)."""
    try:
        where = Target(target, "check")
    except UserError:
        raise  # neither a folder nor a Hub dataset: a usage error (one line, exit 2/4), not a problem of a dataset
    except Exception as e:
        return [f"{target}: cannot list files ({type(e).__name__}: {e})"]
    if "README.md" not in where.files:
        return [f"{target}: no README.md (the dataset card with the configs)"]
    try:
        meta = parse_card(where.read_text("README.md"))
    except (ValueError, yaml.YAMLError) as e:
        return [f"README.md: {e}"]
    problems = [f"README.md: metadata has no `{key}`" for key in REQUIRED_METADATA if key not in meta]
    configs = {c.get("config_name"): c for c in meta.get("configs") or []}
    infos = meta.get("dataset_info") or []
    infos = {i.get("config_name", "default"): i for i in (infos if isinstance(infos, list) else [infos])}
    for name, declared in DECLARED.items():
        if name not in configs:
            problems.append(f"README.md: no config `{name}` in `configs`")
            continue
        problems += _check_config(where, name, configs[name], infos.get(name), _declared(name, declared,
                                                                                       infos.get(name)), stream)
    return problems


def _declared(name: str, declared, info: dict | None) -> Features:
    """The config's schema; a build from before the generalization columns declares (and holds) the older
    annotations schema, which stays valid. The default config's raw maps have the shape of the build's model; older
    builds' layouts (Array2D maps, nested lists: `schema.LEGACY_LAYOUTS`) stay valid."""
    card = _features(name, info) if info else None
    if name == ANNOTATIONS_CONFIG and card == legacy_annotation_features():
        return legacy_annotation_features()
    if name == "default" and card is not None and "features" in card:
        return image_features(*layout_of(card))
    return declared()


def _features(name: str, info: dict) -> Features | None:
    """The features the card declares for a config (None: none it can read)."""
    try:
        return yaml_features(name, info)
    except Exception:  # a hand-edited card: the comparison with the declared schema says what is wrong
        return None


def _check_config(where: Target, name: str, config: dict, info: dict | None, declared: Features,
                  stream: bool) -> list[str]:
    problems = []
    if info is None:
        problems.append(f"README.md: no `dataset_info` for config `{name}`")
    elif _features(name, info) != declared:
        problems.append(f"README.md: dataset_info features of `{name}` differ from the declared schema")
    sizes = {s["name"]: s.get("num_examples") for s in (info or {}).get("splits", [])}
    for data_files in config.get("data_files", []):
        split, pattern = data_files["split"], data_files["path"]
        files = [f for f in where.files if fnmatch.fnmatch(f, pattern)]
        if not files:
            problems.append(f"config `{name}` split `{split}`: no file matches {pattern}")
            continue
        rows, schemas, groups = 0, {}, []
        for path in files:
            with where.open(path) as f:
                parquet = pq.ParquetFile(f)
                schemas[path] = parquet.schema_arrow
                rows += parquet.metadata.num_rows
                problems += _check_shard(path, parquet, declared)
                problems += [f"{path}: {problem}" for problem in page_index_problems(f, parquet.metadata)]
                groups += [(path, i, parquet.metadata.row_group(i).num_rows,
                            parquet.metadata.row_group(i).total_byte_size)
                           for i in range(parquet.metadata.num_row_groups)]
        problems += _check_viewer_pages(name, split, groups)
        if schemas[files[0]].metadata and b"huggingface" in schemas[files[0]].metadata:  # the viewer's features
            problems += _check_first_rows(where, name, split, files, Features.from_arrow_schema(schemas[files[0]]))
        first = files[0]
        for path, schema in schemas.items():
            if not schema.equals(schemas[first], check_metadata=True):
                problems.append(f"{path}: schema differs from {first} (all shards of `{name}` must share one)")
        if sizes.get(split) is not None and sizes[split] != rows:
            problems.append(f"README.md: `{name}` split `{split}` says {sizes[split]} rows, the shards hold {rows}")
        if stream and not problems and not _streams_array2d(name, declared):
            problems += _check_stream(where, name, split)
    return problems


def _check_shard(path: str, parquet: pq.ParquetFile, declared: Features) -> list[str]:
    problems = []
    metadata = parquet.metadata
    schema = parquet.schema_arrow
    if not schema.metadata or b"huggingface" not in schema.metadata:
        problems.append(f"{path}: no `huggingface` features metadata in the parquet schema")
    elif Features.from_arrow_schema(schema) != declared:
        problems.append(f"{path}: parquet features differ from the declared schema")
    groups = [metadata.row_group(i) for i in range(metadata.num_row_groups)]
    size = sum(g.column(j).total_compressed_size for g in groups for j in range(g.num_columns))
    if size > HUB_MAX_SHARD_BYTES:
        problems.append(f"{path}: {size / 1e6:.0f} MB, above the {HUB_MAX_SHARD_BYTES / 1e6:.0f} MB shard limit")
    for i, group in enumerate(groups):
        if group.total_byte_size > HUB_MAX_ROW_GROUP_BYTES:
            problems.append(f"{path}: row group {i} holds {group.total_byte_size / 1e6:.0f} MB uncompressed, above "
                            f"{HUB_MAX_ROW_GROUP_BYTES / 1e6:.0f} MB: the dataset viewer cannot page through it")
        for j in range(group.num_columns):
            column = group.column(j)
            if column.path_in_schema.endswith(".bytes") and column.compression != "UNCOMPRESSED":
                problems.append(f"{path}: image bytes column {column.path_in_schema} is {column.compression}-"
                                "compressed (images are compressed already; store them uncompressed)")
                break
    return problems


def _streams_array2d(name: str, declared: Features) -> bool:
    """A build of 0.x stores its raw maps as datasets' Array2D, a Python-defined Arrow type: a process that streamed
    it may hang or abort at exit (pyarrow's reader threads call back into Python, apache/arrow#45214), so `check`
    leaves its default config unstreamed, and says so."""
    if name != "default" or layout_of(declared)[1] != "array2d":
        return False
    log.warning("config `default`: its raw maps are datasets' Array2D (a build of 0.x), which can hang a process "
                "that streams them at exit; its first rows are not streamed (rebuild with this version to fix it)")
    return True


def _check_stream(where: Target, name: str, split: str) -> list[str]:
    from datasets import load_dataset

    try:
        rows = load_dataset(str(where.root) if where.local else where.name, name, split=split, streaming=True)
        stream = iter(rows)
        first = next(stream)
        stream.close()
        # pyarrow's reader threads may still hold the file: let go of it now, not at interpreter exit, where a reader
        # thread taking the GIL aborts the process ("terminate called without an active exception";
        # huggingface/datasets#7566, apache/arrow#45214)
        del stream, rows
        gc.collect()
    except Exception as e:
        return [f"config `{name}`: the first row does not stream ({type(e).__name__}: {e})"]
    if name == "default" and first["features"] and first["features"][0]["mask"] is None:
        return [f"config `{name}`: the first row's mask does not decode"]
    return []


# --- what the Hub's dataset viewer would refuse ----------------------------------------------------------------------

def _check_viewer_pages(name: str, split: str, groups: list[tuple[str, int, int, int]]) -> list[str]:
    """The viewer shows pages of VIEWER_PAGE_ROWS rows; each page reads every row group it touches, whole (their
    uncompressed `total_byte_size`), across the split's files. One page above VIEWER_SCAN_MAX_BYTES cannot be shown."""
    starts, first = [], 0
    for _, _, num_rows, _ in groups:
        starts.append(first)
        first += num_rows
    problems = []
    for page_start in range(0, first, VIEWER_PAGE_ROWS):
        page_stop = min(page_start + VIEWER_PAGE_ROWS, first)
        touched = [g for g, start in zip(groups, starts) if start < page_stop and start + g[2] > page_start]
        size = sum(g[3] for g in touched)
        if size > VIEWER_SCAN_MAX_BYTES:
            where = ", ".join(f"{path} row group {i}" for path, i, _, _ in touched[:3])
            problems.append(f"config `{name}` split `{split}`: the dataset viewer's page of rows {page_start}-"
                            f"{page_stop - 1} reads {size / 1e6:.0f} MB ({where}), above its "
                            f"{VIEWER_SCAN_MAX_BYTES / 1e6:.0f} MB scan limit: write smaller row groups")
            break  # one line: the same cause repeats on later pages
    return problems


def _check_first_rows(where: "Target", name: str, split: str, files: list[str], features: Features) -> list[str]:
    """Rebuild the viewer's first-rows response (huggingface/dataset-viewer `create_first_rows_response`): the
    features JSON, then the first VIEWER_FIRST_ROWS_MIN_ROWS rows with every image replaced by an asset URL object;
    when over VIEWER_FIRST_ROWS_MAX_BYTES, cells (but top-level images) are cut to VIEWER_MIN_CELL_BYTES of JSON,
    last row first. Still over: the viewer shows no preview (TooBigContentError)."""
    features_list = [{"feature_idx": i, "name": k, "type": v} for i, (k, v) in enumerate(features.to_dict().items())]
    response = {"dataset": where.name, "config": name, "split": split, "features": features_list, "rows": [],
                "truncated": False}
    features_bytes = _json_size(response)
    if features_bytes > VIEWER_FIRST_ROWS_MAX_BYTES:
        return [f"config `{name}`: the dataset viewer's preview fails: its features JSON alone is {features_bytes:,} "
                f"bytes, above the {VIEWER_FIRST_ROWS_MAX_BYTES:,}-byte budget (TooBigContentError)"]
    rows = [{"row_idx": i, "row": {k: _viewer_cell(row.get(k), f, (name, split, i, k)) for k, f in features.items()},
             "truncated_cells": []} for i, row in enumerate(_first_rows(where, files, VIEWER_FIRST_ROWS_MIN_ROWS))]
    sizes = [_json_size(item) for item in rows]
    rows_bytes = 2 + sum(size + 1 for size in sizes)  # brackets and commas
    keep = [k for k, feature in features.items() if isinstance(feature, ImageFeature)]
    for i in reversed(range(len(rows))):
        if features_bytes + rows_bytes < VIEWER_FIRST_ROWS_MAX_BYTES:
            break
        item = rows[i]
        for column, cell in item["row"].items():
            serialized = json.dumps(cell, ensure_ascii=False, separators=(",", ":")).encode()
            if column not in keep and len(serialized) > VIEWER_MIN_CELL_BYTES:
                item["row"][column] = serialized[:VIEWER_MIN_CELL_BYTES].decode(errors="ignore")
                item["truncated_cells"].append(column)
        new_size = _json_size(item)
        rows_bytes += new_size - sizes[i]
        sizes[i] = new_size
    total = features_bytes + rows_bytes
    if total > VIEWER_FIRST_ROWS_MAX_BYTES:
        return [f"config `{name}`: the dataset viewer's preview fails: the features JSON ({features_bytes:,} bytes) "
                f"plus its first {len(rows)} rows come to {total:,} bytes even with every cell cut to "
                f"{VIEWER_MIN_CELL_BYTES} bytes, above the {VIEWER_FIRST_ROWS_MAX_BYTES:,}-byte budget "
                "(TooBigContentError)"]
    return []


def _first_rows(where: "Target", files: list[str], count: int) -> list[dict]:
    rows = []
    for path in files:
        with where.open(path) as f:
            parquet = pq.ParquetFile(f)
            for i in range(parquet.num_row_groups):
                rows += parquet.read_row_group(i).to_pylist()
                if len(rows) >= count:
                    return rows[:count]
    return rows


# The shape of a viewer asset URL (signed CloudFront link); the placeholder parts have the real parts' lengths.
ASSET_URL = ("https://datasets-server.huggingface.co/cached-assets/{dataset}/--/" + "0" * 40 +
             "/--/{config}/{split}/{row}/{column}/image.jpg?Expires=" + "0" * 10 + "&Signature=" + "x" * 344 +
             "&Key-Pair-Id=" + "K" * 14)


def _viewer_cell(value, feature, at: tuple):
    """A cell as the viewer serialises it: images (at any depth) become {src, height, width}."""
    if value is None:
        return None
    if isinstance(feature, ImageFeature):
        from PIL import Image

        try:
            width, height = Image.open(io.BytesIO(value["bytes"])).size
        except Exception:
            width = height = 0
        name, split, row, column = at
        return {"src": ASSET_URL.format(dataset="user/dataset", config=name, split=split, row=row, column=column),
                "height": height, "width": width}
    if isinstance(feature, dict):
        return {k: _viewer_cell(value.get(k), f, at) for k, f in feature.items()}
    inner = getattr(feature, "feature", None)
    if isinstance(feature, list) or inner is not None:
        inner = feature[0] if isinstance(feature, list) else inner
        return [_viewer_cell(v, inner, at) for v in value]
    return value


def _json_size(value) -> int:
    return len(json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode())
