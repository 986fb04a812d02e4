"""A session's configuration and errors: SessionConfig, the paper's protocol options, the checks made before
llama.cpp loads anything."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from engine import native
from engine import params as defaults
from engine.params import SkvParams
from engine.prompts import FORMATS

if TYPE_CHECKING:
    from engine.models import ModelInfo


class SessionError(RuntimeError):
    """A session operation failed (the message is one clear sentence)."""


class ContextFullError(SessionError):
    """A question and its answer would not fit in what the context has left (checked before the turn starts)."""

    def __init__(self, message: str, need: int = 0, left: int = 0) -> None:
        super().__init__(message)
        self.need = need
        self.left = left


class SessionInputError(SessionError):
    """The session cannot start with this model or these settings (bad input: the CLI exits with 2)."""


def check_model(model_path: str | Path, n_ctx: int, remap: bool = False) -> tuple[ModelInfo, list[str]]:
    """Before llama.cpp loads anything: refuse a file that is not a GGUF model, an architecture this build of
    llama.cpp does not know and a context that cannot fit in memory; return the model's header (ModelInfo, the one
    reader of GGUF metadata) and warnings (a context above the model's trained maximum: with `remap` (SentenceKV
    remapping positions) a note that it does; without, that answers past that length degrade)."""
    from engine.models import ModelError, read_model_info

    try:
        info = read_model_info(Path(model_path))
    except ModelError as e:
        raise SessionInputError(
            f"the model could not be loaded ({e}): choose a llama.cpp GGUF model file"
        ) from None
    if native.native_available() and not native.arch_supported(info.architecture):
        raise SessionInputError(
            f"the model architecture {info.architecture!r} of {Path(model_path).name} is not supported by this "
            "llama.cpp build: choose a model of another family (e.g. llama, gemma3, qwen2)"
        )
    from engine.models import available_memory_bytes, estimate_memory, largest_fitting_ctx

    need = estimate_memory(info, n_ctx)
    avail = available_memory_bytes()
    if avail is not None and need.total_bytes_max > avail:
        fit = largest_fitting_ctx(info, avail)
        raise SessionInputError(
            f"a context of {n_ctx} tokens needs up to {need.total_bytes_max / 2**30:.1f} GiB for "
            f"{Path(model_path).name} ({need.describe()}), but {avail / 2**30:.1f} GiB is free: "
            + (f"choose --n-ctx {fit} or less" if fit >= 256 else "free memory or choose a smaller model")
        )
    if info.context_length > 0 and n_ctx > info.context_length and remap:
        return info, [
            f"a context of {n_ctx} tokens is above this model's trained maximum of {info.context_length}: "
            "positions remapped (text past it is prefilled sparsely and attended at positions the model knows)"
        ]
    if info.context_length > 0 and n_ctx > info.context_length:
        return info, [
            f"a context of {n_ctx} tokens is above this model's trained maximum of {info.context_length}: "
            f"answers that use text past {info.context_length} tokens may be poor; choose "
            f"{info.context_length} or less"
        ]
    return info, []


QUESTION_ATTENTION = defaults.QUESTION_ATTENTION_CHOICES
SENTENCE_START = defaults.SENTENCE_START_CHOICES


def check_protocol(question_attention: str, sentence_start: str) -> None:
    if question_attention not in QUESTION_ATTENTION:
        raise ValueError(
            f"question attention must be one of {', '.join(QUESTION_ATTENTION)}, got {question_attention!r}"
        )
    if sentence_start not in SENTENCE_START:
        raise ValueError(f"sentence start must be one of {', '.join(SENTENCE_START)}, got {sentence_start!r}")


class Cancelled(Exception):
    """The operation was stopped by the caller."""


@dataclass(frozen=True, slots=True)
class SessionConfig:
    model_path: str
    n_ctx: int = defaults.N_CTX
    n_threads: int = defaults.N_THREADS
    n_gpu_layers: int = 0
    n_batch: int = 512
    # llama.cpp RPC servers ("HOST:PORT") that hold part of the model (engine/rpc.py); with n_gpu_layers 0 every
    # layer goes to them, split by their free memory. Non-loopback servers need rpc_allow_remote
    rpc: tuple[str, ...] = ()
    rpc_allow_remote: bool = False
    skv: SkvParams | None = field(default_factory=SkvParams)  # None: plain llama.cpp (policy full only)
    sent_cap: int = 0
    seed: int = 0
    prompt_format: str = "auto"  # auto (the GGUF chat template when it has one), completion, chat
    # the paper's protocol beside ours (native/README.md): how the question is read and how a generated sentence starts
    # question_attention: policy (decoded token by token under the policy) or dense (one dense batch);
    # sentence_start: keep (the first token of a new sentence keeps the selection) or dense (a full step)
    question_attention: str = defaults.QUESTION_ATTENTION
    sentence_start: str = defaults.SENTENCE_START

    @property
    def remaps_positions(self) -> bool:
        """SentenceKV gives tokens past the trained length positions inside it (native remap_positions)."""
        return (
            self.skv is not None
            and self.skv.policy != native.Policy.FULL
            and self.skv.remap != native.Remap.OFF
        )

    def __post_init__(self) -> None:
        if self.prompt_format not in FORMATS:
            raise ValueError(f"prompt format must be one of {', '.join(FORMATS)}, got {self.prompt_format!r}")
        check_protocol(self.question_attention, self.sentence_start)
        if self.n_ctx < 64:
            raise ValueError(f"n_ctx must be at least 64, got {self.n_ctx}")
        if self.n_threads < 1:
            raise ValueError(f"threads must be at least 1, got {self.n_threads}")
