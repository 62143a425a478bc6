"""Text normalisation and chunking."""

from rag_ray.text.chunking import Chunker, chunk_spans, chunk_text
from rag_ray.text.normalize import normalize_text

__all__ = ["Chunker", "chunk_spans", "chunk_text", "normalize_text"]
