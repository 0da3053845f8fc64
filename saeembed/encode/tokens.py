"""Turn documents into model windows, and mark which tokens are content.

Long documents are split into consecutive windows (never truncated). A token counts as content
unless it is padding, a special token (BOS/CLS/SEP/EOS, or any id the tokenizer calls special),
zero-width, or, with a chat template, part of the template's own scaffolding.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from saeembed.errors import ModelError

_SENTINEL = "\u2063SAEEMBED_CONTENT\u2063"


@dataclass
class Window:
    doc: int  # index of the document in the batch given to `tokenize`
    input_ids: np.ndarray  # [T] int64
    content: np.ndarray  # [T] bool: pooled tokens
    offsets: np.ndarray  # [T, 2] character span of each token in the document's own text


def tokenize(
    tokenizer,
    texts: list[str],
    *,
    window: int,
    exclude_special: bool = True,
    chat_template: bool = False,
    prompts: list[str | None] | None = None,
    chats: list | None = None,
) -> list[Window]:
    """Windows for a batch of documents, each at most `window` tokens long (special tokens included).
    chats: saeembed.encode.chat.Chat per document: render each conversation, pool its chosen turns only."""
    views = None
    if chats is not None:
        from saeembed.encode.chat import render

        views = [render(tokenizer, c) for c in chats]
        shifts, spans = None, None
        enc = tokenizer([v.text for v in views], add_special_tokens=False, truncation=True, max_length=window,
                        return_overflowing_tokens=True, return_offsets_mapping=True, return_special_tokens_mask=True)
    elif chat_template:
        rendered, shifts, spans = _wrap_in_chat_template(tokenizer, texts, prompts)
        enc = tokenizer(
            rendered,
            add_special_tokens=False,  # the template already carries BOS and friends as text
            truncation=True,
            max_length=window,
            return_overflowing_tokens=True,
            return_offsets_mapping=True,
            return_special_tokens_mask=True,
        )
    else:
        shifts, spans = None, None
        enc = tokenizer(
            texts,
            truncation=True,
            max_length=window,
            return_overflowing_tokens=True,
            return_offsets_mapping=True,
            return_special_tokens_mask=True,
        )
    special_ids = np.array(sorted(set(tokenizer.all_special_ids)), dtype=np.int64)
    mapping = enc["overflow_to_sample_mapping"]
    windows = []
    for i, doc in enumerate(mapping):
        ids = np.asarray(enc["input_ids"][i], dtype=np.int64)
        offsets = np.asarray(enc["offset_mapping"][i], dtype=np.int64).reshape(-1, 2)
        content = offsets[:, 1] > offsets[:, 0]
        if exclude_special:
            content &= ~np.asarray(enc["special_tokens_mask"][i], dtype=bool)
            content &= ~np.isin(ids, special_ids)
        if shifts is not None:
            start, end = spans[doc]
            content &= (offsets[:, 0] >= start) & (offsets[:, 1] <= end)
            offsets = offsets - shifts[doc]
        if views is not None:  # template tokens and unchosen turns are never content
            inside, offsets = views[doc].locate(offsets)
            content &= inside
        windows.append(Window(doc, ids, content, offsets))
    return windows


def _wrap_in_chat_template(tokenizer, texts, prompts):
    """Render each text as the assistant turn; return strings, offset shifts and content spans."""
    if not getattr(tokenizer, "chat_template", None):
        raise ModelError("this model's tokenizer has no chat template; encode without --chat-template")
    rendered, shifts, spans = [], [], []
    for i, text in enumerate(texts):
        prompt = prompts[i] if prompts else None
        messages = ([{"role": "user", "content": prompt}] if prompt else []) + [
            {"role": "assistant", "content": _SENTINEL}
        ]
        try:
            template = tokenizer.apply_chat_template(messages, tokenize=False)
        except Exception as e:  # templates are user code (jinja): report, don't crash
            raise ModelError(f"the chat template could not render a document: {e}") from None
        if template.count(_SENTINEL) != 1:
            raise ModelError("the chat template altered the assistant content; encode without --chat-template")
        prefix, suffix = template.split(_SENTINEL)
        # Most templates trim message content; keep the offsets pointing into the original text.
        lead = len(text) - len(text.lstrip())
        body = text.strip()
        rendered.append(prefix + body + suffix)
        shifts.append(len(prefix) - lead)
        spans.append((len(prefix), len(prefix) + len(body)))
    return rendered, shifts, spans


@dataclass
class Batch:
    windows: list[Window]
    input_ids: torch.Tensor  # [B, T]
    attention_mask: torch.Tensor  # [B, T]
    content: torch.Tensor  # [B, T] bool


def batches(windows: list[Window], *, pad_id: int, max_windows: int, max_tokens: int) -> list[Batch]:
    """Group windows of similar length (longest first) so that little compute goes to padding."""
    order = sorted(range(len(windows)), key=lambda i: -len(windows[i].input_ids))
    groups, current, longest = [], [], 0
    for i in order:
        n = len(windows[i].input_ids)
        longest_if_added = max(longest, n)
        if current and (len(current) >= max_windows or longest_if_added * (len(current) + 1) > max_tokens):
            groups.append(current)
            current, longest_if_added = [], n
        current.append(windows[i])
        longest = longest_if_added
    if current:
        groups.append(current)
    return [_pad(g, pad_id) for g in groups]


def _pad(group: list[Window], pad_id: int) -> Batch:
    T = max(len(w.input_ids) for w in group)
    ids = np.full((len(group), T), pad_id, dtype=np.int64)
    mask = np.zeros((len(group), T), dtype=np.int64)
    content = np.zeros((len(group), T), dtype=bool)
    for r, w in enumerate(group):
        n = len(w.input_ids)
        ids[r, :n] = w.input_ids
        mask[r, :n] = 1
        content[r, :n] = w.content
    return Batch(group, torch.from_numpy(ids), torch.from_numpy(mask), torch.from_numpy(content))


@dataclass(frozen=True)
class BosRule:
    """What the SAE's training setup says about the BOS token, applied to batches just before the model.

    add: put this id in front of every window that does not start with it (the SAE was trained with a BOS
    the tokenizer does not add, e.g. GPT-2); strip: drop it from the front (trained without one). The
    model's output is shifted back, so callers' windows, content masks and offsets stay as tokenized;
    the BOS position itself is never content.
    """

    add: int | None = None
    strip: int | None = None

    @property
    def active(self) -> bool:
        return self.add is not None or self.strip is not None

    @property
    def extra_tokens(self) -> int:
        """Tokens the model sees beyond each tokenized window."""
        return 1 if self.add is not None else 0

    def apply(self, ids: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(ids, mask, per-row shift: +1 BOS added, -1 BOS dropped, 0 as is)."""
        B, T = ids.shape
        shift = torch.zeros(B, dtype=torch.long)
        if self.add is not None:
            shift[ids[:, 0] != self.add] = 1
        elif self.strip is not None and T > 1:
            shift[(ids[:, 0] == self.strip) & (mask[:, 1] > 0)] = -1
        if not bool(shift.any()):
            return ids, mask, shift
        T2 = T + int(shift.max())
        new_ids = torch.zeros((B, T2), dtype=ids.dtype)
        new_mask = torch.zeros((B, T2), dtype=mask.dtype)
        for r, s in enumerate(shift.tolist()):
            if s == 1:
                new_ids[r, 0], new_mask[r, 0] = self.add, 1
                new_ids[r, 1:], new_mask[r, 1:] = ids[r], mask[r]
            elif s == -1:
                new_ids[r, : T - 1], new_mask[r, : T - 1] = ids[r, 1:], mask[r, 1:]
            else:
                new_ids[r, :T], new_mask[r, :T] = ids[r], mask[r]
        return new_ids, new_mask, shift

    @staticmethod
    def undo(out: torch.Tensor, shift: torch.Tensor, T: int) -> torch.Tensor:
        """Model output back at the positions of the tokenized windows (zeros at a dropped BOS)."""
        if not bool(shift.any()):
            return out
        res = torch.zeros((out.shape[0], T, *out.shape[2:]), dtype=out.dtype, device=out.device)
        for r, s in enumerate(shift.tolist()):
            if s == 1:
                res[r] = out[r, 1 : T + 1]
            elif s == -1:
                res[r, 1:] = out[r, : T - 1]
            else:
                res[r] = out[r, :T]
        return res


def bos_rule(tokenizer, prepend_bos: bool | None) -> BosRule:
    """The BosRule for an SAE's `prepend_bos` (None: use the tokenizer as it is)."""
    bos = getattr(tokenizer, "bos_token_id", None)
    if prepend_bos is None or bos is None:
        return BosRule()
    adds = adds_bos(tokenizer)
    if prepend_bos and not adds:
        return BosRule(add=int(bos))
    if not prepend_bos and adds:
        return BosRule(strip=int(bos))
    return BosRule()


def adds_bos(tokenizer) -> bool:
    """Whether the tokenizer itself puts its BOS token in front of a text."""
    bos = getattr(tokenizer, "bos_token_id", None)
    probe = tokenizer("a")["input_ids"] if bos is not None else []
    return bool(probe) and probe[0] == bos


def pad_token_id(tokenizer) -> int:
    for candidate in (tokenizer.pad_token_id, tokenizer.eos_token_id, tokenizer.unk_token_id):
        if candidate is not None:
            return int(candidate)
    return 0
