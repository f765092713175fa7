"""ocrctl's commands: one module per group, each with ``register(commands, common)``."""

from ocrctl.commands import (
    batch,
    cache,
    cleanup,
    doctor,
    events,
    gpu,
    load,
    logs,
    mode,
    models,
    ocr,
    pull,
    pull_image,
    selftest,
    status,
)

# Order of `ocrctl --help`.
COMMAND_MODULES = (
    status, models, load, logs, events, ocr, batch, selftest, mode, gpu, cache, pull, pull_image, cleanup,
    doctor,
)
