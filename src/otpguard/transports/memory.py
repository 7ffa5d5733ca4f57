"""An in-process outbox: a real transport that tests read the way a phone would."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..errors import DeliveryError
from .base import Message, Receipt, Transport


@dataclass
class MemoryTransport(Transport):
    outbox: list[Message] = field(default_factory=list)
    #: When set, the next sends raise this error instead of delivering.
    fail_with: DeliveryError | None = None
    name = "memory"

    async def send(self, message: Message) -> Receipt:
        if self.fail_with is not None:
            raise self.fail_with
        self.outbox.append(message)
        return Receipt(provider="memory", provider_id=f"MM{len(self.outbox):08d}")

    def last_code(self, to: str | None = None) -> str:
        """The newest code sent (to ``to`` if given); raises if there is none."""
        for msg in reversed(self.outbox):
            if to is None or msg.to == to:
                return msg.code
        raise LookupError(f"no message in the outbox for {to or 'anyone'}")

    def sent_to(self, to: str) -> list[Message]:
        return [m for m in self.outbox if m.to == to]
