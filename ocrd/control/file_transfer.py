"""Files over the control plane: an upload's message stream into the Files API store, and a
stored file back out in pieces (``ocrctl batch``).

An upload is spooled into a nameless file in the store's folder as its messages arrive (never
held in memory), refused as soon as it passes ``limits.max_file_bytes``, then kept by
``FileService.create`` exactly as an HTTP upload is: nothing is stored unless all of it came.
"""

from __future__ import annotations

import asyncio
import errno
from collections.abc import AsyncIterable, AsyncIterator
from typing import BinaryIO

from ocrd.control.v1 import control_pb2 as pb
from ocrd.errors import InvalidRequest, PayloadTooLarge
from ocrd.jobs.files import FileService, StoredFile, check_purpose
from ocrd.jobs.store import disk_full

CHUNK = 1024 * 1024  # per message out: well under gRPC's 4 MiB default message limit


async def receive_upload(files: FileService, parts: AsyncIterable[pb.UploadFileRequest], *,
                         max_bytes: int) -> StoredFile:
    header: pb.UploadFileHeader | None = None
    size = 0
    with files.scratch() as spool:
        async for part in parts:
            kind = part.WhichOneof("part")
            if header is None:
                if kind != "header":
                    raise InvalidRequest("an upload starts with its header (filename, purpose), "
                                         "then the file's bytes")
                header = part.header
                check_purpose(header.purpose)  # refused before any byte is sent
                continue
            if kind != "data":
                raise InvalidRequest("an upload has one header, in its first message")
            size += len(part.data)
            if size > max_bytes:
                raise PayloadTooLarge(f"the file is larger than {max_bytes} bytes (limits.max_file_bytes)",
                                      param="file")
            await asyncio.to_thread(_spool, spool, part.data, files)
        if header is None:
            raise InvalidRequest("the upload sent nothing: a header (filename, purpose) and the "
                                 "file's bytes are needed")
        seconds = header.expires_after_seconds if header.HasField("expires_after_seconds") else None
        return await files.create(spool, filename=header.filename, purpose=header.purpose,
                                  max_bytes=max_bytes,
                                  expires_anchor="created_at" if seconds is not None else None,
                                  expires_seconds=seconds)


async def file_chunks(files: FileService, file_id: str) -> AsyncIterator[tuple[StoredFile | None, bytes]]:
    """``(the file, its first piece)``, then ``(None, next piece)`` to the end."""
    stored = await files.get(file_id)
    # Opened before the first piece: a delete meanwhile cannot cut the download short.
    handle = await asyncio.to_thread(open, files.content_path(stored), "rb")
    try:
        first = True
        while True:
            data = await asyncio.to_thread(handle.read, CHUNK)
            if not data and not first:
                return
            yield (stored if first else None), data
            first = False
    finally:
        handle.close()


def _spool(spool: BinaryIO, data: bytes, files: FileService) -> None:
    try:
        spool.write(data)
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise disk_full(files.folder) from None
        raise
