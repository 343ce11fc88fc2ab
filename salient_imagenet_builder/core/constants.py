"""Every constant of the method, defined once (Singla & Feizi, ICLR 2022; see shared reference notes).

Everything else imports these; nothing re-types a number.
"""

# Preprocessing: resize the shorter side to RESIZE_SIZE (bilinear), center-crop CROP_SIZE, scale to [0, 1],
# normalise with the ImageNet mean/std.
RESIZE_SIZE = 256
CROP_SIZE = 224
# The robust ResNet-50's layer4 map at CROP_SIZE (stride 32): the shape of each stored raw map (another --model may
# have another; a build records its own).
MAP_SHAPE = (7, 7)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

NUM_CLASSES = 1000

# Annotation study: the top FEATURES_PER_CLASS features by importance were each shown to ANSWERS_PER_PAIR workers.
FEATURES_PER_CLASS = 5
ANSWERS_PER_PAIR = 5
ANSWER_CHOICES = ("main_object", "separate_object", "background")
SPURIOUS_ANSWERS = ("separate_object", "background")
# A pair is spurious when a majority of its answers are spurious answers (3 of the paper's 5; 2 of 3 in a study
# with 3 annotators); the same count decides the spurious sub-type (background / separate_object, else mixed).


def majority_of(answers: int) -> int:
    return answers // 2 + 1


MAJORITY = majority_of(ANSWERS_PER_PAIR)
CONFIDENCE_RANGE = (1.0, 5.0)

# Top images kept per (class, feature) pair in the published dataset.
DEFAULT_TOP_K = 65
# How many top images the annotators saw (stored in the annotations config).
ANNOTATOR_TOP_IMAGES = 5

# Default robust model: ResNet-50, adversarially trained, L2 eps = 3 (madrylab robustness library).
ROBUST_MODELS = {
    "resnet50_l2_eps3": {
        "arch": "resnet50",
        "repo_id": "madrylab/robust-imagenet-models",
        "filename": "resnet50_l2_eps3.ckpt",
    },
}
DEFAULT_MODEL = "resnet50_l2_eps3"

# Published annotations (one row per worker answer). Its licence forbids redistribution: downloaded, never shipped.
# Pinned: the file at the repository's last commit (it has not changed since it was added), checked by size and
# sha256 after every download, so a changed upstream file is detected, not silently used.
AUTHORS_FILES_URL = "https://raw.githubusercontent.com/singlasahil14/salient_imagenet/f41ce51b748096fc9c57f276b22db0178ed03030/"
ANNOTATIONS_URL = AUTHORS_FILES_URL + "mturk_results/discover_spurious_features.csv"
ANNOTATIONS_SHA256 = "6fc1cfbc6e3c90d456420406b05b69ef45e8ce9e851917ddc751486fcec1fa07"
# The published file's statistics (paper + release), checked as well when it is parsed.
PUBLISHED_ANNOTATION_STATS = {"answers": 25000, "pairs": 5000, "spurious": 630, "workers": 265}
DEFAULT_CACHE_DIR = "~/.cache/salient_imagenet"  # the annotation and zero-shot head downloads (models: huggingface_hub)
DOWNLOAD_TIMEOUT_SECONDS = 60  # one read of the annotation download
PROBE_TIMEOUT_SECONDS = 5  # is the Hub reachable at all: answered before any retrying download starts

# Output layout.
PACKAGE_NAME = "salient-imagenet-builder"  # written into build_info.json: marks a folder as our build
BUILD_INFO = "build_info.json"
PAIRS_FILE = "pairs.csv"  # a study's pairs, in the published CSV's Input.* columns (what ingest checks against)
DEFAULT_OUT = "salient_imagenet"
ANNOTATIONS_CONFIG = "annotations"
MAX_SHARD_BYTES = 400 * 1024**2  # Hub convention: <= ~500 MB per parquet shard
MAX_ROW_GROUP_BYTES = 64 * 1024**2  # viewer scan limit ~286 MiB; Hub convention <= ~100 MB
ROW_GROUP_ROWS = 100  # small row groups: the viewer's first page reads one
# Content-defined chunking of the shards' data pages (pyarrow >= 21), with the options `datasets` 5.x writes
# parquet with (`datasets.config.DEFAULT_CDC_OPTIONS`): page boundaries follow the content, not a byte count, so a
# rebuild that inserts rows leaves the pages of the unchanged rows byte-identical and the Hub's Xet storage
# deduplicates them (a re-push sends the new pages, not the whole build).
CDC_OPTIONS = {"min_chunk_size": 256 * 1024, "max_chunk_size": 1024 * 1024, "norm_level": 0}

# What the Hub and its dataset viewer accept (checked by `salient-imagenet check`).
HUB_MAX_SHARD_BYTES = 500 * 1000**2
HUB_MAX_ROW_GROUP_BYTES = 100 * 1000**2

# Work units of a build (resume and distribution): a folder source is cut into blocks of this many images of one
# class; parquet sources into row groups, WebDataset sources into tar files (`--unit-size` applies to folders).
DEFAULT_UNIT_SIZE = 1000
WORK_DIR = "work"  # inside the staging folder: unit results, done markers, the fingerprint
DISTRIBUTED_TIMEOUT_S = 6 * 3600  # a rank may wait this long at a barrier while rank 0 writes the shards
GALLERY_FILE = "gallery.png"  # a build's top-level preview image, shown at the top of the card
GALLERY_PAIRS = 4
GALLERY_IMAGES = 4  # images per gallery row
# The dataset viewer (huggingface/dataset-viewer): its first-rows preview (features JSON + at least 10 rows, cells
# beyond 100 bytes truncated) must fit 200,000 bytes; a page of at most 100 rows reads every row group it touches,
# and more than 300,000,000 uncompressed bytes in one read fails ("Scan size limit exceeded").
VIEWER_FIRST_ROWS_MAX_BYTES = 200_000
VIEWER_FIRST_ROWS_MIN_ROWS = 10
VIEWER_MIN_CELL_BYTES = 100
VIEWER_PAGE_ROWS = 100
VIEWER_SCAN_MAX_BYTES = 300_000_000
