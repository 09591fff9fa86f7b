"""`nitro generate ROOT PROMPT`: stream a completion of PROMPT (or with --chat, the answer to it as a chat message)
to stdout, then a summary line to stderr."""
from __future__ import annotations

import sys

from . import add_model_argument, add_sampling_arguments, load_generator, print_stream, sampling_params


def add_arguments(parser):
    add_model_argument(parser)
    parser.add_argument("prompt", help="the text to continue (with --chat: the message to answer)")
    parser.add_argument("--chat", action="store_true",
                        help="send the prompt as a user message through the model's chat template, as an instruct "
                             "model expects")
    parser.add_argument("--system", default=None, metavar="TEXT", help="with --chat: a system prompt")
    add_sampling_arguments(parser, max_new_tokens=128)


def run(args) -> int:
    params = sampling_params(args)
    if args.system and not args.chat:
        raise ValueError("--system goes with --chat")
    gen = load_generator(args.root, args.check_hashes, args.draft_model)
    if args.chat:
        if not gen.tokenizer.chat_template:
            raise ValueError(f"{args.root} has no chat template: it is not a chat model; leave out --chat")
        system = [{"role": "system", "content": args.system}] if args.system else []
        ids = gen.chat_ids(system + [{"role": "user", "content": args.prompt}])
    else:
        ids = gen.encode(args.prompt)
    stream = gen.stream(ids, params)
    if not print_stream(stream):
        return 130
    completion = stream.completion
    hint = ""
    if not completion.token_ids and not args.chat and gen.tokenizer.chat_template:
        hint = (" The model ended at once: it is a chat model, which answers messages in its chat template; try "
                "nitro generate --chat.")
    print(completion.summary() + hint, file=sys.stderr)
    return 0
