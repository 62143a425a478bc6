"""Operations: request/job context (``context``), logging (``logs``), component health (``health``).

Import the submodule you need; this package imports nothing itself (``context`` is used by the provider adapters,
``health`` uses the provider manager)."""
