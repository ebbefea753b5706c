"""Git adapter (GitPython): resolve a pinned commit and export its tree, read files from it."""

from __future__ import annotations

import io
import os
import re
import shutil
import subprocess
import tarfile
import tempfile
from pathlib import Path

from ..errors import InputError


class Source:
    def __init__(self, repo: str, cache: Path) -> None:
        import git

        self._git = git
        self.url = repo
        local = "://" not in repo and not re.match(r"^[^/]+@[^/]+:", repo)
        if local and not Path(repo).exists():
            raise InputError(f"repo {repo}: no such directory; expected the bot's git repository (a path, or a URL)")
        try:
            if Path(repo).is_dir():
                self.repo = git.Repo(repo)
            else:
                self.repo = self._mirror(repo, cache)
        except (git.InvalidGitRepositoryError, git.NoSuchPathError):
            raise InputError(f"repo {repo}: not a git repository (no .git in it; a bare repository is fine too)") from None
        except git.GitCommandError as e:
            raise InputError(f"repo {repo}: cannot fetch: {git_said(e)}") from None

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
            hint = " (a signed tag may be pinned by its SHA with source.signatures)" if kind == "tag" else ""
            raise InputError(f"repo {self.url}: {sha} is a {kind}, not a commit{hint}")
        return self.repo.commit(sha)

    def object_type(self, sha: str) -> str:
        try:
            return self.repo.git.cat_file("-t", sha)
        except self._git.GitCommandError:
            raise InputError(f"repo {self.url}: commit {sha} not found") from None

    def raw(self, sha: str) -> bytes:
        """The object's bytes as stored (a commit's or a tag's headers, signature and message)."""
        return self.repo.odb.stream(bytes.fromhex(sha)).read()

    def tags_naming(self, sha: str) -> list[tuple[str, str, str]]:
        """(name, object type, object SHA) of each tag that names the commit, directly or through a tag object."""
        out = self.repo.git.for_each_ref(f"--points-at={sha}", "--format=%(refname:short) %(objecttype) %(objectname)",
                                         "refs/tags")
        return [tuple(line.split(" ", 2)) for line in out.splitlines() if line.count(" ") == 2]

    def verify_ssh(self, sha: str, kind: str, allowed_signers: str) -> tuple[bool, list[str]]:
        """`git verify-commit` (or verify-tag) of an SSH signature against this allowed-signers text, which git's
        ssh-keygen reads from an in-memory file: exactly the text slotctl checked, and nothing written to disk. The
        options that decide the verdict are pinned over any config of the repository or the user."""
        fd = os.memfd_create("allowed-signers", os.MFD_CLOEXEC)
        try:
            os.write(fd, allowed_signers.encode())
            proc = subprocess.run(
                ["git", f"--git-dir={self.repo.git_dir}", "-c", "gpg.format=ssh", "-c", "gpg.ssh.program=ssh-keygen",
                 "-c", f"gpg.ssh.allowedSignersFile=/dev/fd/{fd}", "-c", "gpg.minTrustLevel=fully",
                 f"verify-{kind}", "--raw", sha],
                pass_fds=(fd,), capture_output=True, text=True, timeout=60)
        finally:
            os.close(fd)
        return proc.returncode == 0, [line.strip() for line in (proc.stderr + proc.stdout).splitlines() if line.strip()]

    def verify_gpg(self, sha: str, kind: str, keys: bytes, fingerprints: list[str]) -> tuple[bool, list[str]]:
        """`git verify-commit --raw` (or verify-tag) of an OpenPGP signature with only these keys (binary, as slotctl
        checked them): imported into a throwaway GNUPGHOME (a private temporary directory, removed afterwards; never
        the user's ~/.gnupg) whose gpg.conf makes exactly these fingerprints ultimately trusted, so git's verdict is
        `G`, trust `ultimate`, and gpg.minTrustLevel=ultimate refuses anything else. gpg's status lines, and
        gpg --import's when the key could not be imported."""
        gpg = shutil.which("gpg")
        if gpg is None:
            raise InputError("source.signatures.gpg_keyring: gpg not found on this host: install it (Debian: gnupg)")
        home = tempfile.mkdtemp(prefix="slotctl-gnupg-")  # mode 0700, root's
        try:
            with open(os.path.join(home, "gpg.conf"), "w") as f:
                # no-autostart: an import would otherwise leave a gpg-agent running for this directory.
                f.write("no-autostart\nno-auto-key-retrieve\ntrust-model pgp\n"
                        + "".join(f"trusted-key {fp}\n" for fp in fingerprints))
            env = {**os.environ, "GNUPGHOME": home}
            imported = subprocess.run([gpg, "--batch", "--no-tty", "--quiet", "--import"], input=keys, env=env,
                                      capture_output=True, timeout=60)
            proc = subprocess.run(
                ["git", f"--git-dir={self.repo.git_dir}", "-c", "gpg.format=openpgp", "-c", f"gpg.program={gpg}",
                 "-c", "gpg.minTrustLevel=ultimate", f"verify-{kind}", "--raw", sha],
                env=env, capture_output=True, text=True, timeout=60)
        finally:
            shutil.rmtree(home, ignore_errors=True)
        said = [line.strip() for line in (proc.stderr + proc.stdout).splitlines() if line.strip()]
        if proc.returncode != 0 and imported.returncode != 0:
            said += [f"gpg --import: {line.strip()}" for line in imported.stderr.decode(errors="replace").splitlines()
                     if line.strip()][-1:]
        return proc.returncode == 0, said

    def read(self, commit, path: str) -> bytes:
        try:
            return (commit.tree / path).data_stream.read()
        except KeyError:
            raise InputError(f"repo {self.url}: commit {commit.hexsha[:12]} has no file {path!r}"
                             + (" (commit a hash-pinned lockfile, an empty one for a bot without dependencies)"
                                if path.endswith(".lock") else "")) from None

    def verify_signature(self, commit) -> None:
        """require_signed_commits: `git verify-commit` with the keys of the user running slotctl (unpinned: the
        user's gpg keyring or gpg.ssh.allowedSignersFile; source.signatures pins them in the inventory)."""
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


def git_said(e) -> str:
    """git's own reason from a GitCommandError, on one line: GitPython wraps its stderr as "stderr: 'fatal: ...'"."""
    text = (e.stderr or "").strip()
    text = re.sub(r"^stderr: '|'$", "", text, flags=re.S).strip()
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    fatal = [line for line in lines if line.startswith(("fatal:", "error:"))]
    # The first fatal line is the specific one ("... does not appear to be a git repository"); later ones are generic.
    return (fatal[0] if fatal else lines[-1] if lines else f"git exited {e.status}").removeprefix("fatal: ")
