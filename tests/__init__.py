import pytest

# Shared fixture modules used via `pytest_plugins`; registered here so their asserts are rewritten too.
pytest.register_assert_rewrite("tests.access_fixtures")
