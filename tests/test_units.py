"""Unit rendering (Jinja2, StrictUndefined), systemd quoting, and installation as links."""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

import pytest

from slotctl.adapters import units
from slotctl.errors import InputError
from slotctl.inventory import HostConfig, RunConfig

ROOT = Path("/srv/bot")


def host(**kw) -> HostConfig:
    return replace(HostConfig(name="local", repo="/r", root=ROOT), **kw)


def env_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("Environment=")]


def test_units_reach_code_only_through_the_current_symlink():
    rendered = units.render(host(), "a" * 40)
    bot = rendered["trading-bot.service"]
    assert f"WorkingDirectory={ROOT}/trading-bot-current/src" in bot
    assert f"ExecStart={ROOT}/trading-bot-current/venv/bin/python run.py" in bot
    assert "slots/" not in bot


def test_bot_and_dashboard_get_the_same_shared_data_and_log_paths():
    rendered = units.render(host(), "a" * 40)
    bot, dash = rendered["trading-bot.service"], rendered["trading-bot-dashboard.service"]
    assert env_lines(bot) == env_lines(dash)
    assert f'Environment="BOT_LOG_DIR={ROOT}/shared/logs"' in env_lines(bot)
    assert f'Environment="BOT_DATA_DIR={ROOT}/shared/data"' in env_lines(bot)


def test_no_dashboard_unit_is_rendered_without_a_dashboard_to_run():
    assert list(units.render(host(run=RunConfig(bot="-m bot", dashboard=None)), "a" * 40)) == ["trading-bot.service"]


def test_user_from_vars_becomes_the_units_user():
    assert "User=trader\n" in units.render(host(vars={"user": "trader"}), "a" * 40)["trading-bot.service"]
    assert "User=" not in units.render(host(), "a" * 40)["trading-bot.service"]


def test_an_undefined_template_variable_is_an_error_naming_template_and_variable(tmp_path):
    (tmp_path / "bot.service.j2").write_text("[Service]\nExecStart={{ python }} --desk {{ desk }}\n")
    h = host(templates_dir=tmp_path, units={"trading-bot.service": "bot.service.j2"})
    with pytest.raises(InputError) as e:
        units.render(h, "a" * 40)
    assert "bot.service.j2" in e.value.message and "'desk' is undefined" in e.value.message


def test_a_missing_template_is_named(tmp_path):
    h = host(templates_dir=tmp_path, units={"trading-bot.service": "nope.j2"})
    with pytest.raises(InputError, match="nope.j2 .*template not found"):
        units.render(h, "a" * 40)


@pytest.mark.parametrize("value, quoted", [
    ("plain", '"plain"'),
    ("with space", '"with space"'),
    ('say "hi"', '"say \\"hi\\""'),
    ("back\\slash", '"back\\\\slash"'),
    ("100%", '"100%%"'),
    ("$HOME", '"$HOME"'),  # Environment= does not expand $
])
def test_environment_values_are_quoted_the_way_systemd_reads_them(value, quoted):
    assert units.sd_env(value) == quoted


def test_exec_words_double_dollar_and_percent():
    assert units.sd_exec("$(id)") == '"$$(id)"'
    assert units.sd_exec("plain-word") == "plain-word"


def test_a_newline_cannot_reach_a_unit_file():
    for f in (units.sd_env, units.sd_exec, units.sd_path):
        with pytest.raises(ValueError):
            f("a\nExecStartPre=/bin/evil")


def test_install_links_units_through_current_and_refuses_a_foreign_unit(tmp_path):
    h = host(root=tmp_path / "root", unit_dir=tmp_path / "units")
    units.install_links(h, ["trading-bot.service"])
    link = tmp_path / "units/trading-bot.service"
    assert os.readlink(link) == str(tmp_path / "root/trading-bot-current/units/trading-bot.service")
    units.install_links(h, ["trading-bot.service"])  # idempotent
    (tmp_path / "units/trading-bot-dashboard.service").write_text("[Service]\nExecStart=/bin/true\n")
    with pytest.raises(InputError, match="not installed by slotctl"):
        units.install_links(h, ["trading-bot-dashboard.service"])
    assert (tmp_path / "units/trading-bot-dashboard.service").read_text().startswith("[Service]")
