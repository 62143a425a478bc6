"""Conversations: per-user history in the metadata DB, follow-up questions made self-contained before retrieval."""

from rag_ray.conversations.condense import CONDENSERS, Condensed, Condenser, create_condenser
from rag_ray.conversations.service import NEW, ConversationService, Thread
from rag_ray.conversations.store import Conversation, ConversationStore, Turn

__all__ = ["CONDENSERS", "NEW", "Condensed", "Condenser", "Conversation", "ConversationService", "ConversationStore",
           "Thread", "Turn", "create_condenser"]
