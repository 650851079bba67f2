"""How a task prompt becomes token ids, and where a completion ends.

    set_prompt_format(tokenizer, "auto" | "none" | FILE) -> the tokenizer, marked chat or raw
    prompt_ids(tokenizer, prompt)                       -> the ids every generator and trainer condition on
    cut_at_stop(tokenizer, tokens, logprobs, stops)     -> (completion text, summed logprob)

One rendering for everything: the hf and vLLM generators, the STaR and
DPO trainers and the likelihood judge all encode a prompt through
``prompt_ids`` on a tokenizer that ``set_prompt_format`` marked, so the
prompt the trainer trains after is the prompt the generator sampled from,
token for token (tests/test_own_model.py checks it).

Chat rendering (``model.chat_template`` "auto" with a tokenizer that has a
template, or a template FILE): the task prompt is one user turn, rendered
with ``add_generation_prompt=True``; the rendered text carries its own
begin-of-text token when the template writes one, so nothing is prepended.
Raw rendering ("none", or "auto" without a template): [bos] + the prompt.

The completion that follows is the model's turn; training appends the
tokenizer's eos (for an instruct tokenizer, its end-of-turn token), and the
loss covers only completion + eos (base_model.collate masks the prompt).
"""

from __future__ import annotations

from pathlib import Path

CHAT_FLAG = "constellation_chat"  # attribute set on the tokenizer object: True = chat rendering


def set_prompt_format(tokenizer, chat_template: str = "auto"):
    """Mark ``tokenizer`` for chat or raw rendering (and install a template FILE)."""
    mode = (chat_template or "auto").strip()
    if mode == "none":
        use_chat = False
    elif mode == "auto":
        use_chat = bool(getattr(tokenizer, "chat_template", None))
    else:
        path = Path(mode).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f'model.chat_template = {chat_template!r} is not "auto", "none" or a file')
        tokenizer.chat_template = path.read_text()
        use_chat = True
    setattr(tokenizer, CHAT_FLAG, use_chat)
    return tokenizer


def uses_chat(tokenizer) -> bool:
    return bool(getattr(tokenizer, CHAT_FLAG, False))


def prompt_ids(tokenizer, prompt: str) -> list[int]:
    """The token ids a model conditions on for this task prompt (see the module docstring)."""
    if uses_chat(tokenizer):
        text = tokenizer.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False,
                                             add_generation_prompt=True)
        return tokenizer.encode(text, add_special_tokens=False)
    ids = tokenizer.encode(prompt, add_special_tokens=False)
    return ([tokenizer.bos_token_id] + ids) if tokenizer.bos_token_id is not None else ids


def _first_stop(text: str, stops: list[str]) -> int:
    """Index of the first stop string in ``text``, -1 when none occurs."""
    hits = [i for i in (text.find(s) for s in stops if s) if i >= 0]
    return min(hits) if hits else -1


def cut_at_stop(tokenizer, tokens: list[int], logprobs: list[float], stops: list[str]) -> tuple[str, float]:
    """A sampled completion (tokens, per-token logprobs incl. a sampled eos) ->
    (text before the first stop string, logprob of the tokens up to and
    including the one that completed the stop string; vLLM's convention).
    Without a stop string in the text: the whole text and the whole sum."""
    text = tokenizer.decode(tokens, skip_special_tokens=True)
    at = _first_stop(text, stops)
    if at < 0:
        return text, float(sum(logprobs))
    # the shortest token prefix whose text holds a stop string: decoding is
    # monotone in the prefix, so a binary search finds it in log(n) decodes
    lo, hi = 1, len(tokens)
    while lo < hi:
        mid = (lo + hi) // 2
        if _first_stop(tokenizer.decode(tokens[:mid], skip_special_tokens=True), stops) >= 0:
            hi = mid
        else:
            lo = mid + 1
    return text[:at], float(sum(logprobs[:lo]))
