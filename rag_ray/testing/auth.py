"""A test double for the Authenticator protocol: fixed tokens → principals."""

from __future__ import annotations

from rag_ray.errors import AuthenticationError
from rag_ray.types import Principal


class StaticAuthenticator:
    def __init__(self, tokens: dict[str, Principal]):
        self.tokens = dict(tokens)

    def authenticate(self, token: str) -> Principal:
        try:
            return self.tokens[token]
        except KeyError:
            raise AuthenticationError("invalid token") from None

    def known(self, token: str) -> Principal | None:
        return self.tokens.get(token)
