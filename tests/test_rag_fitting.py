"""Fitting RAG prompts to the serving model's window (``rag_ray.llm.windows``, ``rag_ray.generation.fitting``):
where a window comes from, packing passages best-first, shrinking ``max_tokens``, refitting when the model counts
more than the estimate, failover refitted per entry, and masking streamed answers. The real local tokenizer is
used only in the slow-marked test at the end."""

from __future__ import annotations

import asyncio

import pytest

from rag_ray.enrich.pii import mask_pii
from rag_ray.errors import InvalidInput, ProviderServerError
from rag_ray.generation.context import ContextChunk
from rag_ray.generation.fitting import FittedPrompt, PromptFitter, Target, fitted_call
from rag_ray.generation.prompts import PromptEngineer, PromptRequest
from rag_ray.generation.rag import StreamMasker
from rag_ray.generation.service import GenerationService, RagGenerateRequest, parse_request
from rag_ray.llm.base import ChatMessage, Completion, GenerationParams, StreamChunk
from rag_ray.llm.fake import CountingFakeLLM, FakeLLM
from rag_ray.llm.ollama import OllamaLLM
from rag_ray.llm.windows import DEFAULT_WINDOW, resolve_window
from rag_ray.providers.config import ProviderSpec, llm_entry
from rag_ray.providers.manager import LLMEntry, LLMManager
from rag_ray.types import SearchHit
from tests.test_generation_fixtures import evaluator

QUESTION = "What does the handbook say about presets?"
PASSAGE = ("Presets store the export settings of a project: the file format, the resolution, the colour profile "
           "and the naming scheme, so that a whole team exports the same way with one click. ") * 8  # ~1,400 chars


def passages(n: int = 20) -> list[ContextChunk]:
    return [ContextChunk(f"c{i:02d}", f"Section {i}. {PASSAGE}", score=1 - i / 100, source=f"handbook-{i}")
            for i in range(n)]


def fitter(max_tokens: int = 200, *, query: str = QUESTION, n: int = 20, field: str = "query") -> PromptFitter:
    return PromptFitter(PromptEngineer(), PromptRequest(query, passages(n)), "simple", None, max_tokens, field=field)


def manager(*llms: FakeLLM) -> LLMManager:
    return LLMManager([LLMEntry.of(llm) for llm in llms])


def targets(llms: LLMManager) -> list[Target]:
    return [Target(e.id, e.window()) for e in llms.route()]


async def send(llms: LLMManager, fitted: FittedPrompt, target: Target) -> Completion:
    return await llms.generate(fitted.prompt.messages, fitted.params(0.0), provider=target.provider)


# ---- where a window comes from ---------------------------------------------------------------------------
@pytest.mark.parametrize(("provider_id", "tokens"), [
    ("local:SmolLM2-135M-Instruct", 2048), ("ollama:llama3.2", 2048), ("openai:gpt-4o-mini", 128_000),
    ("openai:gpt-4", 8192), ("anthropic:claude-3-5-haiku-latest", 200_000), ("google:gemini-2.0-flash", 1_048_576),
])
def test_known_models_table(provider_id: str, tokens: int) -> None:
    window = resolve_window(provider_id, object())
    assert (window.tokens, window.source, window.counted_with) == (tokens, "table", "estimate")


def test_unknown_model_gets_the_conservative_default() -> None:
    assert (resolve_window("fake:echo", FakeLLM()).tokens, resolve_window("fake:echo", FakeLLM()).source) == (
        DEFAULT_WINDOW, "default")


def test_spec_then_adapter_then_table() -> None:
    spec = llm_entry(ProviderSpec(id="fake:echo", max_context=1500)).window()
    assert (spec.tokens, spec.source) == (1500, "spec")
    adapter = LLMEntry.of(FakeLLM(context_window=1000)).window()
    assert (adapter.tokens, adapter.source) == (1000, "adapter")
    both = LLMEntry.of(FakeLLM(context_window=1000), max_context=3000).window()
    assert (both.tokens, both.source) == (1000, "spec")  # the adapter enforces its own: the smaller one wins
    counted = LLMEntry.of(CountingFakeLLM(context_window=1000)).window()
    assert counted.counted_with == "tokenizer"


def test_ollama_num_ctx_is_its_window_and_is_sent() -> None:
    llm = OllamaLLM("llama3.2", num_ctx=8192)
    assert (resolve_window("ollama:llama3.2", llm).tokens, resolve_window("ollama:llama3.2", llm).source) == (
        8192, "adapter")
    assert llm._request([ChatMessage("user", "hi")], GenerationParams())["options"]["num_ctx"] == 8192
    assert resolve_window("ollama:llama3.2", OllamaLLM("llama3.2")).tokens == 2048  # Ollama's default num_ctx


# ---- fitting ---------------------------------------------------------------------------------------------
def test_best_ranked_passages_fill_the_window_and_the_rest_are_dropped() -> None:
    window = resolve_window("fake:echo", FakeLLM(context_window=1024))
    fitted = asyncio.run(fitter().fit(window))
    used, dropped = fitted.used_ids, fitted.dropped_ids
    assert used and dropped and sorted(used + dropped) == [c.id for c in passages()]
    assert used == [f"c{i:02d}" for i in range(len(used))]  # best first; the lowest-ranked are the ones dropped
    assert fitted.fit.prompt_tokens + fitted.fit.max_tokens + window.margin <= 1024
    assert fitted.fit.max_tokens == fitted.fit.max_tokens_requested == 200


def test_max_tokens_shrinks_rather_than_fail_and_says_so() -> None:
    window = resolve_window("fake:echo", FakeLLM(context_window=1024))
    fitted = asyncio.run(fitter(max_tokens=4000).fit(window))
    assert fitted.fit.max_tokens < fitted.fit.max_tokens_requested == 4000
    assert fitted.used_ids  # the passages keep a share of the window
    assert fitted.fit.prompt_tokens + fitted.fit.max_tokens + window.margin <= 1024


def test_only_the_users_own_input_is_too_long() -> None:
    window = resolve_window("fake:echo", FakeLLM(context_window=1024))
    with pytest.raises(InvalidInput) as err:
        asyncio.run(fitter(query="presets " * 500, field="messages").fit(window))
    assert err.value.field == "messages" and err.value.details["context_window"] == 1024


def test_model_counting_more_than_the_estimate_gets_a_smaller_refit() -> None:
    llm = FakeLLM(context_window=1024, chars_per_token=1.5)  # ~2.3x the estimate: the first prompt is refused
    llms = manager(llm)
    fitted, completion = asyncio.run(fitted_call(fitter(), targets(llms), lambda f, t: send(llms, f, t)))
    assert completion.text and fitted.fit.calibrations >= 1 and fitted.used_ids
    assert llm.prompt_tokens(llm.prompts[-1]) + fitted.fit.max_tokens <= 1024


def test_the_models_tokenizer_is_used_when_it_has_one() -> None:
    llm = CountingFakeLLM(context_window=1024, chars_per_token=1.5)
    llms = manager(llm)
    fitted, _ = asyncio.run(fitted_call(fitter(), targets(llms), lambda f, t: send(llms, f, t)))
    assert fitted.fit.counted_with == "tokenizer" and fitted.fit.calibrations == 0 and fitted.used_ids
    assert fitted.fit.prompt_tokens == llm.prompt_tokens(fitted.prompt.messages)


def test_a_model_refusing_even_the_bare_question_is_a_422() -> None:
    llms = manager(FakeLLM(context_window=1024, chars_per_token=0.4))
    with pytest.raises(InvalidInput) as err:
        asyncio.run(fitted_call(fitter(), targets(llms), lambda f, t: send(llms, f, t)))
    assert err.value.field == "query"


def test_failover_refits_to_the_next_entrys_window() -> None:
    broken = FakeLLM("down", fail_with=ProviderServerError("down", provider="fake"))
    small = FakeLLM("small", context_window=1024)
    llms = LLMManager([LLMEntry.of(broken, priority=0), LLMEntry.of(small, priority=1)])
    fitted, completion = asyncio.run(fitted_call(fitter(), targets(llms), lambda f, t: send(llms, f, t)))
    assert completion.model == "small" and fitted.fit.provider == "fake:small" and fitted.fit.context_window == 1024


def test_route_names_the_entry_the_strategy_picks_and_pinned_calls_keep_the_rotation() -> None:
    llms = manager(FakeLLM("a"), FakeLLM("b"))
    picks = []
    for _ in range(4):
        entry = llms.route()[0]
        picks.append(entry.id)
        asyncio.run(llms.generate([ChatMessage("user", "hi")], provider=entry.id))
    assert picks == ["fake:a", "fake:b", "fake:a", "fake:b"]


def test_ensemble_prompt_fits_the_smallest_candidate_window() -> None:
    small = FakeLLM("small", context_window=1024, chars_per_token=2.0)
    service = GenerationService({"fake:small": small, "fake:big": FakeLLM("big", context_window=16_000)}, evaluator())
    request = parse_request(RagGenerateRequest, {"query": QUESTION, "generation_config": {
        "mode": "ensemble", "ensemble_size": 2, "max_tokens": 300}})
    response = asyncio.run(service.generate_rag(request, [hit(c) for c in passages()]))
    window = response.context.window
    assert window is not None and window.context_window == 1024 and window.provider == "fake:small"
    assert response.ensemble is not None and all(c.error is None for c in response.ensemble.candidates)
    assert response.context.used and response.context.dropped


def hit(chunk: ContextChunk) -> SearchHit:
    return SearchHit(chunk.id, f"doc-{chunk.id}", f"file:///{chunk.source}.md", 0, chunk.text, chunk.score)


# ---- masking a stream ------------------------------------------------------------------------------------
def test_streamed_pii_is_never_sent_in_pieces() -> None:
    deltas = ["Write to jane.", "doe@exam", "ple.com today. Call 010-", "1234-5678 or ", "card 4111 1111 ",
              "1111 1111", " soon"]

    async def stream() -> list[StreamChunk]:
        async def source():  # type: ignore[no-untyped-def]
            for d in deltas:
                yield StreamChunk(delta=d)
            yield StreamChunk(finish_reason="stop")

        return [c async for c in StreamMasker(mask_pii).masked(source())]

    chunks = asyncio.run(stream())
    text = "".join(c.delta for c in chunks)
    assert text == mask_pii("".join(deltas)) and chunks[-1].finish_reason == "stop"
    for raw in ("jane.doe@example.com", "doe@exam", "010-1234", "1234-5678", "4111 1111"):
        assert not any(raw in c.delta for c in chunks), raw


# ---- the local model (slow: loads SmolLM2) ---------------------------------------------------------------
@pytest.mark.slow
def test_local_model_prompt_is_fitted_with_its_own_tokenizer() -> None:
    """Tokenizer only (generation on a shared CPU is too slow for a test): the fitted prompt is what the model's own
    window check accepts."""
    from rag_ray.llm.local import TransformersLLM

    llm = TransformersLLM()
    window = LLMEntry.of(llm).window()
    korean = "프리셋은 내보내기 설정(파일 형식, 해상도, 색상 프로필)을 저장하여 팀 전체가 같게 내보낸다. " * 10
    request = PromptRequest("핸드북은 프리셋에 대해 무엇을 말하나요?",
                            [ContextChunk(f"k{i}", f"{i}. {korean}", 1 - i / 10) for i in range(3)]
                            + passages(10))
    fit = PromptFitter(PromptEngineer(), request, "simple", None, 256)

    async def run() -> tuple[FittedPrompt, int]:
        fitted = await fit.fit(window)
        return fitted, await llm.count_tokens(fitted.prompt.messages)

    fitted, counted = asyncio.run(run())
    assert (window.counted_with, window.tokens, window.source) == ("tokenizer", 2048, "adapter")
    assert counted == fitted.fit.prompt_tokens and counted + fitted.fit.max_tokens <= 2048
    assert fitted.fit.max_tokens == 256 and fitted.used_ids and fitted.dropped_ids
    llm._encode(fitted.prompt.messages, fitted.fit.max_tokens)  # the model's own check: no ContextTooLong


def test_answer_no_repeat_ngram_leaves_the_prompt_quotable() -> None:
    import torch

    from rag_ray.llm.local import AnswerNoRepeatNGram

    prompt = [5, 6, 7, 8]
    scores = torch.zeros((1, 12))
    quoting = AnswerNoRepeatNGram(3, len(prompt))(torch.tensor([[*prompt, 5, 6]]), scores.clone())
    assert torch.isfinite(quoting).all()  # the prompt's 5 6 7 may be quoted
    looping = AnswerNoRepeatNGram(3, len(prompt))(torch.tensor([[*prompt, 1, 2, 3, 1, 2]]), scores.clone())
    assert looping[0, 3] == float("-inf") and torch.isfinite(looping[0, :3]).all()  # the answer's 1 2 3 may not repeat
