"""`nitro chat ROOT`: chat with a built model in the terminal. Answers stream to stdout; the prompt marker,
command replies and each answer's summary line go to stderr, so stdout holds only the conversation's answers."""
from __future__ import annotations

import sys

from . import add_model_argument, add_sampling_arguments, load_generator, print_stream, sampling_params

HELP = """commands:
  /reset        forget the conversation (the system prompt stays)
  /system TEXT  set the system prompt (no TEXT: the model's default); the conversation goes on
  /stats        tokens in the KV cache and the last answer's prefill count and speed
  /quit         leave (so does Ctrl-D)"""


def add_arguments(parser):
    add_model_argument(parser)
    add_sampling_arguments(parser, max_new_tokens=256)
    parser.add_argument("--system", default=None, metavar="TEXT", help="system prompt")


def run(args) -> int:
    from ..runtime.chat import ChatSession

    params = sampling_params(args)
    repl(ChatSession(load_generator(args.root, args.check_hashes, args.draft_model), system_prompt=args.system), params)
    return 0


def repl(session, params):
    """Read messages and commands from stdin until /quit, EOF or Ctrl-C."""
    try:
        import readline  # noqa: F401  line editing and history for input() on a terminal
    except ImportError:
        pass
    say(f"chatting with {session.gen.model.root} (max_seq_len {session.gen.model.max_seq_len}); /help for commands")
    while True:
        try:
            say("> ", end="")
            line = input().strip()
        except (EOFError, KeyboardInterrupt):
            say()
            return
        if line in ("/quit", "/exit"):
            return
        if line.startswith("/"):
            command(session, line)
        elif line:
            answer(session, line, params)


def command(session, line: str):
    name, _, text = line.partition(" ")
    if name == "/reset":
        session.reset()
        say("[conversation reset]")
    elif name == "/system":
        session.system_prompt = text.strip() or None
        say(f"[system prompt {'set' if session.system_prompt else 'cleared'}]")
    elif name == "/stats":
        last = session.last.summary() if session.last else "[no answer yet]"
        say(f"[{session.context_tokens} of {session.gen.model.max_seq_len} tokens in the KV cache, "
            f"{len(session.history) // 2} exchanges] last answer: {last}")
    else:
        say(HELP)


def answer(session, text: str, params):
    """Stream one answer. When the conversation no longer fits, say so and offer to reset and resend."""
    from ..runtime.chat import HistoryFull

    try:
        stream = session.send(text, params)
    except HistoryFull as exc:
        say(f"[{exc}]")
        if not session.history:  # the message alone is too long: a reset would not help
            return
        say("reset the conversation and send this message again? [y/N] ", end="")
        try:
            reply = input().strip().lower()
        except (EOFError, KeyboardInterrupt):
            return
        if reply in ("y", "yes"):
            session.reset()
            answer(session, text, params)
        return
    if not print_stream(stream):
        say("[answer interrupted; it is not kept in the conversation]")
        return
    used = session.context_tokens
    say(session.last.summary(context=f", context {used}/{session.gen.model.max_seq_len}"))


def say(text: str = "", end: str = "\n"):
    print(text, end=end, file=sys.stderr, flush=True)
