"""Provider SDK errors translated into rag-ray's error hierarchy (``errors``), shared by every adapter in
``rag_ray.llm`` and ``rag_ray.embedding``; the adapters' base classes live beside them (``llm/sdk.py``,
``embedding/sdk.py``)."""
