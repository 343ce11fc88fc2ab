"""Publish a build to the Hugging Face Hub.

The stages, in order: `check` validates the folder (card YAML, schemas, shard and row-group sizes, the viewer's
limits, a streamed first row); `push` creates the repo, commits the data shards in batches (skipping files already
there), then the card with the deletion of stale shards. `command` is the handler of `push` and `check`.
"""

from .._lazy import lazy_exports

__getattr__ = lazy_exports(__name__, {"push": "push", "PushError": "push", "check": "check"})
