"""CLI command groups. Each module has `register(app)`; `magv.cli` wires them together."""
