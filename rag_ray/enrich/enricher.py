"""Chunk enrichment: language, PII, sensitivity, compliance tags and entities as chunk metadata.

Levels: ``basic`` = language; ``standard`` = + ``pii_types``, ``pii_counts``, ``sensitivity``,
``compliance_tags``; ``comprehensive`` = + ``entities``. Pure Python, no Ray: :meth:`Enricher.enrich_batch`
has the shape Ray Data's ``map_batches`` wants (a ``metadata`` dict column, or the pipeline's ``metadata_json``
string column), and an :class:`Enricher` is itself a callable batch UDF::

    ds.map_batches(Enricher, fn_constructor_kwargs={"level": "standard"}, batch_size=256)
"""

from __future__ import annotations

import json
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
        """Ray Data column batch → the same batch with labels merged into each row's metadata.

        Metadata is read from and written back to ``metadata`` (a list of dicts) or, when the batch has no such
        column but has ``metadata_json`` (the ingest pipeline's row format), that JSON string column. Rows whose
        ``kind`` column (if any) is not ``"chunk"`` pass through unchanged. Other columns are untouched and input
        dicts are not mutated.
        """
        texts: Sequence[Any] = batch["text"]
        as_json = "metadata" not in batch and "metadata_json" in batch
        column = "metadata_json" if as_json else "metadata"
        metadata: Sequence[Any] = batch.get(column, [None] * len(texts))
        kinds: Sequence[Any] = batch.get("kind", ["chunk"] * len(texts))
        if not len(metadata) == len(kinds) == len(texts):
            raise InvalidInput(f"'{column}', 'kind' and 'text' columns differ in length", field=column)
        merged: list[Any] = []
        for text, meta, kind in zip(texts, metadata, kinds, strict=True):
            if kind != "chunk":
                merged.append(meta)
                continue
            result = self.enrich_metadata(str(text or ""), _decode(meta) if as_json else _as_mapping(meta))
            merged.append(json.dumps(result, ensure_ascii=False, default=str) if as_json else result)
        out = dict(batch)
        out[column] = merged
        return out

    __call__ = enrich_batch


def _decode(value: Any) -> Mapping[str, Any] | None:
    if value is None or value == "":
        return None
    try:
        return _as_mapping(json.loads(value))
    except (TypeError, ValueError):
        raise InvalidInput("metadata_json must hold a JSON object", field="metadata_json") from None


def _as_mapping(value: Any) -> Mapping[str, Any] | None:
    # Ray may hand a dict column back as a dict, or None for a missing value
    if value is None:
        return None
    if isinstance(value, Mapping):
        return value
    raise InvalidInput(f"metadata must be a dict, got {type(value).__name__}", field="metadata")
