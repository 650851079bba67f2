"""Self-judging (pairs.source = "self_judge"): the policy scores its own candidates.

  likelihood  (a model that knows no instructions, like the tiny default): the
              mean log-probability per token of the candidate + eos after the
              problem's own prompt, the policy's confidence in its answer.
  llm         (a model whose tokenizer has a chat template): a 0-5
              LLM-as-a-judge prompt, decoded greedily and read with
              constellation.algorithms.pairs.parse_judgment; no clear score = None.
"""

from __future__ import annotations

from constellation.algorithms.pairs import parse_judgment
from constellation.protocol.messages import JudgeItem

JUDGE_PROMPT = (
    "Rate the following solution to the problem on a scale of 0 to 5, where 5 means certainly correct "
    "and 0 certainly wrong. Answer with 'Score: N'.\n\nProblem:\n{prompt}\n\nSolution:\n{text}")



def judge_likelihood(model, tokenizer, items: list[JudgeItem], batch_size: int = 32) -> list[float | None]:
    """Mean log-prob per token of each candidate (+ eos) after its problem's prompt."""
    import torch

    from constellation.models.base_model import collate, encode_example
    from constellation.models.dpo import completion_logps

    out: list[float | None] = []
    with torch.no_grad():
        for i in range(0, len(items), batch_size):
            chunk = [encode_example(tokenizer, it.prompt, it.text) for it in items[i:i + batch_size]]
            input_ids, mask, labels = (t.to(model.device) for t in collate(chunk, tokenizer.pad_token_id))
            logps, lengths, _ = completion_logps(model, input_ids, mask, (labels != -100).long())
            out += [float(x) for x in (logps / lengths.clamp(min=1)).cpu()]
    return out


def judge_llm(model, tokenizer, items: list[JudgeItem], batch_size: int = 32) -> list[float | None]:
    """0-5 LLM-as-a-judge scores, greedy, read by parse_judgment (None = no judgment)."""
    from constellation.models.lm import sample
    from constellation.models.prompting import uses_chat

    turns = [JUDGE_PROMPT.format(prompt=it.prompt, text=it.text) for it in items]
    # a tokenizer marked for chat rendering renders each turn in sample(); else it is rendered here
    prompts = turns if uses_chat(tokenizer) else [tokenizer.apply_chat_template(
        [{"role": "user", "content": t}], tokenize=False, add_generation_prompt=True) for t in turns]
    answers = sample(model, tokenizer, prompts, k=1, temperature=0.0, max_new_tokens=16, batch_size=batch_size)
    return [parse_judgment(per[0][0]) for per in answers]
