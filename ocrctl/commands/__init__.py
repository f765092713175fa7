"""ocrctl's commands: one module per group, each with ``register(commands, common)``."""

from ocrctl.commands import (
    cache,
    cleanup,
    doctor,
    events,
    gpu,
    load,
    mode,
    models,
    ocr,
    pull,
    selftest,
    status,
)

# Order of `ocrctl --help`.
COMMAND_MODULES = (status, models, load, events, ocr, selftest, mode, gpu, cache, pull, cleanup, doctor)
