"""Locations of shared test data (outside the repo, next to it)."""

from pathlib import Path

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "documents"
