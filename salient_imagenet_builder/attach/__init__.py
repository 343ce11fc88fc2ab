"""Attach the user's own ImageNet copy to a masks-only build (`--image-mode none`): the same rows, the same masks,
the images joined by `image_id`, as a `crop` or `original` build of the same source would store them.

The stages, in order (`apply.AttachJob` fills in the engine's job, `..core.job`, with them; `options` declares
`AttachConfig`, the command, the file it adds to a dataset and its parts of the card):
1. `apply.open_inputs`: the build to attach to (local folder or Hub repo, `core.dataset.DatasetView`): its build
   info, its image shards (one work unit each) and every row's `image_id` (that column alone is read);
2. index: the ImageNet copy (`core.sources`, any layout, path or Hub id) indexed by file name or id column, no image
   bytes read (`Source.index_ids`); ids it lacks are refused in one line unless `--allow-missing`;
3. units (`join.JoinWorker`, resumable as a build's: `core.units`): per shard, its rows with the image column made
   from only the images the shard names (`Source.read_ids`; `core.decoding.image_column`), spilled to Arrow. A copy
   read by row group (parquet) is read first by `fetch`: each row group that holds an image of the dataset once,
   those images kept in the work folder for the join. A rerun first reads again the images a finished shard could
   not decode (`recheck`): a shard where one decodes now is joined again;
4. write: the rows in the build's order into parquet shards (`core.writer`), the annotation shards copied byte for
   byte, the gallery, the card and `attach_info.json`; the staging folder replaces `--out` (`core.output`).
`command` is the handler of `salient-imagenet attach`.
"""

from ..core.lazy import lazy_exports
from .errors import AttachError, MissingImages
from .options import AttachConfig

__all__ = ["AttachConfig", "AttachError", "AttachJob", "MissingImages", "attach"]
__getattr__, __dir__ = lazy_exports(__name__, {"AttachJob": ".apply", "attach": ".apply"})
