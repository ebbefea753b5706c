"""Git adapter (GitPython): resolve a pinned commit and export its tree, read files from it."""

from __future__ import annotations

import io
import os
import tarfile
from pathlib import Path

from ..errors import InputError


class Source:
    def __init__(self, repo: str, cache: Path) -> None:
        import git

        self._git = git
        self.url = repo
        try:
            if Path(repo).is_dir():
                self.repo = git.Repo(repo)
            else:
                self.repo = self._mirror(repo, cache)
        except (git.InvalidGitRepositoryError, git.NoSuchPathError):
            raise InputError(f"repo {repo}: not a git repository") from None
        except git.GitCommandError as e:
            raise InputError(f"repo {repo}: cannot fetch: {e.stderr.strip().splitlines()[-1] if e.stderr.strip() else e}") from None

    def _mirror(self, url: str, cache: Path):
        """A bare mirror under the host's .slotctl/, fetched before each resolve."""
        if (cache / "HEAD").exists():
            r = self._git.Repo(cache)
            r.git.fetch("--prune", "origin", "+refs/*:refs/*")
            return r
        return self._git.Repo.clone_from(url, cache, mirror=True)

    def resolve(self, sha: str):
        """The commit object for a full SHA that must exist in the repository."""
        try:
            # rev_parse trusts a full hex SHA without looking it up: ask the object database.
            kind = self.repo.git.cat_file("-t", sha)
        except self._git.GitCommandError:
            raise InputError(f"repo {self.url}: commit {sha} not found") from None
        if kind != "commit":
            raise InputError(f"repo {self.url}: {sha} is a {kind}, not a commit")
        return self.repo.commit(sha)

    def read(self, commit, path: str) -> bytes:
        try:
            return (commit.tree / path).data_stream.read()
        except KeyError:
            raise InputError(f"repo {self.url}: commit {commit.hexsha[:12]} has no file {path!r}") from None

    def verify_signature(self, commit) -> None:
        """require_signed_commits: `git verify-commit` with the keys of the user running slotctl."""
        try:
            self.repo.git.verify_commit(commit.hexsha)
        except self._git.GitCommandError as e:
            why = (e.stderr or "").strip().splitlines()
            raise InputError(f"repo {self.url}: commit {commit.hexsha[:12]} has no valid signature "
                             f"(require_signed_commits){': ' + why[-1] if why else ''}") from None

    def check_tree(self, commit) -> None:
        """Refuse a commit whose symlinks point outside its own tree: exported, they would reach the host."""
        for item in commit.tree.traverse():
            if item.type == "blob" and item.mode == 0o120000:
                target = item.data_stream.read().decode(errors="replace")
                resolved = os.path.normpath(os.path.join(os.path.dirname(item.path), target))
                if target.startswith("/") or resolved == ".." or resolved.startswith("../"):
                    raise InputError(f"repo {self.url}: commit {commit.hexsha[:12]}: symlink {item.path} -> {target} "
                                     "leaves the tree")

    def export(self, commit, dest: Path) -> None:
        """Write the commit's tree into dest (which must be empty): `git archive | tar -x`, without a shell."""
        buf = io.BytesIO()
        self.repo.archive(buf, treeish=commit.hexsha, format="tar")
        buf.seek(0)
        with tarfile.open(fileobj=buf) as tar:
            try:
                tar.extractall(dest, filter="data")
            except tarfile.FilterError as e:
                raise InputError(f"repo {self.url}: commit {commit.hexsha[:12]}: {e}") from None
