"""Publish a build to the Hugging Face Hub.

The stages, in order: `validate.check` validates the folder (card YAML, schemas, shard and row-group sizes, the
viewer's limits, a streamed first row); `upload.push` creates the repo, commits the data shards in batches (skipping
files already there), then the card with the deletion of stale shards. `options` declares their configs and commands; `command` holds their handlers.
"""

from ..core.lazy import lazy_exports
from .options import CheckConfig, PushConfig

__all__ = ["CheckConfig", "PushConfig", "PushError", "check", "push", "run_push"]
__getattr__, __dir__ = lazy_exports(__name__, {"PushError": ".upload", "push": ".upload", "check": ".validate",
                                               "run_push": ".command"})
