"""What the command line prints, and at which level: its own one-line messages, and the libraries' noise held back.

The command line owns its process, so it may set the root logger and filter warnings; the library never does
(`build()` and the other calls leave their caller's logging and warnings as they found them).
"""

import logging
import os
import warnings

__all__ = ["quiet_library_warnings", "setup_logging"]

QUIET_LOGGERS = ("httpx", "httpx2", "httpcore", "httpcore2", "urllib3", "filelock", "fsspec", "PIL", "matplotlib")
# torch configures its own loggers (TORCH_LOGS) once `import torch` completes; a command stopped before that would
# still print torch's exit-time INFO lines (e.g. FakeTensor cache stats) after its last line
OWN_LEVEL_LOGGERS = ("torch",)
LIBRARY_LOGGERS = ("huggingface_hub", "datasets")  # they print their own warnings (retries, cache notes)


class _OncePerRecord(logging.Filter):
    """Libraries such as huggingface_hub and datasets attach their own stderr handler and still propagate to the
    root: the root's handler skips what such a handler printed already, so no line appears twice."""

    def filter(self, record: logging.LogRecord) -> bool:
        logger = logging.getLogger(record.name)
        while logger is not None and logger is not logging.root:
            if logger.handlers:
                return False
            if not logger.propagate:
                break
            logger = logger.parent
        return True


def quiet_library_warnings() -> None:
    """The command line owns its process, so it may filter warnings (the library never does). timm 1.0.3 (our lowest
    supported) decorates a model (hrnet) with `torch.jit.interface`, which torch 2.14 reports on every `import timm`:
    a stray line on stderr that says nothing to our users, whose errors are one line."""
    warnings.filterwarnings("ignore", message="`torch.jit.interface` is deprecated", category=FutureWarning)


def setup_logging(verbose: bool) -> None:
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    for handler in logging.root.handlers:
        if not any(isinstance(f, _OncePerRecord) for f in handler.filters):
            handler.addFilter(_OncePerRecord())
    for noisy in QUIET_LOGGERS:  # per-request HTTP lines and file locks: noise at the default level
        logging.getLogger(noisy).setLevel(logging.DEBUG if verbose else logging.WARNING)
    for library in OWN_LEVEL_LOGGERS:
        logging.getLogger(library).setLevel(logging.WARNING)
    for library in LIBRARY_LOGGERS:  # their failures reach us as exceptions, said once by `dispatch`
        logging.getLogger(library).setLevel(logging.INFO if verbose else logging.ERROR)
    if not verbose:  # they set their level again when first imported (after this): tell them through the environment
        os.environ.setdefault("HF_HUB_VERBOSITY", "error")
        os.environ.setdefault("DATASETS_VERBOSITY", "error")
