"""The failures `attach` reports in one line (`cli.dispatch` prints them)."""

from contextlib import contextmanager

from ..core.errors import EXIT_PROBLEMS, InputError, UserError


class AttachError(InputError):
    pass


class MissingImages(UserError):
    """Images of the dataset that the ImageNet copy lacks (or cannot decode), without `--allow-missing`: exit 1."""

    exit_code = EXIT_PROBLEMS


@contextmanager
def reading_copy(imagenet: str):
    """Reads of the copy's images: a file removed or unreadable since the index was made fails in one line."""
    try:
        yield
    except OSError as e:
        raise AttachError(f"--imagenet {imagenet}: cannot read an image it holds "
                          f"({e.strerror or type(e).__name__}: {getattr(e, 'filename', None) or e}); "
                          "rerun to resume from the finished shards") from None
