from __future__ import annotations

import pytest

from rag_ray.errors import ConfigError, InvalidInput
from rag_ray.generation.prompts import (
    STRATEGIES,
    PromptEngineer,
    PromptRequest,
    PromptStrategy,
    PromptTemplate,
    TemplateRegistry,
    register_strategy,
)
from tests.test_generation_fixtures import QUERY, chunks

DETAILED = PromptTemplate(
    name="detailed_analysis",
    template=("You are an expert in {domain}.\n\n{context}\n\nQuestion: {query}\n\n{response_format}\n"
              "{custom_instructions}"),
    required_variables=["query", "domain"],
    optional_variables=["context", "response_format", "custom_instructions"],
)


@pytest.mark.parametrize("strategy", sorted(STRATEGIES))
def test_every_strategy_builds_system_and_user_with_numbered_context(strategy: str) -> None:
    prompt = PromptEngineer().build(PromptRequest(QUERY, chunks()), strategy)
    system, user = prompt.messages
    assert (system.role, user.role) == ("system", "user")
    assert QUERY in user.content
    for n in (1, 2, 3):
        assert f"[{n}]" in user.content
    assert "square brackets" in user.content  # the citation instruction
    assert prompt.metadata["contexts_used"] == 3 and prompt.metadata["strategy"] == strategy


def test_required_strategies_are_registered() -> None:
    assert {"simple", "structured", "contextual", "hierarchical"} <= set(STRATEGIES)


def test_system_prompt_and_custom_instructions_are_injected() -> None:
    request = PromptRequest(QUERY, chunks(), system_prompt="You are a tutor.", custom_instructions="Use examples.")
    system, user = PromptEngineer().build(request, "simple").messages
    assert system.content == "You are a tutor."
    assert "Use examples." in user.content


def test_no_context_means_no_citation_instructions() -> None:
    _, user = PromptEngineer().build(PromptRequest(QUERY), "structured").messages
    assert "square brackets" not in user.content and "[1]" not in user.content


def test_custom_template_missing_required_variable_names_it() -> None:
    engineer = PromptEngineer()
    engineer.add_custom_template(DETAILED)
    with pytest.raises(InvalidInput) as err:
        engineer.build(PromptRequest(QUERY, chunks(), template="detailed_analysis"), "simple")
    assert err.value.field == "domain"
    prompt = engineer.build(PromptRequest(QUERY, chunks(), template="detailed_analysis",
                                          variables={"domain": "deep learning"}), "simple")
    assert "You are an expert in deep learning." in prompt.messages[1].content
    assert prompt.metadata["template_used"] == "detailed_analysis"


def test_blank_required_variable_is_missing() -> None:
    with pytest.raises(InvalidInput) as err:
        DETAILED.render({"query": "q", "domain": "  "})
    assert err.value.field == "domain"


def test_template_placeholders_must_be_declared_plain_names() -> None:
    with pytest.raises(ConfigError):
        PromptTemplate("bad", "{query} {secret}")
    with pytest.raises(ConfigError):
        PromptTemplate("bad", "{query.__class__}")


def test_user_values_are_not_re_expanded() -> None:
    text = PromptTemplate("t", "Q: {query}").render({"query": "what is {context} and {0}?"})
    assert text == "Q: what is {context} and {0}?"


def test_registry_refuses_silent_overwrite_and_unknown_names() -> None:
    registry = TemplateRegistry([DETAILED])
    with pytest.raises(ConfigError):
        registry.add(DETAILED)
    registry.add(DETAILED, replace=True)
    with pytest.raises(InvalidInput) as err:
        registry.get("nope")
    assert err.value.field == "template"


def test_unknown_strategy_names_the_field() -> None:
    with pytest.raises(InvalidInput) as err:
        PromptEngineer().build(PromptRequest(QUERY), "telepathic")
    assert err.value.field == "prompt_strategy"


def test_custom_strategy_can_be_registered() -> None:
    register_strategy(PromptStrategy("terse_test", "simple", "prepend", system_prompt="Be terse.",
                                     instructions=("One sentence only.",)))
    try:
        system, user = PromptEngineer().build(PromptRequest(QUERY), "terse_test").messages
        assert system.content == "Be terse." and "One sentence only." in user.content
    finally:
        STRATEGIES.pop("terse_test")


def test_prompt_that_cannot_fit_the_window_is_rejected_on_query() -> None:
    with pytest.raises(InvalidInput) as err:
        PromptEngineer(context_window=512).build(PromptRequest("word " * 2000), "simple", max_tokens=100)
    assert err.value.field == "query"
