"""ocrctl's commands: one module per group, each with ``register(commands, common)``."""

from ocrctl.commands import events, later, load, models, ocr, status

# Order of `ocrctl --help`.
COMMAND_MODULES = (status, models, load, events, ocr, later)
