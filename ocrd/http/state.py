"""What the HTTP routes reach through ``request.app.state.ocrd``."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from ocrd.config.settings import Settings
from ocrd.core.scheduler import Scheduler
from ocrd.documents.service import DocumentService
from ocrd.http.openai.chat_service import ChatService
from ocrd.http.request_work import RequestWork
from ocrd.jobs.batches import BatchService
from ocrd.jobs.files import FileService
from ocrd.metrics import Metrics


@dataclass
class AppState:
    settings: Settings
    scheduler: Scheduler
    version: str
    metrics: Metrics
    files: FileService  # the Files API's uploads, in state_dir
    batches: BatchService  # the Batch API's batches, beside them
    # Threads for parsing big request bodies off the event loop; the daemon closes it at exit.
    request_work: RequestWork = field(default_factory=RequestWork)
    started_at: float = field(default_factory=time.time)
    # Set when shutdown begins: /health answers 503 so load balancers stop sending traffic.
    stopping: bool = False
    # Set once the models pinned before a restart and the preloaded ones have been loaded (or
    # failed to): /health/ready waits for it.
    loaded_at_start: bool = False
    # What POST /v1/chat/completions and POST /v1/ocr call (made here, once, from the fields above).
    chat: ChatService = field(init=False)
    documents: DocumentService = field(init=False)

    def __post_init__(self) -> None:
        self.chat = ChatService(self.scheduler, lambda: self.settings, self.metrics,
                                read_file=self.files.read_by_id)
        self.documents = DocumentService(self.scheduler.resolve, self.scheduler.turns, lambda: self.settings,
                                         read_file=self.files.read_by_id)
