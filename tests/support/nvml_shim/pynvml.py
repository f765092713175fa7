"""``pynvml`` for an ``ocrd serve`` subprocess on a machine without a GPU: FakeNvml's functions as
this module's, with the devices ``$FAKE_NVML_DEVICES`` lists. ``tests.support.fake_nvml.nvml_env``
puts this folder first on the daemon's ``PYTHONPATH``, so ``import pynvml`` in ``GpuProbe`` finds
it instead of the real one; nothing else of the daemon changes."""

from __future__ import annotations

import json
import os
from typing import Any

from tests.support.fake_nvml import FakeDevice, FakeNvml

_NVML = FakeNvml([FakeDevice(**device) for device in json.loads(os.environ.get("FAKE_NVML_DEVICES", "[]"))])


def __getattr__(name: str) -> Any:
    return getattr(_NVML, name)
