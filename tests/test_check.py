"""`salient-imagenet check` passes a fresh build and names what is wrong with a broken one."""

import shutil
import subprocess
import sys

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import built_once

from salient_imagenet_builder.builder import BuildConfig, build
from salient_imagenet_builder.core.constants import HUB_MAX_ROW_GROUP_BYTES
from salient_imagenet_builder.publish.validate import check


@pytest.fixture(scope="module")
def fresh(inputs, tmp_path_factory):
    return built_once(tmp_path_factory, "test_check", lambda root: _fresh(inputs, root))


def _fresh(inputs, root):
    out = root / "built"
    build(BuildConfig(source=str(inputs["folder"]), out=str(out), model="resnet18",
                      model_checkpoint=str(inputs["checkpoint"]), annotations=str(inputs["annotations"]),
                      workers=0, top_k=2, group_by="label", classes=[1, 2]))
    return out


@pytest.fixture
def copy(fresh, tmp_path):
    target = tmp_path / "copy"
    shutil.copytree(fresh, target)
    return target


def test_fresh_build_passes_through_the_cli(fresh, capsys):
    from salient_imagenet_builder.cli import main

    code = main(["check", str(fresh)])
    stdout = capsys.readouterr().out
    assert code == 0 and stdout.strip().endswith(": OK"), stdout


def test_a_file_is_not_a_dataset(fresh, caplog):
    from salient_imagenet_builder.cli import main

    card = fresh / "README.md"
    for command in (["check", str(card)], ["show", str(card), "--class", "0", "--out", str(fresh.parent / "x.png")]):
        caplog.clear()
        assert main(command) == 2
        assert f"{command[0]} {card}: is a file; give a built dataset folder or a Hub dataset id" in caplog.text


def test_check_without_streaming_loads_no_torch(fresh):
    """The class names come from timm's files without importing timm (and torch): a check stays light."""
    code = ("import sys; from salient_imagenet_builder.cli import main; code = main(sys.argv[1:]); "
            "print('torch' in sys.modules, 'timm' in sys.modules); sys.exit(code)")
    result = subprocess.run([sys.executable, "-c", code, "check", str(fresh), "--no-stream"], capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.splitlines()[-1] == "False False"


def test_class_names_are_timms():
    from timm.data import ImageNetInfo

    from salient_imagenet_builder.core.schema import class_names, imagenet_info, wordnet_ids

    timm_info, ours = ImageNetInfo(), imagenet_info()
    assert wordnet_ids() == timm_info.label_names() and len(class_names()) == 1000
    for i in range(1000):
        for detailed in (False, True):
            assert ours.index_to_description(i, detailed) == timm_info.index_to_description(i, detailed=detailed)


def test_broken_card(copy, capsys):
    from salient_imagenet_builder.cli import main

    readme = copy / "README.md"
    text = readme.read_text()
    readme.write_text(text.replace("- config_name: annotations", "- config_name: other"))
    assert check(str(copy)) == ["README.md: no config `annotations` in `configs`"]
    readme.write_text(text.replace("license: other\n", ""))
    assert check(str(copy)) == ["README.md: metadata has no `license`"]
    readme.write_text(text.replace("num_examples: ", "num_examples: 1", 1))
    assert any("says 1" in p and "the shards hold" in p for p in check(str(copy)))
    readme.write_text(text.replace("dtype: float32", "dtype: float64", 1))
    assert check(str(copy)) == ["README.md: dataset_info features of `default` differ from the declared schema"]
    readme.write_text("no front matter")
    assert check(str(copy)) == ["README.md: README.md has no YAML front matter (--- ... ---)"]
    capsys.readouterr()
    assert main(["check", str(copy)]) == 1 and "FAIL README.md" in capsys.readouterr().out


def test_mismatched_shard_schema(copy):
    shard = next((copy / "data").glob("train-*.parquet"))
    table = pq.read_table(shard)
    odd = table.drop_columns(["wordnet_id"])
    pq.write_table(odd, copy / "data" / "train-00001-of-00002.parquet", write_page_index=True)
    problems = check(str(copy), stream=False)
    assert "data/train-00001-of-00002.parquet: parquet features differ from the declared schema" in problems
    assert any("schema differs from" in p and "must share one" in p for p in problems)


def test_oversized_row_group(copy):
    shard = next((copy / "data").glob("train-*.parquet"))
    table = pq.read_table(shard)
    big = pa.array([{"bytes": b"\0" * (HUB_MAX_ROW_GROUP_BYTES + 1), "path": None}] + [None] * (len(table) - 1),
                   type=table.schema.field("image").type)
    table = table.set_column(table.schema.get_field_index("image"), table.schema.field("image"), big)
    pq.write_table(table, shard, row_group_size=len(table), write_page_index=True, compression="none")
    problems = check(str(copy), stream=False)
    assert any(f"{shard.relative_to(copy)}: row group 0 holds" in p and "cannot page through it" in p
               for p in problems), problems


def test_missing_page_index_and_compressed_images(copy):
    shard = next((copy / "data").glob("train-*.parquet"))
    pq.write_table(pq.read_table(shard), shard, write_page_index=False, compression="zstd")
    problems = check(str(copy), stream=False)
    name = shard.relative_to(copy)
    assert any(p.startswith(f"{name}: row group 0 column ") and p.endswith(": no page index (the dataset viewer "
                                                                         "reads single pages through it)")
               for p in problems), problems
    pq.write_table(pq.read_table(shard), shard, write_page_index=True, compression="zstd")
    assert any(p.startswith(f"{name}: image bytes column image.bytes is ZSTD-compressed")
               for p in check(str(copy), stream=False))


def test_a_page_index_that_does_not_match_the_pages_is_named(copy):
    """The first page's offset in the index moved by one byte: the index no longer tiles the column chunk."""
    from salient_imagenet_builder.core.pages import _footer

    shard = next((copy / "data").glob("train-*.parquet"))
    with open(shard, "rb") as f:
        first = _footer(f)[4][0][1][0]  # row group 0, column 0's ColumnChunk
    data = bytearray(shard.read_bytes())
    # OffsetIndex: list field header, list header, PageLocation's field-1 header, then the offset's zigzag varint
    assert data[first[4]] == 0x19 and data[first[4] + 2] == 0x16
    data[first[4] + 3] ^= 0x02  # the varint's low bits: offset +- 1, same length
    shard.write_bytes(bytes(data))
    name = shard.relative_to(copy)
    column = pq.ParquetFile(shard).metadata.row_group(0).column(0).path_in_schema
    assert (f"{name}: row group 0 column {column}: the page index does not match the column chunk's pages"
            in check(str(copy), stream=False))


def test_missing_shards(copy):
    for shard in (copy / "data").glob("annotations-*"):
        shard.unlink()
    assert check(str(copy)) == ["config `annotations` split `train`: no file matches data/annotations-*.parquet"]


# --- what the Hub's dataset viewer would refuse -----------------------------------------------------------------------

def _rewrite_default_shard(copy, extra: dict, values, **write_options):
    """The default shard with `extra` columns (name -> datasets feature) holding `values(name, num_rows)`; the
    parquet `huggingface` metadata names them, as a real writer would."""
    from datasets import Features

    shard = next((copy / "data").glob("train-*.parquet"))
    table = pq.read_table(shard)
    features = Features({**Features.from_arrow_schema(table.schema), **extra})
    for name in extra:  # only the new columns are cast (pyarrow 21 crashes casting the nested Array2D maps to
        table = table.append_column(name, pa.array(values(name, len(table)),  # themselves)
                                                   features.arrow_schema.field(name).type))
    table = table.replace_schema_metadata(features.arrow_schema.metadata)
    pq.write_table(table, shard, write_page_index=True, **write_options)
    return shard


def test_fresh_build_fits_the_viewer(fresh):
    from salient_imagenet_builder.publish.validate import _check_viewer_pages

    problems = check(str(fresh), stream=False)
    assert not [p for p in problems if "viewer" in p], problems
    assert _check_viewer_pages("default", "train", [("a", 0, 100, 200_000_000), ("b", 0, 100, 200_000_000)]) == []


def test_viewer_preview_features_json_over_budget(copy):
    from datasets import ClassLabel

    from salient_imagenet_builder.core.schema import class_names

    extra = {f"label_{i}": ClassLabel(names=class_names()) for i in range(6)}  # ~24.7 KB of JSON each
    _rewrite_default_shard(copy, extra, lambda name, n: [0] * n)
    problems = check(str(copy), stream=False)
    assert any(p.startswith("config `default`: the dataset viewer's preview fails: its features JSON alone is")
               and "above the 200,000-byte budget" in p for p in problems), problems


def test_viewer_preview_rows_over_budget_even_when_truncated(copy):
    from datasets import Value

    extra = {f"note_{i:03d}": Value("string") for i in range(150)}  # each cell is cut to 100 bytes, not less
    _rewrite_default_shard(copy, extra, lambda name, n: ["x" * 300] * n)
    problems = check(str(copy), stream=False)
    assert any("dataset viewer's preview fails: the features JSON" in p and "even with every cell cut to 100 bytes"
               in p for p in problems), problems


def test_viewer_preview_large_cells_are_truncated_not_refused(copy):
    from datasets import Value

    _rewrite_default_shard(copy, {"note": Value("string")}, lambda name, n: ["x" * 150_000] * n)  # over, until cut
    assert not [p for p in check(str(copy), stream=False) if "preview fails" in p]


def test_viewer_scan_limit_of_one_page(copy):
    from salient_imagenet_builder.core.writer import _compression

    shard = next((copy / "data").glob("train-*.parquet"))
    table = pq.read_table(shard)
    rows = 4
    table = pa.concat_tables([table.slice(0, 1)] * rows)  # 4 rows, one per row group, each ~80 MB uncompressed
    ids = pa.array(["x" * 80_000_000] * rows)  # compresses to almost nothing on disk
    table = table.set_column(table.schema.get_field_index("image_id"), table.schema.field("image_id"), ids)
    pq.write_table(table, shard, row_group_size=1, write_page_index=True, compression=_compression(table.schema))
    problems = check(str(copy), stream=False)
    assert not any("cannot page through it" in p for p in problems)  # every row group is under 100 MB ...
    assert any(p.startswith("config `default` split `train`: the dataset viewer's page of rows 0-3 reads 320 MB")
               and "above its 300 MB scan limit" in p for p in problems), problems  # ... but one page reads 4
