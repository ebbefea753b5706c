"""`slotctl init`: a commented inventory and its unit templates, from a preset, to deploy as written or edit first.

The presets are the repository's own files, not copies: `refbot` is its inventory.yaml and templates/ (the reference
bot, with its dashboard), `custom` the same for a bot of one's own (its unit only), `freqtrade` the freqtrade example
(examples/freqtrade). The wheel carries them as slotctl/presets (pyproject.toml's package-dir). What the operator
passes is set in the inventory's text, its comments kept (core.yamledit); the result is checked as the parser reads
it before anything is written.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..core import yamledit
from ..errors import InputError
from ..inventory import is_local_path, parse

PRESETS = ("custom", "refbot", "freqtrade")


def sources() -> tuple[Path, Path]:
    """(the reference inventory, the freqtrade example's directory): beside the code in the wheel, where the
    repository keeps them in a checkout (and so its editable install)."""
    package = Path(__file__).resolve().parents[1]
    installed = package / "presets"
    if installed.is_dir():
        return installed / "inventory.yaml", installed / "freqtrade"
    return package.parent / "inventory.yaml", package.parent / "examples" / "freqtrade"


@dataclass(frozen=True)
class Preset:
    inventory: Path
    templates: Path
    # What makes it this preset, set in the inventory's text: (key under defaults, value, comment for its line).
    changes: tuple[tuple[tuple[str, ...], Any, str | None], ...] = ()


def preset(name: str) -> Preset:
    from ..adapters.units import DEFAULT_TEMPLATES

    reference, freqtrade = sources()
    if name == "freqtrade":
        return Preset(freqtrade / "inventory.yaml", freqtrade / "templates")
    if name == "custom":
        return Preset(reference, DEFAULT_TEMPLATES, (
            (("units",), {"trading-bot.service": "trading-bot.service.j2"}, "your bot's unit; more: name -> template"),
            (("run", "dashboard"), None, "no dashboard unit"),
            (("config", "files"), [], "your bot's config files in its repo: a key that differs between releases is drift")))
    return Preset(reference, DEFAULT_TEMPLATES, (  # the reference bot (slotctl/data/refbot) has one config file
        (("config", "files"), ["live_config.json"], None),
        (("config", "allow_differ"), ["release", "fault"], "what its releases change on purpose")))


@dataclass
class Written:
    inventory: Path
    templates: list[Path]
    placeholders: bool  # repo and commit are still the preset's


def parse_set(items: list[str]) -> list[tuple[tuple[str, ...], Any]]:
    """--set KEY=VALUE: a dotted key under defaults, a YAML value."""
    import yaml

    out = []
    for item in items:
        key, eq, text = item.partition("=")
        path = tuple(key.strip().split("."))
        if not eq or not all(path):
            raise InputError(f"--set {item!r}: expected KEY=VALUE, KEY a dotted key under defaults (health.window=10)")
        try:
            out.append((path, yaml.safe_load(text)))
        except yaml.YAMLError:
            raise InputError(f"--set {key}: {text!r} is not a YAML value (quote it)") from None
    return out


def _commit(repo: str | None, commit: str | None) -> str | None:
    """The commit to pin: as given (checked to exist in a local repository), or a local repository's HEAD."""
    if repo is None or not is_local_path(repo):
        if repo is not None and commit is None:
            raise InputError(f"--commit: needed with a repository URL ({repo}): init reads only local repositories")
        return commit
    from ..adapters import git as gitsrc

    source = gitsrc.Source(repo, Path(os.devnull))  # a local repository is read in place: no mirror, no cache
    if commit is not None:
        source.resolve(commit)
        return commit
    try:
        return source.repo.head.commit.hexsha
    except ValueError:  # an unborn HEAD: no commit yet
        raise InputError(f"repo {repo}: has no commit yet; commit the bot first, or pass --commit") from None


def init(name: str, directory: Path, *, repo: str | None, commit: str | None, root: Path | None, sets: list[str],
         force: bool) -> Written:
    """Write DIR/inventory.yaml and DIR/templates/*.j2; every check first, so a refusal writes nothing."""
    import yaml

    from .. import __version__

    if name not in PRESETS:
        raise InputError(f"--preset: expected one of {', '.join(PRESETS)}, got {name!r}")
    p = preset(name)
    changes = [*p.changes, (("templates_dir",), "templates", "beside this file; edit them at will")]
    if repo is not None:
        changes.append((("repo",), str(Path(repo).absolute()) if is_local_path(repo) else repo, None))
    pinned = _commit(repo, commit)
    if pinned is not None:
        changes.append((("commit",), pinned, None))
    if root is not None:
        changes.append((("root",), str(root.absolute()), None))
    for path, value in parse_set(sets):
        if path[0] == "templates_dir":  # the templates are written to DIR/templates: the inventory must name them
            raise InputError("--set templates_dir: init writes the templates to DIR/templates, which the inventory names")
        changes.append((path, value, None))

    text = p.inventory.read_text()
    doc = yaml.safe_load(text)
    for path, value, comment in changes:
        key = ".".join(path)
        try:
            text = yamledit.set_value(text, ("defaults", *path), value, comment)
            yamledit.set_in(doc, ("defaults", *path), value)
        except yamledit.Uneditable as e:
            raise InputError(f"--set {key}: {e}") from None
        if yaml.safe_load(text) != doc:
            raise InputError(f"{key}: cannot be set in the {name} preset's text: set it in the written file instead")
    if text.startswith("# An example inventory"):  # the repository's own header: not what this file now is
        text = text.split("\n", 1)[1]
    text = (f"# Written by `slotctl init --preset {name}` (slotctl {__version__}). Every key: `slotctl inventory-reference`.\n"
            f"# Then: slotctl -i inventory.yaml setup (the bot's user with setup.create_user, the layout), "
            f"deploy --dry-run, deploy\n" + text)

    target = directory / "inventory.yaml"
    hosts = parse(yaml.safe_load(text), target).hosts.values()  # as a deploy will read it: exit 2 here
    names = sorted({t for h in hosts for t in h.units.values()})
    missing = [t for t in names if not (p.templates / t).is_file()]
    if missing:
        raise InputError(f"units: template {missing[0]} is not one of the {name} preset's "
                         f"({', '.join(sorted(f.name for f in p.templates.glob('*.j2')))})")
    files = {target: text, **{directory / "templates" / t: (p.templates / t).read_text() for t in names}}
    there = [f for f in files if f.exists() or f.is_symlink()]
    if there and not force:
        raise InputError(f"{there[0]}: exists; nothing written (pass --force to overwrite "
                         f"{'it' if len(there) == 1 else f'it and {len(there) - 1} more'})")
    _write(files)
    return Written(target, [f for f in files if f != target], placeholders=repo is None)


def _write(files: dict[Path, str]) -> None:
    """Each file whole (a temp file renamed over it); on an error, the ones this run created are removed again."""
    from ..adapters import fs

    made: list[Path] = []
    try:
        for path, text in files.items():
            path.parent.mkdir(parents=True, exist_ok=True)
            new = not path.exists()
            fs.atomic_write_bytes(path, text.encode(), 0o644)
            if new:
                made.append(path)
    except OSError as e:
        for path in made:
            path.unlink(missing_ok=True)
        raise InputError(f"{getattr(e, 'filename', None) or path}: cannot write it: {e.strerror or e}") from None
