"""Metadata enrichment and data governance: language, PII, sensitivity, compliance tags, entities, policy."""

from rag_ray.enrich.enricher import ENRICHED_KEYS, ENRICHMENT_LEVELS, Enricher, EnrichmentLevel
from rag_ray.enrich.entities import extract_entities
from rag_ray.enrich.language import detect_language
from rag_ray.enrich.pii import MASK_TOKENS, PII_TYPES, PiiFinding, find_pii, mask_pii
from rag_ray.enrich.policy import DEFAULT_POLICY, GovernancePolicy, mask_hit_text, policy_filter
from rag_ray.enrich.sensitivity import SENSITIVITY_LEVELS, Sensitivity, SensitivityRules, compliance_tags

__all__ = [
    "DEFAULT_POLICY", "ENRICHED_KEYS", "ENRICHMENT_LEVELS", "MASK_TOKENS", "PII_TYPES", "SENSITIVITY_LEVELS",
    "Enricher", "EnrichmentLevel", "GovernancePolicy", "PiiFinding", "Sensitivity", "SensitivityRules",
    "compliance_tags", "detect_language", "extract_entities", "find_pii", "mask_hit_text", "mask_pii",
    "policy_filter",
]
