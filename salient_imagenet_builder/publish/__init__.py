"""Publish a build to the Hugging Face Hub.

The stages, in order: `validate.check` validates the folder (card YAML, schemas, shard and row-group sizes, the
viewer's limits, a streamed first row); `upload.push` creates the repo, commits the data shards in batches (skipping
files already there), then the card with the deletion of stale shards. `command` is the handler of `push` and `check`.
"""

from .upload import PushError, push
from .validate import check

__all__ = ["PushError", "check", "push"]
