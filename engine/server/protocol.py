"""Request and response shapes of the OpenAI-compatible API: a request body checked field by field into a
`Generation` (what the engine is asked for), and the bodies and stream chunks sent back.

Fields the server cannot honour with a non-default value (`n` > 1, tools, logprobs, ...) are refused by name;
fields that only tune sampling the engine does not have (top_p, penalties, user, metadata) are ignored, as
llama.cpp's server does. Message text is never read as a path: the server opens no file a request names."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, replace

from engine.params import Policy, SkvParams
from engine.server.errors import ApiError, invalid

MAX_STOPS = 4
SKV_FIELDS = ("policy", "budget", "sink", "ring", "ignore_eos")


@dataclass(frozen=True, slots=True)
class SkvOverrides:
    """The request's `skv` extension: SentenceKV parameters for this request (None: the server's)."""

    policy: str | None = None
    budget: int | None = None
    sink: int | None = None
    ring: int | None = None
    ignore_eos: bool = False

    def apply(self, base: SkvParams) -> SkvParams:
        changes: dict = {
            k: getattr(self, k) for k in ("budget", "sink", "ring") if getattr(self, k) is not None
        }
        try:
            if self.policy is not None:
                changes["policy"] = Policy.parse(self.policy)
            return replace(base, **changes)
        except ValueError as e:
            raise invalid(f"skv: {e}", "skv") from None


@dataclass(frozen=True, slots=True)
class Generation:
    """One checked request: the system text (a document of the context), the earlier (user, assistant) turns,
    the question, and how to answer it."""

    kind: str  # "chat" or "completion"
    model: str
    system: str
    history: tuple[tuple[str, str], ...]
    question: str
    max_tokens: int | None
    temperature: float | None
    seed: int | None
    stop: tuple[str, ...]
    stream: bool
    include_usage: bool
    skv: SkvOverrides


# name -> is the value one the server cannot honour
_CHAT_UNSUPPORTED = {
    "n": lambda v: v not in (None, 1),
    "tools": bool,
    "tool_choice": lambda v: v not in (None, "none", "auto"),
    "functions": bool,
    "function_call": lambda v: v not in (None, "none", "auto"),
    "logprobs": bool,
    "top_logprobs": lambda v: v not in (None, 0),
    "logit_bias": bool,
    "response_format": lambda v: v is not None and not (isinstance(v, dict) and v.get("type") == "text"),
    "audio": lambda v: v is not None,
    "modalities": lambda v: v not in (None, ["text"]),
    "prediction": lambda v: v is not None,
}
_COMPLETION_UNSUPPORTED = {
    "n": lambda v: v not in (None, 1),
    "best_of": lambda v: v not in (None, 1),
    "echo": bool,
    "suffix": bool,
    "logprobs": lambda v: v not in (None, 0),
    "logit_bias": bool,
}


def _refuse_unsupported(body: dict, table: dict) -> None:
    names = [name for name, bad in table.items() if bad(body.get(name))]
    if names:
        raise ApiError(
            400,
            f"this server does not support {', '.join(names)}: it generates one plain-text answer; "
            f"drop {'it' if len(names) == 1 else 'them'} from the request",
            "unsupported_parameter",
            names[0],
        )


def _typed(body: dict, name: str, kinds: tuple[type, ...], what: str, default=None, param: str | None = None):
    """body[name] when it is of one of `kinds` (a bool is not a number here), default when absent or null."""
    value = body.get(name)
    if value is None:
        return default
    if isinstance(value, bool) and bool not in kinds or not isinstance(value, kinds):
        raise invalid(
            f"{param or name} must be {what}, got {type(value).__name__}", param or name, "invalid_type"
        )
    return value


def _required(body: dict, name: str, kinds: tuple[type, ...], what: str):
    if body.get(name) is None:
        raise invalid(f"{name} is required", name, "missing_required_parameter")
    return _typed(body, name, kinds, what)


def _common(body: dict) -> dict:
    """The fields chat and completions share, checked."""
    model = _required(body, "model", (str,), "a string")
    max_tokens = _typed(body, "max_tokens", (int,), "an integer")
    max_tokens = _typed(body, "max_completion_tokens", (int,), "an integer", max_tokens)
    if max_tokens is not None and max_tokens < 1:
        raise invalid(f"max_tokens must be at least 1, got {max_tokens}", "max_tokens")
    temperature = _typed(body, "temperature", (int, float), "a number")
    if temperature is not None and not 0 <= temperature <= 2:
        raise invalid(f"temperature must be between 0 and 2, got {temperature}", "temperature")
    seed = _typed(body, "seed", (int,), "an integer")
    stop = body.get("stop")
    if stop is None:
        stops: tuple[str, ...] = ()
    elif isinstance(stop, str):
        stops = (stop,)
    elif isinstance(stop, list) and all(isinstance(s, str) for s in stop):
        if len(stop) > MAX_STOPS:
            raise invalid(f"stop takes at most {MAX_STOPS} strings, got {len(stop)}", "stop")
        stops = tuple(stop)
    else:
        raise invalid("stop must be a string or a list of strings", "stop", "invalid_type")
    stream = _typed(body, "stream", (bool,), "a boolean", False)
    options = _typed(body, "stream_options", (dict,), "an object", {})
    include_usage = _typed(
        options, "include_usage", (bool,), "a boolean", False, "stream_options.include_usage"
    )
    return {
        "model": model,
        "max_tokens": max_tokens,
        "temperature": None if temperature is None else float(temperature),
        "seed": seed,
        "stop": tuple(s for s in stops if s),
        "stream": stream,
        "include_usage": include_usage,
        "skv": _skv(body),
    }


def _skv(body: dict) -> SkvOverrides:
    raw = _typed(body, "skv", (dict,), "an object", {})
    unknown = sorted(set(raw) - set(SKV_FIELDS))
    if unknown:
        raise invalid(
            f"unknown skv field{'s' if len(unknown) > 1 else ''} {', '.join(unknown)}: the extension "
            f"takes {', '.join(SKV_FIELDS)}",
            "skv",
        )
    ints = {k: _typed(raw, k, (int,), "an integer", None, f"skv.{k}") for k in ("budget", "sink", "ring")}
    return SkvOverrides(
        _typed(raw, "policy", (str,), "a string", None, "skv.policy"),
        **ints,
        ignore_eos=_typed(raw, "ignore_eos", (bool,), "a boolean", False, "skv.ignore_eos"),
    )


def _content(message: dict, i: int) -> str:
    """A message's text: a string or a list of text parts."""
    param = f"messages[{i}].content"
    content = message.get("content")
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise invalid(f"{param} must be a string or a list of content parts", param, "invalid_type")
    texts = []
    for part in content:
        if not isinstance(part, dict) or not isinstance(part.get("type"), str):
            raise invalid(f"{param} must hold content parts with a type", param, "invalid_type")
        if part["type"] != "text":
            raise ApiError(
                400,
                f"this server reads text only, got a {part['type']} part in {param}",
                "unsupported_parameter",
                param,
            )
        if not isinstance(part.get("text"), str):
            raise invalid(f"a text part of {param} must have a string text", param, "invalid_type")
        texts.append(part["text"])
    return "".join(texts)


def parse_chat(body: dict) -> Generation:
    """A chat completion request: system (and developer) messages become the context's "system" document; the
    rest must alternate user and assistant (consecutive messages of one role are joined) and end with the user."""
    _refuse_unsupported(body, _CHAT_UNSUPPORTED)
    common = _common(body)
    messages = _required(body, "messages", (list,), "a list of messages")
    if not messages:
        raise invalid("messages must not be empty", "messages")
    system: list[str] = []
    turns: list[list] = []  # [role, text]
    for i, m in enumerate(messages):
        if not isinstance(m, dict):
            raise invalid(f"messages[{i}] must be an object", f"messages[{i}]", "invalid_type")
        role = m.get("role")
        if not isinstance(role, str):
            raise invalid(
                f"messages[{i}].role is required", f"messages[{i}].role", "missing_required_parameter"
            )
        if m.get("tool_calls") or m.get("function_call"):
            raise ApiError(
                400,
                f"this server does not support tool calls (messages[{i}])",
                "unsupported_parameter",
                f"messages[{i}].tool_calls",
            )
        text = _content(m, i)
        if role in ("system", "developer"):
            system.append(text)
        elif role in ("user", "assistant"):
            if turns and turns[-1][0] == role:
                turns[-1][1] += "\n\n" + text
            else:
                turns.append([role, text])
        else:
            raise ApiError(
                400,
                f"messages[{i}] has the role {role!r}: this server takes system, user and assistant messages",
                "unsupported_parameter",
                f"messages[{i}].role",
            )
    if not turns or turns[0][0] != "user":
        raise invalid(
            "the conversation must start with a user message (after the system messages)", "messages"
        )
    if turns[-1][0] != "user":
        raise invalid("the last message must be the user's: it is the one answered", "messages")
    history = tuple((turns[i][1], turns[i + 1][1]) for i in range(0, len(turns) - 1, 2))
    return Generation("chat", common["model"], "\n\n".join(system), history, turns[-1][1], **_rest(common))


def parse_completion(body: dict) -> Generation:
    """A (legacy) completion request: its prompt is answered as one user message in the model's prompt format."""
    _refuse_unsupported(body, _COMPLETION_UNSUPPORTED)
    common = _common(body)
    prompt = body.get("prompt")
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str):
        prompt = prompt[0]
    if prompt is None:
        raise invalid("prompt is required", "prompt", "missing_required_parameter")
    if not isinstance(prompt, str):
        raise invalid(
            "prompt must be one string (token arrays and several prompts are not supported)",
            "prompt",
            "invalid_type",
        )
    return Generation("completion", common["model"], "", (), prompt, **_rest(common))


def _rest(common: dict) -> dict:
    return {k: v for k, v in common.items() if k != "model"}


# ------------------------------------------------------------------------------------------- responses

FINISH = {"eos": "stop", "stop": "stop", "max_tokens": "length"}


@dataclass(frozen=True, slots=True)
class Outcome:
    """An answered request: the answer and what it cost."""

    text: str
    reason: str  # the engine's: "eos", "stop", "max_tokens"
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int
    skv: dict  # the response's extension: retrieved, memory, stats

    @property
    def finish_reason(self) -> str:
        return FINISH.get(self.reason, "stop")

    def usage(self) -> dict:
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.prompt_tokens + self.completion_tokens,
            "prompt_tokens_details": {"cached_tokens": self.cached_tokens},
        }


class Reply:
    """The bodies of one response (a whole one, or the chunks of a stream), with one id and timestamp."""

    def __init__(self, gen: Generation, model: str) -> None:
        self.chat = gen.kind == "chat"
        self.id = ("chatcmpl-" if self.chat else "cmpl-") + uuid.uuid4().hex[:24]
        self.created = int(time.time())
        self.model = model

    def _head(self, obj: str) -> dict:
        return {
            "id": self.id,
            "object": obj,
            "created": self.created,
            "model": self.model,
            "system_fingerprint": None,
        }

    def whole(self, out: Outcome) -> dict:
        if self.chat:
            choice = {
                "index": 0,
                "message": {"role": "assistant", "content": out.text},
                "finish_reason": out.finish_reason,
                "logprobs": None,
            }
        else:
            choice = {"index": 0, "text": out.text, "finish_reason": out.finish_reason, "logprobs": None}
        return {
            **self._head("chat.completion" if self.chat else "text_completion"),
            "choices": [choice],
            "usage": out.usage(),
            "skv": out.skv,
        }

    def chunk(
        self,
        text: str | None = None,
        first: bool = False,
        out: Outcome | None = None,
        usage_only: bool = False,
    ) -> dict:
        """A stream chunk: the opening one (the role), a piece of text, the closing one (finish reason and the
        `skv` extension), or the usage chunk (no choices) that stream_options.include_usage asks for."""
        body = self._head("chat.completion.chunk" if self.chat else "text_completion")
        if usage_only:
            assert out is not None
            return {**body, "choices": [], "usage": out.usage()}
        finish = out.finish_reason if out is not None else None
        if self.chat:
            delta: dict = {"role": "assistant", "content": ""} if first else {}
            if text:
                delta["content"] = text
            choice = {"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}
        else:
            choice = {"index": 0, "text": text or "", "finish_reason": finish, "logprobs": None}
        body["choices"] = [choice]
        if out is not None:
            body["skv"] = out.skv
        return body
