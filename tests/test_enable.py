"""Enabling a release's units: the [Install] section read as systemctl reads it, and the links to add and remove."""

from __future__ import annotations

import pytest

from slotctl.core.enable import install_dirs, link_changes
from slotctl.core.health import UnitSeen, unit_problems

SERVICE = "[Unit]\nDescription=x\n\n[Service]\nExecStart=/bin/true\n\n"


@pytest.mark.parametrize(("install", "dirs"), [
    ("[Install]\nWantedBy=multi-user.target\n", ["multi-user.target.wants"]),
    ("[Install]\nWantedBy=multi-user.target graphical.target\nRequiredBy=trading.target\n",
     ["multi-user.target.wants", "graphical.target.wants", "trading.target.requires"]),
    ("[Install]\nWantedBy=a.target\nWantedBy=\nWantedBy=b.target\n", ["b.target.wants"]),  # empty resets the list
    ("[Install]\n# WantedBy=multi-user.target\n", []),
    ("", []),  # no [Install]: a static unit, started by slotctl only
    ("[Install]\nWantedBy=multi-user.target multi-user.target\n", ["multi-user.target.wants"]),
])
def test_install_sections_give_the_directories_their_links_go_into(install, dirs):
    assert install_dirs("bot.service", SERVICE + install) == dirs


def test_a_wanted_by_in_another_section_is_not_an_install_key():
    assert install_dirs("bot.service", "[Service]\nWantedBy=multi-user.target\n") == []


@pytest.mark.parametrize("install", ["[Install]\nAlias=bot2.service\n", "[Install]\nAlso=other.service\n",
                                     "[Install]\nWantedBy=../etc.target\n"])
def test_install_keys_slotctl_does_not_honour_are_refused_by_name(install):
    with pytest.raises(ValueError, match="bot.service"):
        install_dirs("bot.service", SERVICE + install)


def test_link_changes_add_the_new_releases_links_and_remove_the_old_ones():
    wanted = {"bot.service": ["multi-user.target.wants"], "recover.service": ["multi-user.target.wants"]}
    present = {"bot.service": ["multi-user.target.wants", "graphical.target.wants"],
               "dashboard.service": ["multi-user.target.wants"]}
    add, remove = link_changes(wanted, present)
    assert add == [("multi-user.target.wants", "recover.service")]
    assert sorted(remove) == [("graphical.target.wants", "bot.service"), ("multi-user.target.wants", "dashboard.service")]
    assert link_changes(wanted, {u: list(d) for u, d in wanted.items()}) == ([], [])


@pytest.mark.parametrize(("seen", "base", "problem"), [
    (UnitSeen("d.service", "active", "running", 10, 0), UnitSeen("d.service", "active", "running", 10, 0), None),
    (UnitSeen("d.service", "activating", "auto-restart", 0, 1), UnitSeen("d.service", "active", "running", 10, 0),
     "d.service is activating/auto-restart"),
    (UnitSeen("d.service", "active", "running", 11, 1), UnitSeen("d.service", "active", "running", 10, 0),
     "systemd restarted d.service 1 time(s) since the switch"),
    (UnitSeen("d.service", "active", "running", 11, 0), UnitSeen("d.service", "active", "running", 10, 0),
     "main process changed from pid 10 to 11"),
    (UnitSeen("d.service", "failed", "failed", 0, 0), None, "d.service is failed/failed"),
    (UnitSeen("d.service", "active", "running", 12, 3), None, "systemd restarted d.service 3 time(s) since it was started"),
    (UnitSeen("d.service", "active", "exited", 0, 0), None, None),  # a oneshot with RemainAfterExit
    (UnitSeen("d.timer", "active", "waiting", 0, 0), None, None),
])
def test_every_unit_of_the_release_must_stay_up_and_unrestarted(seen, base, problem):
    found = unit_problems(seen, base)
    assert (problem is None and found == []) or (problem is not None and any(problem in f for f in found)), found
