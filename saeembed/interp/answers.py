"""What comes back from the LLM server: one request's result, and the checks that keep a malformed
answer (not JSON, content that is a number, list or object, token counts that are text or negative)
a failed item with a reason instead of a crash. Used by saeembed.interp.llm."""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass


class MalformedAnswer(ValueError):
    """An answer that is not the JSON the prompt asked for."""


@dataclass
class LLMResult:
    """One request's outcome. `error` is None on success; `cached` answers cost nothing."""

    text: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached: bool = False
    retries: int = 0
    error: str | None = None
    budget: bool = False  # not sent because the budget ran out
    timed_out: bool = False  # no answer: every attempt timed out, or the server could not be reached
    usage_estimated: bool = False  # the server's token counts were missing or unreadable

    @property
    def ok(self) -> bool:
        return self.error is None

    def json(self) -> dict:
        """The answer parsed as a JSON object; MalformedAnswer if it is not one."""
        if self.error is not None:
            raise MalformedAnswer(self.error)
        return parse_json_answer(self.text)


def parse_json_answer(text: str) -> dict:
    """A JSON object from a model's answer, tolerating code fences and prose around it."""
    if not isinstance(text, str):
        raise MalformedAnswer(f"answer is a {type(text).__name__}, not text")
    body = text.strip()
    fence = re.search(r"```(?:json)?\s*(.*?)```", body, re.S)
    if fence:
        body = fence.group(1).strip()
    try:
        out = json.loads(body)
    except RecursionError:
        raise MalformedAnswer("answer is JSON nested too deeply") from None
    except json.JSONDecodeError:
        start, end = body.find("{"), body.rfind("}")
        if start < 0 or end <= start:
            raise MalformedAnswer(f"answer is not JSON: {text[:80]!r}") from None
        try:
            out = json.loads(body[start : end + 1])
        except (json.JSONDecodeError, RecursionError):
            raise MalformedAnswer(f"answer is not JSON: {text[:80]!r}") from None
    if not isinstance(out, dict):
        raise MalformedAnswer(f"answer is JSON but not an object: {text[:80]!r}")
    return out



def describe(e: Exception) -> str:
    status = getattr(e, "status_code", None)
    msg = str(getattr(e, "message", None) or e).splitlines()[0][:200]
    return f"HTTP {status}: {msg}" if status else msg


def usable(text, check) -> bool:
    """Whether an answer passes its check (and so may be cached)."""
    if not isinstance(text, str):
        return False
    if check is None:
        return True
    try:
        check(text)
    except (MalformedAnswer, ValueError, TypeError, KeyError, AttributeError):
        return False
    return True


def token_count(value) -> int | None:
    """A token count as a server reported it, or None when it is missing or unusable (text, negative,
    fractional, not finite, absurd)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    if isinstance(value, float) and not (math.isfinite(value) and value.is_integer()):
        return None
    return int(value) if 0 <= value < 10**12 else None


def result_of(resp, payload: dict, retries: int) -> LLMResult:
    try:
        text = resp.choices[0].message.content
    except (AttributeError, IndexError, TypeError):
        return LLMResult(error="response has no message", retries=retries)
    usage = getattr(resp, "usage", None)
    prompt = token_count(getattr(usage, "prompt_tokens", None))
    completion = token_count(getattr(usage, "completion_tokens", None))
    estimated = prompt is None or completion is None  # missing (some servers omit usage) or unreadable
    if prompt is None:  # estimate: 4 characters a token
        prompt = sum(len(str(m.get("content", ""))) for m in payload["messages"]) // 4
    if completion is None:
        completion = len(text) // 4 if isinstance(text, str) else 0
    if text is None:
        return LLMResult(error="empty answer", prompt_tokens=prompt, completion_tokens=completion, retries=retries,
                         usage_estimated=estimated)
    if not isinstance(text, str):  # JSON content 5, [...] or {...}: not a chat answer
        return LLMResult(error=f"malformed answer: the message content is a {type(text).__name__}, not text",
                         prompt_tokens=prompt, completion_tokens=completion, retries=retries,
                         usage_estimated=estimated)
    return LLMResult(text=text, prompt_tokens=prompt, completion_tokens=completion, retries=retries,
                     usage_estimated=estimated)
