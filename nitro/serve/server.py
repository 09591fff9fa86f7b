"""`nitro serve ROOT`: load a built model and serve it over an OpenAI-compatible HTTP API with uvicorn."""
from __future__ import annotations

import argparse
import ipaddress
import logging
import os
import sys
from pathlib import Path


def queue_size(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"{value}: the queue size must be 0 or more")
    return value


def add_arguments(parser: argparse.ArgumentParser):
    parser.add_argument("root", type=Path, help="a built model: the folder holding manifest.json, e.g. results/smollm2")
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to listen on (default 127.0.0.1: this machine only; 0.0.0.0: every network)")
    parser.add_argument("--port", type=int, default=8000, help="TCP port (default 8000)")
    parser.add_argument("--api-key", default=os.environ.get("NITRO_API_KEY"),
                        help="require 'Authorization: Bearer KEY' on every request but /health "
                             "(default: $NITRO_API_KEY, which keeps the key out of the process list)")
    parser.add_argument("--queue-size", type=queue_size, default=32,
                        help="requests that may wait while one generates; more are refused with 429 (default 32)")


def is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def run(args) -> int:
    import uvicorn
    from tqdm import tqdm

    from nitro.runtime import ArtifactError, Model
    from nitro.runtime.generate import Generator

    from .app import create_app

    logging.basicConfig(level=logging.INFO, format="%(levelname)s:     %(message)s")
    log = logging.getLogger("nitro.serve")
    try:
        model = Model(args.root, progress=lambda chunks: tqdm(chunks, desc=f"loading {args.root}", unit="chunk"))
    except ArtifactError as exc:
        print(f"nitro serve: {exc}", file=sys.stderr)
        return 1
    name = model.manifest["name"]
    app = create_app(Generator(model), name, api_key=args.api_key, queue_size=args.queue_size)
    if not args.api_key and not is_loopback(args.host):
        log.warning("listening on %s without an API key: anyone who can reach it can use the model", args.host)
    log.info("serving %s (context %d tokens) at http://%s:%d/v1%s", name, model.max_seq_len, args.host, args.port,
             "; API key required" if args.api_key else "")
    uvicorn.run(app, host=args.host, port=args.port, log_level="info")
    return 0
