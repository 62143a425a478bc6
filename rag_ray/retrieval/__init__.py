from rag_ray.retrieval.service import DEFAULT_K, AsyncEmbedder, RetrievalService, ThreadedEmbedder

__all__ = ["DEFAULT_K", "AsyncEmbedder", "RetrievalService", "ThreadedEmbedder"]
