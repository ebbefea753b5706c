"""Which links enable a unit: its [Install] section read as `systemctl enable` reads it, for the keys a bot's units use.

slotctl enables the active release's units itself, with links in unit_dir (`multi-user.target.wants/<unit>`),
rather than through systemd's EnableUnitFiles: the links live beside the unit links slotctl already keeps in
step with trading-bot-current, so one place says what starts at boot, whatever systemd's own config dir is.
"""

from __future__ import annotations

# [Install] key -> the suffix of the directory its link goes into (systemd.unit(5)).
LINK_DIRS = {"WantedBy": ".wants", "RequiredBy": ".requires", "UpheldBy": ".upholds"}
# Keys that would ask for links of another kind; refused rather than silently ignored.
UNSUPPORTED = ("Alias", "Also", "DefaultInstance")


def install_dirs(unit: str, text: str) -> list[str]:
    """The directories (relative to unit_dir) that must hold a link to `unit` for it to be enabled, in the order the
    section names them; [] for a unit with no [Install] section (static: started only by slotctl).

    Raises ValueError naming the key for what slotctl does not honour.
    """
    dirs: list[str] = []
    section = None
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            section = line[1:-1]
            continue
        if section != "Install" or "=" not in line:
            continue
        key, _, value = (p.strip() for p in line.partition("="))
        if key in UNSUPPORTED:
            raise ValueError(f"[Install] {key}= is not supported for {unit}: only {', '.join(f'{k}=' for k in LINK_DIRS)}")
        if key in LINK_DIRS:
            if not value:  # an empty assignment resets the list, as systemd reads it
                dirs = [d for d in dirs if not d.endswith(LINK_DIRS[key])]
                continue
            for target in value.split():
                if "/" in target or target.startswith("."):
                    raise ValueError(f"[Install] {key}={target} of {unit}: expected a unit name")
                if target + LINK_DIRS[key] not in dirs:
                    dirs.append(target + LINK_DIRS[key])
    return dirs


def link_changes(wanted: dict[str, list[str]], present: dict[str, list[str]]) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """(links to add, links to remove) as (directory, unit) pairs.

    wanted: unit -> directories, for the active release's units; present: unit -> directories holding a link of
    slotctl's to it today, for every unit any release here installed. A unit the release no longer has loses its
    links; one whose section changed gains and loses the difference.
    """
    add = [(d, u) for u, dirs in wanted.items() for d in dirs if d not in present.get(u, [])]
    remove = [(d, u) for u, dirs in present.items() for d in dirs if d not in wanted.get(u, [])]
    return add, remove
