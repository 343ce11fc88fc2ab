"""The commands users run, as `python build_dataset.py ...` runs them (`cli.build_main`), in this process: the exit
code, what is printed (capsys) and the one-line errors (the `logging` records, caplog). Exit codes of argparse's own
errors come as SystemExit."""

import argparse
import json
import re
from pathlib import Path

import pytest
from datasets import load_dataset

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def run(monkeypatch, capsys, caplog):
    """`python build_dataset.py *args` in `cwd`: (exit code, stdout, stderr with the log lines)."""
    from salient_imagenet_builder.cli import build_main

    def run_here(*args, cwd):
        monkeypatch.chdir(cwd)
        capsys.readouterr()
        caplog.clear()
        try:
            code = build_main(list(args))
        except SystemExit as e:  # argparse: usage and the message on stderr
            code = e.code
        out, err = capsys.readouterr()
        return code, out, err + caplog.text

    return run_here


def test_demo_builds_offline_and_loads(tmp_path, run):
    code, stdout, stderr = run("--demo", "--workers", "1", cwd=tmp_path)
    assert code == 0, stderr[-3000:]
    assert "meaningless" in stdout and "load_dataset('salient_imagenet_demo'" in stdout
    # the summary says what the self-check measures and why a random model leaves classes empty
    assert "are among the 5 most important features this build computed for their class" in stdout
    assert "a random model predicts only a few classes" in stdout
    out = tmp_path / "salient_imagenet_demo"
    info = json.loads((out / "build_info.json").read_text())
    assert info["provenance"]["arch"] == "resnet50" and info["provenance"]["demo"] is True
    assert info["stats"]["skipped_images"] == 1
    filled = sum(1 for n in info["stats"]["groups"].values() if n)
    assert f"the images fell into {filled} of the {len(info['stats']['groups'])} built classes" in stdout
    images = load_dataset(str(out), split="train")
    assert len(images) == info["stats"]["images_written"] > 0
    assert "Demo build" in (out / "README.md").read_text()
    code, _, stderr = run("--demo", "--workers", "0", "--classes", "0-3", cwd=tmp_path)  # replaces its earlier demo
    assert code == 0, stderr[-3000:]


def test_bad_arguments_are_named(tmp_path, run):
    code, _, stderr = run("--source", str(tmp_path), "--classes", "3-x", cwd=tmp_path)
    assert code == 2 and "--classes '3-x'" in stderr
    code, _, stderr = run("--source", str(tmp_path), "--top-k", "0", cwd=tmp_path)
    assert code == 2 and "--top-k '0'" in stderr
    (tmp_path / "salient_imagenet").mkdir()
    (tmp_path / "salient_imagenet" / "notes.txt").write_text("mine")
    (tmp_path / "src").mkdir()
    code, _, stderr = run("--source", str(tmp_path / "src"), "--model-checkpoint", "x.ckpt", "--annotations", "a.csv",
                          cwd=tmp_path)
    assert code == 2 and "--out salient_imagenet: exists and is not a build of this tool" in stderr
    code, _, stderr = run("--source", str(tmp_path / "nowhere"), "--out", "new", "--model", "resnet18",
                          "--model-checkpoint", str(tmp_path / "missing.ckpt"), cwd=tmp_path)
    assert code == 2 and "missing.ckpt: no such file" in stderr
    code, _, stderr = run("--source", str(tmp_path / "nowhere"), "--out", "new", "--model", "resnet18", cwd=tmp_path)
    assert code == 2 and f"--source {tmp_path / 'nowhere'}: no such folder" in stderr
    assert not (tmp_path / "new").exists() and not (tmp_path / ".new.partial").exists()


def test_class_lists_parse_and_each_mistake_is_named():
    from salient_imagenet_builder.cli import parse_classes

    assert parse_classes("7, 0-2,5,1") == [0, 1, 2, 5, 7]
    for text, message in (("5-2", "the range '5-2' ends before it starts"),
                          ("0-1000", "class indices must lie in 0-999"),
                          ("a-3", "expected indices and ranges like 0-9,325"), (",", "no class index given")):
        with pytest.raises(argparse.ArgumentTypeError, match=re.escape(f"--classes {text!r}: {message}")):
            parse_classes(text)


def _parsers():
    from salient_imagenet_builder.cli import build_parser, main_parser

    main = main_parser()
    commands = next(a for a in main._actions if a.choices and "build" in a.choices).choices
    return {"build_dataset.py": build_parser(), **{f"salient-imagenet {k}": v for k, v in commands.items()}}


def test_help_documents_every_option_with_its_default():
    for name, parser in _parsers().items():
        formatter = parser._get_formatter()
        for action in parser._actions:
            if action.dest == "help":
                continue
            assert action.help, f"{name} {action.option_strings or action.dest}: no help text"
            shown = formatter._expand_help(action)  # the text --help prints for this option
            if action.default not in (None, False):  # a value: shown as is, or said in words
                assert f"(default: {action.default})" in shown or "default" in action.help, (name, shown)
            elif action.default is None and action.nargs != 0:  # an option without a value: what happens then
                assert "(default" in shown or action.required or action.dest == "source", (name, action.dest)


def test_docs_cli_md_is_the_reference_the_parsers_make_and_names_every_option():
    """docs/cli.md is generated (`python -m salient_imagenet_builder.cli --reference > docs/cli.md`): stale, it
    fails here."""
    from salient_imagenet_builder.cli import reference

    docs = (ROOT / "docs" / "cli.md").read_text()
    assert docs == reference(), "docs/cli.md is stale: python -m salient_imagenet_builder.cli --reference > docs/cli.md"
    for name, parser in _parsers().items():
        title = "python build_dataset.py" if name in ("build_dataset.py", "salient-imagenet build") else name
        section = docs.split(f"## `{title}`", 1)
        assert len(section) == 2, name
        text = section[1].split("\n## ", 1)[0]
        for action in parser._actions:
            assert all(f"`{flag}`" in text for flag in action.option_strings if action.dest != "help"), (name, action.dest)


def test_readme_mentions_only_options_the_cli_has():
    import re

    readme = (ROOT / "README.md").read_text()
    options = {o for p in _parsers().values() for a in p._actions for o in a.option_strings if o.startswith("--")}
    ours = "\n".join(line for line in readme.splitlines() if not line.startswith("torchrun "))  # torchrun's flags
    mentioned = set(re.findall(r"(?<![\w-])--[a-z][a-z0-9-]*", ours))
    assert sorted(mentioned - options) == [], "README mentions options the CLI does not have"
    assert "huggingface-cli" not in readme and "hf auth login" in readme


def test_an_omitted_option_is_the_configs_default():
    """The parsers never pass a default of their own: each command parsed with only its required arguments is the
    config a library caller gets with the same values, and `--help` shows each default the config has."""
    from salient_imagenet_builder.cli import main_parser
    from salient_imagenet_builder.core import registry
    from salient_imagenet_builder.core.options import default_of, from_args, options_of

    parser = main_parser()
    for command in registry.commands():
        typed, given = [], {}
        for f in options_of(command.config):  # "1" (or the first choice): a value each required option takes
            how = f.metadata["option"]
            text = how.choices[0] if how.choices else "1"
            value = how.type(text) if how.type else text
            if how.positional and (how.required or how.nargs == "+"):
                typed.append(text)
                given[f.name] = [value] if how.nargs == "+" else value
            elif how.required:
                typed += [how.flags[0] if how.flags else "--" + f.name.replace("_", "-"), text]
                given[f.name] = [value] if how.append else value
        assert from_args(command.config, parser.parse_args([command.name, *typed])) == command.config(**given)
        for f in options_of(command.config):
            default = default_of(f)
            if f.name not in given and f.metadata["option"].default_text is None and default not in (None, True, False):
                shown = ",".join(map(str, default)) if isinstance(default, (list, tuple)) else default
                assert help_of(parser, command.name, f.name).endswith(f"(default: {shown})"), (command.name, f.name)


def help_of(parser, command: str, dest: str) -> str:
    sub = next(a for a in parser._actions if a.choices and command in a.choices).choices[command]
    return next(a.help for a in sub._actions if a.dest == dest)


def test_readme_exit_code_table_is_the_one_in_errors():
    import re

    from salient_imagenet_builder.core import errors

    readme = (ROOT / "README.md").read_text()
    table = readme.split("### Exit codes", 1)[1].split("\n\n", 2)[1]
    codes = {int(c) for c in re.findall(r"^\| (\d+) \|", table, re.M)}
    assert codes == {v for k, v in vars(errors).items() if k.startswith("EXIT_")}
    assert {errors.InputError.exit_code, errors.HubError.exit_code, errors.NetworkError.exit_code,
            errors.Interrupted.exit_code} == {2, 3, 4, 130}
