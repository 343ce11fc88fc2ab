"""The three readers yield the same samples and read the selected ones back; layouts are detected; errors are clear."""

import re

import pytest

from salient_imagenet_builder.core.errors import InputError
from salient_imagenet_builder.core.sources import (
    FolderSource,
    ParquetSource,
    SourceError,
    WebDatasetSource,
    open_source,
)


def _samples(source, **kw):
    return [(s.image_id, s.label, s.data) for s in source.samples(**kw)]


def test_three_readers_yield_identical_samples(inputs, parquet_source, webdataset_source):
    expected = [(name.split(".")[0], label, data) for name, label, data in inputs["written"]]
    sources = [open_source(str(inputs["folder"])), open_source(str(parquet_source)),
               open_source(str(webdataset_source))]
    assert [type(s) for s in sources] == [FolderSource, ParquetSource, WebDatasetSource]
    for source in sources:
        assert _samples(source) == expected, source.describe()
        refs = [s.ref for s in source.samples()][::3]
        assert dict(source.read_many(refs)) == {r: expected[i * 3][2] for i, r in enumerate(refs)}


def test_class_filter_limit_and_count(inputs, parquet_source):
    for source in (open_source(str(inputs["folder"])), open_source(str(parquet_source))):
        got = _samples(source, classes={1, 2}, limit_per_class=4)
        assert [label for _, label, _ in got] == [1] * 4 + [2] * 4
        assert source.count({1, 2}, 4) == 8
        assert source.count() == len(inputs["written"]) == source.count(set(range(1000)))


def test_split_selection_and_errors(inputs, parquet_source, webdataset_source, tmp_path):
    with pytest.raises(SourceError, match="no parquet file for split 'validation'"):
        open_source(str(parquet_source), split="validation")
    with pytest.raises(SourceError, match="no webdataset file for split 'val'"):
        open_source(str(webdataset_source), split="val")
    with pytest.raises(SourceError, match="no ImageNet class folders"):
        open_source(str(tmp_path))
    with pytest.raises(InputError, match="no such folder"):  # not a Hub id: the Hub is not asked
        open_source(str(tmp_path / "missing" / "x"))
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    (mixed / "train-0.parquet").write_bytes(b"")
    (mixed / "train-0.tar").write_bytes(b"")
    with pytest.raises(SourceError, match="cannot tell the layout"):
        open_source(str(mixed))
    # a split the folder does not have: the splits it has are named; an image file is not a source
    with pytest.raises(SourceError, match=re.escape(f"under {inputs['folder'] / 'test'} or {inputs['folder']}; they "
                                                    "are under train: pass --split train")):
        open_source(str(inputs["folder"]), split="test")
    image = next((inputs["folder"] / "train").rglob("*.JPEG"))
    with pytest.raises(SourceError, match=re.escape(f"{image}: not a parquet, arrow or tar file; --source takes an "
                                                    "ImageNet folder")):
        open_source(str(image))


def test_parquet_without_label_column(tmp_path):
    from datasets import Dataset

    Dataset.from_dict({"image": [{"bytes": b"x", "path": "a.JPEG"}]}).to_parquet(tmp_path / "train-0.parquet")
    with pytest.raises(SourceError, match="no label column"):
        open_source(str(tmp_path))


def test_a_single_shard_file_is_read_whatever_its_name(parquet_source):
    shard = sorted(parquet_source.rglob("*.parquet"))[0]
    source = open_source(str(shard), split="validation")
    assert isinstance(source, ParquetSource) and len(list(source.samples())) > 0
