"""Typed configuration: one section per role, every field with a default and help.

A run's config is built from a preset TOML (``constellation/presets/<name>.toml``),
then ``--set section.key=value`` overrides, and is saved fully resolved as
``config.toml`` in the run directory. ``describe()`` prints the reference.
"""

from __future__ import annotations

import tomllib
from importlib import resources
from pathlib import Path
from typing import Annotated, Any

import msgspec
from msgspec import Meta


class ConfigError(ValueError):
    pass


def _h(text: str) -> Meta:
    return Meta(description=text)


class _Section(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    pass


class RunConfig(_Section):
    name: Annotated[str, _h("run name; the run directory is <runs_dir>/<name>-<timestamp>")] = "run"
    runs_dir: Annotated[str, _h("where run directories are created")] = "runs"
    seed: Annotated[int, _h("master seed: task split, sampling and training derive from it")] = 0
    rounds: Annotated[int, _h("self-training rounds after the base evaluation")] = 3
    transport: Annotated[str, _h('"ipc" (sockets in the run directory) or "tcp" (127.0.0.1, free ports)')] = "ipc"


class TaskConfig(_Section):
    impl: Annotated[str, _h('task family: "dsl", "arithmetic", "jsonl", a plugin name or "package.module"')] = "dsl"
    path: Annotated[str, _h('"jsonl" task: the local JSONL file of math or code problems')] = ""
    n_labeled: Annotated[int, _h("size of the labeled set L used to warm-start the base model")] = 8000
    labeled_max_depth: Annotated[int, _h("L holds only programs up to this depth (arithmetic: digits) (easy problems)")] = 2
    n_train: Annotated[int, _h("pool of unlabeled training problems drawn from each round")] = 1800
    n_eval: Annotated[int, _h("fixed evaluation problems, disjoint from training problems")] = 200
    depths: Annotated[list[int], _h("program depths (arithmetic: digit counts) sampled for train/eval problems (graded difficulty)")] = msgspec.field(default_factory=lambda: [1, 2, 3])
    n_visible: Annotated[int, _h("visible input->output examples per problem")] = 3
    n_heldout: Annotated[int, _h("held-out inputs per problem (outputs never shown to the model)")] = 6
    seed: Annotated[int, _h("task seed; -1 = derive from run.seed")] = -1


class ModelConfig(_Section):
    base: Annotated[str, _h('"tiny" to build and warm-start the default model, or a local HF causal LM folder')] = "tiny"
    cache_dir: Annotated[str, _h("cache of built base models, keyed by their config")] = "~/.cache/constellation"
    hidden_size: Annotated[int, _h("tiny model width")] = 128
    layers: Annotated[int, _h("tiny model depth")] = 4
    heads: Annotated[int, _h("tiny model attention heads")] = 4
    intermediate_size: Annotated[int, _h("tiny model MLP width")] = 384
    max_len: Annotated[int, _h("max sequence length (prompt + completion) in tokens")] = 256
    warm_start_seconds: Annotated[float, _h("time budget of supervised warm start on L (used when warm_start_steps = 0)")] = 480.0
    warm_start_steps: Annotated[int, _h("step budget of the warm start; > 0 replaces the time budget and makes the base reproducible on any machine and load")] = 0
    warm_start_lr: Annotated[float, _h("warm-start learning rate")] = 2e-3
    warm_start_batch: Annotated[int, _h("warm-start batch size")] = 8
    warm_start_prompt_loss: Annotated[float, _h("warm start: weight of the LM loss on prompt tokens (the visible examples) added to the completion loss; 0 = completion only")] = 0.5
    threads: Annotated[int, _h("torch threads while building the base model")] = 1
    quantization: Annotated[str, _h('"none" or "nf4": the trainer (star, dpo) and the policy_head critic load the base in 4-bit NF4 with double quantization (bitsandbytes, QLoRA); the generator is not affected')] = "none"
    compute_dtype: Annotated[str, _h('"float32", "bfloat16" or "float16": compute dtype of the 4-bit layers, and the dtype of the vLLM engine')] = "float32"
    gradient_checkpointing: Annotated[bool, _h("trainer and policy_head critic: recompute each layer's activations in the backward pass (less memory, ~30% more compute; for large bases on a GPU)")] = False


class SamplingConfig(_Section):
    temperature: Annotated[float, _h("sampling temperature")] = 1.0
    top_p: Annotated[float, _h("nucleus sampling p")] = 1.0
    max_new_tokens: Annotated[int, _h("max completion tokens")] = 64


class GeneratorConfig(_Section):
    impl: Annotated[str, _h('"hf", "vllm" (one vLLM engine with LoRA hot-swap) or "package.module:Class"')] = "hf"
    threads: Annotated[int, _h("torch threads of the generator process")] = 1
    batch_size: Annotated[int, _h("sequences decoded together in one generate() call")] = 64
    python: Annotated[str, _h('interpreter the supervisor starts this role with ("" = its own); vllm on CPU: ".venv-vllm/bin/python" (scripts/make_vllm_venv.sh)')] = ""
    gpu_memory_utilization: Annotated[float, _h("vllm: fraction of the GPU's memory (on CPU: of RAM) the engine reserves for weights and KV cache")] = 0.15
    max_model_len: Annotated[int, _h("vllm: max tokens of prompt + completion; 0 = model.max_len")] = 0
    max_lora_rank: Annotated[int, _h("vllm: largest LoRA rank the engine serves (8, 16, 32, 64, 128, 256, 320 or 512); an adapter of higher rank is refused at LoadAdapter")] = 16


class VerifierConfig(_Section):
    impl: Annotated[str, _h('"dsl", "code", "arithmetic", "math", a plugin name or "package.module:Class"')] = "dsl"
    threads: Annotated[int, _h("torch threads (unused by the pure-Python DSL verifier)")] = 1
    step_limit: Annotated[int, _h("interpreter steps per program run before a timeout verdict")] = 10_000
    code_timeout: Annotated[float, _h('"code" verifier: wall-clock seconds per candidate (the CPU-seconds limit is this, rounded up)')] = 5.0
    code_memory_mb: Annotated[int, _h('"code" verifier: address-space limit of the sandboxed child, MiB')] = 512
    math_timeout: Annotated[float, _h("math verifier: hard deadline per candidate in seconds (worker killed after it)")] = 1.0
    math_workers: Annotated[int, _h("math verifier: isolated checker processes working in parallel")] = 1


class CriticConfig(_Section):
    impl: Annotated[str, _h('"small" (= "learned": own tiny byte-level transformer), "policy_head" (LoRA + scalar head on the policy\'s base weights), "none" or "package.module:Class"')] = "small"
    threads: Annotated[int, _h("torch threads of the critic process")] = 1
    hidden_size: Annotated[int, _h("critic transformer width")] = 128
    layers: Annotated[int, _h("critic transformer depth")] = 2
    heads: Annotated[int, _h("critic attention heads")] = 4
    max_len: Annotated[int, _h("critic input length: bytes for small, tokens for policy_head (capped by the model); longer inputs are cut from the left")] = 448
    steps: Annotated[int, _h("optimizer steps per round of online training")] = 150
    batch_size: Annotated[int, _h("critic training batch (class-balanced)")] = 32
    lr: Annotated[float, _h("critic learning rate")] = 1e-3
    holdout_frac: Annotated[float, _h("share of training problems kept out of critic training to measure AUROC")] = 0.2
    lora_r: Annotated[int, _h("policy_head: rank of the critic's own LoRA on the base weights")] = 8
    lora_targets: Annotated[list[str], _h("policy_head: module names the critic's LoRA adapts")] = msgspec.field(default_factory=lambda: ["q_proj", "v_proj"])


class TrainerConfig(_Section):
    impl: Annotated[str, _h('"star", "dpo" or "package.module:Class"')] = "star"
    threads: Annotated[int, _h("torch threads of the trainer process")] = 1
    mode: Annotated[str, _h('"restart" (each round from the base, as STaR) or "continue" (from the last adapter)')] = "restart"
    lora_r: Annotated[int, _h("LoRA rank")] = 16
    lora_alpha: Annotated[int, _h("LoRA alpha")] = 32
    lora_dropout: Annotated[float, _h("LoRA dropout")] = 0.0
    lora_targets: Annotated[list[str], _h("module names LoRA adapts")] = msgspec.field(default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"])
    lr: Annotated[float, _h("learning rate")] = 1e-3
    epochs: Annotated[int, _h("passes over the round's training set")] = 5
    max_seconds: Annotated[float, _h("time budget per round of training (0 = none)")] = 60.0
    batch_size: Annotated[int, _h("training batch size")] = 16
    beta: Annotated[float, _h("dpo: beta, the strength of the pull towards the reference (IPO: its tau)")] = 0.1
    loss_type: Annotated[str, _h('dpo: "sigmoid" (DPO) or "ipo"')] = "sigmoid"
    length_normalize: Annotated[bool, _h("dpo: sigmoid loss on per-token average log-ratios instead of sums (IPO always averages)")] = False
    sft_weight: Annotated[float, _h("dpo: weight of an SFT term (mean NLL per chosen token) added to the loss, RPO-style; 0 = none")] = 0.0


class PairsConfig(_Section):
    source: Annotated[str, _h('preference pairs for trainer.impl = "dpo": "verifier" (visible pass over fail), "critic" (top over bottom critic score) or "self_judge" (the policy scores its own candidates)')] = "verifier"
    among: Annotated[str, _h('critic/self_judge: rank "pass" (visible-pass candidates only) or "all" candidates')] = "pass"
    max_per_problem: Annotated[int, _h("cap on pairs built from one problem's candidates")] = 2
    dedup: Annotated[bool, _h("drop repeated identical completions of a problem before pairing")] = True
    min_margin: Annotated[float, _h("critic/self_judge: keep a pair only if chosen score - rejected score >= this (and > 0)")] = 0.0
    judge: Annotated[str, _h('self_judge: "likelihood" (policy log-likelihood per token), "llm" (0-5 LLM-as-a-judge prompt) or "auto" (llm for a tokenizer with a chat template)')] = "auto"
    mix_rounds: Annotated[int, _h("also train on the pairs of up to this many earlier rounds; 0 = this round's only")] = 0
    mix_decay: Annotated[float, _h("loss weight of an earlier round's pair: mix_decay ** age in rounds")] = 0.5
    holdout_frac: Annotated[float, _h("share of problems whose pairs the trainer keeps out, to measure implicit-reward accuracy")] = 0.1


class CoordinatorConfig(_Section):
    problems_per_round: Annotated[int, _h("training problems drawn each round")] = 600
    k: Annotated[int, _h("candidates sampled per training problem")] = 8
    selection: Annotated[str, _h('"best_of_k", "critic" or "majority": builds the training set')] = "best_of_k"
    per_problem: Annotated[int, _h("selected examples kept per solved problem")] = 1
    max_pass_rate: Annotated[float, _h("skip problems whose share of visible-pass candidates is above this (already mastered); 1 = keep all")] = 1.0
    rationalize: Annotated[bool, _h("STaR rationalization: retry each failed training problem once with its answer as a hint (tasks with hint_prompt: arithmetic, jsonl math); keep the rationale if it reaches the answer, train on it without the hint")] = False
    accumulate: Annotated[bool, _h("train on the selections of all rounds so far (STaR's growing set), not only this round's")] = True
    request_problems: Annotated[int, _h("problems per GenerateRequest (streaming granularity)")] = 8
    window: Annotated[int, _h("generate requests kept in flight")] = 2
    request_timeout: Annotated[float, _h("seconds before an unanswered request is re-sent")] = 600.0


class EvalConfig(_Section):
    n_samples: Annotated[int, _h("samples per evaluation problem (n of pass@k)")] = 64
    ks: Annotated[list[int], _h("k values reported")] = msgspec.field(default_factory=lambda: [1, 2, 4, 8, 16, 32, 64])
    selection_k: Annotated[int, _h("k of the one-line selection accuracy shown in the console and monitor")] = 8
    selection_ks: Annotated[list[int], _h("k values at which every selection policy is scored on the same eval candidates (split by agree/disagree)")] = msgspec.field(default_factory=lambda: [4, 8, 16])
    zpd_low: Annotated[float, _h("base pass@1 below this is too hard (outside the ZPD)")] = 0.25
    zpd_high: Annotated[float, _h("base pass@1 above this is too easy (outside the ZPD)")] = 0.75


class GuardConfig(_Section):
    enabled: Annotated[bool, _h("measure the validation split each round and stop early on collapse")] = True
    val_problems: Annotated[int, _h("validation problems, taken from the end of the training pool and never trained on")] = 40
    val_samples: Annotated[int, _h("samples per validation problem")] = 8
    patience: Annotated[int, _h("stop after validation pass@1 fell this many rounds in a row")] = 2
    tolerance: Annotated[float, _h("a fall smaller than this (absolute pass@1) does not count")] = 0.0
    diversity_floor: Annotated[float, _h("stop when distinct held-out outputs per problem fall below this fraction of the base's")] = 0.5


class StudyConfig(_Section):
    parallel: Annotated[int, _h("constellation study: trajectories run at the same time (each role uses its own threads; 2 suits 2 cores)")] = 1


class SupervisorConfig(_Section):
    ready_timeout: Annotated[float, _h("seconds a role has to announce READY")] = 120.0
    heartbeat_interval: Annotated[float, _h("seconds between heartbeats")] = 1.0
    heartbeat_timeout: Annotated[float, _h("a role silent this long is declared dead and restarted")] = 60.0
    max_restarts: Annotated[int, _h("restarts per role before the run is aborted")] = 3
    loop_timeout: Annotated[float, _h("a coordinator whose own loop has not turned this long (its heartbeat says so) "
                                      "is restarted like a dead process")] = 300.0
    shutdown_grace: Annotated[float, _h("seconds between SIGTERM and SIGKILL at shutdown")] = 10.0


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
    study: StudyConfig = msgspec.field(default_factory=StudyConfig)
    supervisor: SupervisorConfig = msgspec.field(default_factory=SupervisorConfig)

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
        raise ConfigError(f"invalid config: {e}") from e


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
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(v, list):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
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
            rows.append((f"{section.name}.{f.name}", _toml_value(default), desc))
    return rows
