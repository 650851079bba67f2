"""The learned critic: a tiny byte-level transformer that reads the critic text
of one (problem, candidate) and outputs P(candidate is correct on held-out
inputs). Trained online each round on the verifier's labels.

Model (``CriticNet``): UTF-8 bytes -> byte embedding -> Conv1d(k=5) + GELU ->
max-pool over patches of ``PATCH`` bytes -> LlamaModel (causal, RoPE) on the
patches -> mean over valid patches -> linear -> logit. The conv + max-pool stem
makes a patch see every byte n-gram in it at any offset, and cuts the
transformer's sequence 4x (attention 16x): at 384 bytes a full transformer over
bytes trains at ~0.8 s/step on 1 thread, the patched one several times faster.

Input cut: the text is "visible examples, prog: ..., held: ... => ...". The
program and the candidate's held-out outputs are what decide held-out
correctness and they are at the end, so a text longer than ``max_len`` bytes
loses its start (the first visible examples), never its end; a cut text
starts with the TRUNC token instead of BOS.

Training: all labeled items seen so far (dedup by candidate_id), minus the
problems that ``is_heldout`` puts in the held-out slice, which is never trained
on and gives the round's metrics. Batches are half positive, half negative;
that trains the logit of a 50/50 prior, so scoring adds back the prior
log-odds of the training labels (``prior_logit``) to keep the probabilities
calibrated to the real positive rate. With one class missing, batches are
plain random draws, no prior shift, and metrics say ``one_class = 1``.

Restart: each round writes ``critic/labels_rNNN.jsonl`` (that round's labels)
and ``critic/critic_vNNN.pt`` (weights, prior, request id, metrics); ``setup``
reloads them, so a restarted critic keeps its version and answers a re-sent
CriticTrainRequest with the recorded reply instead of training twice.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from constellation.calibration import auroc, expected_calibration_error
from constellation.messages import (CriticTrained, CriticTrainRequest, LabeledItem, ScoreRequest,
                                    Scores)
from roles.base import Role, set_torch_threads

PAD, BOS, TRUNC = 256, 257, 258  # byte ids 0..255, then specials
VOCAB = 259
PATCH = 8  # bytes per transformer position
BYTE_DIM, CONV_DIM, CONV_WIDTH = 32, 64, 5  # the byte stem: embedding, n-gram detectors, n
SCORE_BATCH = 64  # items per inference forward


def encode_text(text: str, max_len: int) -> list[int]:
    """Text -> byte ids, [BOS] + bytes, or [TRUNC] + the last max_len-1 bytes."""
    data = text.encode("utf-8", errors="replace")
    if len(data) + 1 > max_len:
        return [TRUNC, *data[len(data) - (max_len - 1):]]
    return [BOS, *data]


def pad_batch(seqs: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    """-> ids (B, T) right-padded with PAD, T a multiple of PATCH; mask (B, T // PATCH)
    True where a patch holds at least one real byte."""
    T = max(len(s) for s in seqs)
    T = -(-T // PATCH) * PATCH
    ids = torch.full((len(seqs), T), PAD, dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, :len(s)] = torch.tensor(s, dtype=torch.long)
    lengths = torch.tensor([-(-len(s) // PATCH) for s in seqs])
    mask = torch.arange(T // PATCH)[None, :] < lengths[:, None]
    return ids, mask


def is_heldout(problem_id: str, frac: float) -> bool:
    """Deterministic split by problem: the same problem is held out in every
    round and every process (sha256, not Python's salted hash)."""
    h = int.from_bytes(hashlib.sha256(problem_id.encode()).digest()[:8], "big")
    return h / 2**64 < frac


class CriticNet(nn.Module):
    def __init__(self, hidden: int, layers: int, heads: int, max_len: int) -> None:
        super().__init__()
        from transformers import LlamaConfig, LlamaModel

        # PAD embeds to zeros, the same as the conv's own zero padding, so a
        # text scores the same whatever the batch's padding length is
        self.embed = nn.Embedding(VOCAB, BYTE_DIM, padding_idx=PAD)
        self.conv = nn.Conv1d(BYTE_DIM, CONV_DIM, kernel_size=CONV_WIDTH, padding=CONV_WIDTH // 2)
        self.proj = nn.Linear(CONV_DIM, hidden)
        config = LlamaConfig(
            vocab_size=1, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
            num_key_value_heads=heads, intermediate_size=2 * hidden,
            max_position_embeddings=max_len // PATCH + 1, bos_token_id=None, eos_token_id=None,
            pad_token_id=None, attn_implementation="sdpa")
        self.body = LlamaModel(config)
        self.head = nn.Linear(hidden, 1)

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """ids (B, T) byte ids, mask (B, T/PATCH) bool -> logits (B,)."""
        x = self.embed(ids).transpose(1, 2)  # (B, BYTE_DIM, T)
        x = F.gelu(self.conv(x))  # (B, CONV_DIM, T): one feature per byte n-gram
        x = F.max_pool1d(x, PATCH).transpose(1, 2)  # (B, T/PATCH, CONV_DIM)
        x = self.proj(x)  # (B, T/PATCH, H)
        h = self.body(inputs_embeds=x, attention_mask=mask.long()).last_hidden_state
        m = mask.unsqueeze(-1).to(h.dtype)
        pooled = (h * m).sum(1) / m.sum(1).clamp(min=1.0)  # (B, H)
        return self.head(pooled).squeeze(-1)


class LearnedCritic(Role):
    name = "critic"
    accepts = (ScoreRequest, CriticTrainRequest)

    def setup(self) -> dict[str, Any]:
        c = self.cfg.critic
        set_torch_threads(c.threads)
        assert c.max_len >= 2 * PATCH, f"critic.max_len={c.max_len} too small"
        assert 0.0 <= c.holdout_frac < 1.0, f"critic.holdout_frac={c.holdout_frac} not in [0, 1)"
        torch.manual_seed(self.cfg.run.seed)
        self.net = CriticNet(c.hidden_size, c.layers, c.heads, c.max_len)
        self.net.eval()
        self.prior_logit = 0.0  # log-odds of the training labels, added back at scoring
        self.version = 0  # completed training rounds
        self.labels: dict[str, LabeledItem] = {}  # candidate_id -> item, every round so far
        self.replies: dict[str, CriticTrained] = {}  # request_id -> reply (idempotent retries)
        self.n_scored, self.score_seconds = 0, 0.0
        self.dir = self.run_dir / "critic"
        self.dir.mkdir(parents=True, exist_ok=True)
        self._resume()
        n_params = sum(p.numel() for p in self.net.parameters())
        return {"params": n_params, "version": self.version, "labels": len(self.labels)}

    def handle(self, msg: Any) -> Any:
        if isinstance(msg, ScoreRequest):
            return self._score(msg)
        if isinstance(msg, CriticTrainRequest):
            return self._train(msg)
        raise TypeError(f"critic: cannot handle {type(msg).__name__}; accepts {self.accepts}")

    def stats(self) -> dict[str, float]:
        return {"scored": float(self.n_scored), "version": float(self.version),
                "labels": float(len(self.labels)),
                "items_per_s": self.n_scored / self.score_seconds if self.score_seconds else 0.0}

    # -- scoring -------------------------------------------------------------

    @torch.inference_mode()
    def predict(self, texts: list[str]) -> list[float]:
        """Texts -> P(held-out correct), same order. Batches by length to pad little."""
        seqs = [encode_text(t, self.cfg.critic.max_len) for t in texts]
        order = sorted(range(len(seqs)), key=lambda i: len(seqs[i]))
        probs = [0.0] * len(seqs)
        self.net.eval()
        for start in range(0, len(order), SCORE_BATCH):
            idx = order[start:start + SCORE_BATCH]
            ids, mask = pad_batch([seqs[i] for i in idx])
            p = torch.sigmoid(self.net(ids, mask) + self.prior_logit)
            for i, v in zip(idx, p.tolist()):
                probs[i] = v
        return probs

    def _score(self, req: ScoreRequest) -> Scores:
        t0 = time.perf_counter()
        probs = self.predict([it.text for it in req.items]) if req.items else []
        self.score_seconds += time.perf_counter() - t0
        self.n_scored += len(probs)
        return Scores(request_id=req.request_id, candidate_ids=[it.candidate_id for it in req.items],
                      scores=probs, critic_version=self.version)

    # -- training ------------------------------------------------------------

    def _train(self, req: CriticTrainRequest) -> CriticTrained:
        if req.request_id in self.replies:  # a re-sent request: already trained on it
            return self.replies[req.request_id]
        t0 = time.perf_counter()
        c = self.cfg.critic
        n_before = len(self.labels)
        for it in req.labels:
            self.labels[it.candidate_id] = it
        self._write_labels(req.round, req.labels)
        items = list(self.labels.values())
        train = [it for it in items if not is_heldout(it.problem_id, c.holdout_frac)]
        held = [it for it in items if is_heldout(it.problem_id, c.holdout_frac)]
        pos = [encode_text(it.text, c.max_len) for it in train if it.label]
        neg = [encode_text(it.text, c.max_len) for it in train if not it.label]
        one_class = not (pos and neg)
        losses = self._fit(pos, neg, seed=self.cfg.run.seed * 100_003 + req.round) if train else []
        # balanced batches learn a 50/50 prior; Laplace-smoothed real prior goes back in at scoring
        self.prior_logit = 0.0 if one_class else math.log((len(pos) + 1) / (len(neg) + 1))
        self.version += 1

        metrics: dict[str, float] = {
            "n_train": len(train), "n_heldout": len(held), "n_new": len(self.labels) - n_before,
            "pos_rate": (len(pos) / len(train)) if train else math.nan,
            "one_class": float(one_class), "prior_logit": self.prior_logit,
            "loss_first": _mean(losses[:10]), "loss_last": _mean(losses[-10:]),
        }
        metrics.update(self._heldout_metrics(held))
        metrics["seconds"] = time.perf_counter() - t0
        reply = CriticTrained(request_id=req.request_id, round=req.round, version=self.version,
                              metrics={k: float(v) for k, v in metrics.items()})
        self._save_checkpoint(reply)
        self.replies[req.request_id] = reply
        return reply

    def _fit(self, pos: list[list[int]], neg: list[list[int]], seed: int) -> list[float]:
        """cfg.critic.steps AdamW steps on class-balanced batches -> loss per step."""
        c = self.cfg.critic
        gen = torch.Generator().manual_seed(seed)
        opt = torch.optim.AdamW(self.net.parameters(), lr=c.lr, weight_decay=0.01)
        self.net.train()
        losses = []
        for _ in range(c.steps):
            if pos and neg:  # half positive, half negative, with replacement
                half = max(1, c.batch_size // 2)
                batch = [pos[i] for i in torch.randint(len(pos), (half,), generator=gen)]
                batch += [neg[i] for i in torch.randint(len(neg), (c.batch_size - half,), generator=gen)]
                y = [1.0] * half + [0.0] * (c.batch_size - half)
            else:  # one class only: learn what there is
                only = pos or neg
                batch = [only[i] for i in torch.randint(len(only), (c.batch_size,), generator=gen)]
                y = [1.0 if pos else 0.0] * c.batch_size
            ids, mask = pad_batch(batch)
            loss = F.binary_cross_entropy_with_logits(self.net(ids, mask), torch.tensor(y))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(self.net.parameters(), 1.0)
            opt.step()
            losses.append(loss.item())
        self.net.eval()
        return losses

    def _heldout_metrics(self, held: list[LabeledItem]) -> dict[str, float]:
        """AUROC, ECE (10 bins) and mean log-loss of the current critic on the
        held-out slice; NaN where undefined (empty slice, one class)."""
        if not held:
            return {"auroc": math.nan, "ece": math.nan, "heldout_logloss": math.nan}
        probs = self.predict([it.text for it in held])
        labels = [it.label for it in held]
        eps = 1e-6
        logloss = -_mean([math.log(max(p, eps)) if y else math.log(max(1 - p, eps))
                          for p, y in zip(probs, labels)])
        a, e = auroc(probs, labels), expected_calibration_error(probs, labels, bins=10)
        return {"auroc": math.nan if a is None else a, "ece": math.nan if e is None else e,
                "heldout_logloss": logloss, "heldout_pos_rate": _mean([float(y) for y in labels])}

    # -- files ---------------------------------------------------------------

    def _write_labels(self, round_: int, items: list[LabeledItem]) -> None:
        path = self.dir / f"labels_r{round_:03d}.jsonl"
        tmp = path.with_suffix(".tmp")
        with tmp.open("w") as f:
            for it in items:
                f.write(json.dumps({"candidate_id": it.candidate_id, "problem_id": it.problem_id,
                                    "text": it.text, "label": it.label}) + "\n")
        tmp.replace(path)

    def _save_checkpoint(self, reply: CriticTrained) -> None:
        path = self.dir / f"critic_v{reply.version:03d}.pt"
        torch.save({"state_dict": self.net.state_dict(), "prior_logit": self.prior_logit,
                    "version": reply.version, "round": reply.round, "request_id": reply.request_id,
                    "metrics": reply.metrics}, path.with_suffix(".tmp"))
        path.with_suffix(".tmp").replace(path)

    def _resume(self) -> None:
        """Reload every saved label file and the newest checkpoint, if any."""
        for path in sorted(self.dir.glob("labels_r*.jsonl")):
            for line in path.read_text().splitlines():
                it = LabeledItem(**json.loads(line))
                self.labels[it.candidate_id] = it
        for path in sorted(self.dir.glob("critic_v*.pt")):
            ck = torch.load(path, map_location="cpu", weights_only=True)
            self.replies[ck["request_id"]] = CriticTrained(
                request_id=ck["request_id"], round=ck["round"], version=ck["version"],
                metrics=ck["metrics"])
            if ck["version"] > self.version:
                self.net.load_state_dict(ck["state_dict"])
                self.prior_logit, self.version = ck["prior_logit"], ck["version"]


def _mean(xs: list[float]) -> float:
    return sum(xs) / len(xs) if xs else math.nan
