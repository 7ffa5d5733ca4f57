"""Delivery transports, chosen by name: console, memory, file, twilio."""

from __future__ import annotations

from .base import Message, Receipt, Transport, pick_locale

__all__ = ["Message", "Receipt", "Transport", "pick_locale"]
