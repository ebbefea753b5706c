"""slotctl: blue/green deployments of a systemd-run trading bot."""

__version__ = "0.1.0"
