from __future__ import annotations

import argparse

import pytest

from pyrometer.agent import config
from pyrometer.agent.shared.errors import ConfigError


def parse(argv: list[str], env: dict[str, str] | None = None) -> config.AgentConfig:
    parser = argparse.ArgumentParser()
    config.add_arguments(parser)
    return config.resolve(parser.parse_args(argv), env or {})


def test_flags_win_over_env_and_env_over_defaults() -> None:
    env = {"PYROMETER_COLLECTOR": "collector:7070", "PYROMETER_SERVICE": "svc",
           "PYROMETER_RATE": "50"}
    cfg = parse(["--pid", "42", "--rate", "200"], env)
    assert (cfg.collector, cfg.service, cfg.rate_hz, cfg.pid) == ("collector:7070", "svc", 200, 42)
    assert parse(["--pid", "42"], env).rate_hz == 50
    assert parse(["--pid", "42", "--collector", "h:1", "--service", "s"]).rate_hz == 100


def test_labels_are_parsed_and_sorted() -> None:
    cfg = parse(["--collector", "h:1", "--service", "s", "--match", "serve",
                 "--label", "version=2", "--label", "region=eu"])
    assert cfg.labels == (("region", "eu"), ("version", "2"))


@pytest.mark.parametrize(
    ("argv", "env", "needle"),
    [
        (["--pid", "1"], {}, "--collector"),
        (["--pid", "1", "--collector", "nohost"], {}, "HOST:PORT"),
        (["--pid", "1", "--collector", "h:1"], {}, "--service"),
        (["--collector", "h:1", "--service", "s"], {}, "--pid PID or --match"),
        (["--collector", "h:1", "--service", "s", "--match", "("], {}, "regular expression"),
        (["--collector", "h:1", "--service", "s", "--pid", "1", "--rate", "0"], {}, "--rate"),
        (["--collector", "h:1", "--service", "s", "--pid", "1"], {"PYROMETER_RATE": "fast"},
         "PYROMETER_RATE"),
        (["--collector", "h:1", "--service", "s", "--pid", "1", "--label", "oops"], {}, "--label"),
        (["--collector", "h:1", "--service", "s", "--pid", "-3"], {}, "--pid"),
    ],
)
def test_bad_values_name_the_flag(argv: list[str], env: dict[str, str], needle: str) -> None:
    with pytest.raises(ConfigError, match=needle.replace("(", r"\(")):
        parse(argv, env)
