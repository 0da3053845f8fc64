"""Multi-turn chat documents: read a conversation, render it with the tokenizer's chat template, and say
which characters of the rendering are the turns to pool and where each of them lies in the stored text.

A conversation is a list of {role, content} turns, held as JSON text (a list-of-struct column is stored
as JSON at ingest, so both read the same). Spans always point into the document's stored text, which is
shared by every encoding of the corpus:
- when the conversation is the corpus's text column, the stored text is its JSON and a token's span is
  the characters of that token inside the content's JSON string;
- when it is a metadata column, each pooled turn must appear verbatim in the stored text (searched in
  turn order), and spans point there; a pooled turn the text lacks is an error, not a span elsewhere.
Nothing here imports torch: the pipeline checks a whole corpus with it before loading a model.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np

from saeembed.config import parse_roles
from saeembed.errors import InputError, ModelError

ALL_ROLES = "all"  # config.parse_roles spells every role so
_MARK = "\u2063SAEEMBED_TURN_{}\u2063"  # stands for a turn's content while the template renders
_CHECK_BLOCK = 4096  # documents read at once by the corpus-wide check


@dataclass
class Chat:
    """One document's conversation: each turn's stripped content, and for pooled turns the span in the
    stored text of every character of it ([n, 2]; None: the turn is not pooled)."""

    doc_id: str
    roles: list[str]
    bodies: list[str]
    places: list[np.ndarray | None]


@dataclass
class RenderedChat:
    text: str  # the conversation as the chat template renders it
    spans: list[tuple[int, int, np.ndarray]]  # pooled turns: start, end in `text`, char places in the stored text

    def locate(self, offsets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(mask of tokens wholly inside a pooled turn, their spans in the stored text; 0 elsewhere)."""
        inside = np.zeros(len(offsets), dtype=bool)
        out = np.zeros_like(offsets)
        s, e = offsets[:, 0], offsets[:, 1]
        for start, end, places in self.spans:
            hit = (s >= start) & (e <= end) & (e > s)
            inside |= hit
            out[hit, 0] = places[s[hit] - start, 0]
            out[hit, 1] = places[e[hit] - 1 - start, 1]
        return inside, out


def turns(value, doc_id: str, column: str) -> list[tuple[str, str]]:
    """The (role, content) turns of one conversation, or an InputError naming the document."""
    where = f"document {doc_id!r}: column {column!r}"
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as e:
            raise InputError(f"{where} is not JSON ({e.msg}); it must hold a list of {{role, content}} turns") from None
    if not isinstance(value, list) or not value:
        kinds = {dict: "a JSON object", str: "a JSON string", bool: "a boolean", type(None): "empty"}
        kind = "an empty list" if value == [] else kinds.get(type(value), "a number")
        raise InputError(f"{where} is {kind}, not a list of {{role, content}} turns")
    out = []
    for i, turn in enumerate(value, start=1):
        if not isinstance(turn, dict) or not isinstance(turn.get("role"), str) or not isinstance(turn.get("content"), str):
            raise InputError(f"{where}: turn {i} is not an object with a text 'role' and a text 'content'")
        out.append((turn["role"], turn["content"]))
    return out


def make_chat(doc_id: str, value, text: str, *, column: str, roles: tuple[str, ...], in_text: bool) -> Chat:
    """A document's Chat. in_text: the conversation is the stored text itself (its JSON)."""
    pairs = turns(value, doc_id, column)
    chosen = [ALL_ROLES in roles or r in roles for r, _ in pairs]
    if not any(chosen):
        raise InputError(f"document {doc_id!r} has no turn with role {', '.join(roles)} "
                         f"(its roles: {', '.join(sorted({r for r, _ in pairs}))}); nothing of it would be pooled")
    raw = _json_content_places(text, len(pairs)) if in_text else None
    bodies, places, cursor = [], [], 0
    for i, ((_, content), pooled) in enumerate(zip(pairs, chosen)):
        body = content.strip()
        lead = len(content) - len(content.lstrip())
        bodies.append(body)
        if not pooled:
            places.append(None)
        elif raw is not None:
            places.append(raw[i][lead: lead + len(body)])
        else:
            at = text.find(body, cursor)
            if at < 0:
                raise InputError(
                    f"document {doc_id!r}: turn {i + 1} ({pairs[i][0]}) is not in the document's stored text, so its "
                    f"tokens could not be shown; ingest the conversation as the text (--text-column {column}) "
                    "or pool only the roles the stored text holds")
            places.append(np.stack([np.arange(at, at + len(body)), np.arange(at + 1, at + len(body) + 1)], 1))
            cursor = at + len(body)
    return Chat(doc_id, [r for r, _ in pairs], bodies, places)


def check_template(tokenizer) -> None:
    """A model whose tokenizer has no chat template cannot render conversations: say so, and the way out."""
    if not getattr(tokenizer, "chat_template", None):
        raise ModelError("this model's tokenizer has no chat template, so --messages-column cannot render "
                         "conversations; use a chat model, or ingest one turn per document and encode it as "
                         "plain text (or with --chat-template and --prompt-column on a chat model)")


def render(tokenizer, chat: Chat) -> RenderedChat:
    """The conversation rendered by the tokenizer's chat template, with where each pooled turn lies."""
    check_template(tokenizer)
    marks = [_MARK.format(i) for i in range(len(chat.bodies))]
    messages = [{"role": r, "content": m} for r, m in zip(chat.roles, marks)]
    try:
        template = tokenizer.apply_chat_template(messages, tokenize=False)
    except Exception as e:  # templates are user code (jinja): report, don't crash
        raise ModelError(f"document {chat.doc_id!r}: the chat template could not render its conversation: {e}") from None
    parts, spans, pos, length = [], [], 0, 0
    for i, mark in enumerate(marks):
        at = template.find(mark, pos)
        if at < 0 or template.count(mark) != 1:
            raise ModelError(f"document {chat.doc_id!r}: the chat template dropped or altered turn {i + 1} "
                             f"({chat.roles[i]}); it cannot be encoded with --messages-column")
        parts += [template[pos:at], chat.bodies[i]]
        length += at - pos
        if chat.places[i] is not None and chat.bodies[i]:
            spans.append((length, length + len(chat.bodies[i]), chat.places[i]))
        length += len(chat.bodies[i])
        pos = at + len(mark)
    parts.append(template[pos:])
    return RenderedChat("".join(parts), spans)


def check_messages(store, info, cfg) -> None:
    """Every conversation of the corpus well formed, every --roles role present somewhere: checked before
    anything loads or is written, so a bad document stops the encode at once with its id."""
    column, roles = cfg.messages_column, parse_roles(cfg.roles)
    if cfg.prompt_column:
        raise InputError("--prompt-column does not apply with --messages-column: the conversation holds the user turns")
    in_text = messages_in_text(info, column)
    if not in_text and column not in info.metadata_columns:
        raise InputError(f"--messages-column {column!r} is not a column of corpus {info.name!r} "
                         f"(columns: {', '.join([info.text_column or 'text', *info.metadata_columns])})")
    blocks = [list(range(a, min(a + _CHECK_BLOCK, info.n_docs))) for a in range(0, info.n_docs, _CHECK_BLOCK)]
    seen: set[str] = set()
    for idx in blocks:  # well formed, and which roles the corpus has
        frame = store.documents(info, text=in_text, metadata=not in_text, doc_idx=idx)
        for doc_id, value in zip(frame["doc_id"].to_list(), frame["text" if in_text else column].to_list()):
            seen.update(r for r, _ in turns(value, doc_id, column))
    missing = [r for r in roles if r != ALL_ROLES and r not in seen]
    if missing:
        raise InputError(f"--roles {missing[0]}: no turn of corpus {info.name!r} has that role "
                         f"(roles in it: {', '.join(sorted(seen))})")
    for idx in blocks:  # every document has a turn to pool, and its spans can be shown
        chats_of(store, info, cfg, idx)


def messages_in_text(info, column: str) -> bool:
    """Whether --messages-column names the corpus's text column (the conversation is the stored text)."""
    return column == "text" or (column == info.text_column and column not in info.metadata_columns)


def chats_of(store, info, cfg, doc_idx: list[int]) -> list[Chat]:
    """The Chat of each document in doc_idx."""
    column, roles = cfg.messages_column, parse_roles(cfg.roles)
    in_text = messages_in_text(info, column)
    frame = store.documents(info, text=True, metadata=not in_text, doc_idx=doc_idx)
    values = frame["text" if in_text else column].to_list()
    by_idx = dict(zip(frame["doc_idx"].to_list(), zip(frame["doc_id"].to_list(), values, frame["text"].to_list())))
    return [make_chat(*by_idx[i], column=column, roles=roles, in_text=in_text) for i in doc_idx]


# ------------------------------------------------------------------------------ JSON string positions


def _json_content_places(text: str, n_turns: int) -> list[np.ndarray]:
    """For a conversation stored as JSON text: per turn, the [start, end) in `text` of every character of
    its content (an escape such as \\n or \\u00e9 is one character spanning several)."""
    pos, out = _ws(text, 0), []
    if text[pos: pos + 1] != "[":
        raise InputError("the conversation is not a JSON list")
    pos += 1
    while True:
        pos = _ws(text, pos)
        if text[pos] == "]":
            break
        if text[pos] == ",":
            pos = _ws(text, pos + 1)
        pos, places = _object(text, pos)
        out.append(places)
    if len(out) != n_turns:
        raise InputError("the conversation could not be located in its JSON text")
    return out


def _object(text: str, pos: int) -> tuple[int, np.ndarray]:
    pos = _ws(text, pos + 1)  # past "{"
    places = np.zeros((0, 2), dtype=np.int64)
    while text[pos] != "}":
        if text[pos] == ",":
            pos = _ws(text, pos + 1)
        key, pos = json.decoder.scanstring(text, pos + 1)
        pos = _ws(text, _ws(text, pos) + 1)  # past ":"
        if key == "content" and text[pos] == '"':
            _, end = json.decoder.scanstring(text, pos + 1)
            places = _string_places(text, pos + 1, end - 1)
            pos = end
        else:
            _, pos = _DECODER.raw_decode(text, pos)
        pos = _ws(text, pos)
    return pos + 1, places


def _string_places(text: str, start: int, end: int) -> np.ndarray:
    """Char spans of each decoded character of the JSON string literal text[start:end] (no quotes)."""
    spans, i = [], start
    while i < end:
        if text[i] != "\\":
            step = 1
        elif text[i + 1] != "u":
            step = 2
        else:
            step = 6
            if 0xD800 <= int(text[i + 2: i + 6], 16) < 0xDC00 and text[i + 6: i + 8] == "\\u":
                step = 12  # a surrogate pair: one character
        spans.append((i, i + step))
        i += step
    return np.asarray(spans, dtype=np.int64).reshape(-1, 2)


_DECODER = json.JSONDecoder()


def _ws(text: str, pos: int) -> int:
    while pos < len(text) and text[pos] in " \t\r\n":
        pos += 1
    return pos
