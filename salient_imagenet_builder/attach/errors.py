"""The failures `attach` reports in one line (`cli.dispatch` prints them)."""

from ..core.errors import EXIT_PROBLEMS, InputError, UserError


class AttachError(InputError):
    pass


class MissingImages(UserError):
    """Images of the dataset that the ImageNet copy lacks (or cannot decode), without `--allow-missing`: exit 1."""

    exit_code = EXIT_PROBLEMS
