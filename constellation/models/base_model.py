"""The base model: tokenizer, tiny Llama, supervised warm start, and its cache.

``ensure_base_model`` is called once per run, before the roles start. For
``model.base = "tiny"`` it builds a ~1M-parameter ``LlamaForCausalLM`` with a
character-level tokenizer (plus one token per DSL keyword), trains it on the
labeled set L for ``model.warm_start_seconds`` and saves it as an ordinary HF
model folder. Any other ``model.base`` must be a local HF causal-LM folder, a
hub id already in the local HF cache, or a GGUF file (gguf_source.py: a
``.gguf`` path, a folder holding one, or ``package:PKG/FILE.gguf``), converted
once into a cached HF folder: nothing is ever downloaded.

Built models are cached under ``<cache_dir>/tiny-<hash>``. The hash covers
every field that changes the result (model shape and warm-start settings, the
task config, the seed, the labeled set, the DSL tokens and ``CODE_VERSION``).
A folder is built under a temporary name, gets its ``COMPLETE`` marker last
and is renamed into place (models/cache_folder.py), so a half-written folder
is never reused.

The warm start is budgeted in optimizer steps (``model.warm_start_steps``),
which makes a build reproducible, or else in wall-clock seconds, so that two
builds with the same hash on machines of different speed (or under different
load) differ; the cache makes a run reuse the first one.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import msgspec

from constellation.models.cache_folder import MARKER, is_finished, publish  # MARKER: also read by tests
from constellation.models.fit import FitArgs, fit
from constellation.models.gguf_source import ensure_gguf_model, model_source
from constellation.models.prompting import prompt_ids
from constellation.protocol.config import ModelConfig, TaskConfig
from constellation.protocol.messages import Problem

# Bump when a change here changes what a cached model would contain.
CODE_VERSION = 1
SPECIAL_TOKENS = {"pad_token": "<pad>", "bos_token": "<bos>", "eos_token": "<eos>", "unk_token": "<unk>"}
# Characters beyond printable ASCII that get their own token; anything else
# becomes <unk> (and is lost on decode: the DSL alphabet is ASCII).
EXTRA_CHARS = "\n\téèáàâüöäëïñçß€£°–—‘’“”…•×"

Progress = Callable[[float, str], None] | None


def offline() -> None:
    """Never touch the network (set before transformers/huggingface_hub read
    it), and no tqdm bars from loading/saving in role logs."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()


# --------------------------------------------------------------------------
# Tokenizer
# --------------------------------------------------------------------------


def build_tokenizer(dsl_tokens: list[str]):
    """Characters + one token per multi-character DSL keyword.

    Pre-tokenization splits text into the longest matching keyword or else a
    single character; WordLevel maps each piece to its id and the Fuse decoder
    joins pieces without separators, so decode(encode(s)) == s for any text
    made of the vocabulary's characters. Specials: <pad> <bos> <eos> <unk>.
    Padding is on the left (generation); training collates its own batches.
    """
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    keywords = sorted({t for t in dsl_tokens if len(t) > 1}, key=lambda t: (-len(t), t))
    chars = [chr(c) for c in range(32, 127)] + list(EXTRA_CHARS)
    vocab: dict[str, int] = {}
    for piece in list(SPECIAL_TOKENS.values()) + keywords + chars:
        vocab.setdefault(piece, len(vocab))
    tok = Tokenizer(models.WordLevel(vocab, unk_token=SPECIAL_TOKENS["unk_token"]))
    # keyword alternatives first (longest first), then any single character
    pattern = "".join(re.escape(k) + "|" for k in keywords) + r"[\s\S]"
    tok.pre_tokenizer = pre_tokenizers.Split(Regex(pattern), behavior="isolated")
    tok.decoder = decoders.Fuse()
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, padding_side="left", clean_up_tokenization_spaces=False,
        model_max_length=1 << 30, **SPECIAL_TOKENS)


def encode_example(tokenizer, prompt: str, completion: str | None) -> tuple[list[int], int]:
    """-> (ids, n_prompt): the rendered prompt (prompting.prompt_ids: [bos] +
    prompt, or the chat turn) (+ completion + eos). The loss is taken
    on ids[n_prompt:] only. Prompt and completion are tokenized separately so
    the boundary is exact (and matches what the generator conditions on)."""
    ids = prompt_ids(tokenizer, prompt)
    n_prompt = len(ids)
    if completion is not None:
        ids = ids + tokenizer.encode(completion, add_special_tokens=False) + [tokenizer.eos_token_id]
    _log_first(prompt, ids, n_prompt, "example" if completion is not None else "prompt")
    return ids, n_prompt


_LOGGED: set[str] = set()


def _log_first(prompt: str, ids: list[int], n_prompt: int, kind: str) -> None:
    """Log the first prompt (and the first training example) a process
    encodes, as token ids: a run's logs then show the rendering each role
    really used (tests/test_e2e_real_model.py checks the chat template in them)."""
    if kind not in _LOGGED:
        _LOGGED.add(kind)
        logging.getLogger("prompting").info("first encoded %s: %s", kind, json.dumps(
            {"prompt": prompt, "ids": ids, "n_prompt": n_prompt}))


def collate(batch: list[tuple[list[int], int]], pad_id: int):
    """Right-padded (input_ids, attention_mask, labels), each (B, T); labels are
    -100 on prompt and padding so the loss covers completion + eos only."""
    import torch

    width = max(len(ids) for ids, _ in batch)
    input_ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(batch), width), dtype=torch.long)
    labels = torch.full((len(batch), width), -100, dtype=torch.long)
    for row, (ids, n_prompt) in enumerate(batch):
        input_ids[row, :len(ids)] = torch.tensor(ids)
        mask[row, :len(ids)] = 1
        labels[row, n_prompt:len(ids)] = torch.tensor(ids[n_prompt:])
    return input_ids, mask, labels


def length_bucketed_batches(lengths: list[int], batch_size: int, rng: random.Random,
                            window: int = 16) -> list[list[int]]:
    """One epoch of batches of indices: shuffle, sort each window of
    ``window`` batches by length, cut, shuffle the batches. Cuts padding (the
    compute of a right-padded batch is set by its longest row)."""
    order = rng.sample(range(len(lengths)), len(lengths))
    batches = []
    for w in range(0, len(order), batch_size * window):
        chunk = sorted(order[w:w + batch_size * window], key=lambda i: lengths[i])
        batches += [chunk[b:b + batch_size] for b in range(0, len(chunk), batch_size)]
    rng.shuffle(batches)
    return batches


# --------------------------------------------------------------------------
# Tiny model + warm start
# --------------------------------------------------------------------------


def build_tiny_model(mcfg: ModelConfig, tokenizer, seed: int):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    assert mcfg.hidden_size % mcfg.heads == 0, f"hidden_size {mcfg.hidden_size} % heads {mcfg.heads} != 0"
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=mcfg.hidden_size, intermediate_size=mcfg.intermediate_size,
        num_hidden_layers=mcfg.layers, num_attention_heads=mcfg.heads, num_key_value_heads=mcfg.heads,
        max_position_embeddings=mcfg.max_len, rms_norm_eps=1e-5, tie_word_embeddings=True,
        pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id)
    torch.manual_seed(seed)
    return LlamaForCausalLM(config)


def completion_and_prompt_loss(model, input_ids, mask, labels):
    """-> (mean loss over completion tokens, mean loss over prompt tokens after bos)."""
    import torch.nn.functional as F

    logits = model(input_ids=input_ids, attention_mask=mask).logits[:, :-1]  # (B, T-1, V) predicts ids[:, 1:]
    ce = F.cross_entropy(logits.transpose(1, 2), input_ids[:, 1:], reduction="none")  # (B, T-1)
    completion = (labels[:, 1:] != -100).float()
    prompt = mask[:, 1:].float() - completion
    return (ce * completion).sum() / completion.sum(), (ce * prompt).sum() / prompt.sum().clamp(min=1)


def warm_start_target(problem: Problem) -> str | None:
    """What the warm start trains a labeled problem's completion on:
    ``data["solution"]`` where the task gives one (a worked solution, for tasks
    whose ``reference`` is only the final answer: arithmetic, math), else the
    reference (the DSL's hidden program)."""
    return problem.data.get("solution") or problem.reference


@dataclass(frozen=True)
class WarmStartArgs:
    steps: int = 0  # optimizer steps; > 0 replaces the time budget (reproducible on any machine and load)
    seconds: float = 480.0  # wall-clock budget, used when steps = 0
    lr: float = 2e-3  # peak learning rate (all parameters, AdamW betas (0.9, 0.95), weight decay 0.01)
    batch_size: int = 8  # examples per step
    max_len: int = 256  # longer (prompt + target) sequences are left out
    seed: int = 0  # batch order and torch's global RNG
    prompt_loss_weight: float = 0.0  # weight of the LM loss on prompt tokens added to the completion loss

    @classmethod
    def from_model_config(cls, mcfg: ModelConfig, seed: int) -> WarmStartArgs:
        return cls(steps=mcfg.warm_start_steps, seconds=mcfg.warm_start_seconds, lr=mcfg.warm_start_lr,
                   batch_size=mcfg.warm_start_batch, max_len=mcfg.max_len, seed=seed,
                   prompt_loss_weight=mcfg.warm_start_prompt_loss)


CURVE_EVERY = 25  # steps per point of the warm-start loss curve (and per progress line)


def warm_start(model, tokenizer, labeled: list[Problem], args: WarmStartArgs,
               progress: Progress = None) -> dict[str, Any]:
    """Supervised training prompt -> reference (+eos) for ``args.steps``
    optimizer steps if steps > 0 (reproducible: the same model on any machine
    and under any load), else for ``args.seconds`` of wall time; all
    parameters, AdamW, warmup (30 steps) + cosine decay over the budget.

    ``prompt_loss_weight`` > 0 adds that weight times the LM loss on the
    prompt tokens (the visible examples): predicting example outputs from the
    earlier examples teaches in-context copying and pattern use, at no extra
    compute (the forward pass covers the prompt anyway). The reported losses
    are completion-only either way."""
    import torch

    pairs = [encode_example(tokenizer, p.prompt, warm_start_target(p)) for p in labeled if warm_start_target(p)]
    kept = [pr for pr in pairs if len(pr[0]) <= args.max_len]
    if not kept:
        raise ValueError(f"warm start: none of {len(labeled)} labeled problems has a reference "
                         f"that fits max_len={args.max_len}")
    rng = random.Random(args.seed)
    torch.manual_seed(args.seed)
    lengths = [len(ids) for ids, _ in kept]

    def epoch_batches(_epoch: int):  # taken from the end of each epoch's list
        return reversed(length_bucketed_batches(lengths, args.batch_size, rng))

    def loss_fn(batch: list[int]):  # -> (loss to minimize, completion loss to report)
        input_ids, mask, labels = collate([kept[i] for i in batch], tokenizer.pad_token_id)
        completion_loss, prompt_loss = completion_and_prompt_loss(model, input_ids, mask, labels)
        w = args.prompt_loss_weight
        return (completion_loss + w * prompt_loss if w else completion_loss), completion_loss

    curve = LossCurve(time.monotonic(), args.seconds, progress)
    fit_args = FitArgs(lr=args.lr, betas=(0.9, 0.95), weight_decay=0.01, epochs=0, warmup_steps=30,
                       max_steps=max(0, args.steps), max_seconds=0.0 if args.steps > 0 else args.seconds)
    result = fit(model, epoch_batches, loss_fn, fit_args, started=curve.t0, progress=curve.add,
                 name="warm start")
    curve.close()
    return {"seconds": result.seconds, "steps": result.steps, "n_examples": len(kept),
            "n_too_long": len(pairs) - len(kept), "loss_first": curve.points[0][2], "loss_last": curve.points[-1][2],
            "curve": curve.points, "lr": args.lr, "batch_size": args.batch_size,
            "prompt_loss_weight": args.prompt_loss_weight}


class LossCurve:
    """The warm start's loss curve: one (seconds, step, mean loss since the
    last point) every CURVE_EVERY steps, and one for the tail; each point is
    also a progress line."""

    def __init__(self, t0: float, seconds: float, progress: Progress) -> None:
        self.t0, self.seconds, self.progress = t0, seconds, progress
        self.points: list[tuple[float, int, float]] = []
        self.window: list[float] = []
        self.step = 0

    def add(self, step: int, total: int, loss: float) -> None:
        self.step = step
        self.window.append(loss)
        if step % CURVE_EVERY == 0:
            self._point()
            if self.progress:
                used = step / total if total else (time.monotonic() - self.t0) / self.seconds
                self.progress(min(1.0, used), f"warm start step {step} loss {self.points[-1][2]:.3f}")

    def close(self) -> None:
        if self.window:
            self._point()

    def _point(self) -> None:
        self.points.append((round(time.monotonic() - self.t0, 1), self.step, sum(self.window) / len(self.window)))
        self.window = []


# --------------------------------------------------------------------------
# The cache
# --------------------------------------------------------------------------


# model fields that do not change the warm-started base: where it is cached,
# threads, and how the trainer/critic load it later (4-bit, dtype, checkpointing)
KEY_IGNORED_MODEL_FIELDS = ("base", "cache_dir", "threads", "quantization", "compute_dtype", "gradient_checkpointing",
                            "chat_template")
# task fields added after keys existed: left out of the key while at their
# default, so the tiny models cached before them stay valid
LATER_TASK_FIELDS = ("visible_mode", "train_source", "train_split", "eval_source", "eval_split", "fields", "answer_format",
                     "prompt_format", "bad_records", "stop", "extract")


def base_model_key(mcfg: ModelConfig, tcfg: TaskConfig, seed: int, labeled: list[Problem],
                   dsl_tokens: list[str]) -> str:
    model_fields = {k: v for k, v in msgspec.to_builtins(mcfg).items() if k not in KEY_IGNORED_MODEL_FIELDS}
    # only the budget in force changes the model (and a time-budgeted key stays
    # what it was before step budgets existed, so those caches remain valid)
    model_fields.pop("warm_start_seconds" if mcfg.warm_start_steps > 0 else "warm_start_steps")
    labeled_digest = hashlib.sha256(
        json.dumps([[p.prompt, p.reference] + ([p.data["solution"]] if "solution" in p.data else [])
                    for p in labeled]).encode()).hexdigest()
    task_fields = msgspec.to_builtins(tcfg)
    if not task_fields.get("path"):  # "jsonl" tasks only; absent from keys made before it existed
        task_fields.pop("path", None)
    defaults = msgspec.to_builtins(TaskConfig())
    for name in LATER_TASK_FIELDS:
        if task_fields.get(name) == defaults[name]:
            task_fields.pop(name, None)
    blob = json.dumps({"code": CODE_VERSION, "model": model_fields, "task": task_fields,
                       "seed": seed, "labeled": labeled_digest, "tokens": sorted(dsl_tokens)}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def resolve_hub_id(repo_id: str) -> Path:
    """A hub id -> its snapshot folder in the local HF cache (HF_HOME / HF_HUB_CACHE),
    offline: the cache's refs/main names the snapshot. Nothing is downloaded."""
    offline()
    from huggingface_hub import snapshot_download

    # read at call time (huggingface_hub fixes its constant at import): the environment of this process
    cache = os.environ.get("HF_HUB_CACHE") or os.path.join(os.environ.get("HF_HOME", "~/.cache/huggingface"), "hub")
    cache = os.path.expanduser(cache)
    try:
        return Path(snapshot_download(repo_id, local_files_only=True, cache_dir=cache))
    except Exception as e:  # LocalEntryNotFoundError and friends: one line, naming the cache looked in
        raise FileNotFoundError(
            f"model.base = {repo_id!r}: not in the local HF cache {cache} ({type(e).__name__}); nothing "
            f"is downloaded at run time: fetch it first (huggingface-cli download {repo_id}) or give a folder") from e


def validate_local_model(path: str | Path) -> Path:
    """A local HF causal LM folder (or a hub id in the local HF cache):
    config.json + weights + tokenizer files."""
    folder = Path(os.path.expanduser(str(path)))
    if not folder.is_dir() and HUB_ID.match(str(path)):
        folder = resolve_hub_id(str(path))
    if not folder.is_dir():
        raise FileNotFoundError(
            f'model.base = {str(path)!r} is neither "tiny", a local folder nor a hub id (nothing is downloaded: '
            f"point it at a folder holding config.json, weights and a tokenizer)")
    missing = []
    if not (folder / "config.json").exists():
        missing.append("config.json")
    if not any(folder.glob("*.safetensors")) and not any(folder.glob("pytorch_model*.bin")):
        missing.append("weights (*.safetensors or pytorch_model*.bin)")
    if not any((folder / f).exists() for f in ("tokenizer.json", "tokenizer.model", "vocab.json")):
        missing.append("tokenizer (tokenizer.json, tokenizer.model or vocab.json)")
    if missing:
        raise FileNotFoundError(f"model.base folder {folder} is missing: {', '.join(missing)}")
    arch = json.loads((folder / "config.json").read_text()).get("architectures") or []
    if not any(a.endswith("ForCausalLM") for a in arch):
        raise ValueError(f"model.base folder {folder}: config.json architectures {arch} has no *ForCausalLM")
    return folder


def ensure_base_model(mcfg: ModelConfig, tcfg: TaskConfig, seed: int, labeled: list[Problem],
                      progress: Progress = None, dsl_tokens: list[str] | None = None,
                      prompt_loss_weight: float | None = None) -> Path:
    """-> folder of a finished HF base model (built and warm-started if needed).

    ``dsl_tokens``: the multi-character tokens the task wants in the tiny
    model's vocabulary (its module's ``tokenizer_tokens()``, launch/prepare.py);
    none = characters only. ``prompt_loss_weight`` overrides
    ``mcfg.warm_start_prompt_loss`` (and so enters the cache key with it)."""
    if prompt_loss_weight is not None:
        mcfg = msgspec.structs.replace(mcfg, warm_start_prompt_loss=float(prompt_loss_weight))
    prompt_loss_weight = mcfg.warm_start_prompt_loss
    offline()
    if mcfg.base != "tiny":
        gguf_file = model_source(mcfg.base)
        if gguf_file is not None:
            return validate_local_model(ensure_gguf_model(gguf_file, mcfg.cache_dir, progress))
        return validate_local_model(mcfg.base)
    tokens = list(dsl_tokens or [])
    cache = Path(os.path.expanduser(mcfg.cache_dir))
    key = base_model_key(mcfg, tcfg, seed, labeled, tokens)
    final = cache / f"tiny-{key}"
    if is_finished(final):
        if progress:
            progress(1.0, f"reusing cached base model {final}")
        return final
    import torch

    torch.set_num_threads(max(1, mcfg.threads))
    tokenizer = build_tokenizer(tokens)
    model = build_tiny_model(mcfg, tokenizer, seed)
    n_params = sum(p.numel() for p in model.parameters())
    if progress:
        progress(0.0, f"warm-starting a {n_params / 1e6:.2f}M-parameter model on {len(labeled)} problems")
    report = warm_start(model, tokenizer, labeled, WarmStartArgs.from_model_config(mcfg, seed), progress)
    report["n_params"] = n_params

    def write(tmp: Path) -> None:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        (tmp / "warm_start.json").write_text(json.dumps(report, indent=1))

    publish(final, write)
    if progress:
        progress(1.0, f"base model ready: {final} (loss {report['loss_first']:.3f} -> {report['loss_last']:.3f})")
    return final
