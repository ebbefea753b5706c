"""The command line: parse, call an operation, render, exit. Nothing else lives here."""

import functools
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer

from . import __version__, ui
from .errors import AUDIT_FAILED, BAD_INPUT, DEPLOY_FAILED, LOCKED, NEEDS_OPERATOR, OK, QUIESCE_TIMEOUT, InputError, SlotctlError

app = typer.Typer(
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    help="Blue/green deployments for a trading bot run by systemd.\n\n"
    "Exit codes: 0 ok, 1 deploy failed and rolled back (healthy on the old slot), 2 bad input "
    "(nothing changed), 3 status found problems, 4 another deploy holds the lock (or deploys "
    "are on hold), 5 quiesce timed out, 6 rollback failed: the host needs an operator now.",
)
sandbox_app = typer.Typer(no_args_is_help=True, help="A throwaway real systemd for testing deploy pipelines.\n\n"
                          'Example: eval "$(slotctl sandbox start /var/tmp/sb)"; ...; slotctl sandbox stop /var/tmp/sb')
app.add_typer(sandbox_app, name="sandbox")
audit_app = typer.Typer(no_args_is_help=True, help="The continuous audit: a systemd timer that audits the host every "
                        "audit.interval seconds, writes its metrics and tells operators when the verdict changes.")
app.add_typer(audit_app, name="audit")

InventoryOpt = Annotated[Path | None, typer.Option("-i", "--inventory", help="Inventory file [default: inventory.yaml].")]
HostOpt = Annotated[list[str] | None, typer.Option("--host", metavar="NAME", help="Host name from the inventory; repeatable.")]
AllOpt = Annotated[bool | None, typer.Option("--all", help="Every host in the inventory.")]
QuiesceOpt = Annotated[float | None, typer.Option(
    "--quiesce-timeout", metavar="SECONDS", min=0.1, help="Override quiesce.timeout: how long to wait for the bot to be flat or recorded.")]
WaitLockOpt = Annotated[float, typer.Option(
    "--wait-lock", metavar="SECONDS", min=0, help="Wait this long for another deploy's lock instead of exiting 4 at once.")]
RebuildVenvOpt = Annotated[bool, typer.Option(
    "--rebuild-venv", help="Build the venv from the lockfile even when a good release's venv from the same lockfile could be reused.")]
SerialOpt = Annotated[int, typer.Option("--serial", metavar="N", min=1, help="Hosts per batch of a rolling deploy.")]
MaxFailOpt = Annotated[int, typer.Option("--max-fail", metavar="M", min=1,
                                         help="Stop the rollout once M hosts failed; the rest stay untouched.")]
TextfileOpt = Annotated[Path | None, typer.Option(
    "--textfile", metavar="DIR", help="Also write the audit as Prometheus metrics to DIR/slotctl.prom (node_exporter's "
    "textfile collector directory), replaced atomically.")]
JsonOpt = Annotated[bool | None, typer.Option("--json", help="One JSON document on stdout; human text on stderr.")]

# Worst first: the exit code of a run over several hosts is its worst host's.
_SEVERITY = [NEEDS_OPERATOR, LOCKED, QUIESCE_TIMEOUT, DEPLOY_FAILED, AUDIT_FAILED, BAD_INPUT, OK]


def worst(codes: list[int]) -> int:
    return min(codes, key=_SEVERITY.index) if codes else OK


class Opts:
    def __init__(self) -> None:
        self.inventory: Path = Path("inventory.yaml")
        self.hosts: list[str] = []
        self.all: bool = False
        self.json: bool = False
        self.verbose: bool = False

    def merge(self, inventory: Path | None, hosts: list[str] | None, all_: bool | None, json_: bool | None) -> "Opts":
        o = Opts()
        o.__dict__.update(self.__dict__)
        o.inventory = inventory or self.inventory
        o.hosts = list(hosts or self.hosts)
        o.all = bool(all_) or self.all
        o.json = bool(json_) or self.json
        if o.hosts and o.all:
            raise InputError("--host and --all: pass one or the other")
        return o


_say = ui.say
_MUTATING = ("build", "deploy", "rehearse", "rollback", "recover")  # a signal must not cut these short anywhere (interrupts)


def command(name: str) -> Callable:
    """Run a command body; the one place where SlotctlError becomes a one-line message and an exit code."""

    def wrap(fn: Callable) -> Callable:
        @functools.wraps(fn)
        def run(ctx: typer.Context, *args, **kwargs):
            if name in _MUTATING:
                from . import interrupts

                interrupts.install()
            try:
                code = fn(ctx, *args, **kwargs)
            except OSError as e:
                # Not a user's mistake but the host's (a full disk, a permission, a vanished file): one line, and
                # the host needs a look. Mutating commands turn these into their own errors before this point.
                where = f": {e.filename}" if e.filename else ""
                if isinstance(e, PermissionError) and os.geteuid() != 0:
                    # A reading command (status, history, verify) by another user: what it needs is root, not a page.
                    print(f"slotctl {name}: error: {e.strerror or e}{where}: run as root", file=sys.stderr)
                    raise typer.Exit(BAD_INPUT) from None
                print(f"slotctl {name}: error: {e.strerror or e}{where} (see `slotctl status`; -v shows more)", file=sys.stderr)
                opts = ctx.obj or Opts()
                if opts.verbose:
                    import traceback

                    traceback.print_exception(e, file=sys.stderr)
                raise typer.Exit(NEEDS_OPERATOR) from None
            except SlotctlError as e:
                print(f"slotctl {name}: error: {e.message}", file=sys.stderr)
                opts: Opts = ctx.obj or Opts()
                if opts.verbose and e.__context__ is not None:
                    import traceback

                    traceback.print_exception(e.__context__, file=sys.stderr)
                if kwargs.get("json_") or opts.json:
                    from .render import envelope

                    print(envelope(name, e.exit_code, {}, e.message))
                raise typer.Exit(e.exit_code) from None
            raise typer.Exit(code or OK)

        return run

    return wrap


def _contexts(opts: Opts):
    from . import inventory
    from .ops.host import HostContext

    inv = inventory.load(opts.inventory)
    hosts = inv.select(opts.hosts, opts.all)
    proc_root = Path(os.environ.get("SLOTCTL_PROC_ROOT", "/proc"))
    return [HostContext(h, None, proc_root, say=ui.say, progress=ui.progress) for h in hosts]


def _is_fleet(contexts) -> bool:
    return len(contexts) > 1 or any(c.host.ssh for c in contexts)


def _local_only(contexts, what: str) -> None:
    remote = [c.host.name for c in contexts if c.host.ssh]
    if remote:
        raise InputError(f"{what} runs on this machine only; host {remote[0]} is reached over ssh: run it there")


def _require_root(contexts, command: str) -> None:
    """A command that changes this machine's hosts, run as another user: exit 2 with "run as root", nothing written."""
    if os.geteuid() != 0:
        from .ops.preflight import require_root

        require_root(contexts, command)


def _textfile_dir(path: Path, what: str) -> None:
    if not path.is_dir():
        raise InputError(f"{what}: {path}: expected an existing directory (node_exporter's textfile directory)")


def _check_notify(contexts) -> None:
    """A bad notify.urls_file is bad input: refused before anything moves (hosts over ssh check their own)."""
    from .ops.events import targets

    for c in contexts:
        if not c.host.ssh:
            targets(c)


def _emit(opts: Opts, command: str, code: int, by_host: dict, text: str) -> int:
    """The one place results are printed: the JSON envelope, or text for people."""
    from .render import envelope

    if opts.json:
        print(envelope(command, code, by_host))
    else:
        ui.out(text)
    return code


def _print_rows(command: str, rows, opts: Opts, note: str | None = None) -> int:
    from .render import envelope, rows_text

    code = worst([r.exit_code for r in rows])
    if opts.json:
        print(envelope(command, code, {r.host: r for r in rows}, None, note))
    else:
        ui.out(rows_text(rows, note))
    return code


def version_text() -> str:
    """The version, and the commit when slotctl runs from a git checkout (as the quick start's does)."""
    import subprocess

    here = Path(__file__).resolve().parents[1]
    if (here / ".git").exists():
        proc = subprocess.run(["git", "-C", str(here), "rev-parse", "HEAD"], capture_output=True, text=True)
        if proc.returncode == 0:
            dirty = subprocess.run(["git", "-C", str(here), "status", "--porcelain", "--untracked-files=no"],
                                   capture_output=True, text=True).stdout.strip()
            return f"slotctl {__version__} (commit {proc.stdout.strip()}{', with local changes' if dirty else ''})"
    return f"slotctl {__version__} (not a git checkout: commit unknown)"


def _version(value: bool) -> None:
    if value:
        print(version_text())
        raise typer.Exit()


@app.callback()
def main_options(
    ctx: typer.Context,
    inventory: InventoryOpt = None,
    host: HostOpt = None,
    all_: AllOpt = None,
    json_: JsonOpt = None,
    verbose: Annotated[bool, typer.Option("-v", "--verbose", help="On an error, also print the underlying exception.")] = False,
    version: Annotated[bool | None, typer.Option("--version", callback=_version, is_eager=True,
                                                help="Print the version (and commit) and exit.")] = None,
) -> None:
    opts = Opts()  # checked when a command merges its own options in (inside its error handling)
    opts.inventory, opts.hosts, opts.all, opts.json = inventory or opts.inventory, list(host or []), bool(all_), bool(json_)
    opts.verbose = verbose
    ctx.obj = opts


@app.command()
@command("status")
def status(ctx: typer.Context, inventory: InventoryOpt = None, host: HostOpt = None, all_: AllOpt = None,
           json_: JsonOpt = None, textfile: TextfileOpt = None) -> int:
    """What runs on each host and everything wrong with it. Exit 3 when anything is wrong.

    Example: slotctl status --json; slotctl status --textfile /var/lib/node_exporter/textfile
    """
    from .ops.status import status as get_status
    from .render import status_text

    opts = ctx.obj.merge(inventory, host, all_, json_)
    contexts = _contexts(opts)
    if textfile is not None:
        _local_only(contexts, "status --textfile")
        _textfile_dir(textfile, "--textfile")
        results = [get_status(c) for c in contexts]
        from .ops.status import write_textfile

        write_textfile(textfile, contexts, results)
        code = worst([r.exit_code for r in results])
        return _emit(opts, "status", code, {r.host: r for r in results}, "\n".join(status_text(r) for r in results))
    if _is_fleet(contexts):
        from .ops import fleet

        rows = fleet.sweep(contexts, lambda c: fleet.remote(c, ["status"], fleet.row_from_status) if c.host.ssh
                           else fleet.local_status(c), parallel=64)
        return _print_rows("status", rows, opts)
    results = [get_status(c) for c in contexts]
    code = worst([r.exit_code for r in results])
    return _emit(opts, "status", code, {r.host: r for r in results}, "\n".join(status_text(r) for r in results))


@app.command()
@command("build")
def build(ctx: typer.Context, commit: Annotated[str | None, typer.Option(help="Full 40-hex SHA [default: the inventory's pin].")] = None,
          rebuild_venv: RebuildVenvOpt = False, wait_lock: WaitLockOpt = 0,
          inventory: InventoryOpt = None, host: HostOpt = None, all_: AllOpt = None, json_: JsonOpt = None) -> int:
    """Build the inactive slot from a commit, without switching to it.

    Example: slotctl build --commit 0123...cdef
    """
    from .ops.build import build as do_build
    from .ops.build import plan
    from .ops.session import exclusive
    from .render import envelope

    opts = ctx.obj.merge(inventory, host, all_, json_)
    contexts = _contexts(opts)
    _local_only(contexts, "build")
    _require_root(contexts, "build")
    plans = {c.host.name: plan(c, commit) for c in contexts}  # bad input is refused before anything is written
    results = {}
    for c in contexts:
        with exclusive(c, wait_lock):
            p = plans[c.host.name]
            # Planned again under the lock only if another command switched the host meanwhile.
            results[c.host.name] = do_build(c, commit, p if c.active_slot() == p.active else None,
                                            reuse_venv=not rebuild_venv)
    if opts.json:
        print(envelope("build", OK, results))
    else:
        for name, r in results.items():
            print(f"{name}: slot {r.slot} built from {r.manifest.commit} in {r.seconds:.1f}s")
    return OK


@app.command()
@command("deploy")
def deploy(
    ctx: typer.Context,
    commit: Annotated[str | None, typer.Option(help="Full 40-hex SHA [default: the inventory's pin].")] = None,
    dry_run: Annotated[bool, typer.Option(
        "--dry-run", help="Show the plan (dependency, config and unit diffs) and stop; nothing is written.")] = False,
    allow_drift: Annotated[bool, typer.Option("--allow-drift", help="Switch even when parity finds unexpected differences (journaled).")] = False,
    rebuild_venv: RebuildVenvOpt = False,
    no_rehearsal: Annotated[bool, typer.Option(
        "--no-rehearsal", help="Skip the rehearsal the inventory's rehearsal section asks for (journaled).")] = False,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation (CI).")] = False,
    quiesce_timeout: QuiesceOpt = None,
    wait_lock: WaitLockOpt = 0,
    serial: SerialOpt = 1,
    max_fail: MaxFailOpt = 1,
    inventory: InventoryOpt = None, host: HostOpt = None, all_: AllOpt = None, json_: JsonOpt = None,
) -> int:
    """Build the inactive slot, switch to it, probe it; roll back automatically if it fails.

    Exit 0 healthy on the new release; 1 rolled back, healthy on the old one; 6 the rollback failed too.

    Example: slotctl deploy --commit 0123...cdef --yes --json
    """
    from .ops import hold as holds
    from .ops.build import plan
    from .ops.deploy import deploy as do_deploy
    from .ops.deploy import refuse_drift
    from .ops.session import exclusive
    from .render import outcome_text

    opts = ctx.obj.merge(inventory, host, all_, json_)
    contexts = _contexts(opts)
    _require_root(contexts, "deploy")  # the dry-run too: it says what the deploy would, and that is this
    _check_notify(contexts)
    if _is_fleet(contexts):
        from .ops import fleet

        result = fleet.rolling_deploy(contexts, commit, dry_run=dry_run, allow_drift=allow_drift, quiesce_timeout=quiesce_timeout,
                                      wait_lock=wait_lock, serial=serial, max_fail=max_fail,
                                      confirm=functools.partial(_confirm, yes), rebuild_venv=rebuild_venv,
                                      rehearsal=not no_rehearsal)
        return _print_rows("deploy", result.table(), opts, result.stopped)
    if dry_run:
        return _dry_run(opts, contexts, commit, allow_drift, wait_lock)
    for c in contexts:
        holds.refuse(c, "deploy")  # before the plan and the lock: a refused deploy writes nothing
    plans = {c.host.name: plan(c, commit) for c in contexts}  # every host's input is checked before any host moves
    # Drift is known from git before the build: refused before the lock, with nothing written.
    refused = [o for c in contexts if (o := refuse_drift(c, plans[c.host.name], allow_drift)) is not None]
    if refused:
        return _emit(opts, "deploy", BAD_INPUT, {o.host: o for o in refused}, "\n".join(outcome_text(o) for o in refused))
    _confirm(yes, "deploy " + ", ".join(f"{n} -> {p.commit[:12]}" for n, p in plans.items()) + "?")
    outcomes = []
    for c in contexts:
        with exclusive(c, wait_lock) as (deploy_id, _):
            outcomes.append(do_deploy(c, commit, deploy_id=deploy_id, allow_drift=allow_drift,
                                      quiesce_timeout=quiesce_timeout, reuse_venv=not rebuild_venv,
                                      rehearsal=not no_rehearsal))
    code = worst([o.exit_code for o in outcomes])
    return _emit(opts, "deploy", code, {o.host: o for o in outcomes}, "\n".join(outcome_text(o) for o in outcomes))


def _dry_run(opts: Opts, contexts, commit: str | None, allow_drift: bool, wait_lock: float) -> int:
    """Every check the deploy makes before its quiesce gate, in its order, writing nothing; the plan, the verdict,
    and the exit code the deploy would have had there (0: it would go on to drain, switch and probe)."""
    from .ops import hold as holds
    from .ops.build import plan
    from .ops.preflight import Verdict, verdict
    from .render import envelope, plan_text

    docs, texts, codes = {}, [], []
    for c in contexts:
        try:
            holds.refuse(c, "deploy")  # the deploy's first refusal; the dry-run goes on to show the plan
            held = None
        except SlotctlError as e:
            held = e
        try:
            p = plan(c, commit)
        except SlotctlError:
            if held is not None:
                raise held from None
            raise
        v = Verdict(held.exit_code, held.message) if held is not None else \
            verdict(c, p, allow_drift=allow_drift, wait_lock=wait_lock)
        docs[c.host.name] = p.to_dict() | {"dry_run": True, "verdict": v.to_dict()}
        texts.append(plan_text(p) + "\n" + v.text())
        codes.append(v.exit_code)
    code = worst(codes)
    if opts.json:
        print(envelope("deploy", code, docs))
    else:
        ui.out("\n".join(texts))
    return code


@app.command()
@command("rehearse")
def rehearse(ctx: typer.Context, commit: Annotated[str | None, typer.Option(help="Full 40-hex SHA [default: the inventory's pin].")] = None,
             rebuild_venv: RebuildVenvOpt = False, wait_lock: WaitLockOpt = 0,
             inventory: InventoryOpt = None, host: HostOpt = None, all_: AllOpt = None, json_: JsonOpt = None) -> int:
    """Build a release and rehearse it beside the live bot, without switching: would it run here, on today's data?

    Exit 0 it passed; 1 rejected in rehearsal (why, and its last journal lines); 2 bad input. The live bot keeps
    trading throughout; the inactive slot's previous release is put back after.

    Example: slotctl rehearse --commit 0123...cdef --json
    """
    from .ops.build import plan
    from .ops.deploy import rehearse_only
    from .ops.session import exclusive
    from .render import outcome_text

    opts = ctx.obj.merge(inventory, host, all_, json_)
    contexts = _contexts(opts)
    _local_only(contexts, "rehearse")
    _require_root(contexts, "rehearse")
    for c in contexts:
        plan(c, commit)  # every host's input is checked before any host builds
    outcomes = []
    for c in contexts:
        with exclusive(c, wait_lock) as (deploy_id, _):
            outcomes.append(rehearse_only(c, commit, deploy_id=deploy_id, reuse_venv=not rebuild_venv))
    code = worst([o.exit_code for o in outcomes])
    return _emit(opts, "rehearse", code, {o.host: o for o in outcomes}, "\n".join(outcome_text(o) for o in outcomes))


@app.command()
@command("verify")
def verify(ctx: typer.Context,
           slot: Annotated[str | None, typer.Option(help="blue or green [default: the active slot].")] = None,
           inventory: InventoryOpt = None, host: HostOpt = None, all_: AllOpt = None, json_: JsonOpt = None) -> int:
    """Parity of a slot: venv == lockfile (and, active, == its manifest), Python version, units, config. Exit 3 on drift.

    Example: slotctl verify --slot green --json
    """
    from .core.layout import SLOTS
    from .ops.verify import verify as do_verify
    from .render import envelope, verify_text

    if slot is not None and slot not in SLOTS:
        raise InputError(f"--slot: expected blue or green, got {slot!r}")
    opts = ctx.obj.merge(inventory, host, all_, json_)
    contexts = _contexts(opts)
    _local_only(contexts, "verify")
    reports = [do_verify(c, slot) for c in contexts]
    code = AUDIT_FAILED if any(r.drift for r in reports) else OK
    if opts.json:
        print(envelope("verify", code, {r.host: r.to_dict() for r in reports}))
    else:
        ui.out("\n".join(verify_text(r) for r in reports))
    return code


def _confirm(yes: bool, question: str) -> None:
    if yes:
        return
    if not sys.stdin.isatty():
        raise InputError("not on a terminal, so there is nobody to confirm: pass --yes")
    if not typer.confirm(question, err=True):
        raise InputError("not confirmed, nothing changed")


@app.command()
@command("rollback")
def rollback(ctx: typer.Context, quiesce_timeout: QuiesceOpt = None, wait_lock: WaitLockOpt = 0,
             serial: SerialOpt = 1, max_fail: MaxFailOpt = 1,
             yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation (several hosts).")] = False,
             override_hold: Annotated[bool, typer.Option(
                 "--override-hold", help="Roll back even while deploys are on hold (an emergency; journaled).")] = False,
             override_signer: Annotated[bool, typer.Option(
                 "--override-signer", help="Roll back even to a release whose signer source.signatures no longer "
                 "allows (a key rotated out; journaled).")] = False,
             inventory: InventoryOpt = None, host: HostOpt = None, all_: AllOpt = None, json_: JsonOpt = None) -> int:
    """Switch back to the other slot, if it holds a complete release that was healthy (never one marked bad).

    Refused (exit 4) while deploys are on hold, unless --override-hold; refused (exit 2) to a release whose signer is
    no longer allowed (source.signatures), unless --override-signer.

    Example: slotctl rollback --host local
    """
    from .ops import hold as holds
    from .ops import signatures
    from .ops.deploy import rollback as do_rollback
    from .ops.session import exclusive
    from .render import outcome_text

    opts = ctx.obj.merge(inventory, host, all_, json_)
    contexts = _contexts(opts)
    _require_root(contexts, "rollback")
    _check_notify(contexts)
    if _is_fleet(contexts):
        from .ops import fleet

        _confirm(yes, f"roll back {len(contexts)} hosts, {serial} at a time?")
        extra = ["--wait-lock", str(wait_lock)] + (["--quiesce-timeout", str(quiesce_timeout)] if quiesce_timeout else [])
        extra += ["--override-hold"] if override_hold else []
        extra += ["--override-signer"] if override_signer else []

        def one(c) -> fleet.Row:
            if c.host.ssh:
                return fleet.remote(c, ["rollback", *extra], fleet.row_from_outcome)
            return fleet.local_mutation(c, lambda x, deploy_id: do_rollback(
                x, deploy_id=deploy_id, quiesce_timeout=quiesce_timeout, override_hold=override_hold,
                override_signer=override_signer), wait_lock)

        result = fleet.rolling(contexts, lambda c: c.host.name, one, serial, max_fail)
        return _print_rows("rollback", result.table(), opts, result.stopped)
    for c in contexts:
        holds.refuse(c, "rollback", override=override_hold)  # before the lock: a refused rollback writes nothing
        signatures.refuse_rollback_early(c, override_signer)
    outcomes = []
    for c in contexts:
        with exclusive(c, wait_lock) as (deploy_id, _):
            outcomes.append(do_rollback(c, deploy_id=deploy_id, quiesce_timeout=quiesce_timeout,
                                        override_hold=override_hold, override_signer=override_signer))
    code = worst([o.exit_code for o in outcomes])
    return _emit(opts, "rollback", code, {o.host: o for o in outcomes}, "\n".join(outcome_text(o) for o in outcomes))


@app.command()
@command("hold")
def hold(ctx: typer.Context,
         reason: Annotated[str, typer.Option("--reason", help="Why deploys are held; shown to whoever is refused.")],
         until: Annotated[str | None, typer.Option(
             "--until", metavar="TIME", help="ISO 8601 time with a zone (2026-12-01T14:00:00Z); the hold no longer stands "
             "after it [default: until slotctl unhold].")] = None,
         inventory: InventoryOpt = None, host: HostOpt = None, all_: AllOpt = None, json_: JsonOpt = None) -> int:
    """Freeze deploys and rollbacks on hosts (builds go on); a second hold replaces the first. Journaled.

    Example: slotctl hold --all --reason "FOMC" --until 2026-12-16T19:30:00Z
    """
    from .core.hold import describe
    from .ops import hold as holds

    reason, until = holds.checked(reason, until)
    opts = ctx.obj.merge(inventory, host, all_, json_)
    contexts = _contexts(opts)
    _require_root(contexts, "hold")
    if _is_fleet(contexts):  # an ssh host holds itself: its own slotctl writes its own hold file
        return _hold_rows("hold", contexts, opts, ["--reason", reason, *(["--until", until] if until else [])],
                          lambda c: f"deploys {describe(holds.hold(c, reason, until))}")
    records = {c.host.name: holds.hold(c, reason, until) for c in contexts}
    return _emit(opts, "hold", OK, {n: {"hold": r} for n, r in records.items()},
                 "\n".join(f"{n}: deploys {describe(r)}" for n, r in records.items()))


def _hold_rows(command: str, contexts, opts, args: list[str], local) -> int:
    """hold or unhold on each host, one row each; a host that cannot be reached says so and the rest go on."""
    from .core.hold import describe
    from .ops import fleet

    def summary(doc: dict) -> str:
        if command == "unhold":
            return f"lifted the hold ({describe(doc['lifted'])})" if doc.get("lifted") else "no hold to lift"
        return f"deploys {describe(doc['hold'])}" if doc.get("hold") else doc.get("error") or ""

    def one(c) -> fleet.Row:
        if c.host.ssh:
            return fleet.remote(c, [command, *args], lambda h, code, doc, secs: fleet.Row(h, code, summary(doc), True,
                                                                                         detail=doc, seconds=secs))
        try:
            return fleet.Row(c.host.name, OK, local(c))
        except SlotctlError as e:
            return fleet.Row(c.host.name, e.exit_code, e.message)

    return _print_rows(command, fleet.sweep(contexts, one, parallel=64), opts)


@app.command()
@command("unhold")
def unhold(ctx: typer.Context, inventory: InventoryOpt = None, host: HostOpt = None, all_: AllOpt = None,
           json_: JsonOpt = None) -> int:
    """Lift the deploy hold on hosts (exit 0 when there was none). Journaled.

    Example: slotctl unhold --all
    """
    from .core.hold import describe
    from .ops import hold as holds

    opts = ctx.obj.merge(inventory, host, all_, json_)
    contexts = _contexts(opts)
    _require_root(contexts, "unhold")
    if _is_fleet(contexts):
        def local(c) -> str:
            r = holds.unhold(c)
            return f"lifted the hold ({describe(r)})" if r else "no hold to lift"

        return _hold_rows("unhold", contexts, opts, [], local)
    lifted = {c.host.name: holds.unhold(c) for c in contexts}
    return _emit(opts, "unhold", OK, {n: {"lifted": r} for n, r in lifted.items()},
                 "\n".join(f"{n}: lifted the hold ({describe(r)})" if r else f"{n}: no hold to lift"
                           for n, r in lifted.items()))


@app.command()
@command("recover")
def recover(ctx: typer.Context, wait_lock: WaitLockOpt = 0, inventory: InventoryOpt = None, host: HostOpt = None,
            all_: AllOpt = None, json_: JsonOpt = None,
            boot: Annotated[bool, typer.Option("--boot", help="What the boot recovery unit runs before the bot starts: "
                                               "settle files only, never start or probe; refused while a bot runs.")] = False) -> int:
    """Finish or undo a deploy that slotctl did not live to finish (kill -9, lost SSH session, power loss).

    Runs by itself before every deploy, rollback and build; this runs it alone and says what it did.
    Exit 0 consistent (or nothing to do), 1 it had to roll back, 6 the host needs an operator.

    Example: slotctl recover --json
    """
    from .ops.recover import at_boot
    from .ops.recover import recover as do_recover
    from .ops.session import exclusive
    from .render import envelope

    opts = ctx.obj.merge(inventory, host, all_, json_)
    contexts = _contexts(opts)
    _local_only(contexts, "recover")
    _require_root(contexts, "recover")
    _check_notify(contexts)
    results = []
    for c in contexts:
        with exclusive(c, wait_lock, auto_recover=False):
            results.append(at_boot(c) if boot else do_recover(c))
    code = worst([r.exit_code for r in results])
    if opts.json:
        print(envelope("recover", code, {r.host: r for r in results}))
    else:
        for r in results:
            print(f"{r.host}: {r.summary}")
            print("\n".join(f"  - {a}" for a in r.actions))
            if r.journal_note:
                print(f"  note: {r.journal_note}")
    return code


@app.command()
@command("history")
def history(ctx: typer.Context, limit: Annotated[int, typer.Option(min=1, help="Newest deploys to show.")] = 20,
            inventory: InventoryOpt = None, host: HostOpt = None, all_: AllOpt = None, json_: JsonOpt = None) -> int:
    """The journal as deploys, newest first: id, commit, who, when, steps, outcome.

    Example: slotctl history --limit 5
    """
    from .adapters import journal
    from .core.history import deploys
    from .render import envelope, history_text

    opts = ctx.obj.merge(inventory, host, all_, json_)
    contexts = _contexts(opts)
    _local_only(contexts, "history")
    out = {}
    for c in contexts:
        records, note = journal.read(c.layout.journal)
        out[c.host.name] = {"deploys": [d.to_dict() for d in reversed(deploys(records))][:limit], "journal_note": note}
    if opts.json:
        print(envelope("history", OK, out))
    else:
        print("\n".join(history_text(name, h["deploys"], h["journal_note"]) for name, h in out.items()))
    return OK


@app.command()
@command("setup")
def setup(ctx: typer.Context,
          wheelhouse: Annotated[Path | None, typer.Option(
              "--wheelhouse", metavar="DIR", help="Send the wheels in DIR (slotctl's and its dependencies') instead of "
              "building them from this checkout.")] = None,
          inventory: InventoryOpt = None, host: HostOpt = None, all_: AllOpt = None, json_: JsonOpt = None) -> int:
    """Prepare hosts for deploys: check systemd, cgroup2 and python; install this slotctl version over SSH from wheels
    sent by this machine (no package index needed there); create the bot's user; lay out the root.

    Idempotent: each step says ok or changed, and a second run changes nothing. Exit 2 when a prerequisite is
    missing or a step failed (what runs on the host is as it was), 3 when a host cannot be reached.

    Example: slotctl setup --all
    """
    from .ops.setup import setup as do_setup
    from .render import envelope, setup_text

    opts = ctx.obj.merge(inventory, host, all_, json_)
    results = do_setup(_contexts(opts), wheelhouse, say=ui.say)
    code = worst([r.exit_code for r in results])
    for r in results:
        if r.error:
            print(f"slotctl setup: error: {r.error}", file=sys.stderr)
    if opts.json:
        print(envelope("setup", code, {r.host: r.to_dict() for r in results}))
    else:
        ui.out("\n".join(setup_text(r) for r in results if not r.error))
    return code


@app.command()
@command("catalog")
def catalog(ctx: typer.Context) -> int:
    """Print the journal catalog of slotctl's events (what each MESSAGE_ID means), to install for `journalctl -x`.

    Example: slotctl catalog > /usr/lib/systemd/catalog/slotctl.catalog && journalctl --update-catalog
    """
    print((Path(__file__).parent / "data" / "slotctl.catalog").read_text(), end="")
    return OK


@app.command()
@command("demo")
def demo(ctx: typer.Context, keep: Annotated[bool, typer.Option(help="Keep the demo's files for a look afterwards.")] = False) -> int:
    """Boot a sandboxed systemd, deploy v1 and v2 of the reference bot, watch a broken v3 roll back.

    Needs root; changes nothing on the host. Example: slotctl demo --keep
    """
    from .demo import run

    return run(keep=keep)


def _audit_contexts(ctx: typer.Context, inventory, host, all_, json_, what: str):
    opts = ctx.obj.merge(inventory, host, all_, json_)
    contexts = _contexts(opts)
    _local_only(contexts, f"audit {what}")
    _require_root(contexts, f"audit {what}")  # install and remove change unit_dir; a round writes the audit's records
    return opts, contexts


@audit_app.command("install")
@command("audit install")
def audit_install(ctx: typer.Context, inventory: InventoryOpt = None, host: HostOpt = None, all_: AllOpt = None,
                  json_: JsonOpt = None) -> int:
    """Install and start a timer + service in unit_dir running `slotctl audit run` every audit.interval seconds.

    Idempotent; a second install applies a changed interval. Example: slotctl audit install
    """
    from .ops import audit

    opts, contexts = _audit_contexts(ctx, inventory, host, all_, json_, "install")
    _check_notify(contexts)
    for c in contexts:
        if c.host.audit.textfile:
            _textfile_dir(Path(c.host.audit.textfile), f"{c.host.inventory_file}: audit.textfile")
    done = {c.host.name: {"installed": audit.install(c, opts.inventory)} for c in contexts}
    return _emit(opts, "audit install", OK, done, "\n".join(
        f"{n}: audit every {c.host.audit.interval:g}s: {', '.join(d['installed'])}" for c, (n, d) in zip(contexts, done.items(), strict=True)))


@audit_app.command("remove")
@command("audit remove")
def audit_remove(ctx: typer.Context, inventory: InventoryOpt = None, host: HostOpt = None, all_: AllOpt = None,
                 json_: JsonOpt = None) -> int:
    """Stop and remove the audit's timer and service (exit 0 when there were none). Example: slotctl audit remove"""
    from .ops import audit

    opts, contexts = _audit_contexts(ctx, inventory, host, all_, json_, "remove")
    done = {c.host.name: {"removed": audit.remove(c)} for c in contexts}
    return _emit(opts, "audit remove", OK, done, "\n".join(
        f"{n}: removed {', '.join(d['removed'])}" if d["removed"] else f"{n}: no audit timer installed" for n, d in done.items()))


@audit_app.command("run")
@command("audit run")
def audit_run(ctx: typer.Context, inventory: InventoryOpt = None, host: HostOpt = None, all_: AllOpt = None,
              json_: JsonOpt = None) -> int:
    """One round of the continuous audit (what the timer runs): status, audit.textfile, a notification when the
    verdict changed. Exit 3 when the audit found problems.
    """
    from .ops import audit

    opts, contexts = _audit_contexts(ctx, inventory, host, all_, json_, "run")
    _check_notify(contexts)
    rounds = [audit.run(c) for c in contexts]
    code = worst([r.exit_code for r in rounds])
    return _emit(opts, "audit run", code, {r.host: r for r in rounds}, "\n".join(
        f"{r.host}: audit {'healthy' if r.ok else 'failed: ' + '; '.join(r.problems)}"
        + (f" ({r.deferred})" if r.deferred else " (changed: operators told)" if r.changed and not r.notices
           else " (changed: NOT told)" if r.changed else "")
        for r in rounds))


@sandbox_app.command("start")
@command("sandbox start")
def sandbox_start(ctx: typer.Context, directory: Path) -> int:
    """Boot systemd in throwaway namespaces under DIRECTORY; prints the environment to reach it.

    Example: eval "$(slotctl sandbox start /var/tmp/sb)"
    """
    from .sandbox import Sandbox

    sb = Sandbox(directory, tie_to_parent=False)
    if sb.running:  # start() would take it for a leftover and replace it, stopping the bots inside
        raise InputError(f"{sb.dir}: a sandbox runs there already: stop it first (slotctl sandbox stop {directory}) "
                         f"or look inside (slotctl sandbox exec {directory} -- systemctl status)")
    sb.start()
    print("\n".join(f"export {k}={v}" for k, v in sb.env().items()))
    _say(f"# booted in {sb.boot_seconds * 1000:.0f} ms; units go in {sb.units}, deployment roots under {sb.shared}")
    return OK


@sandbox_app.command("stop")
@command("sandbox stop")
def sandbox_stop(ctx: typer.Context, directory: Path) -> int:
    """Stop the sandbox under DIRECTORY; leaves no process, mount or cgroup behind."""
    from .sandbox import Sandbox

    Sandbox(directory).stop()
    return OK


# No option parsing after DIRECTORY: the command's options (systemctl --no-pager) are its own, with or without a --
# (which click then passes on as an argument).
@sandbox_app.command("exec", context_settings={"allow_interspersed_args": False, "ignore_unknown_options": True})
@command("sandbox exec")
def sandbox_exec(ctx: typer.Context, directory: Path,
                 argv: Annotated[list[str], typer.Argument(metavar="-- COMMAND...", help="The command and its arguments.")]) -> int:
    """Run COMMAND inside the sandbox under DIRECTORY (its mount, pid, uts, ipc and cgroup namespaces); exits with
    COMMAND's exit code.

    Example: slotctl sandbox exec /var/tmp/sb -- systemctl status trading-bot.service
    """
    from .sandbox import Sandbox

    argv = argv[1:] if argv[0] == "--" else argv
    if not argv:
        raise InputError(f"no command given: slotctl sandbox exec {directory} -- COMMAND... (e.g. systemctl status)")
    sb = Sandbox(directory)
    if not sb.running:
        raise InputError(f"{sb.dir}: no sandbox runs there (start one: slotctl sandbox start {directory})")
    code = sb.exec(*argv).returncode
    return 128 - code if code < 0 else code  # killed by a signal: the shell's convention


def main() -> None:
    """Usage errors too are one line (click prints a usage block), with exit 2."""
    ui.tolerate_lost_streams()
    try:
        code = app(prog_name="slotctl", standalone_mode=False)
    except typer.Abort:
        print("slotctl: aborted", file=sys.stderr)
        sys.exit(1)
    except typer.TyperException as e:  # click's UsageError and friends, as vendored by typer
        path = getattr(getattr(e, "ctx", None), "command_path", "slotctl")
        message = e.format_message() if hasattr(e, "format_message") else str(e)
        print(f"{path}: error: {' '.join(message.split())} (see `{path} --help`)", file=sys.stderr)
        sys.exit(getattr(e, "exit_code", BAD_INPUT))
    sys.exit(code or 0)
