"""Asking the bot to drain (open no new positions) and lifting it: a flag file, a command or an HTTP call."""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import subprocess
import time
from pathlib import Path

from ..core.secret import redact_url
from ..errors import SlotctlError
from ..inventory import HostConfig
from . import credentials, fs, ownership
from .journal import who


class DrainError(SlotctlError):
    """The bot could not be asked to drain, or to resume."""


class Drain:
    """The flag file is the record of who drained the bot: slotctl lifts only a drain its own deploy set.

    An operator's drain (a flag that was there before the deploy, written by hand or by `touch`) is
    still there after it: slotctl sends its own drain request too, but lifts nothing it did not set.
    """

    def __init__(self, host: HostConfig) -> None:
        self.host, self.q = host, host.quiesce
        self.flag: Path = host.root / host.quiesce.drain_file
        self.sent = False  # the drain command or URL was called for this deploy
        self._ours = False  # the flag is this deploy's (request() wrote it)
        self.id: str | None = None  # this request's id, in our flag; a fresh one per request (renew())
        self._deploy, self._since = "", 0.0

    def active(self) -> dict | None:
        """The flag's record when the bot is drained, else None. It lies in a directory the bot's user owns: read
        without following a link, without blocking, at most fs.JSON_CAP; anything but a regular file there (a
        link, a FIFO, a directory) is no flag slotctl reads or replaces: DrainError, naming it."""
        try:
            fd = fs.open_beneath(self.host.root, self.host.quiesce.drain_file)
            if fd is None:
                return None
            try:
                raw, mtime = fs.read_capped(fd, self.flag, fs.JSON_CAP), os.fstat(fd).st_mtime
            finally:
                os.close(fd)
        except fs.Unsafe as e:
            raise DrainError(f"quiesce.drain_file {e}") from None
        try:
            rec = json.loads(raw)
        except ValueError:
            rec = None
        if not isinstance(rec, dict):  # an operator's `touch`: nobody's deploy
            return {"since": mtime, "by": "?", "deploy": "?"}
        return rec

    def set_by(self, deploy_id: str) -> bool:
        rec = self.active()
        return rec is not None and rec.get("deploy") == deploy_id

    def request(self, deploy_id: str, *, bot_running: bool = True) -> float:
        """Drain the bot for this deploy; a request that fails leaves no flag of ours behind.

        With no live bot the flag is written but the command or URL is not called yet: there is nothing to drain,
        and a bot that drains over its API cannot answer (freqtrade's /stopentry on a first deploy, or a rollback
        from a crashed release). send_pending() calls it once the gate sees a bot running.
        """
        since = time.time()
        self._ours = self.active() is None
        self._deploy, self._since = deploy_id, since
        self.renew()
        self.sent = False
        if bot_running:
            self.send_pending()
        return since

    def renew(self) -> float:
        """A new request id in our flag (a deferred drain call is a new request); returns when it was made.

        The id is what a bot may echo in its heartbeat ("drain"): only a heartbeat it computed after reading
        this flag can carry it. An operator's flag is never rewritten: there is no id to echo then (self.id None).
        """
        made = time.time()
        self.id = secrets.token_hex(8) if self._ours else None
        if self._ours:
            ownership.bot_dir(self.host, self.flag.parent)
            record = {"since": self._since, "by": who(), "deploy": self._deploy, "id": self.id}
            # In the bot's own directory: written beneath the root, never through a link the bot's user placed.
            self._beneath(fs.replace_beneath, (json.dumps(record, indent=2, sort_keys=True) + "\n").encode(), 0o644)
        return made

    def _remove(self) -> None:
        self._beneath(fs.remove_beneath)

    def _beneath(self, op, *args) -> None:
        try:
            op(self.host.root, fs.rel_to(self.host.root, self.flag), *args)
        except fs.Unsafe as e:
            raise DrainError(f"quiesce.drain_file {e}") from None

    def send_pending(self) -> None:
        """The drain command or URL, if request() deferred it; a failure takes our flag back, as request's does."""
        if self.sent:
            return
        try:
            self._call(self.q.drain_command, self.q.drain_url, "drain")
        except BaseException:
            if self._ours:
                self._remove()
                with contextlib.suppress(DrainError):
                    self._call(self.q.undrain_command, self.q.undrain_url, "undrain")  # in case it half-worked
            raise
        self.sent = True

    def lift(self, deploy_id: str, *, bot_running: bool = True) -> bool:
        """Lift the drain this deploy set (the undrain call first, then the flag); False when it is not ours.

        The undrain command or URL goes only to a running bot: with none, removing the flag is enough (a bot
        drained over its API forgets it when it stops; one that reads the flag starts undrained), and a call to
        a bot that is not there (freqtrade's /start on a first deploy that crashed) could only fail. Otherwise
        the flag goes only once the undrain call succeeded: while it stands, `status` shows the bot drained.
        """
        rec = self.active()
        if rec is not None and rec.get("deploy") != deploy_id:
            return False
        if bot_running:
            self._call(self.q.undrain_command, self.q.undrain_url, "undrain")
        self._remove()
        return True

    def _call(self, command: tuple[str, ...], url: str | None, what: str) -> None:
        if command:
            try:
                proc = subprocess.run(list(command), capture_output=True, text=True, timeout=30)
            except (OSError, subprocess.TimeoutExpired) as e:
                raise DrainError(f"quiesce.{what}_command {command[0]}: {e}") from None
            if proc.returncode != 0:
                tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or [f"exit {proc.returncode}"]
                raise DrainError(f"quiesce.{what}_command {command[0]} failed: {tail[0]}")
        if url:
            import urllib.error  # deferred: status and every CLI start would pay for it
            import urllib.request

            headers = {"Content-Type": "application/json"}
            if self.q.drain_credentials_file:  # read now, at each call: never at load, never printed
                try:
                    headers.update(credentials.basic_auth(self.q.drain_credentials_file, "quiesce.drain_credentials_file"))
                except credentials.CredentialsError as e:
                    raise DrainError(e.message) from None
            shown = redact_url(url)
            req = urllib.request.Request(url, data=b"{}", method="POST", headers=headers)
            try:
                with urllib.request.urlopen(req, timeout=10) as resp:
                    if not 200 <= resp.status < 300:
                        raise DrainError(f"quiesce.{what}_url {shown}: HTTP {resp.status}")
            except urllib.error.HTTPError as e:
                refused = " (credentials refused)" if e.code in (401, 403) else ""
                raise DrainError(f"quiesce.{what}_url {shown}: HTTP {e.code}{refused}") from None
            except (urllib.error.URLError, OSError) as e:
                raise DrainError(f"quiesce.{what}_url {shown}: {getattr(e, 'reason', e)}") from None
