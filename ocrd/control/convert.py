"""Conversions between the scheduler's snapshots and the control plane's protobuf messages.

Kept apart from the servicer so that handlers stay "convert, call core, convert back" and so that
the mapping (which must stay in step with control.proto) is tested on its own.
"""

from __future__ import annotations

import math

from google.protobuf.timestamp_pb2 import Timestamp

from ocrd.control.v1 import control_pb2 as pb
from ocrd.events import Event, ModelState
from ocrd.scheduler import SlotInfo, UnloadResult

_TO_PB: dict[ModelState, int] = {
    ModelState.NOT_LOADED: pb.MODEL_STATE_NOT_LOADED,
    ModelState.LOADING: pb.MODEL_STATE_LOADING,
    ModelState.READY: pb.MODEL_STATE_READY,
    ModelState.UNLOADING: pb.MODEL_STATE_UNLOADING,
    ModelState.FAILED: pb.MODEL_STATE_FAILED,
}
_FROM_PB: dict[int, ModelState] = {value: state for state, value in _TO_PB.items()}


def state_to_pb(state: ModelState | None) -> int:
    """The proto enum value; UNSPECIFIED for events that concern no model state."""
    if state is None:
        return pb.MODEL_STATE_UNSPECIFIED
    return _TO_PB[state]


def state_from_pb(value: int) -> ModelState | None:
    """The scheduler's state; None for UNSPECIFIED (and for values a newer proto may add)."""
    return _FROM_PB.get(value)


def timestamp(epoch_seconds: float | None) -> Timestamp | None:
    """A Timestamp for an epoch time; None leaves the field unset (``never``, ``not loaded``)."""
    if epoch_seconds is None:
        return None
    # Whole seconds and the fraction apart: epoch * 1e9 as a float loses the last digits.
    seconds = math.floor(epoch_seconds)
    nanos = round((epoch_seconds - seconds) * 1e9)
    if nanos >= 1_000_000_000:
        seconds, nanos = seconds + 1, nanos - 1_000_000_000
    return Timestamp(seconds=seconds, nanos=nanos)


def model_info(slot: SlotInfo) -> pb.ModelInfo:
    return pb.ModelInfo(
        id=slot.id,
        aliases=list(slot.aliases),
        description=slot.description,
        engine=slot.engine,
        state=state_to_pb(slot.state),
        device=slot.device,
        pid=slot.pid or 0,
        memory_bytes=max(0, slot.memory_bytes),
        pinned=slot.pinned,
        # The proto promises 0 for a pinned model: it never unloads for idleness.
        keep_alive_seconds=0.0 if slot.pinned else slot.keep_alive,
        in_flight=slot.in_flight,
        queued=slot.queued,
        queue_capacity=slot.queue_capacity,
        last_used=timestamp(slot.last_used),
        loaded_at=timestamp(slot.loaded_at),
        error=slot.error,
    )


def event(item: Event) -> pb.Event:
    return pb.Event(
        sequence=item.sequence,
        time=timestamp(item.time),
        kind=item.kind,
        model=item.model,
        state=state_to_pb(item.state),
        message=item.message,
        progress=item.progress,
    )


def load_progress(item: Event, model: str) -> pb.LoadModelProgress:
    """One step of a load; ``model`` (the canonical id) fills in for events that lack it."""
    return pb.LoadModelProgress(
        model=item.model or model,
        state=state_to_pb(item.state),
        # Runners name their stages; the scheduler's own events only have a kind.
        stage=item.stage or item.kind.removeprefix("model."),
        progress=item.progress,
        message=item.message,
    )


def unload_result(result: UnloadResult) -> pb.UnloadModelResponse:
    return pb.UnloadModelResponse(
        model=result.model, was_loaded=result.was_loaded, freed_bytes=max(0, result.freed_bytes)
    )
