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
        (["--teams-url", "teams"], "'teams' is not an absolute"),
        (["--smtp-to", "ops@example.com"], "--smtp-to needs --smtp-host"),
        (["--smtp-host", "mail"], "needs --smtp-from (the sender) and --smtp-to"),
        (
            ["--smtp-host", "mail", "--smtp-from", "foresight", "--smtp-to", "ops@example.com"],
            "--smtp-from: 'foresight' is not an e-mail address",
        ),
        (
            ["--smtp-host", "mail", "--smtp-from", "a@example.com", "--smtp-to", "ops@x.org, bob"],
            "--smtp-to: 'bob' is not an e-mail address",
        ),
        (
            [
                "--smtp-host",
                "mail",
                "--smtp-from",
                "a@x.org",
                "--smtp-to",
                "b@x.org",
                "--smtp-user",
                "me",
            ],
            "--smtp-user and --smtp-password-file go together",
        ),
        (
            [
                "--smtp-host",
                "mail",
                "--smtp-from",
                "a@x.org",
                "--smtp-to",
                "b@x.org",
                "--smtp-password-file",
                "/nonexistent/password",
            ],
            "--smtp-password-file: cannot read it",
        ),
    ],
)
def test_apply_names_the_bad_option(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["connect", "apply", *argv]) == 2
    assert message in capsys.readouterr().err
