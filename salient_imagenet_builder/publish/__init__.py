"""Publish a build to the Hugging Face Hub.

The stages, in order: `check` validates the folder (card YAML, schemas, shard and row-group sizes, the viewer's
limits, a streamed first row); `push` creates the repo, commits the data shards in batches (skipping files already
there), then the card with the deletion of stale shards. `command` is the handler of `push` and `check`.
"""

from .check import check
from .push import PushError, push

__all__ = ["PushError", "check", "push"]
