"""A bounded soak of `nitro serve` on 127.0.0.1: concurrent clients mixing streaming and non-streaming chat and
completions, clients that drop mid-stream, bad requests, and more clients than the queue holds (a refused one
backs off for a second). It prints the counts by kind and status, the latency percentiles, and the server's RSS
over the run, then checks: no 5xx, every completed greedy answer equal to the runtime's own answer for the same
request, RSS growth under 10 % from the first minute to the last.

    python benchmarks/soak.py [results/smollm2] [--requests 1500] [--clients 6] [--queue-size 4] [--minutes 5]

It stops after `--requests` requests or `--minutes`, whichever comes first; exit status 1 when a check fails.
"""
from __future__ import annotations

import argparse
import json
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from nitro.artifacts import read_manifest  # noqa: E402

QUESTIONS = ["What is the capital of France?", "Name three colors.", "What is 2 + 2?", "Say hello in Spanish.",
             "Tell me a story about a cat."]
PROMPTS = ["The weather outside is super cold, but", "Once upon a time", "The best way to learn to code is"]
# kind -> share of the requests
MIX = {"chat": 0.35, "chat_stream": 0.25, "completion": 0.15, "completion_stream": 0.05, "dropped_stream": 0.08,
       "bad_request": 0.12}
BAD = [  # body, expected status
    (b'{"model": "MODEL", "messages": [', 400),
    (json.dumps({"model": "gpt-4o", "messages": [{"role": "user", "content": "Hi"}]}).encode(), 404),
    (json.dumps({"model": "MODEL", "prompt": "Hi", "max_tokens": 0}).encode(), 400),
    (json.dumps({"model": "MODEL", "prompt": "word " * 300_000}).encode(), 413),
]


@dataclass
class Outcome:
    kind: str
    status: int | str
    seconds: float
    correct: bool | None = None  # a greedy answer compared with the runtime's


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def resident_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def requests_plan(count: int, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    kinds = rng.choices(list(MIX), weights=list(MIX.values()), k=count)
    plan = []
    for kind in kinds:
        if kind == "bad_request":
            body, status = rng.choice(BAD)
            plan.append({"kind": kind, "body": body, "expected": status})
        elif kind.startswith("chat") or kind == "dropped_stream":
            plan.append({"kind": kind, "question": rng.choice(QUESTIONS), "max_tokens": rng.choice([16, 32])})
        else:
            plan.append({"kind": kind, "prompt": rng.choice(PROMPTS), "max_tokens": rng.choice([16, 32])})
    return plan


def expected_answers(root: Path) -> dict:
    """The runtime's greedy answer for every (question or prompt, max_tokens) the plan can ask."""
    from nitro.runtime.generate import Generator
    from nitro.runtime.model import Model
    from nitro.runtime.sampling import SamplingParams

    gen = Generator(Model(root))
    answers = {}
    for n in (16, 32):
        for q in QUESTIONS:
            answers["chat", q, n] = gen.generate(gen.chat_ids([{"role": "user", "content": q}]),
                                                 SamplingParams(max_new_tokens=n)).text
        for p in PROMPTS:
            answers["completion", p, n] = gen.generate(gen.encode(p), SamplingParams(max_new_tokens=n)).text
    return answers


def send(url: str, model: str, spec: dict, answers: dict) -> Outcome:
    kind, start = spec["kind"], time.monotonic()
    try:
        with httpx.Client(base_url=url, timeout=600) as client:
            if kind == "bad_request":
                response = client.post("/v1/chat/completions" if b"messages" in spec["body"] else "/v1/completions",
                                       content=spec["body"].replace(b"MODEL", model.encode()),
                                       headers={"Content-Type": "application/json"})
                return Outcome(kind, response.status_code, time.monotonic() - start,
                               response.status_code == spec["expected"])
            chat = kind.startswith("chat") or kind == "dropped_stream"
            body = {"model": model, "max_tokens": spec["max_tokens"], "stream": "stream" in kind}
            if chat:
                body["messages"] = [{"role": "user", "content": spec["question"]}]
                key = ("chat", spec["question"], spec["max_tokens"])
            else:
                body["prompt"] = spec["prompt"]
                key = ("completion", spec["prompt"], spec["max_tokens"])
            path = "/v1/chat/completions" if chat else "/v1/completions"
            if not body["stream"]:
                response = client.post(path, json=body)
                if response.status_code != 200:
                    return Outcome(kind, response.status_code, time.monotonic() - start)
                choice = response.json()["choices"][0]
                text = choice["message"]["content"] if chat else choice["text"]
                return Outcome(kind, 200, time.monotonic() - start, text == answers[key])
            with client.stream("POST", path, json=body) as response:
                if response.status_code != 200:
                    response.read()
                    return Outcome(kind, response.status_code, time.monotonic() - start)
                text, events = "", 0
                for line in response.iter_lines():
                    if not line.startswith("data: ") or line == "data: [DONE]":
                        continue
                    events += 1
                    if kind == "dropped_stream" and events == 3:
                        return Outcome(kind, "dropped", time.monotonic() - start)
                    choice = json.loads(line[6:])["choices"][0]
                    text += (choice["delta"].get("content") or "") if chat else choice["text"]
                return Outcome(kind, 200, time.monotonic() - start, text == answers[key])
    except httpx.HTTPError as exc:
        return Outcome(kind, type(exc).__name__, time.monotonic() - start)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", type=Path, nargs="?", default=REPO / "results/smollm2")
    parser.add_argument("--requests", type=int, default=1500)
    parser.add_argument("--clients", type=int, default=6)
    parser.add_argument("--queue-size", type=int, default=4)
    parser.add_argument("--minutes", type=float, default=5.0)
    args = parser.parse_args(argv)
    model = read_manifest(args.root)["name"]
    print(f"runtime answers for {len(QUESTIONS) + len(PROMPTS)} prompts ...", flush=True)
    answers = expected_answers(args.root)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log_path = Path(tempfile.gettempdir()) / f"nitro-soak-{port}.log"
    print(f"server on {url}, its log in {log_path}", flush=True)
    log = open(log_path, "w")
    server = subprocess.Popen([sys.executable, "-m", "nitro.cli", "serve", str(args.root), "--port", str(port),
                               "--queue-size", str(args.queue_size)], stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{url}/health", timeout=5).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.5)
        rss: list[tuple[float, float]] = []
        done = threading.Event()
        start = time.monotonic()

        def sample():
            while not done.is_set():
                rss.append((time.monotonic() - start, resident_mb(server.pid)))
                done.wait(2)

        sampler = threading.Thread(target=sample)
        sampler.start()
        stop_at = start + 60 * args.minutes
        plan = requests_plan(args.requests)
        def client(spec: dict) -> Outcome | None:
            if time.monotonic() >= stop_at:
                return None
            outcome = send(url, model, spec, answers)
            if outcome.status == 429:  # refused while the queue is full: back off, as a client would
                time.sleep(1)
            return outcome

        with ThreadPoolExecutor(args.clients) as pool:
            outcomes = [o for o in pool.map(client, plan) if o]
        done.set()
        sampler.join()
        elapsed = time.monotonic() - start
        rss.append((elapsed, resident_mb(server.pid)))
    finally:
        server.terminate()
        server.wait(60)
    return report(outcomes, rss, elapsed, args)


def report(outcomes: list[Outcome], rss: list[tuple[float, float]], elapsed: float, args) -> int:
    print(f"\n{len(outcomes)} requests in {elapsed:.0f} s from {args.clients} clients (queue size {args.queue_size})")
    counts = Counter((o.kind, o.status) for o in outcomes)
    print(f"{'kind':<20}{'status':>10}{'count':>8}")
    for (kind, status), n in sorted(counts.items(), key=lambda kv: (kv[0][0], str(kv[0][1]))):
        print(f"{kind:<20}{status!s:>10}{n:>8}")
    answered = sorted(o.seconds for o in outcomes if o.status == 200)
    p50, p99 = statistics.quantiles(answered, n=100)[49], statistics.quantiles(answered, n=100)[98]
    print(f"latency of 200 answers: p50 {p50:.2f} s, p99 {p99:.2f} s ({len(answered)} answers)")
    first = [mb for t, mb in rss if t <= 60]
    last = [mb for t, mb in rss if t >= rss[-1][0] - 60]
    growth = statistics.mean(last) / statistics.mean(first) - 1
    print(f"server RSS: start {rss[0][1]:.0f} MB, end {rss[-1][1]:.0f} MB; first minute mean "
          f"{statistics.mean(first):.0f} MB, last minute mean {statistics.mean(last):.0f} MB ({growth:+.1%})")
    server_errors = sum(n for (_, status), n in counts.items() if isinstance(status, int) and status >= 500)
    failed = sum(n for (_, status), n in counts.items() if isinstance(status, str) and status != "dropped")
    wrong = [o for o in outcomes if o.correct is False]
    checks = {
        "no 5xx": server_errors == 0,
        "no failed connection": failed == 0,
        "every greedy answer equals the runtime's, every bad request its status": not wrong,
        "RSS growth under 10 % from the first minute to the last": growth < 0.10,
    }
    for name, ok in checks.items():
        print(f"  {'met' if ok else 'MISSED':>6}  {name}")
    return 0 if all(checks.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
