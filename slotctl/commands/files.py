"""Files for the operator: init (a starting inventory and its unit templates), the inventory's reference and JSON
Schema, the journal catalog."""

import json
import sys
from pathlib import Path
from typing import Annotated

import typer

from ..errors import OK
from .common import command


@command("init")
def init(ctx: typer.Context,
         preset: Annotated[str, typer.Option(
             "--preset", metavar="refbot|freqtrade|custom", help="custom: a bot of your own (its unit only); refbot: "
             "slotctl's reference bot, with its dashboard; freqtrade: freqtrade, its database and REST API.")] = "custom",
         directory: Annotated[Path, typer.Option("--dir", metavar="DIR", help="Where to write inventory.yaml and "
                                                 "templates/ (made if missing).")] = Path("."),
         repo: Annotated[str | None, typer.Option("--repo", metavar="REPO", help="The bot's git repository: a path "
                                                  "(written absolute) or a URL.")] = None,
         commit: Annotated[str | None, typer.Option("--commit", metavar="SHA", help="The full SHA to pin [default: the "
                                                    "HEAD of a local --repo].")] = None,
         root: Annotated[Path | None, typer.Option("--root", metavar="PATH", help="The deployment root on the host "
                                                   "[default: the preset's, /opt/trading-bot or /opt/freqtrade].")] = None,
         set_: Annotated[list[str] | None, typer.Option(
             "--set", metavar="KEY=VALUE", help="Any other key under defaults, dotted, with a YAML value "
             "(unit_dir=/var/tmp/sb/shared/units, vars.user=trader, health.window=10); repeatable.")] = None,
         force: Annotated[bool, typer.Option("--force", help="Overwrite inventory.yaml and the templates if they "
                                             "exist.")] = False) -> int:
    """Write a commented inventory.yaml and its unit templates (templates/*.j2) to start from; they deploy as written.

    Refuses to overwrite either (exit 2, nothing written) unless --force. Without --repo, repo and commit stay the
    preset's placeholders. Every key: slotctl inventory-reference.

    Example: slotctl init --repo /srv/git/my-bot.git --set vars.user=trader && slotctl deploy --dry-run
    """
    from ..ops.init import init as write

    done = write(preset, directory, repo=repo, commit=commit, root=root, sets=set_ or [], force=force)
    for path in (done.inventory, *done.templates):
        print(f"wrote {path}")
    if done.placeholders:
        print(f"slotctl init: repo and commit in {done.inventory} are placeholders: set them (or run again with "
              "--force --repo REPO) before deploying", file=sys.stderr)
    print(f"next: slotctl -i {done.inventory} setup (the bot's user with setup.create_user, the layout), "
          "deploy --dry-run, then deploy")
    return OK


@command("inventory-reference")
def inventory_reference(ctx: typer.Context, schema: Annotated[bool, typer.Option(
        "--schema", help="The JSON Schema instead, for editors' YAML support (JSON, keys sorted).")] = False) -> int:
    """Print the inventory's reference in Markdown: every key, its type, its default and what it does, from the
    parser's own definition.

    Example: slotctl inventory-reference > docs/inventory.md; slotctl inventory-reference --schema > docs/inventory.schema.json
    """
    from .. import inventory_ref

    print(json.dumps(inventory_ref.json_schema(), indent=2, sort_keys=True) if schema else inventory_ref.markdown())
    return OK


@command("catalog")
def catalog(ctx: typer.Context) -> int:
    """Print the journal catalog of slotctl's events (what each MESSAGE_ID means), to install for `journalctl -x`.

    Example: slotctl catalog > /usr/lib/systemd/catalog/slotctl.catalog && journalctl --update-catalog
    """
    print((Path(__file__).parents[1] / "data" / "slotctl.catalog").read_text(), end="")
    return OK
