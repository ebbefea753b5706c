"""The commands, grouped by what they act on; slotctl.cli puts them together. Each parses its options, calls
slotctl.ops, and prints with slotctl.render: no decisions here."""
