"""The inventory loader: the shape docs/inventory.md documents, strictly."""

from __future__ import annotations

from pathlib import Path

import pytest

from slotctl import inventory
from slotctl.errors import InputError

SHA = "0123456789abcdef0123456789abcdef01234567"


def load(tmp_path: Path, text: str) -> inventory.Inventory:
    p = tmp_path / "inventory.yaml"
    p.write_text(text)
    return inventory.load(p)


def test_minimal_inventory_gets_the_documented_defaults(tmp_path):
    """A host needs only a repo; everything else has the contract's defaults."""
    inv = load(tmp_path, f"version: 1\ndefaults: {{repo: /srv/git/bot.git, commit: {SHA}}}\nhosts: {{local: {{}}}}\n")
    h = inv.hosts["local"]
    assert h.root == Path("/opt/trading-bot")
    assert h.commit == SHA
    assert h.health.window == 20 and h.health.max_age == 30
    assert h.quiesce.policy == "recorded"
    assert h.service == "trading-bot.service"
    assert set(h.units) == {"trading-bot.service", "trading-bot-dashboard.service"}


def test_host_overrides_one_nested_key_and_keeps_the_other_defaults(tmp_path):
    inv = load(tmp_path, "version: 1\ndefaults: {repo: /r, health: {window: 7, max_age: 9}}\n"
                         "hosts: {a: {health: {window: 3}}, b: {}}\n")
    assert inv.hosts["a"].health.window == 3 and inv.hosts["a"].health.max_age == 9
    assert inv.hosts["b"].health.window == 7


def test_relative_paths_resolve_against_the_inventory_file(tmp_path):
    inv = load(tmp_path, "version: 1\ndefaults: {repo: ../bot, root: roots/r1, index: {find_links: [wheels]}}\n"
                         "hosts: {local: {}}\n")
    h = inv.hosts["local"]
    assert h.repo == str(tmp_path.resolve() / "../bot")
    assert h.root == tmp_path.resolve() / "roots/r1"
    assert h.index.find_links == (str(tmp_path.resolve() / "wheels"),)


def test_url_repos_are_left_as_written(tmp_path):
    inv = load(tmp_path, "version: 1\ndefaults: {repo: 'git@example.invalid:desk/bot.git'}\nhosts: {local: {}}\n")
    assert inv.hosts["local"].repo == "git@example.invalid:desk/bot.git"


BAD = [
    ("version: 2\nhosts: {a: {repo: /r}}\n", "version: expected 1, got 2"),
    ("hosts: {a: {repo: /r}}\n", "version: expected 1"),
    ("version: 1\nhosts: {}\n", "hosts: expected a mapping of at least one host"),
    ("version: 1\nhosts: {a: {repo: /r, colour: blue}}\n", "hosts.a.colour: expected no such key"),
    ("version: 1\nextra: 1\nhosts: {a: {repo: /r}}\n", "extra: expected no such key"),
    ("version: 1\nhosts: {a: {}}\n", "hosts.a.repo: expected a git repository"),
    ("version: 1\nhosts: {a: {repo: /r, commit: abc123}}\n", "hosts.a.commit: expected a full 40-hex commit SHA"),
    (f"version: 1\nhosts: {{a: {{repo: /r, commit: {SHA.upper()}}}}}\n", "hosts.a.commit: expected a full 40-hex"),
    (f"version: 1\nhosts: {{a: {{repo: /r, commit: {SHA[:-1]}z}}}}\n", "hosts.a.commit: expected a full 40-hex"),
    ("version: 1\ndefaults: {health: {window: fast}}\nhosts: {a: {repo: /r}}\n", "defaults.health.window: expected a number, got 'fast'"),
    ("version: 1\ndefaults: {health: {window: 0}}\nhosts: {a: {repo: /r}}\n", "defaults.health.window: expected a number greater than 0"),
    ("version: 1\nhosts: {a: {repo: /r, health: {windows: 3}}}\n", "hosts.a.health.windows: expected no such key"),
    ("version: 1\nhosts: {a: {repo: /r, quiesce: {policy: lazy}}}\n", "hosts.a.quiesce.policy: expected one of 'flat', 'recorded'"),
    ("version: 1\nhosts: {a: {repo: /r, index: {offline: 'yes'}}}\n", "hosts.a.index.offline: expected true or false"),
    ("version: 1\nhosts: {a: {repo: /r, backups: {keep: 2.5}}}\n", "hosts.a.backups.keep: expected a whole number"),
    ("version: 1\nhosts: {a: {repo: /r, lockfile: ../../etc/passwd}}\n", "hosts.a.lockfile: expected a relative path"),
    ("version: 1\nhosts: {a: {repo: /r, config: {files: live.json}}}\n", "hosts.a.config.files: expected a list of strings"),
    ("version: 1\nhosts: {a: {repo: /r, vars: {user: [a, b]}}}\n", "hosts.a.vars.user: expected a string, number or boolean"),
    ("version: 1\nhosts: {a: {repo: /r, service: bot}}\n", "hosts.a.service: expected a unit name ending in .service"),
    ("version: 1\nhosts: {a: {repo: /r, service: other.service}}\n", "hosts.a.service: expected one of the units"),
    ("version: 1\nhosts: {'a b': {repo: /r}}\n", "hosts.a b: expected a host name"),
    ("version: 1\nhosts: {a: {repo: \"/r\\nx\"}}\n", "hosts.a.repo: expected a single line"),
    ("version: 1\nhosts: [a, b]\n", "hosts: expected a mapping"),
    ("- just\n- a list\n", "(top level): expected a mapping"),
    ("version: 1\nhosts: {a: {repo: /r}\n", "not valid YAML (line"),
]


@pytest.mark.parametrize("text, message", BAD, ids=[m for _, m in BAD])
def test_malformed_inventory_is_one_line_naming_file_key_and_expectation(tmp_path, text, message):
    with pytest.raises(InputError) as e:
        load(tmp_path, text)
    assert message in e.value.message
    assert e.value.message.startswith(str(tmp_path / "inventory.yaml") + ":")
    assert "\n" not in e.value.message
    assert e.value.exit_code == 2


def test_missing_inventory_file_names_the_file(tmp_path):
    with pytest.raises(InputError, match=r"nope\.yaml: inventory file not found"):
        inventory.load(tmp_path / "nope.yaml")


def test_host_selection_needs_a_name_when_there_are_several(tmp_path):
    inv = load(tmp_path, "version: 1\ndefaults: {repo: /r}\nhosts: {a: {}, b: {}}\n")
    with pytest.raises(InputError, match="has 2 hosts"):
        inv.select([])
    with pytest.raises(InputError, match="no host named 'c'"):
        inv.select(["c"])
    assert [h.name for h in inv.select(["b"])] == ["b"]
    assert [h.name for h in inv.select([], all_hosts=True)] == ["a", "b"]


def test_a_host_naming_another_positions_source_replaces_the_defaults_mapping_whose_source_is_implicit(tmp_path):
    """The defaults' file source with a select, left implicit: a host's sqlite source does not inherit that select."""
    inv = load(tmp_path, "version: 1\ndefaults: {repo: /r, quiesce: {positions: {path: shared/data/p.json, "
                         "select: 'open_positions[].id'}}}\n"
                         "hosts: {local: {quiesce: {positions: {source: sqlite, path: shared/data/bot.sqlite, "
                         "query: 'SELECT id FROM trades WHERE is_open = 1'}}}, other: {}}\n")
    local = inv.hosts["local"].quiesce.positions
    assert (local.source, local.select, str(local.path)) == ("sqlite", None, "shared/data/bot.sqlite")
    assert inv.hosts["other"].quiesce.positions.select == "open_positions[].id"  # the defaults' mapping elsewhere
