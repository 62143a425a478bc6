from rag_ray.retrieval.service import AsyncEmbedder, RagAnswer, RetrievalService, ThreadedEmbedder

__all__ = ["AsyncEmbedder", "RagAnswer", "RetrievalService", "ThreadedEmbedder"]
