"""The LLM client: the `openai` SDK against any OpenAI-compatible server, made safe for long runs.

- every request is cached in the store's `llm_cache` table by a hash of what was asked (model, server,
  messages, sampling settings), so a re-run costs nothing;
- at most `concurrency` calls are in flight; 429, 5xx, timeouts and dropped connections are retried
  with exponential backoff and full jitter (a server's Retry-After is honoured up to `max_backoff`);
- time is bounded: each attempt waits at most `timeout` seconds, a timed-out attempt is retried at most
  `timeout_retries` times, and one call (attempts and waits together) never runs past `call_timeout`
  (default timeout × (max_retries + 1)); after `unresponsive_after` calls in a row get no answer in time
  the server is taken to be hanging and the run stops with an LLMError;
- tokens and an estimated cost are counted; `max_calls` / `max_cost` stop the run cleanly: requests past
  the budget come back as failed results marked `budget`, nothing raises;
- an answer that is not the JSON asked for (or whose content is not text at all) is a failed result for
  that item, never a crash, and is not cached: a re-run asks the server again (`check` says what a usable
  answer is; a cached answer that fails it is dropped and asked again);
- token counts a server reports as text, negative or missing are estimated from the text length and
  counted in `usage.usage_estimated`, never trusted;
- the key comes from the config, the environment or the OS keyring and is never written to the store or to logs.

The store is only touched from the calling thread (DuckDB connections are not shared across threads);
worker threads only do HTTP.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import random
import time
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Callable
from urllib.parse import urlsplit, urlunsplit

from saeembed.errors import InputError, SaeembedError
from saeembed.interp.answers import (LLMResult, MalformedAnswer, describe, parse_json_answer, result_of, token_count,
                                    usable)
from saeembed.store import Store

__all__ = ["LLMClient", "LLMConfig", "LLMError", "LLMResult", "MalformedAnswer", "Usage", "keyring_key",
           "parse_json_answer"]

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
    max_retries: int = 5  # retries of one call after 429 / 5xx / a dropped connection
    timeout: float = field(default=30.0, metadata={"help": "Seconds to wait for one LLM answer (per attempt)."})
    timeout_retries: int = 1  # a timed-out attempt is retried at most this many times (a hanging server)
    call_timeout: float | None = field(default=None, metadata={
        "help": "Seconds one call may take with all its retries (default: timeout × (max_retries + 1))."})
    unresponsive_after: int = 3  # this many calls in a row without an answer in time: stop the run
    backoff: float = 1.0  # first retry waits up to this many seconds; doubles each retry
    max_backoff: float = 30.0
    temperature: float = 0.0
    max_tokens: int = 1024
    json_mode: bool = True  # ask for response_format=json_object (dropped if the server refuses it)
    max_calls: int | None = None  # uncached calls allowed in this client's life
    max_cost: float | None = None  # USD, estimated
    price_in: float | None = None  # USD per million prompt tokens
    price_out: float | None = None

    def __post_init__(self):
        for name in ("timeout", "call_timeout"):
            v = getattr(self, name)
            if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v)
                                  or v <= 0):
                flag = "--timeout" if name == "timeout" else name
                raise InputError(f"{flag} must be a positive number of seconds, not {v!r}")
        for name in ("max_retries", "timeout_retries"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise InputError(f"{name} must be a whole number ≥ 0, not {v!r}")
        if isinstance(self.concurrency, bool) or not isinstance(self.concurrency, int) or self.concurrency < 1:
            raise InputError(f"--concurrency must be at least 1, not {self.concurrency!r}")

    @property
    def call_budget(self) -> float:
        """Seconds one call may take, every attempt and wait included."""
        return self.call_timeout if self.call_timeout is not None else self.timeout * (self.max_retries + 1)

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
class Usage:
    calls: int = 0  # sent to the server (retries not counted)
    cached: int = 0
    failed: int = 0
    retries: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost: float = 0.0
    budget_stopped: bool = False
    timed_out: int = 0  # calls that got no answer (timed out, or the server unreachable)
    usage_estimated: int = 0  # answers whose token counts were missing/unreadable (estimated from length)

    def to_dict(self) -> dict:
        return {k: (round(v, 6) if isinstance(v, float) else v) for k, v in self.__dict__.items()}


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
        self._silent = 0  # calls in a row that got no answer in time
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

    def chat_many(self, requests: list[list[dict]], *, max_tokens: int | None = None,
                  check: Callable[[str], object] | list | None = parse_json_answer) -> list[LLMResult]:
        """Answers for each list of messages, in order. Cached answers first; the rest are sent with at
        most `concurrency` in flight, stopping (without raising) where the budget ends.

        check: what a usable answer is (a callable raising MalformedAnswer, or one per request; None =
        any text). Only answers that pass it are cached, and a cached one that fails it is asked again.
        Raises LLMError when the server refuses every call or stops answering (`unresponsive_after`)."""
        payloads = [self._payload(m, max_tokens) for m in requests]
        hashes = [self._hash(p) for p in payloads]
        checks = list(check) if isinstance(check, (list, tuple)) else [check] * len(requests)
        if len(checks) != len(requests):
            raise ValueError("chat_many: one check per request")
        results: list[LLMResult | None] = [self._cached(h, c) for h, c in zip(hashes, checks)]
        todo = [i for i, r in enumerate(results) if r is None]
        self.usage.cached += len(requests) - len(todo)
        pending: dict[Future, int] = {}
        last = ""
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
                    if res.ok and usable(res.text, checks[i]):
                        self._store(hashes[i], payloads[i], res)
                    results[i] = res
                    self._silent = self._silent + 1 if res.timed_out else 0
                    if res.timed_out:
                        last = res.error
                if self._silent >= max(1, self.config.unresponsive_after):
                    for f in pending:
                        f.cancel()
                    raise LLMError(
                        f"the LLM server at {self._server} did not answer {self._silent} calls in a row (last: "
                        f"{last}); check that it is running and reachable, or raise --timeout "
                        "(answers so far are cached)")
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
        if res.usage_estimated and not self.usage.usage_estimated:
            log.warning("the LLM server sent no usable token counts (missing, text or negative): tokens and cost "
                        "are estimated from the text length")
        self.usage.usage_estimated += res.usage_estimated
        self.usage.timed_out += res.timed_out
        if not res.ok:
            self.usage.failed += 1

    def _cached(self, request_hash: str, check=None) -> LLMResult | None:
        """The stored answer, when there is one and it is usable; else None (ask the server)."""
        if self.store is None:
            return None
        row = self.store.cached_llm_call(request_hash)
        if row is None:
            return None
        response, p, c = row
        try:
            text = json.loads(response)["content"]
        except (TypeError, ValueError, KeyError):
            text = None
        if not isinstance(text, str) or not usable(text, check):
            log.info("cached LLM answer %s… is unusable: asking again", request_hash[:12])
            if not self.store.read_only:
                self.store.forget_llm_call(request_hash)
            return None
        return LLMResult(text=text, prompt_tokens=token_count(p) or 0, completion_tokens=token_count(c) or 0,
                         cached=True)

    def _store(self, request_hash: str, payload: dict, res: LLMResult) -> None:
        if self.store is None or self.store.read_only:
            return
        request = dict(payload, server=self._server)  # no key: it is never part of a payload
        self.store.cache_llm_call(request_hash, payload["model"], json.dumps(request, ensure_ascii=False),
                                  json.dumps({"content": res.text}, ensure_ascii=False), res.prompt_tokens,
                                  res.completion_tokens)

    def _send(self, payload: dict) -> LLMResult:
        """One request with retries (runs in a worker thread; no store access here)."""
        import openai

        cfg = self.config
        deadline = time.monotonic() + cfg.call_budget
        retries = timeouts = 0
        while True:
            left = deadline - time.monotonic()
            kwargs = dict(model=payload["model"], messages=payload["messages"],
                          temperature=payload["temperature"], max_tokens=payload["max_tokens"],
                          timeout=max(0.05, min(cfg.timeout, left)))
            if self._json_mode:
                kwargs["response_format"] = {"type": "json_object"}
            try:
                resp = self._client.chat.completions.create(**kwargs)
            except openai.APITimeoutError:
                timeouts += 1
                if timeouts > cfg.timeout_retries or retries >= cfg.max_retries or \
                        deadline - time.monotonic() < min(1.0, cfg.timeout):
                    return LLMResult(error=f"no answer within {cfg.timeout:g} s ({timeouts} tries); the server may "
                                     "be hanging: check it or raise --timeout", retries=retries, timed_out=True)
                retries += 1
                continue
            except (openai.RateLimitError, openai.InternalServerError, openai.APIConnectionError) as e:
                wait_s = self._delay(retries, e)
                if retries >= cfg.max_retries or time.monotonic() + wait_s >= deadline:
                    return LLMResult(error=f"gave up after {retries} retries: {describe(e)}", retries=retries,
                                     timed_out=isinstance(e, openai.APIConnectionError))  # unreachable: no answer
                time.sleep(wait_s)
                retries += 1
                continue
            except openai.BadRequestError as e:
                if self._json_mode and "response_format" in str(e):
                    self._json_mode = False  # a server without JSON mode: the prompt still asks for JSON
                    continue
                return LLMResult(error=f"request refused: {describe(e)}", retries=retries)
            except (openai.AuthenticationError, openai.PermissionDeniedError, openai.NotFoundError) as e:
                raise LLMError(f"the LLM server refused the request: {describe(e)}") from None
            except openai.APIStatusError as e:
                wait_s = self._delay(retries, e)
                if e.status_code >= 500 and retries < cfg.max_retries and time.monotonic() + wait_s < deadline:
                    time.sleep(wait_s)
                    retries += 1
                    continue
                return LLMResult(error=f"server error: {describe(e)}", retries=retries)
            except (openai.APIResponseValidationError, ValueError, TypeError, KeyError) as e:
                # a 200 whose body is not a chat completion (the SDK raises while parsing it)
                return LLMResult(error=f"unreadable response: {describe(e)}", retries=retries)
            return result_of(resp, payload, retries)

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
