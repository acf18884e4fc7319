"""``foresight connect apply`` refuses bad options before it touches Kafka or Connect."""

from __future__ import annotations

import pytest

from streams.cli import main


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        ([], "no target given"),
        (["--pagerduty-url", "http://127.0.0.1:1/pd"], "needs --pagerduty-routing-key"),
        (["--slack-url", "hooks.slack.com/x"], "'hooks.slack.com/x' is not an absolute"),
    ],
)
def test_apply_names_the_bad_option(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["connect", "apply", *argv]) == 2
    assert message in capsys.readouterr().err
