"""A number an option cannot take is refused by the argument parser, naming the option: not
read as another meaning (``--speed -1`` was "as fast as possible"), not a traceback later
(``--progress-every 0`` divided by zero), not ignored (``--max-commits -1`` read every commit).
"""

from __future__ import annotations

import pytest

from streams.cli import main


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["simulate", "--speed", "-1"], "argument --speed: must be at least 0, got -1"),
        (["demo", "--speed", "nan"], "argument --speed: must be a number at least 0, got nan"),
        (["simulate", "--duration", "-5"], "argument --duration: must be above 0, got -5"),
        (
            ["quality", "backfill", ".", "--progress-every", "0"],
            "argument --progress-every: must be at least 1, got 0",
        ),
        (
            ["quality", "backfill", ".", "--max-commits", "-1"],
            "argument --max-commits: must be at least 1, got -1",
        ),
        (["quality", "backfill", ".", "--max-commits", "2.5"], "must be int, got '2.5'"),
        (["stack", "up", "--timeout", "0"], "argument --timeout: must be above 0, got 0"),
        (["bench", "online-failure", "--seeds", "0"], "--seeds: must be at least 1, got 0"),
        (["bench", "online-failure", "--hosts", "2"], "--hosts: must be at least 3, got 2"),
        (["bench", "agent-failures", "--burst-min", "0"], "--burst-min: must be above 0, got 0"),
        (["bench", "agent-failures", "--agents", "1"], "--agents: must be at least 2, got 1"),
        (
            ["connect", "remove", "slack", "--timeout", "inf"],
            "argument --timeout: must be a number at least 0, got inf",
        ),
        (
            [
                "train",
                "failure_risk",
                "--since",
                "2026-01-01",
                "--until",
                "2026-01-02",
                "--horizon-s",
                "-30",
            ],
            "argument --horizon-s: must be above 0, got -30",
        ),
    ],
)
def test_an_option_out_of_its_range_is_refused_naming_it(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as refused:
        main(argv)
    assert refused.value.code == 2
    assert message in capsys.readouterr().err
