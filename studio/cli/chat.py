"""`mini-studio chat MODEL`: a streaming chat REPL on stdin, or one answer with `--message`."""

from __future__ import annotations

import sys
from typing import Annotated, Any

import typer

from studio.cli.client import ApiClient, ApiError
from studio.cli.context import state
from studio.cli.output import err_console, error, print_json

# A model that is still starting makes the first request wait (about 30 s on a laptop's CPUs).
CHAT_TIMEOUT_S = 300.0
EXIT_WORDS = frozenset({"/exit", "/quit"})


def stream_answer(api: ApiClient, body: dict[str, Any]) -> str:
    """Stream one chat completion's text to stdout as it comes; return the whole text. Raises: ApiError."""
    pieces: list[str] = []
    with api.stream(
        "POST",
        "/v1/chat/completions",
        json_body={**body, "stream": True},
        timeout_s=max(api.timeout_s, CHAT_TIMEOUT_S),
    ) as chunks:
        for chunk in chunks:
            for choice in chunk.get("choices") or []:
                text = (choice.get("delta") or {}).get("content") or ""
                if text and choice.get("index", 0) == 0:
                    pieces.append(text)
                    sys.stdout.write(text)
                    sys.stdout.flush()
    sys.stdout.write("\n")
    sys.stdout.flush()
    return "".join(pieces)


def _repl(api: ApiClient, model: str, base: dict[str, Any], system: str | None) -> None:
    """Read user turns from stdin until EOF or /exit; `/reset` forgets the conversation."""
    interactive = sys.stdin.isatty()
    if interactive:
        err_console.print(f"chatting with {model}: /reset forgets, /exit or Ctrl-D ends")
    start: list[dict[str, str]] = [{"role": "system", "content": system}] if system else []
    messages = list(start)
    while True:
        try:
            line = input("you> ") if interactive else sys.stdin.readline()
        except EOFError:
            break
        if not interactive and line == "":
            break  # end of piped input
        text = line.strip()
        if not text:
            continue
        if text in EXIT_WORDS:
            break
        if text == "/reset":
            messages = list(start)
            continue
        messages.append({"role": "user", "content": text})
        try:
            answer = stream_answer(api, {**base, "messages": messages})
        except ApiError as exc:
            error(exc.describe())
            messages.pop()
            continue
        except KeyboardInterrupt:
            # Ctrl-C stops this answer, not the conversation (Ctrl-D or /exit ends it).
            sys.stdout.write("\n")
            messages.pop()
            continue
        messages.append({"role": "assistant", "content": answer})


def chat(
    ctx: typer.Context,
    model: Annotated[str, typer.Argument(help="A deployed model (base or fine-tuned).")],
    message: Annotated[
        str | None,
        typer.Option("--message", "-m", help="Send this one message, print the answer, exit ('-': stdin)."),
    ] = None,
    system: Annotated[str | None, typer.Option(help="A system message first.")] = None,
    max_tokens: Annotated[int | None, typer.Option(min=1)] = None,
    temperature: Annotated[float | None, typer.Option(min=0)] = None,
    top_p: Annotated[float | None, typer.Option(min=0, max=1)] = None,
    seed: Annotated[int | None, typer.Option()] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="With --message: print the whole completion as JSON (no stream).")
    ] = False,
) -> None:
    """Chat with a deployed model: a REPL reading stdin, or one answer with --message."""
    if as_json and message is None:
        raise typer.BadParameter("--json needs --message", param_hint="--json")
    sampling = {"max_tokens": max_tokens, "temperature": temperature, "top_p": top_p, "seed": seed}
    base: dict[str, Any] = {"model": model, **{k: v for k, v in sampling.items() if v is not None}}
    with state(ctx).client() as api:
        if message is None:
            _repl(api, model, base, system)
            return
        text = sys.stdin.read() if message == "-" else message
        messages = [{"role": "system", "content": system}] if system else []
        messages.append({"role": "user", "content": text})
        if as_json:
            print_json(
                api.post(
                    "/v1/chat/completions",
                    {**base, "messages": messages},
                    timeout_s=max(api.timeout_s, CHAT_TIMEOUT_S),
                )
            )
        else:
            stream_answer(api, {**base, "messages": messages})
