"""Rows of an older build's `default` config in this version's layout (see `schema.LEGACY_LAYOUTS`): raw maps as
flat fixed-size lists (from datasets' `Array2D` or nested lists), and the image size columns (null where the older
build did not record them). Arrow arrays throughout: no Python object per value."""

import pyarrow as pa
import pyarrow.compute as pc
from datasets import Features

SIZE_COLUMNS = ("original_width", "original_height")


def upgrade_table(table: pa.Table, features: Features) -> pa.Table:
    """`table` (one of the layouts a build has written) in the layout of `features` (this version's), metadata
    included. Raises ValueError when its maps do not have the size `features` declares."""
    schema = features.arrow_schema
    for name in SIZE_COLUMNS:
        if name not in table.column_names:
            table = table.append_column(name, pa.nulls(len(table), pa.int32()))
    table = table.select(schema.names)
    features_column = pa.chunked_array([_flat_maps(chunk, schema.field("features").type)
                                        for chunk in table.column("features").chunks],
                                       type=schema.field("features").type)
    table = table.set_column(schema.get_field_index("features"), schema.field("features"), features_column)
    if table.schema.equals(schema, check_metadata=False):  # no cast: pyarrow 21 crashes casting some types to
        return table.replace_schema_metadata(schema.metadata)  # themselves
    return table.cast(schema)


def _flat_maps(features: pa.Array, target: pa.DataType) -> pa.Array:
    """A `features` list array whose structs' `nam` becomes the flat fixed-size list of `target`."""
    entries = features.flatten()  # the structs of every row, in order
    nam = entries.field("nam")
    nam = nam.storage if isinstance(nam, pa.ExtensionArray) else nam
    wanted = target.value_type.field("nam").type
    if not pa.types.is_fixed_size_list(nam.type):  # H lists of W floats: flattened, row-major
        values = pc.list_flatten(pc.list_flatten(nam))
        if len(values) != len(nam) * wanted.list_size:
            raise ValueError(f"raw maps are not {wanted.list_size} values each")
        nam = pa.FixedSizeListArray.from_arrays(values.cast(pa.float32()), wanted.list_size)
    arrays = [nam if field.name == "nam" else entries.field(field.name) for field in entries.type]
    struct = pa.StructArray.from_arrays(arrays, fields=[f.with_type(a.type) for f, a in zip(entries.type, arrays)])
    offsets = pc.subtract(features.offsets, features.offsets[0])
    return pa.ListArray.from_arrays(offsets, struct, mask=features.is_null() if features.null_count else None)
