"""Sources: file parsers (``files``) and database readers."""

from rag_ray.sources.files import SUPPORTED_TYPES, file_type, parse_bytes, parse_file

__all__ = ["SUPPORTED_TYPES", "file_type", "parse_bytes", "parse_file"]
