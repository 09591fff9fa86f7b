"""Chat: `nitro chat` driven through its stdin as a real subprocess, and the ChatSession under it."""
from __future__ import annotations

import io
import os
import re
import selectors
import subprocess
import sys
import time

import pytest

from conftest import nitro
from nitro import load_pipeline
from nitro.commands.chat import repl
from nitro.runtime import Model
from nitro.runtime.chat import ChatSession, HistoryFull
from nitro.runtime.generate import Generator
from nitro.runtime.sampling import SamplingParams

SUMMARY = re.compile(r"\[prompt (\d+) tokens(?: \((\d+) prefilled, (\d+) from cache\))?, (\d+) new tokens, .*"
                     r"context (\d+)/(\d+)\]\n")


class ChatProcess:
    """`nitro chat` with pipes on stdin, stdout and stderr, read as the bytes arrive."""

    def __init__(self, *args):
        self.proc = subprocess.Popen([sys.executable, "-m", "nitro.cli", "chat", *map(str, args)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.selector = selectors.DefaultSelector()
        for stream in (self.proc.stdout, self.proc.stderr):
            self.selector.register(stream, selectors.EVENT_READ)
        self.stderr = ""

    def read_until_prompt(self, timeout: float = 900) -> tuple[list[str], str]:
        """Read until the chat waits for input again; returns the stdout chunks as they arrived (an answer that
        streams comes in several) and the stderr text since the last call."""
        chunks, start, deadline = [], len(self.stderr), time.monotonic() + timeout
        while not self.stderr[start:].endswith("> "):
            assert time.monotonic() < deadline and self.proc.poll() is None, self.stderr
            for key, _ in self.selector.select(timeout=1):
                data = os.read(key.fileobj.fileno(), 65536).decode()
                if key.fileobj is self.proc.stdout:
                    chunks.append(data)
                else:
                    self.stderr += data
        return chunks, self.stderr[start:]

    def send(self, line: str) -> tuple[list[str], str]:
        self.proc.stdin.write(line.encode() + b"\n")
        self.proc.stdin.flush()
        return self.read_until_prompt()

    def turn(self, line: str) -> tuple[str, dict]:
        """Send a message; returns the streamed answer and the numbers of its summary line."""
        chunks, err = self.send(line)
        match = SUMMARY.search(err)
        assert match, err
        prompt, prefilled, cached, new, context, _ = (int(g) if g else None for g in match.groups())
        assert len([c for c in chunks if c.strip()]) >= 2, f"answer not streamed: {chunks}"
        stats = {"prompt": prompt, "prefilled": prompt if prefilled is None else prefilled,
                 "cached": cached or 0, "new": new, "context": context}
        return "".join(chunks), stats


def test_nitro_chat_streams_keeps_history_prefills_only_new_turns_and_resets(smollm2_builds):
    chat = ChatProcess(smollm2_builds["smollm2"], "--max-new-tokens", 24)
    try:
        chat.read_until_prompt()
        first, one = chat.turn("My name is Ada. Say hello to me.")
        assert one["cached"] == 0 and one["prefilled"] == one["prompt"]
        assert one["context"] >= one["prompt"] + one["new"] - 1  # the answer's tokens are in the cache
        second, two = chat.turn("What is my name?")
        # The second prompt holds the whole first exchange, and only what the cache lacked was prefilled.
        assert two["prompt"] > one["context"]
        assert two["cached"] == one["context"] and two["prefilled"] == two["prompt"] - one["context"]
        _, stats = chat.send("/stats")
        assert f"{two['context']} of 1024 tokens in the KV cache, 2 exchanges" in stats
        _, reset = chat.send("/reset")
        assert "[conversation reset]" in reset
        again, three = chat.turn("My name is Ada. Say hello to me.")
        assert three == one and again == first  # from a clean conversation: the same greedy answer
        chat.proc.stdin.close()  # EOF exits cleanly
        assert chat.proc.wait(timeout=60) == 0
        assert "Traceback" not in chat.stderr + chat.proc.stderr.read().decode()
    finally:
        chat.proc.kill()


@pytest.fixture(scope="module")
def tiny_llama(tiny_builds):
    return load_pipeline(tiny_builds["llama_f32"]).generator


def test_session_says_when_history_no_longer_fits_and_reset_recovers(tiny_llama):
    session = ChatSession(tiny_llama, system_prompt="Be brief.")
    params = SamplingParams(max_new_tokens=16, ignore_eos=True)
    "".join(session.send("Hello there", params))
    first_context = session.context_tokens
    with pytest.raises(HistoryFull) as full:
        for _ in range(10):
            "".join(session.send("Tell me more about it", params))
            assert session.last.prefilled_tokens < session.last.prompt_tokens  # earlier turns came from cache
    assert "exceeds this build's max_seq_len = 96; reset the conversation" in str(full.value)
    turns = len(session.history)
    assert turns >= 4 and session.messages[0] == {"role": "system", "content": "Be brief."}
    session.reset()
    assert session.history == [] and session.context_tokens == 0
    "".join(session.send("Hello there", params))
    assert session.context_tokens == first_context


def test_repl_offers_a_reset_when_history_is_full(tiny_llama, monkeypatch, capsys):
    """Through the REPL: the turn that no longer fits is announced, and answering `y` resets and resends it."""
    params = SamplingParams(max_new_tokens=40, ignore_eos=True)
    monkeypatch.setattr(sys, "stdin", io.StringIO("Hello there\nTell me more\ny\n/stats\n"))
    repl(ChatSession(tiny_llama), params)
    err = capsys.readouterr().err
    assert "exceeds this build's max_seq_len = 96; reset the conversation" in err
    assert "reset the conversation and send this message again? [y/N]" in err
    assert "new tokens, " in err and "tok/s, cut at max_new_tokens, context " in err  # 40 of 40 tokens: cut
    assert ", 1 exchanges] last answer: [prompt" in err


def test_cache_reuse_rewinds_to_the_shared_prefix(tiny_llama):
    """A prompt that shares only a prefix with the cache (an earlier turn edited, re-tokenized or cut short)
    runs only what follows that prefix, and gives what a fresh prefill gives."""
    gen, params = tiny_llama, SamplingParams(max_new_tokens=8, ignore_eos=True)
    first = gen.encode("The weather outside is super cold, but the sun is out and the sky is blue")
    second = first[:10] + gen.encode(" a storm is coming from the north")
    assert first[10] != second[10]
    gen.generate(first, params)
    reused = gen.generate(second, params, reuse="prefix")
    assert reused.prefilled_tokens == len(second) - 10
    assert reused.token_ids == gen.generate(second, params).token_ids
    again = gen.generate(second, params, reuse="prefix")  # all cached: only the last token reruns for logits
    assert again.prefilled_tokens == 1 and again.token_ids == reused.token_ids


def test_generate_with_chat_answers_a_message_and_without_it_says_to_use_it(smollm2_builds):
    """The instruct model ends a plain prompt at once (its first token is end-of-turn): the summary says why and
    suggests --chat, which sends the prompt through the chat template and gets the chat answer."""
    root, question = smollm2_builds["smollm2"], "What is the capital of France?"
    gen, params = Generator(Model(root)), SamplingParams(max_new_tokens=20)
    assert gen.generate(gen.encode(question), params).token_ids == []
    plain = nitro("generate", root, question, "--max-new-tokens", 20)
    assert plain.returncode == 0 and plain.stdout == "\n" and ", 0 new tokens, " in plain.stderr
    assert plain.stderr.rstrip().endswith("] The model ended at once: it is a chat model, which answers messages in "
                                          "its chat template; try nitro generate --chat.")
    chat = nitro("generate", root, question, "--chat", "--system", "Answer in one word.", "--max-new-tokens", 20)
    messages = [{"role": "system", "content": "Answer in one word."}, {"role": "user", "content": question}]
    assert chat.returncode == 0 and chat.stdout == gen.generate(gen.chat_ids(messages), params).text + "\n"
