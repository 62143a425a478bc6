"""Users, groups, API keys and JWTs: who the caller is, fresh from the metadata DB on every request."""

from rag_ray.access.service import AuthService, TokenPair
from rag_ray.access.tokens import KeyRing, SigningKey, TokenClaims

__all__ = ["AuthService", "KeyRing", "SigningKey", "TokenClaims", "TokenPair"]
