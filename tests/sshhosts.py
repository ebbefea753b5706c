"""Hosts for the fleet tests: each a sandboxed systemd that also runs a real sshd, on its own loopback port.

Inside, slotctl finds the host's systemd on the usual system bus and its own
/proc, exactly as on a real machine reached over SSH.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from slotctl.adapters.systemd import Systemd
from slotctl.sandbox import Sandbox


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def keypair(path: Path) -> Path:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "slotctl-test", "-f", str(path)], check=True)
    return path


@dataclass
class SshHost:
    name: str
    sandbox: Sandbox
    port: int

    @property
    def shared(self) -> Path:
        return self.sandbox.shared

    @property
    def root(self) -> Path:
        return self.shared / "opt" / "trading-bot"

    @property
    def ssh(self) -> str:
        return f"root@127.0.0.1:{self.port}"

    def systemd(self) -> Systemd:
        return Systemd(self.sandbox.bus_address)

    def stop(self) -> None:
        self.sandbox.stop()


def start_host(name: str, directory: Path, client_pub: Path, known_hosts: Path) -> SshHost:
    sb = Sandbox(directory / "sb").start()
    ssh_dir = sb.shared / "ssh"
    ssh_dir.mkdir()
    host_key = keypair(ssh_dir / "host_key")
    (ssh_dir / "authorized_keys").write_text(client_pub.read_text())
    port = free_port()
    (ssh_dir / "sshd_config").write_text(
        f"Port {port}\nListenAddress 127.0.0.1\nHostKey {host_key}\nAuthorizedKeysFile {ssh_dir}/authorized_keys\n"
        "PasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\nPermitRootLogin prohibit-password\n"
        "StrictModes no\nSubsystem sftp internal-sftp\n"
    )
    (sb.units / "sshd-test.service").write_text(
        f"[Service]\nExecStart=/usr/sbin/sshd -D -e -f {ssh_dir}/sshd_config\nRuntimeDirectory=sshd\n")
    sd = Systemd(sb.bus_address)
    sd.daemon_reload()
    sd.start("sshd-test.service")
    deadline = time.monotonic() + 10
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            break
        except OSError:
            if time.monotonic() > deadline:
                sb.stop()
                raise RuntimeError(f"sshd of {name} did not listen on {port}") from None
            time.sleep(0.02)
    pub = (ssh_dir / "host_key.pub").read_text().split()
    with open(known_hosts, "a") as f:
        f.write(f"[127.0.0.1]:{port} {pub[0]} {pub[1]}\n")
    return SshHost(name, sb, port)


def host_entry(h: SshHost, repo: Path, wheels: Path) -> dict:
    """The host's inventory entry; its repository and wheels are copied inside it, as a real host has its own."""
    shutil.copytree(repo, h.shared / "repo")
    shutil.copytree(wheels, h.shared / "wheels")
    return {"ssh": h.ssh, "root": str(h.root), "repo": str(h.shared / "repo"),
            "index": {"find_links": [str(h.shared / "wheels")], "offline": True}, "unit_dir": "/etc/systemd/system",
            # The hosts share this machine's filesystem: `slotctl setup` installs slotctl inside each one's own folder.
            "remote": {"prefix": str(h.shared / "slotctl"), "link": str(h.shared / "bin" / "slotctl")}}


def remote_defaults(client_key: Path, known_hosts: Path) -> dict:
    return {"identity": str(client_key), "known_hosts": str(known_hosts), "connect_timeout": 5}
