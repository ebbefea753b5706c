"""The fault matrix: SIGKILL at every journal point of a deploy and of a rollback, times every kind of bad release,
then `slotctl recover`, then the host checked from the outside (helpers.assert_consistent)."""

from __future__ import annotations

import pytest

from helpers import (
    active,
    deploy,
    journal_points,
    kill_then_recover,
    manifest,
    open_positions,
    wait_for,
)

BAD_KINDS = ["crash", "loses", "silent", "ignores", "hangs"]


@pytest.fixture
def host(host):
    # A release that hangs at start is given up on after 3 s (TimeoutStartSec), not 90; a 1 s window keeps the
    # matrix's hundred-odd deploys and recoveries within the suite's time.
    host.reconfigure(health={"start_timeout": 3, "window": 1})
    # k2 first: from the start the inactive slot holds a good release, the rollback target a kill must not cost.
    assert deploy(host, "k2").returncode == 0
    assert deploy(host, "k1").returncode == 0
    wait_for(lambda: open_positions(host))  # a bad release has positions to lose
    return host


def report(record_property, what: str, points: list[str]) -> None:
    record_property("covered", f"fault matrix: {what}: {len(points)} kill points, each recovered consistent")


def test_a_deploy_that_commits_killed_at_every_point_is_recovered(host, record_property):
    points = journal_points(host, "deploy", "--yes", "--commit", host.bot_repo.sha["k2"])
    for point in points:
        current = manifest(host, active(host).split("/")[1]).commit
        release = "k2" if current == host.bot_repo.sha["k1"] else "k1"
        kill_then_recover(host, ["deploy", "--yes", "--commit", host.bot_repo.sha[release]], point, f"deploy of {release}")
    report(record_property, "a deploy that commits", points)
    assert len(points) >= 20


@pytest.mark.parametrize("kind", BAD_KINDS)
def test_a_deploy_of_a_bad_release_killed_at_every_point_from_its_start_on_is_recovered(host, record_property, kind):
    """Until its units start, the new release has not run: those points are the committing deploy's, covered above."""
    release = f"bad-{kind}"
    args = ["deploy", "--yes", "--commit", host.bot_repo.sha[release]]
    points = journal_points(host, *args)
    assert "rollback:begin" in points, f"{release} was not rolled back: {points}"
    points = points[points.index("start:begin"):]
    for point in points:
        kill_then_recover(host, args, point, f"deploy of {release}")
        assert manifest(host, active(host).split("/")[1]).commit == host.bot_repo.sha["k1"]
        inactive = manifest(host, "green" if active(host) == "slots/blue" else "blue")
        # Only the bad release is ever marked bad: no release that passed its probes is condemned for it.
        assert inactive.verdict != "bad" or inactive.commit == host.bot_repo.sha[release], f"killed at {point}"
    report(record_property, f"a deploy of a release that {kind}", points)


def test_a_rollback_killed_at_every_point_is_recovered(host, record_property):
    assert deploy(host, "k2").returncode == 0
    points = journal_points(host, "rollback")
    for point in points:
        kill_then_recover(host, ["rollback"], point, "rollback")
    report(record_property, "a rollback", points)
    assert len(points) >= 15
