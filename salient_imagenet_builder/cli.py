"""Command line: `python build_dataset.py ...` (the build) and `salient-imagenet <command> ...`.

Each capability registers its commands (`core.registry.Command`: a name, a config dataclass that is its option
table, a handler); this module makes the parsers from the configs (`core.options`), turns the parsed arguments into
the config, and runs the handler, imported only then, so `--help` never pays for torch. It is the one place that
turns known failures into one line and an exit code. `reference()` is docs/cli.md.
"""

import argparse
import importlib
import logging
import os
import shlex
import sys
from dataclasses import fields

from .core import registry
from .core.compat import run_exit_handlers
from .core.errors import EXIT_INTERRUPTED, UserError
from .core.interrupts import ctrl_c_stops_once, is_interrupt
from .core.options import add_options, from_args, parse_classes  # noqa: F401 (parse_classes: a public name)
from .core.options import reference as options_reference
from .logs import quiet_library_warnings, setup_logging

__all__ = ["build_main", "build_parser", "main", "main_parser", "reference"]

log = logging.getLogger("salient_imagenet_builder")
BUILD_SCRIPT = "build_dataset.py"
REFERENCE_WIDTH = 110
EXIT_CODES = ("Exit codes: 0 ok, 1 check found problems (or attach could not find or decode images), 2 usage or "
              "input, 3 Hub refused, 4 network, 130 interrupted.")


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Descriptions as written; every option's help already ends with its default (`core.options.help_text`)."""


def _parser(command: registry.Command, parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    add_options(parser, command.config)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.set_defaults(command=command.name)
    return parser


def build_parser() -> argparse.ArgumentParser:
    """`python build_dataset.py`: the build command's options."""
    build = next(c for c in registry.commands() if c.name == "build")
    return _parser(build, argparse.ArgumentParser(prog=BUILD_SCRIPT, description=build.description,
                                                  formatter_class=HelpFormatter))


def main_parser() -> argparse.ArgumentParser:
    """`salient-imagenet <command>`: every registered command."""
    parser = argparse.ArgumentParser(prog="salient-imagenet", description=f"Salient ImageNet tools. {EXIT_CODES}",
                                     formatter_class=HelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    for command in registry.commands():
        _parser(command, commands.add_parser(command.name, help=command.help,
                                             description=command.description or command.help,
                                             formatter_class=HelpFormatter))
    return parser


def dispatch(args: argparse.Namespace, typed: list[str], owns_process: bool = False) -> int:
    """Run the command `args` names; `typed`: the command line as typed (the outputs' provenance). `owns_process`:
    the command line of this very process (not a caller's in-process call), which ends after it."""
    setup_logging(getattr(args, "verbose", False))
    quiet_library_warnings()
    with ctrl_c_stops_once(owns_process):
        code = _dispatch(args, shlex.join(typed))
    if owns_process and code == EXIT_INTERRUPTED:
        exit_now(code)
    return code


def _dispatch(args: argparse.Namespace, typed: str) -> int:
    command = next(c for c in registry.commands() if c.name == args.command)
    try:
        given = {"command": typed} if "command" in {f.name for f in fields(command.config)} else {}
        config = from_args(command.config, args, **given)
        module, _, function = command.run.partition(":")
        return getattr(importlib.import_module(module), function)(config)
    except UserError as e:
        log.error("%s", e)
        return e.exit_code
    except BaseException as error:
        if not is_interrupt(error) or isinstance(error, SystemExit):
            raise  # anything else is a bug: it keeps its traceback
        log.debug("stopped by Ctrl-C", exc_info=True)
        pushing = command.name == "push" or getattr(args, "push", False)
        log.error("interrupted; run the same command again to start over%s",
                  " (a push resumes where it stopped)" if pushing else "")
        return EXIT_INTERRUPTED


def exit_now(code: int) -> None:
    """End this process after Ctrl-C without the interpreter's teardown: with torch loaded, its garbage collection
    of every module takes seconds (4 s on 2 busy cores) after the line that said the command stopped. The exit
    handlers still run (logging's flush, multiprocessing's clean-up of any child process); the command's own
    clean-up ran before its line was printed."""
    run_exit_handlers()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe or stream: nothing left to say
            pass
    os._exit(code)


def build_main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    typed = ["python", BUILD_SCRIPT, *(sys.argv[1:] if argv is None else argv)]
    return dispatch(args, typed, owns_process=argv is None)


def main(argv=None) -> int:
    args = main_parser().parse_args(argv)
    typed = ["salient-imagenet", *(sys.argv[1:] if argv is None else argv)]
    return dispatch(args, typed, owns_process=argv is None)


def reference() -> str:
    """docs/cli.md: every command's options, made from the parsers (tests/test_cli.py checks it is current)."""
    def fixed(prog):  # the same text on any terminal
        return HelpFormatter(prog, width=REFERENCE_WIDTH)

    build = next(c for c in registry.commands() if c.name == "build")
    sections = [options_reference(_parser(build, argparse.ArgumentParser(
        prog=BUILD_SCRIPT, description=f"{build.description} The same command is `salient-imagenet build`.",
        formatter_class=fixed)), f"python {BUILD_SCRIPT}")]
    for command in registry.commands():
        if command is not build:
            parser = argparse.ArgumentParser(prog=f"salient-imagenet {command.name}", formatter_class=fixed,
                                             description=command.description or command.help)
            sections.append(options_reference(_parser(command, parser), f"salient-imagenet {command.name}"))
    return ("# Command-line reference\n\nGenerated from the commands' option tables (`python -m "
            "salient_imagenet_builder.cli --reference > docs/cli.md`); every default shown is the one the code "
            f"uses. {EXIT_CODES}\n\n" + "\n".join(sections))


if __name__ == "__main__":
    if sys.argv[1:] == ["--reference"]:
        sys.stdout.write(reference())
        sys.exit(0)
    sys.exit(main())
