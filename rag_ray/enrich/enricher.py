"""Chunk enrichment: language, PII, sensitivity, compliance tags and entities as chunk metadata.

Levels: ``basic`` = language; ``standard`` = + ``pii_types``, ``pii_counts``, ``sensitivity``,
``compliance_tags``; ``comprehensive`` = + ``entities``. Pure Python, no Ray: :meth:`Enricher.enrich_batch`
has the shape Ray Data's ``map_batches`` wants, and an :class:`Enricher` is itself a callable batch UDF::

    ds.map_batches(Enricher, fn_constructor_kwargs={"level": "standard"}, batch_size=256)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal, get_args

from rag_ray.enrich.entities import extract_entities
from rag_ray.enrich.language import detect_language
from rag_ray.enrich.pii import find_pii, pii_counts
from rag_ray.enrich.sensitivity import SensitivityRules, compliance_tags, max_sensitivity
from rag_ray.errors import InvalidInput

EnrichmentLevel = Literal["basic", "standard", "comprehensive"]
ENRICHMENT_LEVELS: tuple[str, ...] = get_args(EnrichmentLevel)
ENRICHED_KEYS = ("language", "pii_types", "pii_counts", "sensitivity", "compliance_tags", "entities")


class Enricher:
    def __init__(self, level: EnrichmentLevel = "standard", rules: SensitivityRules | None = None):
        if level not in ENRICHMENT_LEVELS:
            raise InvalidInput(f"enrichment level must be one of {', '.join(ENRICHMENT_LEVELS)}",
                               field="enrichment_level")
        self.level = level
        self.rules = rules or SensitivityRules()

    def enrich(self, text: str) -> dict[str, Any]:
        """Metadata labels for one chunk of text."""
        labels: dict[str, Any] = {"language": detect_language(text)}
        if self.level == "basic":
            return labels
        findings = find_pii(text)
        counts = pii_counts(findings)
        types = sorted(counts)
        labels.update(pii_types=types, pii_counts=counts, sensitivity=self.rules.classify(text, types),
                      compliance_tags=compliance_tags(types))
        if self.level == "comprehensive":
            labels["entities"] = extract_entities(text)
        return labels

    def enrich_metadata(self, text: str, metadata: Mapping[str, Any] | None) -> dict[str, Any]:
        """A new metadata dict: ``metadata`` plus the labels. A sensitivity already set upstream (by the source's
        config, say) is never lowered: the result is the higher of the two."""
        merged = dict(metadata or {})
        labels = self.enrich(text)
        if "sensitivity" in labels and "sensitivity" in merged:
            labels["sensitivity"] = max_sensitivity([labels["sensitivity"], str(merged["sensitivity"])])
        merged.update(labels)
        return merged

    def enrich_batch(self, batch: dict[str, Any]) -> dict[str, Any]:
        """Ray Data batch (columns ``text`` and optional ``metadata``, list of dicts) → same batch, metadata
        merged with the labels. Other columns pass through untouched; the input dicts are not mutated."""
        texts: Sequence[Any] = batch["text"]
        metadata: Sequence[Any] = batch.get("metadata", [None] * len(texts))
        if len(metadata) != len(texts):
            raise InvalidInput("'metadata' and 'text' columns differ in length", field="metadata")
        out = dict(batch)
        out["metadata"] = [self.enrich_metadata(str(t or ""), _as_mapping(m)) for t, m in zip(texts, metadata,
                                                                                               strict=True)]
        return out

    __call__ = enrich_batch


def _as_mapping(value: Any) -> Mapping[str, Any] | None:
    # Ray may hand a dict column back as a dict, or None for a missing value
    if value is None:
        return None
    if isinstance(value, Mapping):
        return value
    raise InvalidInput(f"metadata must be a dict, got {type(value).__name__}", field="metadata")
