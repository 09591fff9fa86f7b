"""Text generation as users get it (the pipeline API and `nitro generate`): greedy output equal to transformers'
`generate`, no state leaking between calls, sampling, stop strings, EOS ids, and the overflow error."""
from __future__ import annotations

import functools
import json
from dataclasses import replace

import numpy as np
import pytest
import torch
from transformers import AutoModelForCausalLM

from conftest import nitro, one_line_error
from nitro import GenerationConfig, load_pipeline
from nitro.runtime import ContextOverflow, Model
from nitro.runtime.generate import Generator
from nitro.runtime.sampling import Sampler, SamplingParams
from nitro.testing import TINY

FAMILIES = tuple(TINY)
PASSAGE = [
    "The history of science covers the development of science from ancient times to the present.",
    "It encompasses all three major branches of science: natural, social, and formal.",
    "Protoscience, early sciences, and natural philosophies such as alchemy and astrology during the Bronze Age, "
    "Iron Age, classical antiquity, and the Middle Ages declined during the early modern period.",
    "Formal disciplines of science were established in the Age of Enlightenment.",
    "Scientific methods were first described by Ibn al-Haytham, and the Scientific Revolution of the sixteenth "
    "and seventeenth centuries brought the laboratory, the experiment and the printed journal to Europe.",
    "In the nineteenth century many institutional and professional features of science began to take shape.",
    "Along with the changing of natural philosophy to natural science, scientists became professionals.",
]
LONG_PROMPT = " ".join(PASSAGE[:3])
SHORT_PROMPTS = ["The weather outside is super cold, but", "Hello"]


def prompts_for(gen) -> list[str]:
    """Two short prompts (the second a single token) and the shortest start of PASSAGE that is longer than the
    build's prefill length, so that it takes several prefill calls."""
    long = next(text for text in (" ".join(PASSAGE[:n]) for n in range(1, len(PASSAGE) + 1))
                if len(gen.encode(text)) > gen.model.prefill_len)
    assert len(gen.encode(SHORT_PROMPTS[1])) == 1
    return [SHORT_PROMPTS[0], long, SHORT_PROMPTS[1]]


@functools.cache
def hf_model(folder: str):
    return AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()


def hf_generate(folder, prompt_ids: list[int], max_new_tokens: int, **options) -> tuple[list[int], bool]:
    """transformers' greedy `generate` with the checkpoint's generation config (all its EOS ids): the new
    tokens without the EOS, and whether it stopped at one."""
    hf = hf_model(str(folder))
    eos = hf.generation_config.eos_token_id
    eos = set(eos if isinstance(eos, list) else [eos])
    with torch.no_grad():
        out = hf.generate(torch.tensor([prompt_ids]), attention_mask=torch.ones(1, len(prompt_ids), dtype=torch.long),
                          max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=min(eos), **options)
    new = out[0, len(prompt_ids):].tolist()
    stop = next((i for i, t in enumerate(new) if t in eos), None)
    return (new, False) if stop is None else (new[:stop], True)


def check_greedy_matches_transformers(pipe, source, max_new_tokens):
    gen = pipe.generator
    prompts = prompts_for(gen)
    for prompt, completion in zip(prompts, pipe.complete(prompts, max_new_tokens)):
        theirs, stopped = hf_generate(source, gen.encode(prompt), max_new_tokens)
        assert completion.token_ids == theirs, prompt
        assert completion.finish_reason == ("stop" if stopped else "length")
        assert completion.text == gen.tokenizer.decode(theirs, skip_special_tokens=True)


@pytest.fixture(scope="module")
def tiny(tiny_builds):
    """The tiny f32 builds loaded once (generate resets the state on every call)."""
    return {family: load_pipeline(tiny_builds[f"{family}_f32"]) for family in FAMILIES}


@pytest.mark.parametrize("family", FAMILIES)
def test_tiny_greedy_generate_matches_transformers(family, tiny, tiny_sources):
    check_greedy_matches_transformers(tiny[family], tiny_sources[family], 24)


def test_tiny_repetition_penalty_matches_transformers(tiny, tiny_sources):
    gen = tiny["llama"].generator
    ids = gen.encode(SHORT_PROMPTS[0])
    ours = gen.generate(ids, SamplingParams(max_new_tokens=24, repetition_penalty=1.5)).token_ids
    assert ours == hf_generate(tiny_sources["llama"], ids, 24, repetition_penalty=1.5)[0]
    assert ours != gen.generate(ids, SamplingParams(max_new_tokens=24)).token_ids


def test_smollm2_fp32_greedy_generate_matches_transformers(smollm2_builds):
    root = smollm2_builds["smollm2_fp32"]
    pipe = load_pipeline(root)
    check_greedy_matches_transformers(pipe, root / "source", 24)
    # As a chat model, SmolLM2 ends its answer with an EOS id, where both must stop.
    ids = pipe.generator.chat_ids([{"role": "user", "content": "What is the capital of France?"}])
    theirs, stopped = hf_generate(root / "source", ids, 64)
    completion = pipe.generator.generate(ids, SamplingParams(max_new_tokens=64))
    assert stopped and completion.finish_reason == "stop"
    assert completion.token_ids == theirs


@pytest.mark.parametrize("family", FAMILIES)
def test_no_state_leaks_between_calls_and_batch_equals_one_by_one(family, tiny, tiny_builds):
    pipe = tiny[family]
    first, second = SHORT_PROMPTS[0], "Once upon a time"
    assert isinstance(pipe.generate(first, max_new_tokens=12), str)
    after_another = pipe.generate(second, max_new_tokens=12)
    fresh = load_pipeline(tiny_builds[f"{family}_f32"]).generate(second, max_new_tokens=12)
    assert after_another == fresh
    batch = pipe.generate([first, second, SHORT_PROMPTS[1]], max_new_tokens=12)
    assert batch == [pipe.generate(p, max_new_tokens=12) for p in (first, second, SHORT_PROMPTS[1])]
    assert batch[1] == fresh


def test_sampling_is_seeded_and_honours_generation_config(tiny):
    pipe, prompts = tiny["llama"], [SHORT_PROMPTS[0], LONG_PROMPT]
    greedy = pipe.generate(prompts, max_new_tokens=16)
    sampled = GenerationConfig(do_sample=True, temperature=1.0, seed=7)
    pipe.generation_config = sampled
    try:
        once = pipe.generate(prompts, max_new_tokens=16)
        assert pipe.generate(prompts, max_new_tokens=16) == once  # same seed, same text
        assert once != greedy  # do_sample is not ignored
        pipe.generation_config = replace(sampled, seed=8)
        assert pipe.generate(prompts, max_new_tokens=16) != once
        pipe.generation_config = replace(sampled, top_k=1, temperature=3.0)
        assert pipe.generate(prompts, max_new_tokens=16) == greedy
    finally:
        pipe.generation_config = GenerationConfig()


def frequencies(params: SamplingParams, logits: np.ndarray, n: int = 4000) -> np.ndarray:
    sampler = Sampler(params)
    return np.bincount([sampler(logits, []) for _ in range(n)], minlength=len(logits)) / n


def softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max())
    return e / e.sum()


def test_temperature_and_top_p_give_the_expected_distribution():
    """Over 4000 draws with a fixed seed, each token's frequency is within 0.025 (3 standard deviations) of
    softmax(logits / temperature), restricted to the smallest set of likeliest tokens reaching top_p."""
    logits = np.array([3.0, 2.0, 1.5, 1.0, 0.0, -1.0, -2.0, -3.0])
    top_share = []
    for temperature in (0.5, 1.0, 2.0):
        seen = frequencies(SamplingParams(do_sample=True, temperature=temperature, seed=0), logits)
        expected = softmax(logits / temperature)
        assert np.abs(seen - expected).max() < 0.025, temperature
        top_share.append(seen[0])
    assert top_share[0] > top_share[1] > top_share[2]  # hotter is flatter
    probs = softmax(logits)
    nucleus = int(np.searchsorted(np.cumsum(probs), 0.8)) + 1  # tokens 0..nucleus-1 reach 0.8
    expected = np.where(np.arange(len(logits)) < nucleus, probs, 0.0)
    seen = frequencies(SamplingParams(do_sample=True, top_p=0.8, seed=0), logits)
    assert seen[nucleus:].sum() == 0
    assert np.abs(seen - expected / expected.sum()).max() < 0.025
    seen = frequencies(SamplingParams(do_sample=True, top_k=3, seed=0), logits)
    assert seen[3:].sum() == 0 and np.abs(seen[:3] - softmax(logits[:3])).max() < 0.025


def test_stop_strings_cut_the_text_and_never_stream_a_part_of_it(tiny):
    gen = tiny["qwen2"].generator
    ids = gen.encode(SHORT_PROMPTS[0])
    full = gen.generate(ids, SamplingParams(max_new_tokens=24, ignore_eos=True)).text
    stop = full[len(full) // 2:][:4]
    assert stop.strip(), full
    stream = gen.stream(ids, SamplingParams(max_new_tokens=24, ignore_eos=True, stop=["\x00never", stop]))
    streamed = "".join(stream)
    assert streamed == stream.completion.text == full[: full.find(stop)]
    assert stream.completion.finish_reason == "stop"


@pytest.mark.parametrize("family", FAMILIES)
def test_every_eos_id_of_the_generation_config_stops(family, tiny, tiny_sources, monkeypatch):
    """Each EOS id the checkpoint's generation config lists, once it is the likeliest token, ends the answer
    (the model's logits are boosted for it at the third token: random weights never pick it themselves)."""
    gen = tiny[family].generator
    eos_ids = json.loads((tiny_sources[family] / "generation_config.json").read_text())["eos_token_id"]
    assert len(eos_ids) > 1 and gen.eos_ids == set(eos_ids)
    ids = gen.encode(SHORT_PROMPTS[0])
    plain = gen.generate(ids, SamplingParams(max_new_tokens=8)).token_ids
    forward = gen.model.forward
    for eos in eos_ids:
        calls = []

        def boosted(tokens, all_logits=False):
            logits = forward(tokens, all_logits)
            calls.append(1)
            if len(calls) == 3:
                logits[eos] = logits.max() + 10
            return logits

        monkeypatch.setattr(gen.model, "forward", boosted)
        completion = gen.generate(ids, SamplingParams(max_new_tokens=8))
        assert completion.token_ids == plain[:2] and completion.finish_reason == "stop", eos


def drafting_keeps_the_greedy_tokens(gen, ids: list[int], monkeypatch, **drafting) -> tuple[list[int], list[int]]:
    """Check that decoding with `drafting` (a SamplingParams field) gives the greedy tokens of `ids` and then of a
    next turn that reuses the cache; returns the greedy tokens and the token counts of the drafting decode calls."""
    plain = gen.generate(ids, SamplingParams(max_new_tokens=24, ignore_eos=True)).token_ids
    follow_up = ids + plain + gen.tokenizer(" and so on", add_special_tokens=False)["input_ids"]
    after_plain = gen.generate(follow_up, SamplingParams(max_new_tokens=8, ignore_eos=True), reuse="context")

    hidden, calls = gen.model.hidden, []
    monkeypatch.setattr(gen.model, "hidden", lambda tokens: calls.append(len(tokens)) or hidden(tokens))
    drafted = gen.generate(ids, SamplingParams(max_new_tokens=24, ignore_eos=True, **drafting))
    monkeypatch.undo()
    then = gen.generate(follow_up, SamplingParams(max_new_tokens=8, ignore_eos=True, **drafting), reuse="context")
    decode_calls = calls[1:]  # the first runs the prompt
    print(f"{drafting}: {len(plain)} tokens in {len(decode_calls)} decode calls of {decode_calls} tokens")
    assert drafted.token_ids == plain
    assert then.prefilled_tokens < len(follow_up) and then.token_ids == after_plain.token_ids
    return plain, decode_calls


@pytest.mark.parametrize("build", ["llama_f32", "qwen2_f32", "llama_f32_static"])
def test_prompt_lookup_gives_the_greedy_tokens_in_fewer_calls(build, tiny_builds, monkeypatch):
    """Prompt-lookup decoding keeps a drafted token only where greedy decoding chooses it: the same tokens as plain
    greedy, over a prompt that repeats itself, in fewer decode calls than tokens, each call of the same size until
    the token budget shrinks it; the drafts it rejects leave nothing in the cache, so the next turn of the
    conversation continues as after plain greedy."""
    gen = load_pipeline(tiny_builds[build]).generator
    ids = gen.encode(f"{PASSAGE[0]} {PASSAGE[0]}")
    plain, decode_calls = drafting_keeps_the_greedy_tokens(gen, ids, monkeypatch, prompt_lookup=4)
    assert len(decode_calls) < len(plain) - 1
    assert decode_calls[0] == 5 and decode_calls == sorted(decode_calls, reverse=True)


def test_prompt_lookup_is_for_greedy_decoding():
    with pytest.raises(ValueError, match="prompt_lookup = 4: it verifies drafts against greedy choices"):
        SamplingParams(do_sample=True, temperature=0.7, prompt_lookup=4)
    with pytest.raises(ValueError, match="prompt_lookup = -1: must be >= 0"):
        SamplingParams(prompt_lookup=-1)


@pytest.mark.parametrize("draft", ["llama_f32_decode_graph", "mistral_f32"])
def test_a_draft_model_gives_the_greedy_tokens(draft, tiny_builds, monkeypatch):
    """Speculative decoding keeps a token the draft model guessed only where the model's greedy choice agrees:
    the same tokens as plain greedy, whether the draft agrees everywhere (the same weights: every call of the
    model brings 1 + 4 tokens) or seldom (another family's random weights, with the same tokenizer); what either
    cache holds past the text is rewound, so the next turn of the conversation continues as after plain greedy,
    and drafts again from a draft cache that kept the text."""
    gen = Generator(Model(tiny_builds["llama_f32"]), draft_model=Model(tiny_builds[draft]))
    plain, decode_calls = drafting_keeps_the_greedy_tokens(gen, gen.encode(PASSAGE[0]), monkeypatch, draft_tokens=4)
    if draft == "llama_f32_decode_graph":
        assert decode_calls == [5, 5, 5, 5, 4]  # 5 tokens taken a call; the last call drafts the budget's 3
    else:
        assert len(decode_calls) > len(plain) // 2


def test_a_draft_model_needs_the_same_tokenizer_and_greedy_decoding(tiny_builds):
    llama = Model(tiny_builds["llama_f32"])
    with pytest.raises(ValueError, match=f"^the draft model {tiny_builds['qwen2_f32']} has another tokenizer than "
                                         f"{tiny_builds['llama_f32']} \\(151669 and 128256 tokens\\): a draft model "
                                         "must share the model's tokenizer"):
        Generator(llama, draft_model=Model(tiny_builds["qwen2_f32"]))
    with pytest.raises(ValueError, match="^draft_tokens = 4 needs a draft model, loaded with this one"):
        Generator(llama).stream([1, 2], SamplingParams(draft_tokens=4))
    with pytest.raises(ValueError, match="^draft_tokens = 4: it verifies drafts against greedy choices"):
        SamplingParams(do_sample=True, temperature=0.7, draft_tokens=4)
    with pytest.raises(ValueError, match="^prompt_lookup = 3 and draft_tokens = 4: a call's draft comes from the "
                                         "text or from the draft model; set one of them to 0$"):
        SamplingParams(prompt_lookup=3, draft_tokens=4)


def test_overflow_gives_the_documented_error_and_leaves_the_model_usable(tiny):
    pipe = tiny["llama"]
    before = pipe.generate(SHORT_PROMPTS[0], max_new_tokens=8)
    prompt_tokens = len(pipe.generator.encode(LONG_PROMPT))
    with pytest.raises(ContextOverflow) as error:
        pipe.generate(LONG_PROMPT, max_new_tokens=90)
    message = str(error.value)
    assert f"{prompt_tokens} tokens of input + 90 new tokens" in message
    assert "max_seq_len = 96" in message and "rebuild with a larger max_seq_len" in message
    assert pipe.generate(SHORT_PROMPTS[0], max_new_tokens=8) == before


def test_nitro_generate_streams_the_completion_then_a_summary(tiny, tiny_builds):
    result = nitro("generate", tiny_builds["llama_f32"], SHORT_PROMPTS[0], "--max-new-tokens", 12)
    assert result.returncode == 0, result.stderr
    [completion] = tiny["llama"].complete([SHORT_PROMPTS[0]], max_new_tokens=12)
    assert result.stdout == completion.text + "\n" and completion.finish_reason == "length"
    prompt_tokens = len(tiny["llama"].generator.encode(SHORT_PROMPTS[0]))
    assert f"[prompt {prompt_tokens} tokens, 12 new tokens, TTFT " in result.stderr
    assert "tok/s, cut at max_new_tokens]" in result.stderr


def test_nitro_generate_with_a_draft_model_prints_the_greedy_text(tiny_builds):
    plain = nitro("generate", tiny_builds["llama_f32"], SHORT_PROMPTS[0], "--max-new-tokens", 12)
    drafted = nitro("generate", tiny_builds["llama_f32"], SHORT_PROMPTS[0], "--max-new-tokens", 12,
                    "--draft-model", tiny_builds["mistral_f32"], "--draft-tokens", 3)
    assert drafted.returncode == 0 and plain.returncode == 0, drafted.stderr
    assert drafted.stdout == plain.stdout
    alone = nitro("generate", tiny_builds["llama_f32"], "Hello", "--draft-tokens", 3)
    assert one_line_error(alone, "generate") == "--draft-tokens 3 goes with --draft-model ROOT"


def test_nitro_generate_errors_are_clear(tiny_builds, tmp_path):
    overflow = nitro("generate", tiny_builds["llama_f32"], LONG_PROMPT, "--max-new-tokens", 90)
    missing = nitro("generate", tmp_path / "nothing", "Hello")
    for result in (overflow, missing):
        assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    assert "exceeds this build's max_seq_len = 96" in overflow.stderr
    assert f"{tmp_path / 'nothing' / 'manifest.json'} not found: build the model first" in missing.stderr
