"""What an in-process ``swcli`` call returns (the ``cli`` fixture), and the one-line error every refusal gives."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class CliResult:
    code: int
    out: str
    err: str


def one_line_error(res, *words):
    assert res.code != 0
    lines = [line for line in res.err.splitlines() if line.strip()]
    assert len(lines) == 1, res.err
    assert lines[0].startswith("swcli: error: ")
    for word in words:
        assert word in lines[0], lines[0]
    assert "Traceback" not in res.err
