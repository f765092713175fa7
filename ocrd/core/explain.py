"""``ocrctl mode explain``: the decision a load would be made with now, and what it says first.

The scheduler looks the model up and checks the wishes; these functions ask the placement for
the plan and put the reason that matters most in front of the planner's own: the model is
already loaded (with that plan, or with another one it must be unloaded to change), or it is not
downloaded yet (planned from the catalog's sizes).
"""

from __future__ import annotations

from ocrd.core.placement import Placement
from ocrd.core.slots import Slot
from ocrd.core.wishes import LoadWish, ModelWishes
from ocrd.events import ModelState
from ocrd.planning.planner import Decision, gib, summary, with_reason_first


async def explain_slot(placement: Placement, slot: Slot, wish: LoadWish, wishes: ModelWishes) -> Decision:
    """The plan for ``slot`` with ``wishes`` (its own, with ``wish`` on top); a loaded or
    loading model says so first."""
    if slot.state in (ModelState.READY, ModelState.LOADING) and slot.decision is not None:
        state = slot.state.value
        if not wish.plans:
            return with_reason_first(slot.decision, f"{slot.entry.id} is {state}: this is the "
                                                    f"plan it was loaded with")
        decision = await placement.plan(slot, wishes)
        return with_reason_first(decision, f"{slot.entry.id} is {state} with "
                                           f"{summary(slot.decision)}; unload it to load it so")
    return await placement.plan(slot, wishes)


async def explain_not_downloaded(placement: Placement, slot: Slot) -> Decision:
    """Will it fit before the download? Planned from the catalog's sizes on ``slot``, which the
    scheduler does not keep: the model stays unservable (a load still fails) until it is pulled."""
    entry = slot.entry
    decision = await placement.plan(slot)
    download = f" (about {gib(entry.bf16_bytes)} in bf16)" if entry.bf16_bytes else ""
    return with_reason_first(decision, f"{entry.id} is not downloaded: this is what a load would "
                                       f"get once it is; fetch it{download} with "
                                       f"`ocrctl pull {entry.id}`")
