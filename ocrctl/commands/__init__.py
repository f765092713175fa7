"""ocrctl's commands: one module per group, each with ``register(commands, common)``."""

from ocrctl.commands import cache, cleanup, events, gpu, load, mode, models, ocr, pull, status

# Order of `ocrctl --help`.
COMMAND_MODULES = (status, models, load, events, ocr, mode, gpu, cache, pull, cleanup)
