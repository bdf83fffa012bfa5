"""Contracts shared by every service: no service invents a payload shape outside this package."""

from contracts.envelope import Envelope, event_adapter, new_event, topic_for
from contracts.topics import ALL_TOPICS, Topic

__all__ = ["ALL_TOPICS", "Envelope", "Topic", "event_adapter", "new_event", "topic_for"]
