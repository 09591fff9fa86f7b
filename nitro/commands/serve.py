"""`nitro serve ROOT [ROOT ...]`: serve built models over an OpenAI-compatible HTTP API with uvicorn."""
from __future__ import annotations

import argparse
import ipaddress
import logging
import os
from pathlib import Path

from ..artifacts import COMPILED, ArtifactError
from . import add_model_argument, load_generator

MAX_REQUEST_BYTES = 1 << 20  # 1 MiB, some 250k tokens of text


def at_least(minimum: int, what: str):
    """An argparse type: a whole number no smaller than `minimum`."""
    def parse(text: str) -> int:
        value = int(text)
        if value < minimum:
            raise argparse.ArgumentTypeError(f"{value}: {what} must be {minimum} or more")
        return value
    return parse


def add_arguments(parser: argparse.ArgumentParser):
    add_model_argument(parser)
    parser.add_argument("more_roots", nargs="*", type=Path, metavar="ROOT",
                        help="more built models to serve, each under its build's name (requests choose by `model`)")
    parser.add_argument("--memory-mb", type=at_least(0, "the memory budget"), default=None,
                        help="models after the first are loaded at start while their compiled weights fit in this "
                             "many MB, the others when first asked for (default: half the memory available)")
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to listen on (default 127.0.0.1: this machine only; 0.0.0.0: every network)")
    parser.add_argument("--port", type=int, default=8000, help="TCP port (default 8000)")
    parser.add_argument("--api-key", default=os.environ.get("NITRO_API_KEY"),
                        help="require 'Authorization: Bearer KEY' on every request but /health "
                             "(default: $NITRO_API_KEY, which keeps the key out of the process list)")
    parser.add_argument("--queue-size", type=at_least(0, "the queue size"), default=32,
                        help="requests that may wait while one generates; more are refused with 429 (default 32)")
    parser.add_argument("--max-request-bytes", type=at_least(1024, "the request size limit"),
                        default=MAX_REQUEST_BYTES,
                        help=f"larger request bodies are refused with 413 before they are read "
                             f"(default {MAX_REQUEST_BYTES})")


def is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def run(args) -> int:
    import psutil
    import uvicorn

    from ..artifacts import read_manifest, verify
    from ..serve.app import Loaded, Slot, create_app

    logging.basicConfig(level=logging.INFO, format="%(levelname)s:     %(message)s")
    log = logging.getLogger("nitro.serve")
    slots = []
    budget = args.memory_mb * 2**20 if args.memory_mb is not None else psutil.virtual_memory().available / 2
    for root in [args.root, *args.more_roots]:
        manifest = read_manifest(root)
        if any(slot.name == manifest["name"] for slot in slots):
            raise ValueError(f"{root}: a model named {manifest['name']!r} is served already")
        slot = Slot(Path(root), manifest, args.check_hashes)
        weights = sum(f["bytes"] for rel, f in manifest["files"].items() if rel.startswith(COMPILED))
        if not slots or weights <= budget:  # the first always; the others while they fit in the budget
            slot.loaded = Loaded.of(load_generator(root, args.check_hashes))  # Model checks the files
            budget -= weights
        else:  # loaded later: its files are there with their sizes now, or the server does not start
            problems = verify(root, manifest["files"], hashes=False)
            if problems:
                raise ArtifactError(problems[0])
        slots.append(slot)
    app = create_app(slots, api_key=args.api_key, queue_size=args.queue_size,
                     max_request_bytes=args.max_request_bytes)
    if not args.api_key and not is_loopback(args.host):
        log.warning("listening on %s without an API key: anyone who can reach it can use the model", args.host)
    for slot in slots:
        log.info("serving %s (context %d tokens%s)", slot.name, slot.manifest["max_seq_len"],
                 "" if slot.loaded else "; loaded when first asked for: memory is short")
    log.info("at http://%s:%d/v1%s; kill -HUP %d reloads the builds after a rebuild", args.host, args.port,
             "; API key required" if args.api_key else "", os.getpid())
    uvicorn.run(app, host=args.host, port=args.port, log_level="info")
    return 0
