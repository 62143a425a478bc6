from rag_ray.store.filters import access_filter, and_all, literal, user_filter
from rag_ray.store.milvus import ChunkStore, SearchStrategy

__all__ = ["ChunkStore", "SearchStrategy", "access_filter", "and_all", "literal", "user_filter"]
