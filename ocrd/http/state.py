"""What the HTTP routes reach through ``request.app.state.ocrd``."""

from __future__ import annotations

from dataclasses import dataclass, field
import time

from ocrd.config import Settings
from ocrd.scheduler import Scheduler


@dataclass
class AppState:
    settings: Settings
    scheduler: Scheduler
    version: str
    started_at: float = field(default_factory=time.time)
    # Set when shutdown begins: /health answers 503 so load balancers stop sending traffic.
    stopping: bool = False
