"""The engine every capability runs on. Its modules, in the order a pass over ImageNet uses them:

- `constants`, `errors`, `schema`: the method's numbers, the failures a user can meet, the dataset's `Features`;
- `sources`: readers of an ImageNet folder, parquet shards or WebDataset tars, local or on the Hub, cut into work
  units fixed by the data; `targets`: a local folder or a Hub dataset id, and whether the Hub can be reached;
- `images` (decode, the 224 view), `decoding` (batches decoded in worker processes, shared-memory hand-over);
- `model` (the feature model, loaded safely from a checkpoint), `runner` (the model on its device, opt-in numerics);
- `scan`: pass 1, the one scan: FI sums, each tracked (class, feature)'s top images with their maps, context images;
- `units` (resumable work units), `distributed` (torchrun ranks), `stages` (batching, stage timings);
- `masks` (NAM -> soft mask, PNG), `annotations` (the annotation CSV, the majority rule, a study's pairs.csv);
- `download` (pinned downloads: the annotation CSV, the zero-shot heads, checked by sha256);
- `writer` (parquet shards; `pages` reads their page index back), `card` (README.md and build_info.json), `output` (--out, staging, the swap, atomic
  writes); `dataset` (a built dataset, local or Hub, read back); `render` (pictures), `gallery` (the card's
  picture, drawn from a build's files); `annotation_page` (the offline page annotators answer a study on, in its
  discover and generalize modes).

Nothing here imports a capability. Modules are imported by name (`from salient_imagenet_builder.core.scan import
...`): this package imports none of them itself, so the command line can read `constants` without paying for torch.
"""

__all__ = ["annotation_page", "annotations", "card", "constants", "dataset", "decoding", "distributed", "download",
           "errors", "gallery", "images", "masks", "model", "output", "pages", "render", "runner", "scan", "schema",
           "sources", "stages", "targets", "units", "writer"]
