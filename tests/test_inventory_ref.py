"""The inventory's reference page and JSON Schema: generated from the parser's own keys, every key documented, the
committed copies in docs/ as generated, and the example inventories valid against the schema."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from slotctl import inventory, inventory_ref
from slotctl.errors import InputError

REPO = Path(__file__).resolve().parents[1]


def test_every_key_the_parser_knows_is_documented_and_every_documented_key_exists():
    assert inventory_ref.undocumented() == []


def test_the_reference_page_has_a_row_for_every_key_with_its_default():
    page = inventory_ref.markdown()
    assert "| `window` | a number | `20.0` |" in page or "| `window` | a number | `20` |" in page
    assert "## `rehearsal.decisions`" in page and "| `max_divergence` |" in page
    assert "| `orders` |" in page and "## `quiesce.orders`" in page


def test_the_committed_reference_and_schema_are_the_generated_ones():
    """docs/ is regenerated with `slotctl inventory-reference`: a key added without it fails here."""
    assert (REPO / "docs/inventory.md").read_text() == inventory_ref.markdown() + "\n"
    assert json.loads((REPO / "docs/inventory.schema.json").read_text()) == inventory_ref.json_schema()


@pytest.mark.parametrize("path", ["inventory.yaml", "examples/freqtrade/inventory.yaml"])
def test_the_example_inventories_are_valid_against_the_schema(path):
    import jsonschema

    jsonschema.validate(yaml.safe_load((REPO / path).read_text()), inventory_ref.json_schema())


def test_the_schema_refuses_what_the_parser_refuses(tmp_path):
    import jsonschema

    doc = {"version": 1, "defaults": {"repo": "/r", "health": {"windw": 3}}, "hosts": {"a": {}}}
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(doc, inventory_ref.json_schema())
    p = tmp_path / "inventory.yaml"
    p.write_text(yaml.safe_dump(doc))
    with pytest.raises(InputError, match=r"health.windw: expected no such key \(did you mean 'window'\?"):
        inventory.load(p)


def test_the_command_prints_the_reference_and_the_schema():
    """`slotctl inventory-reference [--schema]` is how docs/ is regenerated: its output is the functions' own."""
    import subprocess
    import sys

    def run(*args: str) -> str:
        proc = subprocess.run([sys.executable, "-m", "slotctl", "inventory-reference", *args], capture_output=True, text=True)
        assert proc.returncode == 0 and proc.stderr == "", proc.stderr
        return proc.stdout

    assert run() == inventory_ref.markdown() + "\n"
    assert run("--schema") == json.dumps(inventory_ref.json_schema(), indent=2, sort_keys=True) + "\n"
