"""The `maetok` command line: every subcommand is listed and has --help."""

from __future__ import annotations

import subprocess
import sys

import pytest

from maetok.cli import build_parser, main

SUBCOMMANDS = sorted(build_parser()._subparsers._group_actions[0].choices)


def test_help_lists_every_subcommand():
    out = subprocess.run([sys.executable, "-m", "maetok", "--help"], capture_output=True, text=True, check=True).stdout
    for name in SUBCOMMANDS:
        assert name in out


@pytest.mark.parametrize("name", SUBCOMMANDS)
def test_each_subcommand_has_help(name, capsys):
    with pytest.raises(SystemExit) as e:
        main([name, "--help"])
    assert e.value.code == 0
    assert "usage: maetok " + name in capsys.readouterr().out


def test_check_params_reports_key_path(tmp_path, repo, capsys):
    bad = tmp_path / "params.yaml"
    bad.write_text((repo / "params.yaml").read_text().replace("image_size: 32", "image_size: 32\n      colour: rgb"))
    assert main(["check-params", "--params", str(bad)]) == 2
    assert "unknown key 'scales.tiny.data.colour'" in capsys.readouterr().err
    assert main(["check-params", "--params", str(repo / "params.yaml")]) == 0


def test_schema_check_passes_on_the_committed_schema():
    assert main(["schema", "--check"]) == 0
