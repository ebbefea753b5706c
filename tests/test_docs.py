"""The docs: the site in docs/ builds with `mkdocs build --strict` (no broken link or anchor, no page left out of the
nav), the README stays a short front page whose links resolve, and nothing refers to a file outside the repository."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
DOCS = REPO / "docs"
README = REPO / "README.md"

# What the product's docs may not lean on: the design card and the audit live outside the repository.
OUTSIDE = ("DESIGN.md", "operator-safety-audit", "../shared", "/work/")


def pages() -> list[Path]:
    return sorted(DOCS.rglob("*.md"))


def nav_pages(nav: list) -> set[str]:
    """Every page named in mkdocs.yml's nav, however deep the sections go."""
    found: set[str] = set()
    for entry in nav:
        value = next(iter(entry.values())) if isinstance(entry, dict) else entry
        if isinstance(value, list):
            found |= nav_pages(value)
        else:
            found.add(value)
    return found


def test_the_site_builds_strict_without_a_warning(tmp_path):
    """mkdocs build --strict: a broken link or anchor, or a page missing from the nav, is an error."""
    env = dict(os.environ, NO_MKDOCS_2_WARNING="1")  # Material's banner about its successor: not ours to read
    out = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--config-file", str(REPO / "mkdocs.yml"),
                          "--site-dir", str(tmp_path / "site")], cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "WARNING" not in out.stderr, out.stderr
    assert (tmp_path / "site" / "index.html").is_file()
    assert (tmp_path / "site" / "inventory.schema.json").is_file()


def test_strict_is_strict_about_links_anchors_and_orphan_pages():
    """The build above proves what the config asks for: keep it asking (validation's defaults let orphans pass)."""
    config = yaml.safe_load((REPO / "mkdocs.yml").read_text())
    assert config["strict"] is True
    assert config["theme"]["name"] == "material"
    for key in ("omitted_files", "not_found", "absolute_links", "unrecognized_links", "anchors"):
        assert config["validation"][key] == "warn", key


def test_every_page_is_in_the_nav_and_every_nav_entry_is_a_page():
    config = yaml.safe_load((REPO / "mkdocs.yml").read_text())
    listed = nav_pages(config["nav"])
    on_disk = {p.relative_to(DOCS).as_posix() for p in pages()}
    assert on_disk - listed == set(), "pages missing from mkdocs.yml's nav"
    assert listed - on_disk == set(), "nav entries with no page"
    assert {"index.md", "inventory.md", "risks.md", "runbooks.md", "design-notes.md", "cli.md"} <= on_disk


def test_readme_is_a_short_front_page():
    lines = README.read_text().splitlines()
    assert len(lines) <= 260, f"README.md has {len(lines)} lines: move the detail into docs/"
    text = "\n".join(lines)
    # The two-command quick start, as CI (.ci/run) runs its second line.
    assert "scripts/setup && .venv/bin/slotctl demo" in text
    assert "scripts/setup && .venv/bin/pytest" in text


def test_readme_links_resolve():
    """Relative links from the README (docs/*.md, LICENSE, CHANGELOG) name files that exist, so they work on GitHub."""
    targets = re.findall(r"\]\(([^)#\s]+)(?:#[^)\s]*)?\)", README.read_text())
    local = [t for t in targets if not re.match(r"[a-z]+://", t)]
    assert "LICENSE" in local and "CHANGELOG.md" in local
    assert any(t.startswith("docs/") for t in local)
    missing = [t for t in local if not (REPO / t).exists()]
    assert missing == []


def test_nothing_refers_to_a_file_outside_the_repository():
    """The docs stand alone: the design and the audit are explained in docs/design-notes.md and docs/risks.md."""
    offenders = [f"{path.relative_to(REPO)}: {word}" for path in [README, *pages(), DOCS / "inventory.schema.json"]
                 for word in OUTSIDE if word in path.read_text()]
    assert offenders == []


def test_every_risk_id_the_docs_cite_is_explained():
    """RISK-0xx ids name the audit's risks: docs/risks.md has a row for each one any page cites."""
    cited = {m for path in [README, *pages()] for m in re.findall(r"RISK-0\d\d", path.read_text())}
    explained = set(re.findall(r"^\| (RISK-0\d\d) \|", (DOCS / "risks.md").read_text(), flags=re.M))
    assert cited - explained == set()
    assert explained == {f"RISK-{n:03d}" for n in range(1, 18)}
