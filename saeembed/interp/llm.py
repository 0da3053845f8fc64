"""The LLM client: the `openai` SDK against any OpenAI-compatible server, made safe for long runs.

- every request is cached in the store's `llm_cache` table by a hash of what was asked (model, server,
  messages, sampling settings), so a re-run costs nothing;
- at most `concurrency` calls are in flight; 429, 5xx, timeouts and dropped connections are retried
  with exponential backoff and full jitter (a server's Retry-After is honoured up to `max_backoff`);
- tokens and an estimated cost are counted; `max_calls` / `max_cost` stop the run cleanly: requests past
  the budget come back as failed results marked `budget`, nothing raises;
- an answer that is not the JSON asked for is a failed result for that item, never a crash;
- the key comes from the config, the environment or the OS keyring and is never written to the store or to logs.

The store is only touched from the calling thread (DuckDB connections are not shared across threads);
worker threads only do HTTP.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import re
import time
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from urllib.parse import urlsplit, urlunsplit

from saeembed.errors import InputError, SaeembedError
from saeembed.store import Store

log = logging.getLogger("saeembed.llm")

KEY_ENV = ("SAEEMBED_LLM_KEY", "OPENAI_API_KEY")
BASE_URL_ENV = ("SAEEMBED_LLM_BASE_URL", "OPENAI_BASE_URL")

# USD per million tokens (input, output): list prices of common models, used for the cost estimate
# and the --max-cost budget. Unknown models use DEFAULT_PRICE (deliberately not cheap, so a budget
# errs on the safe side); pass price_in/price_out for exact figures (0 for a local server).
PRICES = {
    "gpt-4o-mini": (0.15, 0.60),
    "gpt-4o": (2.50, 10.0),
    "gpt-4.1": (2.00, 8.00),
    "gpt-4.1-mini": (0.40, 1.60),
    "gpt-4.1-nano": (0.10, 0.40),
    "gpt-5": (1.25, 10.0),
    "gpt-5-mini": (0.25, 2.00),
    "gpt-5-nano": (0.05, 0.40),
}
DEFAULT_PRICE = (1.00, 4.00)


class LLMError(SaeembedError):
    """The LLM server refuses every call (bad key, unknown model, unreachable): stop the run."""


class MalformedAnswer(ValueError):
    """An answer that is not the JSON the prompt asked for."""


KEYRING = ("saeembed", "llm")  # `keyring set saeembed llm` stores a key in the OS keyring


def keyring_key() -> str | None:
    """The key from the OS keyring, when the optional `keyring` package is installed and holds one."""
    try:
        import keyring
    except ImportError:
        return None
    try:
        return keyring.get_password(*KEYRING) or None
    except Exception:  # no usable backend (headless machine): behave as if none were stored
        return None


@dataclass
class LLMConfig:
    model: str
    base_url: str | None = None  # None: $SAEEMBED_LLM_BASE_URL / $OPENAI_BASE_URL, else api.openai.com
    api_key: str | None = field(default=None, repr=False)  # None: $SAEEMBED_LLM_KEY / $OPENAI_API_KEY
    concurrency: int = 4
    max_retries: int = 5
    timeout: float = 60.0
    backoff: float = 1.0  # first retry waits up to this many seconds; doubles each retry
    max_backoff: float = 30.0
    temperature: float = 0.0
    max_tokens: int = 1024
    json_mode: bool = True  # ask for response_format=json_object (dropped if the server refuses it)
    max_calls: int | None = None  # uncached calls allowed in this client's life
    max_cost: float | None = None  # USD, estimated
    price_in: float | None = None  # USD per million prompt tokens
    price_out: float | None = None

    def prices(self) -> tuple[float, float]:
        known = PRICES.get(self.model) or PRICES.get(self.model.split("/")[-1]) or DEFAULT_PRICE
        return (self.price_in if self.price_in is not None else known[0],
                self.price_out if self.price_out is not None else known[1])

    def resolved_base_url(self) -> str | None:
        return self.base_url or next((os.environ[k] for k in BASE_URL_ENV if os.environ.get(k)), None)

    def resolved_key(self) -> str:
        key = self.api_key or next((os.environ[k] for k in KEY_ENV if os.environ.get(k)), None) or keyring_key()
        if key:
            return key
        if self.resolved_base_url():  # local servers (vLLM, llama.cpp, Ollama) usually need no key
            return "no-key"
        raise InputError(
            "no API key for the LLM: set SAEEMBED_LLM_KEY or OPENAI_API_KEY (or `keyring set saeembed llm`), "
            "or point --base-url at a local "
            "OpenAI-compatible server; without --llm, labels are made offline"
        )


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

    @property
    def ok(self) -> bool:
        return self.error is None

    def json(self) -> dict:
        """The answer parsed as a JSON object; MalformedAnswer if it is not one."""
        if self.error is not None:
            raise MalformedAnswer(self.error)
        return parse_json_answer(self.text or "")


@dataclass
class Usage:
    calls: int = 0  # sent to the server (retries not counted)
    cached: int = 0
    failed: int = 0
    retries: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost: float = 0.0
    budget_stopped: bool = False

    def to_dict(self) -> dict:
        return {k: (round(v, 6) if isinstance(v, float) else v) for k, v in self.__dict__.items()}


def parse_json_answer(text: str) -> dict:
    """A JSON object from a model's answer, tolerating code fences and prose around it."""
    body = text.strip()
    fence = re.search(r"```(?:json)?\s*(.*?)```", body, re.S)
    if fence:
        body = fence.group(1).strip()
    try:
        out = json.loads(body)
    except json.JSONDecodeError:
        start, end = body.find("{"), body.rfind("}")
        if start < 0 or end <= start:
            raise MalformedAnswer(f"answer is not JSON: {text[:80]!r}") from None
        try:
            out = json.loads(body[start : end + 1])
        except json.JSONDecodeError:
            raise MalformedAnswer(f"answer is not JSON: {text[:80]!r}") from None
    if not isinstance(out, dict):
        raise MalformedAnswer(f"answer is JSON but not an object: {text[:80]!r}")
    return out


def _clean_url(url: str | None) -> str | None:
    """The server address without credentials or query (it goes into the stored request)."""
    if not url:
        return None
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port:
        host += f":{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path.rstrip("/"), "", ""))


class LLMClient:
    """Cached, budgeted, retrying chat completions. Use `chat_many` for batches (bounded concurrency)."""

    def __init__(self, store: Store | None, config: LLMConfig, *, client=None):
        self.store = store
        self.config = config
        self.usage = Usage()
        self._reserved = 0.0  # estimated cost of calls in flight
        self._json_mode = config.json_mode
        if client is None:
            import openai

            client = openai.OpenAI(
                api_key=config.resolved_key(), base_url=config.resolved_base_url(),
                timeout=config.timeout, max_retries=0,  # retries are ours: counted, jittered, bounded
            )
        self._client = client
        self._server = _clean_url(config.resolved_base_url()) or "https://api.openai.com/v1"

    # --- public ------------------------------------------------------------------------------

    @property
    def stopped(self) -> bool:
        return self.usage.budget_stopped

    def chat(self, messages: list[dict], **kw) -> LLMResult:
        return self.chat_many([messages], **kw)[0]

    def chat_many(self, requests: list[list[dict]], *, max_tokens: int | None = None) -> list[LLMResult]:
        """Answers for each list of messages, in order. Cached answers first; the rest are sent with at
        most `concurrency` in flight, stopping (without raising) where the budget ends."""
        payloads = [self._payload(m, max_tokens) for m in requests]
        hashes = [self._hash(p) for p in payloads]
        results: list[LLMResult | None] = [self._cached(h) for h in hashes]
        todo = [i for i, r in enumerate(results) if r is None]
        self.usage.cached += len(requests) - len(todo)
        pending: dict[Future, int] = {}
        with ThreadPoolExecutor(max_workers=max(1, self.config.concurrency)) as pool:
            queue = list(todo)
            while queue or pending:
                while queue and len(pending) < max(1, self.config.concurrency) and not self.stopped:
                    i = queue[0]
                    estimate = self._estimate(payloads[i])
                    if not self._allowed(estimate):
                        self.usage.budget_stopped = True
                        break
                    queue.pop(0)
                    self.usage.calls += 1
                    self._reserved += estimate
                    pending[pool.submit(self._send, payloads[i])] = i
                if self.stopped and queue:
                    for i in queue:
                        results[i] = LLMResult(error="budget exhausted (--max-cost/--max-calls)", budget=True)
                    queue = []
                if not pending:
                    break
                done, _ = wait(pending, return_when=FIRST_COMPLETED)
                for fut in done:
                    i = pending.pop(fut)
                    self._reserved -= self._estimate(payloads[i])
                    res = fut.result()
                    self._account(res)
                    if res.ok:
                        self._store(hashes[i], payloads[i], res)
                    results[i] = res
        return results  # type: ignore[return-value]

    def cost_of(self, prompt_tokens: int, completion_tokens: int) -> float:
        p_in, p_out = self.config.prices()
        return (prompt_tokens * p_in + completion_tokens * p_out) / 1e6

    # --- internals ---------------------------------------------------------------------------

    def _payload(self, messages: list[dict], max_tokens: int | None) -> dict:
        return {
            "model": self.config.model,
            "messages": messages,
            "temperature": self.config.temperature,
            "max_tokens": max_tokens or self.config.max_tokens,
            "json": self._json_mode,
        }

    def _hash(self, payload: dict) -> str:
        keyed = dict(payload, server=self._server)
        return hashlib.sha256(json.dumps(keyed, sort_keys=True, ensure_ascii=False).encode()).hexdigest()

    def _estimate(self, payload: dict) -> float:
        chars = sum(len(str(m.get("content", ""))) for m in payload["messages"])
        return self.cost_of(chars // 4 + 8, payload["max_tokens"] // 4)

    def _allowed(self, estimate: float) -> bool:
        c = self.config
        if c.max_calls is not None and self.usage.calls >= c.max_calls:
            return False
        if c.max_cost is not None and self.usage.cost + self._reserved + estimate > c.max_cost:
            return False
        return True

    def _account(self, res: LLMResult) -> None:
        self.usage.retries += res.retries
        self.usage.prompt_tokens += res.prompt_tokens
        self.usage.completion_tokens += res.completion_tokens
        self.usage.cost += self.cost_of(res.prompt_tokens, res.completion_tokens)
        if not res.ok:
            self.usage.failed += 1

    def _cached(self, request_hash: str) -> LLMResult | None:
        if self.store is None:
            return None
        row = self.store.con.execute(
            "SELECT response, prompt_tokens, completion_tokens FROM llm_cache WHERE request_hash = ?", [request_hash]
        ).fetchall()
        if not row:
            return None
        response, p, c = row[0]
        return LLMResult(text=json.loads(response)["content"], prompt_tokens=p or 0, completion_tokens=c or 0,
                         cached=True)

    def _store(self, request_hash: str, payload: dict, res: LLMResult) -> None:
        if self.store is None or self.store.read_only:
            return
        request = dict(payload, server=self._server)  # no key: it is never part of a payload
        self.store.con.execute(
            "INSERT OR REPLACE INTO llm_cache (request_hash, model, request, response, prompt_tokens, completion_tokens) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            [request_hash, payload["model"], json.dumps(request, ensure_ascii=False),
             json.dumps({"content": res.text}, ensure_ascii=False), res.prompt_tokens, res.completion_tokens],
        )

    def _send(self, payload: dict) -> LLMResult:
        """One request with retries (runs in a worker thread; no store access here)."""
        import openai

        retries = 0
        while True:
            kwargs = dict(model=payload["model"], messages=payload["messages"],
                          temperature=payload["temperature"], max_tokens=payload["max_tokens"])
            if self._json_mode:
                kwargs["response_format"] = {"type": "json_object"}
            try:
                resp = self._client.chat.completions.create(**kwargs)
            except (openai.RateLimitError, openai.InternalServerError, openai.APIConnectionError) as e:
                if retries >= self.config.max_retries:
                    return LLMResult(error=f"gave up after {retries} retries: {_describe(e)}", retries=retries)
                time.sleep(self._delay(retries, e))
                retries += 1
                continue
            except openai.BadRequestError as e:
                if self._json_mode and "response_format" in str(e):
                    self._json_mode = False  # a server without JSON mode: the prompt still asks for JSON
                    continue
                return LLMResult(error=f"request refused: {_describe(e)}", retries=retries)
            except (openai.AuthenticationError, openai.PermissionDeniedError, openai.NotFoundError) as e:
                raise LLMError(f"the LLM server refused the request: {_describe(e)}") from None
            except openai.APIStatusError as e:
                if e.status_code >= 500 and retries < self.config.max_retries:
                    time.sleep(self._delay(retries, e))
                    retries += 1
                    continue
                return LLMResult(error=f"server error: {_describe(e)}", retries=retries)
            except (openai.APIResponseValidationError, ValueError, TypeError, KeyError) as e:
                # a 200 whose body is not a chat completion (the SDK raises while parsing it)
                return LLMResult(error=f"unreadable response: {_describe(e)}", retries=retries)
            return _result(resp, payload, retries)

    def _delay(self, attempt: int, error) -> float:
        cap = min(self.config.max_backoff, self.config.backoff * 2**attempt)
        wait_s = random.uniform(0, cap)  # full jitter: concurrent workers do not retry in lockstep
        response = getattr(error, "response", None)
        header = response.headers.get("retry-after") if response is not None else None
        if header:
            try:
                wait_s = max(wait_s, min(float(header), self.config.max_backoff))
            except ValueError:
                pass
        return wait_s


def _describe(e: Exception) -> str:
    status = getattr(e, "status_code", None)
    msg = str(getattr(e, "message", None) or e).splitlines()[0][:200]
    return f"HTTP {status}: {msg}" if status else msg


def _result(resp, payload: dict, retries: int) -> LLMResult:
    try:
        text = resp.choices[0].message.content
    except (AttributeError, IndexError, TypeError):
        return LLMResult(error="response has no message", retries=retries)
    usage = getattr(resp, "usage", None)
    prompt = getattr(usage, "prompt_tokens", None)
    completion = getattr(usage, "completion_tokens", None)
    if prompt is None:  # some servers omit usage: estimate (4 characters a token)
        prompt = sum(len(str(m.get("content", ""))) for m in payload["messages"]) // 4
    if completion is None:
        completion = len(text or "") // 4
    if text is None:
        return LLMResult(error="empty answer", prompt_tokens=prompt, completion_tokens=completion, retries=retries)
    return LLMResult(text=text, prompt_tokens=int(prompt), completion_tokens=int(completion), retries=retries)
