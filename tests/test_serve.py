"""`nitro serve` as OpenAI clients see it: real server processes on loopback over the SmolLM2 build, checked
against the runtime run directly on the same prompts and settings."""
from __future__ import annotations

import json
import re
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import openai
import pytest

from conftest import KEY, Server, start_server, wait_until_ready
from nitro.runtime import Model
from nitro.runtime.generate import Completion, Generator
from nitro.runtime.sampling import SamplingParams

MODEL = "smollm2"
# SmolLM2 tells this story on and on (no early EOS), so it keeps the model busy for as long as asked.
STORY = [{"role": "user", "content": "Tell me a story about a cat."}]
QUESTIONS = [[{"role": "user", "content": q}] for q in
             ("What is the capital of France?", "Name a color.", "What is 2 + 2?", "Say hello in Spanish.")]
PROMPTS = {"completion": "The weather outside is super cold, but", "chat": QUESTIONS[0]}


@pytest.fixture(scope="module")
def servers(smollm2_builds, tmp_path_factory) -> dict[str, Server]:
    """`keyed` (--api-key, default queue) and `small_queue` (--queue-size 2, no key), started together so that
    their model loads overlap."""
    root, logs = smollm2_builds["smollm2"], tmp_path_factory.mktemp("serve")
    started = {"keyed": start_server(root, logs / "keyed.log", "--api-key", KEY),
               "small_queue": start_server(root, logs / "small_queue.log", "--queue-size", "2")}
    try:
        for server in started.values():
            wait_until_ready(server)
        yield started
    finally:
        for server in started.values():
            server.process.terminate()
            server.process.wait(60)


@pytest.fixture(scope="module")
def runtime(smollm2_builds) -> Generator:
    return Generator(Model(smollm2_builds["smollm2"]))


def direct(runtime: Generator, kind: str, prompt, **settings) -> Completion:
    """What the runtime itself generates for a completion prompt or chat messages."""
    ids = runtime.chat_ids(prompt) if kind == "chat" else runtime.encode(prompt)
    return runtime.generate(ids, SamplingParams(**settings))


def ask(client: openai.OpenAI, kind: str, prompt, stream: bool = False, **request):
    """(text, finish_reason, usage) of one request through the official client; streams ask for usage too."""
    create = client.chat.completions.create if kind == "chat" else client.completions.create
    args = {"messages": prompt} if kind == "chat" else {"prompt": prompt}
    if not stream:
        response = create(model=MODEL, **args, **request)
        choice = response.choices[0]
        return (choice.message.content if kind == "chat" else choice.text), choice.finish_reason, response.usage
    chunks = list(create(model=MODEL, stream=True, stream_options={"include_usage": True}, **args, **request))
    choices = [c.choices[0] for c in chunks if c.choices]
    text = "".join((c.delta.content or "") if kind == "chat" else c.text for c in choices)
    return text, choices[-1].finish_reason, chunks[-1].usage


@pytest.mark.parametrize("kind", ["completion", "chat"])
def test_openai_client_gets_the_runtime_text(servers, runtime, kind):
    """Greedy (temperature absent), seeded sampling with top_p, and a stop string with temperature 0: the same
    text, finish_reason and token counts as the runtime, streamed and not."""
    client, prompt = servers["keyed"].client(), PROMPTS[kind]
    greedy = direct(runtime, kind, prompt, max_new_tokens=16)
    words = greedy.text.split()
    stop = words[len(words) // 2]  # a word in the middle: the answer must end right before it
    cases = [
        ({"max_tokens": 16}, greedy),
        ({"max_tokens": 16, "temperature": 1.5, "top_p": 0.95, "seed": 7},
         direct(runtime, kind, prompt, max_new_tokens=16, do_sample=True, temperature=1.5, top_p=0.95, seed=7)),
        ({"max_tokens": 16, "temperature": 0, "stop": stop}, direct(runtime, kind, prompt, max_new_tokens=16,
                                                                   stop=[stop])),
    ]
    assert cases[1][1].text != greedy.text, "the seeded sample should differ from greedy"
    assert cases[2][1].finish_reason == "stop" and stop not in cases[2][1].text
    for request, expected in cases:
        for stream in (False, True):
            text, finish_reason, usage = ask(client, kind, prompt, stream, **request)
            assert text == expected.text, (request, stream)
            assert finish_reason == expected.finish_reason, (request, stream)
            assert (usage.prompt_tokens, usage.completion_tokens) == (expected.prompt_tokens,
                                                                      len(expected.token_ids)), (request, stream)


def test_sixteen_concurrent_clients_each_get_their_answer(servers, runtime):
    client = servers["keyed"].client()
    expected = [direct(runtime, "chat", q, max_new_tokens=8).text for q in QUESTIONS]
    with ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(lambda i: ask(client, "chat", QUESTIONS[i % 4], stream=i % 2 == 1, max_tokens=8)[0],
                                range(16)))
    assert answers == [expected[i % 4] for i in range(16)]


def test_full_queue_refuses_at_once_and_the_rest_complete(servers, runtime):
    """With --queue-size 2 and the model busy, 2 of 16 concurrent clients wait and get their answers; the
    other 14 get 429 while the queue is still full, i.e. without waiting for the model."""
    server = servers["small_queue"]
    client = server.client()
    expected = [direct(runtime, "chat", q, max_new_tokens=8).text for q in QUESTIONS]
    busy = client.chat.completions.create(model=MODEL, messages=STORY, max_tokens=400, stream=True)
    chunks = iter(busy)
    while not next(chunks).choices[0].delta.content:  # generating
        pass

    def one(i: int):
        try:
            return ask(client, "chat", QUESTIONS[i % 4], max_tokens=8)[0]
        except openai.RateLimitError as exc:
            return exc

    with ThreadPoolExecutor(16) as pool:
        futures = [pool.submit(one, i) for i in range(16)]
        deadline = time.monotonic() + 120
        while sum(f.done() for f in futures) < 14 and time.monotonic() < deadline:
            time.sleep(0.05)
        refused = [f.result() for f in futures if f.done()]
        assert server.health()["requests"] == 3  # the busy stream and 2 waiting: the refusals did not wait
        busy.close()
        results = [f.result() for f in futures]
    assert len(refused) == 14 and all(isinstance(r, openai.RateLimitError) for r in refused)
    error = refused[0].response.json()["error"]
    assert error["code"] == "queue_full" and "--queue-size" in error["message"]
    answered = [(i, r) for i, r in enumerate(results) if isinstance(r, str)]
    assert len(answered) == 2
    assert all(text == expected[i % 4] for i, text in answered)


def test_client_disconnect_frees_the_model(servers):
    """A stream abandoned early stops generating: the next request is served in a small fraction of the time
    the abandoned generation would still have taken."""
    server = servers["keyed"]
    client = server.client()
    max_tokens, read = 900, 8
    stream = client.chat.completions.create(model=MODEL, messages=STORY, max_tokens=max_tokens, stream=True)
    arrivals = []
    for chunk in stream:
        if chunk.choices[0].delta.content:
            arrivals.append(time.monotonic())
        if len(arrivals) == read:
            break
    stream.close()
    per_token_s = (arrivals[-1] - arrivals[1]) / (read - 2)
    start = time.monotonic()
    ask(client, "chat", QUESTIONS[0], max_tokens=4)
    waited = time.monotonic() - start
    remaining_s = (max_tokens - read) * per_token_s
    print(f"next request served in {waited:.2f} s; the abandoned generation had ~{remaining_s:.0f} s to go")
    assert waited < remaining_s / 5
    stopped = [int(n) for n in re.findall(r"client disconnected after (\d+) text chunks", server.log.read_text())]
    assert stopped and stopped[-1] < max_tokens / 2
    assert server.health()["requests"] == 0


CHAT = {"model": MODEL, "messages": QUESTIONS[0]}
LONG = "word " * 1500  # more tokens than the build's max_seq_len of 1024
BAD_REQUESTS = {
    "malformed JSON": ("chat/completions", b'{"model": "smollm2", "messages": [', 400, "not valid JSON"),
    "not an object": ("chat/completions", [1, 2], 400, "must be a JSON object"),
    "missing messages": ("chat/completions", {"model": MODEL}, 400, "messages: Field required"),
    "missing prompt": ("completions", {"model": MODEL}, 400, "prompt: Field required"),
    "messages not a list": ("chat/completions", {**CHAT, "messages": "hello"}, 400, "messages: Input should be"),
    "content not text": ("chat/completions", {**CHAT, "messages": [{"role": "user", "content": 5}]}, 400,
                         "messages.0.content"),
    "max_tokens not a number": ("chat/completions", {**CHAT, "max_tokens": "many"}, 400, "max_tokens"),
    "temperature not a number": ("chat/completions", {**CHAT, "temperature": "hot"}, 400, "temperature"),
    "max_tokens 0": ("chat/completions", {**CHAT, "max_tokens": 0}, 400, "max_tokens"),
    "max_tokens negative": ("completions", {"model": MODEL, "prompt": "Hi", "max_tokens": -3}, 400, "max_tokens"),
    "max_tokens over capacity": ("chat/completions", {**CHAT, "max_tokens": 5000}, 400, "max_tokens: "),
    "prompt over capacity": ("completions", {"model": MODEL, "prompt": LONG}, 400, "prompt:"),
    "messages over capacity": ("chat/completions", {**CHAT, "messages": [{"role": "user", "content": LONG}]}, 400,
                               "messages:"),
    "unknown model": ("chat/completions", {**CHAT, "model": "gpt-4o"}, 404, "'gpt-4o'"),
    "several choices": ("completions", {"model": MODEL, "prompt": "Hi", "n": 3}, 400, "n:"),
    "prompt far over capacity": ("completions", {"model": MODEL, "prompt": "word " * 150_000}, 400,
                                 "prompt: 750000 bytes of text cannot fit this model's context of 1024 tokens"),
    "body over the size limit": ("completions", {"model": MODEL, "prompt": "word " * 250_000}, 413,
                                 "more than this server takes (1048576; nitro serve --max-request-bytes)"),
}


@pytest.mark.parametrize("name", BAD_REQUESTS)
def test_bad_request_gets_4xx_naming_the_problem(servers, name):
    server = servers["keyed"]
    path, body, status, named = BAD_REQUESTS[name]
    headers = {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"}
    if isinstance(body, bytes):
        response = httpx.post(f"{server.url}/v1/{path}", content=body, headers=headers, timeout=60)
    else:
        response = httpx.post(f"{server.url}/v1/{path}", json=body, headers=headers, timeout=60)
    error = response.json()["error"]
    print(f"{name}: {response.status_code} {error['message']}")
    assert response.status_code == status
    assert named in error["message"] and error["type"] == "invalid_request_error"
    assert server.health()["status"] == "ok"


def resident_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"process {pid} has exited")


def test_oversized_bodies_are_refused_unread_and_hold_up_no_one(servers):
    """10 MB bodies, eight of them four at a time, get 413 from their Content-Length alone: a short request sent
    meanwhile is answered in about its usual time, and the server's memory does not grow."""
    server = servers["keyed"]
    headers = {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"}
    big = json.dumps({"model": MODEL, "prompt": "word " * 2_000_000}).encode()

    def short_request() -> float:
        start = time.monotonic()
        response = httpx.post(f"{server.url}/v1/completions", headers=headers, timeout=60,
                              json={"model": MODEL, "prompt": "Hello", "max_tokens": 8})
        assert response.status_code == 200
        return time.monotonic() - start

    def oversized() -> int:
        return httpx.post(f"{server.url}/v1/completions", content=big, headers=headers, timeout=120).status_code

    usual = sorted(short_request() for _ in range(3))[1]
    before = resident_mb(server.process.pid)
    with ThreadPoolExecutor(4) as pool:
        refused = [pool.submit(oversized) for _ in range(8)]
        time.sleep(0.05)
        meanwhile = short_request()
        statuses = [r.result() for r in refused]
    after = resident_mb(server.process.pid)
    print(f"short request: {usual * 1000:.0f} ms usually, {meanwhile * 1000:.0f} ms among 10 MB bodies; "
          f"server RSS {before:.0f} -> {after:.0f} MB")
    assert statuses == [413] * 8
    assert meanwhile < 3 * usual + 0.5
    assert after < 1.1 * before


def test_api_key_required_only_when_given_and_never_logged(servers):
    keyed, open_ = servers["keyed"], servers["small_queue"]
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": KEY}):
        response = httpx.get(f"{keyed.url}/v1/models", headers=headers, timeout=30)
        assert response.status_code == 401 and response.json()["error"]["code"] == "invalid_api_key", headers
    # Refused before the body is even read: a malformed body without the key is a 401, not a 400.
    assert httpx.post(f"{keyed.url}/v1/completions", content=b"{", timeout=30).status_code == 401
    with pytest.raises(openai.AuthenticationError):
        keyed.client(key="wrong").models.list()
    assert [m.id for m in keyed.client().models.list()] == [MODEL]
    assert httpx.get(f"{keyed.url}/health", timeout=30).status_code == 200  # probes need no key
    assert [m["id"] for m in httpx.get(f"{open_.url}/v1/models", timeout=30).json()["data"]] == [MODEL]
    log = keyed.log.read_text()
    assert f"Uvicorn running on {keyed.url}" in log  # bound to 127.0.0.1 without --host
    assert KEY not in log


def test_sampling_fields_beyond_openais_are_honoured_and_unknown_ones_refused(servers, runtime):
    """top_k, min_p and repetition_penalty, as vLLM and llama.cpp's server take them (extra body fields): top_k
    1 and min_p 1 leave only the likeliest token, so sampling gives the greedy text; a repetition penalty gives
    the runtime's penalized text; prompt lookup gives the greedy text, and is refused with sampling. A field the
    server does not know is refused, never ignored."""
    client, question = servers["keyed"].client(), QUESTIONS[2]
    greedy = direct(runtime, "chat", question, max_new_tokens=16).text
    penalized = direct(runtime, "chat", question, max_new_tokens=16, repetition_penalty=1.5).text
    assert penalized != greedy
    cases = [({"temperature": 1.0, "seed": 3, "extra_body": {"top_k": 1}}, greedy),
             ({"temperature": 1.0, "seed": 3, "extra_body": {"min_p": 1.0}}, greedy),
             ({"extra_body": {"repetition_penalty": 1.5}}, penalized),
             ({"extra_body": {"prompt_lookup": 4}}, greedy)]
    for request, expected in cases:
        assert ask(client, "chat", question, max_tokens=16, **request)[0] == expected, request
    with pytest.raises(openai.BadRequestError, match="ignore_eos: Extra inputs are not permitted"):
        ask(client, "chat", question, max_tokens=4, extra_body={"ignore_eos": True})
    with pytest.raises(openai.BadRequestError, match="top_k"):
        ask(client, "chat", question, max_tokens=4, extra_body={"top_k": -1})
    with pytest.raises(openai.BadRequestError, match="prompt_lookup = 4: it verifies drafts against greedy"):
        ask(client, "chat", question, max_tokens=4, temperature=0.7, extra_body={"prompt_lookup": 4})


def test_an_answer_cut_by_max_tokens_says_length_and_models_list_the_context(servers):
    client = servers["keyed"].client()
    for stream in (False, True):
        assert ask(client, "chat", STORY, stream, max_tokens=4)[1] == "length"
    assert [(m.id, m.context_length) for m in client.models.list()] == [(MODEL, 1024)]


def test_a_follow_up_turn_reuses_the_cached_conversation(servers, runtime):
    """The second turn of a conversation starts with every token the first left in the KV cache: it prefills
    only the rest, says so in usage, and answers as the runtime does from the same cache."""
    client = servers["keyed"].client()
    first = [{"role": "user", "content": "Name a fruit."}]
    answer, _, _ = ask(client, "chat", first, max_tokens=12)
    second = first + [{"role": "assistant", "content": answer}, {"role": "user", "content": "And a vegetable?"}]
    response = client.chat.completions.create(model=MODEL, messages=second, max_tokens=12)
    expected_first = runtime.generate(runtime.chat_ids(first), SamplingParams(max_new_tokens=12), reuse="context")
    expected = runtime.generate(runtime.chat_ids(second), SamplingParams(max_new_tokens=12), reuse="context")
    assert expected_first.text == answer and expected.prefilled_tokens < expected.prompt_tokens
    assert response.choices[0].message.content == expected.text
    cached = response.usage.prompt_tokens_details.cached_tokens
    assert cached == expected.prompt_tokens - expected.prefilled_tokens > len(runtime.chat_ids(first))

    def ttft(messages) -> float:
        start = time.monotonic()
        for chunk in client.chat.completions.create(model=MODEL, messages=messages, max_tokens=2, stream=True):
            if chunk.choices and chunk.choices[0].delta.content:
                return time.monotonic() - start
        raise AssertionError("no token")

    reused, fresh = [], []
    for _ in range(3):
        ask(client, "chat", first, max_tokens=12)
        reused.append(ttft(second))
        ask(client, "chat", QUESTIONS[0], max_tokens=2)  # another conversation: the cache no longer helps
        fresh.append(ttft(second))
    print(f"follow-up turn TTFT: {sorted(reused)[1] * 1000:.0f} ms reusing the cache, "
          f"{sorted(fresh)[1] * 1000:.0f} ms prefilling it all")


@pytest.fixture(scope="module")
def fp32_server(smollm2_builds, tmp_path_factory):
    server = start_server(smollm2_builds["smollm2_fp32"], tmp_path_factory.mktemp("fp32") / "server.log")
    try:
        wait_until_ready(server)
        yield server
    finally:
        server.process.terminate()
        server.process.wait(60)


@pytest.mark.parametrize("kind", ["chat", "completion"])
def test_logprobs_are_transformers_log_softmax(fp32_server, smollm2_builds, kind):
    """logprobs (and the top alternatives) of the uncompressed float32 build, as OpenAI's client parses them,
    against transformers' log-softmax of the same checkpoint over the prompt and the generated tokens."""
    import torch
    from transformers import AutoModelForCausalLM

    root = smollm2_builds["smollm2_fp32"]
    gen = Generator(Model(root))
    client, prompt = fp32_server.client(), PROMPTS[kind]
    if kind == "chat":
        response = client.chat.completions.create(model="smollm2_fp32", messages=prompt, max_tokens=8,
                                                  logprobs=True, top_logprobs=3)
        entries = response.choices[0].logprobs.content
        got = [(e.token, e.logprob, [(t.token, t.logprob) for t in e.top_logprobs]) for e in entries]
        ids = gen.chat_ids(prompt)
    else:
        response = client.completions.create(model="smollm2_fp32", prompt=prompt, max_tokens=8, logprobs=3)
        lp = response.choices[0].logprobs
        got = [(t, p, list(top.items())) for t, p, top in zip(lp.tokens, lp.token_logprobs, lp.top_logprobs)]
        ids = gen.encode(prompt)
    new = gen.generate(ids, SamplingParams(max_new_tokens=8)).token_ids
    hf = AutoModelForCausalLM.from_pretrained(root / "source", dtype=torch.float32).eval()
    with torch.no_grad():
        logp = torch.log_softmax(hf(torch.tensor([ids + new])).logits[0, len(ids) - 1:-1].double(), dim=-1)
    assert len(got) == len(new)
    for (token, logprob, top), token_id, row in zip(got, new, logp):
        assert token == gen.tokenizer.decode([token_id])
        assert abs(logprob - row[token_id].item()) < 1e-3
        best = row.topk(3)
        assert [t for t, _ in top] == [gen.tokenizer.decode([i]) for i in best.indices.tolist()]
        assert max(abs(p - q) for (_, p), q in zip(top, best.values.tolist())) < 1e-3


def test_one_server_serves_several_builds_by_name_loading_one_on_first_use(smollm2_builds, tmp_path, runtime):
    """`nitro serve A B` with no memory to spare for B: A loads at start, B on the first request for it; each
    answers as the runtime does on its own build, and /v1/models lists both with their context."""
    server = start_server([smollm2_builds["smollm2"], smollm2_builds["smollm2_fp32"]], tmp_path / "server.log",
                          "--memory-mb", "0")
    try:
        wait_until_ready(server)
        client = server.client()
        assert [(m.id, m.context_length) for m in client.models.list()] == [(MODEL, 1024), ("smollm2_fp32", 1024)]
        assert server.health()["models"]["smollm2_fp32"] == {"build": None, "loaded": False}
        fp32 = Generator(Model(smollm2_builds["smollm2_fp32"]))
        for name, gen in ((MODEL, runtime), ("smollm2_fp32", fp32)):
            expected = gen.generate(gen.chat_ids(QUESTIONS[1]), SamplingParams(max_new_tokens=12)).text
            response = client.chat.completions.create(model=name, messages=QUESTIONS[1], max_tokens=12)
            assert response.choices[0].message.content == expected and response.model == name
        assert server.health()["models"]["smollm2_fp32"]["loaded"]
        with pytest.raises(openai.NotFoundError, match="this server serves 'smollm2', 'smollm2_fp32'"):
            client.chat.completions.create(model="other", messages=QUESTIONS[1], max_tokens=2)
        assert "smollm2_fp32, asked for the first time" in server.log.read_text()
    finally:
        server.process.terminate()
        server.process.wait(60)


CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")


@pytest.fixture
def browser(tmp_path):
    """Headless Chromium driven by its ChromeDriver (Debian's chromium and chromium-driver; .ci/run installs
    them), with no network but loopback."""
    if not (CHROMIUM.is_file() and CHROMEDRIVER.is_file()):
        pytest.skip("needs Debian's chromium and chromium-driver (apt-get install chromium chromium-driver)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1200,800"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    yield driver
    driver.quit()


def test_the_chat_page_streams_the_greedy_answer(servers, browser, tmp_path):
    """The page at / (served from the package, no build step, nothing from elsewhere) takes the API key, sends a
    question over the server's own streaming /v1/chat/completions and shows the answer the API gives for the
    same messages, with its token counts and speed."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ready
    from selenium.webdriver.support.ui import WebDriverWait

    server, question = servers["keyed"], QUESTIONS[0][0]["content"]
    expected = ask(server.client(), "chat", QUESTIONS[0], max_tokens=128, temperature=0)[0]
    browser.get(server.url + "/")
    browser.find_element(By.ID, "api-key").send_keys(KEY)
    browser.execute_script("document.getElementById('api-key').dispatchEvent(new Event('change'))")
    wait = WebDriverWait(browser, 300)
    wait.until(ready.text_to_be_present_in_element((By.ID, "model"), MODEL))
    browser.find_element(By.ID, "message").send_keys(question)
    browser.find_element(By.ID, "send").click()
    wait.until(ready.presence_of_element_located((By.CSS_SELECTOR, ".stats[data-done='true']")))
    answer = browser.find_elements(By.CSS_SELECTOR, ".assistant")[-1].text
    stats = browser.find_elements(By.CSS_SELECTOR, ".stats")[-1].text
    screenshot = tmp_path / "chat-page.png"
    browser.save_screenshot(str(screenshot))
    print(f"chat page screenshot: {screenshot}; {stats}")
    assert answer == expected.strip()
    assert re.fullmatch(r"prompt \d+ tokens \(\d+ from cache\), answer \d+ tokens, first token after [\d.]+ s, "
                        r"[\d.]+ tok/s( — cut at max tokens)?", stats), stats
