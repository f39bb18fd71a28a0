"""Events: the model, the Redis stream bus, emitting, recording and history."""

from events.model import RESOURCE_ID, RESOURCE_NAME, RESOURCE_ROLE, Event
from events.ports import Bus, StreamEntry

__all__ = ["RESOURCE_ID", "RESOURCE_NAME", "RESOURCE_ROLE", "Bus", "Event", "StreamEntry"]
