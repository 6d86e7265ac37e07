"""The parser reads well: every command and flag has help, and the renamed flags keep their old spelling."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from infra.cli import main
from infra.cli.app import COMMANDS, build_parser

NESTED = {
    "budget": ("set", "show", "pause", "resume", "pin", "release"),
    "models": ("list", "fetch"),
    "data": ("list", "fetch"),
}


def _help(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    with pytest.raises(SystemExit) as exit_:
        main([*argv, "--help"])
    assert exit_.value.code == 0
    return capsys.readouterr().out


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    actions = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(actions[0].choices) if actions else {}


def test_top_level_help_lists_every_command(capsys: pytest.CaptureFixture[str]) -> None:
    out = _help(capsys)
    for command in COMMANDS:
        assert command in out


@pytest.mark.parametrize("argv", [(c,) for c in COMMANDS] + [(c, a) for c, actions in NESTED.items() for a in actions])
def test_every_subcommand_help_exits_0(capsys: pytest.CaptureFixture[str], argv: tuple[str, ...]) -> None:
    assert "usage: tierflow " + " ".join(argv) in _help(capsys, *argv)


def test_the_dispatch_table_matches_the_parser() -> None:
    assert list(_subparsers(build_parser())) == list(COMMANDS)


def test_every_command_and_flag_has_help() -> None:
    def check(parser: argparse.ArgumentParser) -> None:
        assert parser.description, parser.prog
        for action in parser._actions:
            assert action.help, f"{parser.prog} {action.dest}"
        for child in _subparsers(parser).values():
            check(child)

    for command in _subparsers(build_parser()).values():
        check(command)


def test_eval_methods_and_its_old_spelling_parse_the_same() -> None:
    parser = build_parser()
    new = parser.parse_args(["eval", "--trace", "t.jsonl", "--methods", "frugalgpt,automix"])
    old = parser.parse_args(["eval", "--trace", "t.jsonl", "--policy", "frugalgpt,automix"])
    assert new == old
    assert new.methods == "frugalgpt,automix"
    assert parser.parse_args(["eval", "--trace", "t.jsonl"]).methods == "all"


def test_fit_method_and_its_old_spelling_parse_the_same() -> None:
    parser = build_parser()
    new = parser.parse_args(["fit", "--trace", "t.jsonl", "--method", "frugalgpt", "--out", "p.json"])
    old = parser.parse_args(["fit", "--trace", "t.jsonl", "--policy", "frugalgpt", "--out", "p.json"])
    assert new == old
    assert new.method == "frugalgpt"


def test_fit_needs_a_method(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["fit", "--trace", "t.jsonl", "--out", "p.json"])
    assert exit_.value.code == 2
    assert "--method" in capsys.readouterr().err


@pytest.mark.parametrize("command", ["eval", "fit"])
def test_the_old_spelling_is_hidden(capsys: pytest.CaptureFixture[str], command: str) -> None:
    assert "--policy" not in _help(capsys, command).replace("demo --policy", "")


def test_fit_with_the_new_spelling_fails_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"item_id": "x"}\n')
    assert main(["fit", "--trace", str(bad), "--method", "magic", "--out", str(tmp_path / "p.json")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("tierflow: error: ") and "not a trace row" in err[0]
