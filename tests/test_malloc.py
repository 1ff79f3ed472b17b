"""glibc malloc tuning of the CLI (maetok/utils/malloc.py)."""

from __future__ import annotations

import sys

import pytest

from maetok.utils import malloc


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc only")
def test_thresholds_are_applied_on_glibc():
    assert malloc.retain_freed_memory() is True


def test_an_explicit_environment_setting_wins(monkeypatch):
    monkeypatch.setenv("MALLOC_TRIM_THRESHOLD_", "131072")
    assert malloc.retain_freed_memory() is False


def test_cli_applies_it_before_running_a_command(monkeypatch, capsys):
    from maetok import cli

    calls = []
    monkeypatch.setattr(cli, "retain_freed_memory", lambda: calls.append(1))
    cli.main(["model-info", "MAETok-XS"])
    assert calls == [1] and '"MAETok-XS"' in capsys.readouterr().out
