from rag_ray.retrieval.service import DEFAULT_K, RetrievalService

__all__ = ["DEFAULT_K", "RetrievalService"]
