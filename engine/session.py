"""One conversation over documents: dense prefill of the documents, then the question, the answer prefix and the
answer decoded token by token under the SentenceKV policy (DESIGN.md, data flow 3).

The session owns a `llama_cpp.Llama`, which is not thread-safe: only one thread (the engine worker, or the CLI's
main thread) may call into a Session.
"""

from __future__ import annotations

import base64
import binascii
import codecs
import ctypes
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np

from engine import native
from engine.documents import Document
from engine.native import Policy, SkvContext, SkvParams
from engine.prompts import FORMATS, PromptFormat, PromptFormatError, choose_format
from engine.sentences import Sentence, SentenceStream, tokenize_sentences
from engine.stopping import StopStrings

if TYPE_CHECKING:
    from engine.session_store import SessionStore, StoredSession

ShouldStop = Callable[[], bool]

# the layout of the documents in the context (BOS, "Document: name" headers, separators): part of a saved session's
# key, so bump it whenever plan() changes what it feeds
DOC_FORMAT = 3  # 2: sentences shorter than 6 tokens join the next one; 3: control tokens as such, BOS only where the vocab adds one


class SessionError(RuntimeError):
    """A session operation failed (the message is one clear sentence)."""


class SessionInputError(SessionError):
    """The session cannot start with this model or these settings (bad input: the CLI exits with 2)."""


def check_model(model_path: str | Path, n_ctx: int) -> list[str]:
    """Before llama.cpp loads anything: refuse a file that is not a GGUF model and an architecture this build of
    llama.cpp does not know; return warnings (a context above the model's trained maximum: llama.cpp runs it, but
    answers past that length degrade)."""
    from engine.models import ModelError, read_model_info

    try:
        info = read_model_info(Path(model_path))
    except ModelError as e:
        raise SessionInputError(f"the model could not be loaded ({e}): choose a llama.cpp GGUF model file") from None
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
    if info.context_length > 0 and n_ctx > info.context_length:
        return [
            f"a context of {n_ctx} tokens is above this model's trained maximum of {info.context_length}: "
            f"answers that use text past {info.context_length} tokens may be poor; choose "
            f"{info.context_length} or less"
        ]
    return []


QUESTION_ATTENTION = ("policy", "dense")
SENTENCE_START = ("keep", "dense")


def check_protocol(question_attention: str, sentence_start: str) -> None:
    if question_attention not in QUESTION_ATTENTION:
        raise ValueError(f"question attention must be one of {', '.join(QUESTION_ATTENTION)}, "
                         f"got {question_attention!r}")
    if sentence_start not in SENTENCE_START:
        raise ValueError(f"sentence start must be one of {', '.join(SENTENCE_START)}, got {sentence_start!r}")


class Cancelled(Exception):
    """The operation was stopped by the caller."""


@dataclass(frozen=True, slots=True)
class SessionConfig:
    model_path: str
    n_ctx: int = 8192
    n_threads: int = 2
    n_gpu_layers: int = 0
    n_batch: int = 512
    skv: SkvParams | None = field(default_factory=SkvParams)  # None: plain llama.cpp (policy full only)
    sent_cap: int = 0
    seed: int = 0
    prompt_format: str = "auto"  # auto (the GGUF chat template when it has one), completion, chat
    # the paper's protocol beside ours (RESEARCH.md): how the question is read and how a generated sentence starts
    question_attention: str = "policy"  # policy: decoded token by token under the policy; dense: one dense batch
    sentence_start: str = "keep"  # keep: the first token of a new sentence keeps the selection; dense: a full step

    def __post_init__(self) -> None:
        if self.prompt_format not in FORMATS:
            raise ValueError(f"prompt format must be one of {', '.join(FORMATS)}, got {self.prompt_format!r}")
        check_protocol(self.question_attention, self.sentence_start)
        if self.n_ctx < 64:
            raise ValueError(f"n_ctx must be at least 64, got {self.n_ctx}")
        if self.n_threads < 1:
            raise ValueError(f"threads must be at least 1, got {self.n_threads}")


@dataclass(frozen=True, slots=True)
class SpanInfo:
    """What one native index entry (sentence) is: a document sentence, a header, the question or the answer."""

    doc: int  # index into Session.documents, -1 for prompt/answer text
    char_start: int
    char_end: int
    tok_start: int  # absolute positions in the context
    tok_end: int
    text: str


@dataclass(frozen=True, slots=True)
class DocRange:
    """The part of one document to load: sentences (0-based indices) or characters, [start, end); end None = to
    the end. A character range takes the sentences that start inside it."""

    start: int = 0
    end: int | None = None
    unit: Literal["sentence", "char"] = "sentence"

    def __post_init__(self) -> None:
        if self.unit not in ("sentence", "char"):
            raise ValueError(f"a range unit is 'sentence' or 'char', got {self.unit!r}")
        if self.start < 0:
            raise ValueError(f"a range starts at 0 or later, got {self.start}")
        if self.end is not None and self.end <= self.start:
            raise ValueError(f"a range ends after its start, got {self.start}:{self.end}")

    @classmethod
    def parse(cls, text: str) -> DocRange:
        """'START:END' (sentences) or 'chars:START:END' (characters); either bound may be empty."""
        raw = text.strip()
        unit: Literal["sentence", "char"] = "sentence"
        for prefix in ("chars:", "char:"):
            if raw.startswith(prefix):
                unit, raw = "char", raw[len(prefix):]
        a, sep, b = raw.partition(":")
        try:
            if not sep:
                raise ValueError
            return cls(int(a) if a.strip() else 0, int(b) if b.strip() else None, unit)
        except ValueError:
            raise ValueError(f"a range is START:END (sentences) or chars:START:END, got {text!r}") from None

    def pick(self, sents: list[Sentence]) -> list[Sentence]:
        if self.unit == "sentence":
            return sents[self.start : self.end]
        end = self.end if self.end is not None else float("inf")
        return [s for s in sents if self.start <= s.char_start < end]

    def key(self) -> list:
        return [self.unit, self.start, self.end]


@dataclass(frozen=True, slots=True)
class DocumentPlan:
    """What goes into the context: tokens and spans (cut at a sentence boundary when they do not fit)."""

    tokens: list[int]
    spans: list[SpanInfo]
    n_total: int  # tokens of the whole documents
    n_selected: int  # tokens of the chosen ranges (n_total without ranges)

    @property
    def n_loaded(self) -> int:
        return sum(s.tok_end - s.tok_start for s in self.spans if s.doc >= 0)


@dataclass(frozen=True, slots=True)
class LoadReport:
    n_tokens_total: int  # document tokens (all documents, whole)
    n_tokens_loaded: int  # document tokens in the context
    truncated: bool  # the chosen part did not fit: loaded from its start as much as fits
    prefill_s: float  # prefill, or restore of a saved session
    restored: bool = False
    n_tokens_selected: int = -1  # tokens of the chosen ranges; -1: the whole documents
    save_s: float = 0.0  # writing the session to the store after a prefill


@dataclass(frozen=True, slots=True)
class StepRetrieval:
    """Sentences attended at one decode step, merged over SKV layers and heads: (native id, count)."""

    step: int
    counts: tuple[tuple[int, int], ...]
    n_selections: int  # layers x heads
    # per SKV layer (model layer id): (native id, how many of its KV heads chose it)
    layers: tuple[tuple[int, tuple[tuple[int, int], ...]], ...] = ()
    n_head_kv: int = 1


@dataclass(slots=True)
class AskResult:
    answer: str
    tokens: list[int]
    stopped: bool
    ttft_s: float
    decode_s: float
    steps: list[StepRetrieval]
    reason: str = "max_tokens"  # why the answer ended: "eos", "stop" (a stop string), "max_tokens" or "stopped"

    @property
    def decode_tokens(self) -> int:
        return len(self.tokens)


@dataclass(frozen=True, slots=True)
class SessionSnapshot:
    state: bytes  # llama_state_get_data: every layer's K/V (SentenceKV host layers included) and the last logits
    input_ids: bytes  # the context's tokens, int32
    spans: tuple[SpanInfo, ...]
    n_doc_tokens: int
    documents: tuple[Document, ...]
    seed: bytes = b""  # the SentenceKV selection seed (float32): set after the load, so nothing is decoded again


class Session:
    def __init__(self, config: SessionConfig) -> None:
        import llama_cpp  # late: loading libllama takes a moment

        self.config = config
        self._llama_cpp = llama_cpp
        self.warnings: list[str] = check_model(config.model_path, config.n_ctx)
        if config.skv is not None:
            native.request(config.skv, config.sent_cap)
        try:
            self.llm = llama_cpp.Llama(
                model_path=config.model_path,
                n_ctx=config.n_ctx,
                n_batch=config.n_batch,
                n_ubatch=config.n_batch,
                n_threads=config.n_threads,
                n_threads_batch=config.n_threads,
                n_gpu_layers=config.n_gpu_layers,
                flash_attn=True,
                swa_full=False,
                seed=config.seed,
                verbose=False,
            )
        except (ValueError, RuntimeError) as e:
            raise SessionError(f"the model could not be loaded ({e}): check that it is a llama.cpp GGUF file") from None
        self.skv: SkvContext | None = None
        if config.skv is not None:
            if not SkvContext.enabled(self.llm.ctx):
                raise SessionError(
                    "SentenceKV could not be enabled for this model (see the log): use --policy full"
                )
            self.skv = SkvContext(self.llm.ctx)
        self._skv_layers = self.skv.layers() if self.skv is not None else []  # model layer ids: fixed
        md = self.llm.metadata
        arch = md.get("general.architecture", "")
        # sliding-window layers: llama.cpp restores their cache close to, not equal to, the live one (see ask)
        self._swa = int(md.get(f"{arch}.attention.sliding_window", 0) or 0) > 0
        self.n_vocab = self.llm.n_vocab()
        vocab = llama_cpp.llama_model_get_vocab(self.llm.model)
        # BOS only where the model's tokenizer adds one (gemma: yes; qwen2: no, its template starts with a turn)
        self._add_bos = self.llm.token_bos() >= 0 and bool(llama_cpp.llama_vocab_get_add_bos(vocab))
        try:
            self.prompts: PromptFormat = choose_format(config.prompt_format, dict(self.llm.metadata))
        except PromptFormatError as e:
            self.llm.close()
            raise SessionInputError(str(e)) from None
        self.documents: list[Document] = []
        self.spans: list[SpanInfo] = []  # native sentence id -> what it is
        self.n_doc_tokens = 0
        self._stream: SentenceStream | None = None
        self._dense_next = False  # the last decoded token closed a generated sentence (sentence_start dense)
        self._doc_snap: SessionSnapshot | None = None  # the state right after the documents (see ask)
        self._rng = np.random.default_rng(config.seed)

    # ----------------------------------------------------------------- helpers

    @property
    def n_ctx(self) -> int:
        # llama.cpp pads the context to 256; llama-cpp-python's token arrays keep the requested size
        return min(self.llm.n_ctx(), self.config.n_ctx)

    @property
    def n_past(self) -> int:
        return self.llm.n_tokens

    @property
    def n_layers(self) -> int:
        return int(self._llama_cpp.llama_model_n_layer(self.llm.model))

    @property
    def n_ctx_train(self) -> int:
        return int(self._llama_cpp.llama_model_n_ctx_train(self.llm.model))

    def tokenize(self, text: str, add_bos: bool = False, special: bool = False) -> list[int]:
        """Tokens of `text`. special=True parses control tokens (`<|im_start|>`): only for the prompt format's own
        text, never for what a user or a document supplies (prompts.py)."""
        return self.llm.tokenize(text.encode("utf-8"), add_bos=add_bos, special=special)

    def prompt_tokens(self, question: str, answer_prefix: str = "") -> list[int]:
        """What ask() decodes: the format's text around the question with its control tokens, the question and the
        answer prefix as plain text."""
        out: list[int] = []
        for text, special in self.prompts.parts(question, answer_prefix):
            out.extend(self.tokenize(text, special=special))
        return out

    def logits(self) -> np.ndarray:
        ptr = self._llama_cpp.llama_get_logits_ith(self.llm.ctx, -1)
        return np.ctypeslib.as_array(ptr, shape=(self.n_vocab,))

    def set_params(self, params: SkvParams) -> None:
        if self.skv is None:
            if params.policy != Policy.FULL:
                raise SessionError("this session runs without SentenceKV: only the full policy is available")
            return
        self.skv.set_params(params)

    def _declare(self, ends: list[int]) -> None:
        if self.skv is not None and ends:
            self.skv.add_boundaries(ends)

    def _eval(self, tokens: list[int]) -> None:
        try:
            self.llm.eval(tokens)
        except RuntimeError as e:
            raise SessionError(f"llama.cpp failed to decode ({e})") from None

    # ----------------------------------------------------------------- documents

    def plan_documents(
        self, documents: list[Document], reserve: int, ranges: Mapping[int, DocRange] | None = None
    ) -> tuple[list[int], list[SpanInfo], int]:
        """(tokens, spans, n_total) of plan(): what fits in n_ctx - reserve tokens, and every document token."""
        plan = self.plan(documents, reserve, ranges)
        return plan.tokens, plan.spans, plan.n_total

    def plan(
        self, documents: list[Document], reserve: int, ranges: Mapping[int, DocRange] | None = None
    ) -> DocumentPlan:
        """Tokenize documents sentence by sentence. `ranges` (document index -> DocRange) picks the part of a
        document to load (default: all of it); what does not fit in n_ctx - reserve tokens is cut at a sentence
        boundary, from the start of the chosen part, and counted in n_selected - n_loaded."""
        ranges = dict(ranges or {})
        for di in ranges:
            if not 0 <= di < len(documents):
                raise ValueError(f"a range names document {di}, but there are {len(documents)} documents")
        budget = self.n_ctx - reserve
        if budget < 16:
            raise SessionError(f"the context ({self.n_ctx} tokens) leaves no room for documents: raise n_ctx")
        tokens: list[int] = [self.llm.token_bos()] if self._add_bos else []
        spans: list[SpanInfo] = []
        if tokens:
            spans.append(SpanInfo(-1, 0, 0, 0, 1, ""))
        if self.prompts.head:  # e.g. a chat template's opening of the user turn (its control tokens as such)
            head = self.tokenize(self.prompts.head, special=True)
            spans.append(SpanInfo(-1, 0, 0, len(tokens), len(tokens) + len(head), self.prompts.head))
            tokens.extend(head)
        n_total = n_selected = 0
        full = True
        max_len = self.config.skv.max_sentence_len if self.config.skv else 128
        tail = self.tokenize(self.prompts.doc_tail)
        for di, doc in enumerate(documents):
            header = self.prompts.header(doc.name)
            h_toks = self.tokenize(header)
            d_toks, sents = tokenize_sentences(doc.text, self.tokenize, max_tokens=max_len)
            n_total += len(d_toks)
            if di in ranges:
                picked = ranges[di].pick(sents)
                if not picked:
                    r = ranges[di]
                    raise ValueError(
                        f"the range {r.start}:{'' if r.end is None else r.end} ({r.unit}s) selects nothing of "
                        f"{doc.name} ({len(sents)} sentences, {len(doc.text)} characters)"
                    )
                sents = picked
            n_selected += sum(s.n_tokens for s in sents)
            if not full:
                continue
            if len(tokens) + len(h_toks) >= budget:
                full = False
                continue
            spans.append(SpanInfo(-1, 0, 0, len(tokens), len(tokens) + len(h_toks), header))
            tokens.extend(h_toks)
            base = len(tokens)
            t0 = sents[0].tok_start if sents else 0
            taken = 0
            for s in sents:
                if base + s.tok_end - t0 > budget:
                    full = False
                    break
                spans.append(SpanInfo(di, s.char_start, s.char_end, base + s.tok_start - t0, base + s.tok_end - t0,
                                      doc.text[s.char_start : s.char_end]))
                taken = s.tok_end - t0
            tokens.extend(d_toks[t0 : t0 + taken])
            if full and len(tokens) + len(tail) < budget:
                spans.append(SpanInfo(-1, 0, 0, len(tokens), len(tokens) + len(tail), self.prompts.doc_tail))
                tokens.extend(tail)
        return DocumentPlan(tokens, spans, n_total, n_selected)

    def load_documents(
        self,
        documents: list[Document],
        reserve: int = 256,
        on_progress: Callable[[int, int], None] | None = None,
        should_stop: ShouldStop | None = None,
        ranges: Mapping[int, DocRange] | None = None,
        store: SessionStore | None = None,
    ) -> LoadReport:
        """Prefill the documents densely (in n_batch chunks, with progress) and declare their sentences.

        With a store, a session saved for the same model, documents, ranges and n_ctx is restored instead (when it
        leaves `reserve` tokens free), and a fresh prefill is saved for next time."""
        t0 = time.perf_counter()
        key = self.store_key(documents, ranges) if store is not None else ""
        if store is not None:
            stored = store.load(key)
            if stored is not None:
                report = self._restore_stored(store, stored, documents, reserve, t0)
                if report is not None:
                    if on_progress is not None:
                        on_progress(self.n_doc_tokens, self.n_doc_tokens)
                    return report
        plan = self.plan(documents, reserve, ranges)
        tokens, spans = plan.tokens, plan.spans
        self.reset()
        self.documents = list(documents)
        self.spans = spans
        try:
            self._declare([s.tok_end for s in spans])
            n_batch = self.config.n_batch
            for i in range(0, len(tokens), n_batch):
                if should_stop is not None and should_stop():
                    raise Cancelled()
                self._eval(tokens[i : i + n_batch])
                if on_progress is not None:
                    on_progress(min(len(tokens), i + n_batch), len(tokens))
        except BaseException:
            # nothing half-loaded stays behind: a stopped or failed prefill leaves an empty session
            self.reset()
            raise
        self.n_doc_tokens = len(tokens)
        n_loaded = plan.n_loaded
        prefill_s = time.perf_counter() - t0
        save_s = 0.0
        if store is not None:
            t1 = time.perf_counter()
            self._save_stored(store, key, documents, plan)
            save_s = time.perf_counter() - t1
        return LoadReport(plan.n_total, n_loaded, n_loaded < plan.n_selected, prefill_s, False,
                          plan.n_selected, save_s)

    def reset(self) -> None:
        self.llm.reset()
        self._llama_cpp.llama_memory_clear(self._llama_cpp.llama_get_memory(self.llm.ctx), True)
        self.spans = []
        self.documents = []
        self.n_doc_tokens = 0
        self._stream = None
        self._doc_snap = None

    # ----------------------------------------------------------------- state

    def snapshot(self) -> SessionSnapshot:
        """The KV state (host K/V included) and the sentence table, to restore without a prefill.

        Raw llama state only: llama-cpp-python's save_state() also copies its n_batch x n_vocab scores array
        (512 MiB for a 262k vocabulary), which the session never reads."""
        lib, ctx = self._llama_cpp, self.llm.ctx
        size = int(lib.llama_state_get_size(ctx))
        buf = (ctypes.c_uint8 * size)()
        n = int(lib.llama_state_get_data(ctx, buf, size))
        if n <= 0 or n > size:
            raise SessionError(f"llama.cpp could not copy the session state ({n} of {size} bytes)")
        ids = np.ascontiguousarray(self.llm.input_ids[: self.n_past], dtype=np.int32).tobytes()
        seed = self.skv.seed() if self.skv is not None else b""
        return SessionSnapshot(ctypes.string_at(buf, n), ids, tuple(self.spans), self.n_doc_tokens,
                               tuple(self.documents), seed)

    def restore(self, snap: SessionSnapshot) -> None:
        """Load a snapshot; the sentence table is declared again and closed (vectors are recomputed from the
        restored K) and the selection seed set again, so the next step is exactly the one after the original
        prefill. A snapshot without a seed (taken when none was pending) decodes its last two tokens again to make
        one. On failure the session is empty and SessionError says why."""
        ids = np.frombuffer(snap.input_ids, dtype=np.int32)
        if len(ids) > self.n_ctx:
            raise SessionError(f"the saved session holds {len(ids)} tokens, more than this context ({self.n_ctx})")
        lib, ctx = self._llama_cpp, self.llm.ctx
        src = ctypes.cast(ctypes.c_char_p(snap.state), ctypes.POINTER(ctypes.c_uint8))
        try:
            n = int(lib.llama_state_set_data(ctx, src, len(snap.state)))
            if n != len(snap.state):
                raise SessionError(f"llama.cpp rejected the saved session state ({n} of {len(snap.state)} bytes read)")
            self.llm.input_ids[: len(ids)] = ids
            self.llm.n_tokens = len(ids)
            self._doc_snap = snap if snap.n_doc_tokens == len(ids) else None
            self.spans = list(snap.spans)
            self.documents = list(snap.documents)
            self.n_doc_tokens = snap.n_doc_tokens
            self._stream = None
            if self.skv is None:
                pass  # plain llama.cpp: the state (logits included) is all there is
            elif snap.seed:
                self._declare([s.tok_end for s in self.spans])
                self.skv.close_cached()  # vectors on the device before the next step's graph is built
                self.skv.set_seed(snap.seed)
            else:
                # rewind() removes and re-decodes the last two tokens and declares the ends past them itself
                keep = max(0, self.n_past - 2)
                self._declare([s.tok_end for s in self.spans if s.tok_end <= keep])
                self.rewind(self.n_past)
        except BaseException:
            self.reset()
            raise

    # ----------------------------------------------------------------- saved sessions

    def store_key(self, documents: list[Document], ranges: Mapping[int, DocRange] | None = None) -> str:
        """Key of a saved session: everything that makes its state valid for this context."""
        from engine import __version__
        from engine.models import model_identity
        from engine.session_store import make_key, text_sha256

        skv = self.config.skv
        return make_key({
            "model": model_identity(self.config.model_path),
            "documents": [text_sha256(d.text) for d in documents],
            "ranges": {str(i): r.key() for i, r in sorted((ranges or {}).items())},
            "n_ctx": self.n_ctx,
            "max_sentence_len": skv.max_sentence_len if skv else 128,
            "doc_format": DOC_FORMAT,
            "prompt": self.prompts.key(),
            "engine": __version__,
            "native": native.check_native() if skv is not None else "off",
        })

    def _save_stored(self, store: SessionStore, key: str, documents: list[Document], plan: DocumentPlan) -> None:
        from pathlib import Path

        from engine.session_store import text_sha256

        snap = self.snapshot()
        meta = {
            "model": str(self.config.model_path),
            "model_name": Path(self.config.model_path).name,
            "n_ctx": self.n_ctx,
            "n_doc_tokens": self.n_doc_tokens,
            "n_tokens_total": plan.n_total,
            "n_tokens_selected": plan.n_selected,
            "n_tokens_loaded": plan.n_loaded,
            "documents": [{"name": d.name, "path": d.path, "sha256": text_sha256(d.text), "n_chars": len(d.text)}
                          for d in documents],
            "spans": [[s.doc, s.char_start, s.char_end, s.tok_start, s.tok_end] for s in self.spans],
            "headers": {str(i): s.text for i, s in enumerate(self.spans) if s.doc < 0 and s.text},
            "seed": base64.b64encode(snap.seed).decode("ascii"),
        }
        store.save(key, meta, snap.input_ids, snap.state)

    def _restore_stored(self, store: SessionStore, stored: StoredSession, documents: list[Document],
                        reserve: int, t0: float) -> LoadReport | None:
        """Restore a saved session; None (a miss) when it leaves less than `reserve` tokens free or is unusable."""
        meta = stored.meta
        try:
            n_doc = int(meta["n_doc_tokens"])
            if n_doc + reserve > self.n_ctx:
                return None  # saved with a smaller reserve: prefill again (and overwrite it)
            headers = meta.get("headers", {})
            spans = []
            for i, (doc, c0, c1, k0, k1) in enumerate(meta["spans"]):
                text = documents[doc].text[c0:c1] if doc >= 0 else headers.get(str(i), "")
                spans.append(SpanInfo(int(doc), int(c0), int(c1), int(k0), int(k1), text))
            seed = base64.b64decode(meta.get("seed", ""), validate=True)
            snap = SessionSnapshot(stored.state, stored.input_ids, tuple(spans), n_doc, tuple(documents), seed)
            self.restore(snap)
        except (SessionError, KeyError, ValueError, TypeError, IndexError, binascii.Error) as e:
            store.delete(stored.key)
            store._warn(f"the saved document session could not be restored ({e}): deleted; prefilling again")
            return None
        n_sel = int(meta.get("n_tokens_selected", -1))
        n_loaded = int(meta.get("n_tokens_loaded", 0))
        return LoadReport(int(meta.get("n_tokens_total", 0)), n_loaded, n_loaded < n_sel,
                          time.perf_counter() - t0, True, n_sel)

    # ----------------------------------------------------------------- asking

    def prompt_text(self, question: str) -> str:
        return self.prompts.question(question)

    def ask(
        self,
        question: str,
        answer_prefix: str = "",
        max_tokens: int = 128,
        temperature: float = 0.0,
        ignore_eos: bool = False,
        on_token: Callable[[int, str, StepRetrieval | None], None] | None = None,
        should_stop: ShouldStop | None = None,
        stop: tuple[str, ...] = (),
        question_attention: str | None = None,
        sentence_start: str | None = None,
    ) -> AskResult:
        """Decode the question and answer prefix under the policy, then generate up to max_tokens: until an
        end-of-generation token (unless ignore_eos) or a stop string (never part of the answer; a token whose text
        might start one is streamed as "" until that is decided).

        question_attention / sentence_start (default: the config's): `dense` prefills the question and prefix as
        one dense batch over the documents (the paper's evaluation) instead of decoding them under the policy;
        `dense` sentence start gives the first token of every new generated sentence one full-attention step (the
        paper's decoder) instead of keeping the last selection."""
        if max_tokens < 0:
            raise ValueError(f"max_tokens must not be negative, got {max_tokens}")
        question_attention = question_attention or self.config.question_attention
        sentence_start = sentence_start or self.config.sentence_start
        check_protocol(question_attention, sentence_start)
        t0 = time.perf_counter()
        # every ask starts right after the documents: earlier questions and answers are dropped. The state right
        # after the documents is kept (taken at the first ask) and every ask, the first included, starts from it
        # restored: removing the tail with seq_rm is not exact on sliding-window models and loses the selection
        # seed, and on those models (swa_full off) llama.cpp's restored state is not bit-equal to the live one
        # (up to ~1 logit on gemma-3, stock library too), so there the same question always gets the same answer
        # only if every ask runs on the restored state; a saved session restores to that same state. Without
        # sliding-window layers a restore equals the live state and the first ask needs none.
        if self.n_past > self.n_doc_tokens and self._doc_snap is not None:
            self.restore(self._doc_snap)
        elif self.n_past > self.n_doc_tokens:
            self.rewind(self.n_doc_tokens)
        if self._doc_snap is None and self.n_past == self.n_doc_tokens and self.n_doc_tokens > 0:
            snap = self.snapshot()
            if self._swa:
                self.restore(snap)
            self._doc_snap = snap
        p_toks = self.prompt_tokens(question, answer_prefix)
        if self.n_past + len(p_toks) + max_tokens > self.n_ctx:
            raise SessionError(
                f"the question and answer need {len(p_toks) + max_tokens} tokens but only "
                f"{self.n_ctx - self.n_past} are left in the context: load less text or raise n_ctx"
            )
        self._stream = SentenceStream(max_tokens=self.config.skv.max_sentence_len if self.config.skv else 128)
        base = self.n_past
        if question_attention == "dense":
            # the paper's protocol: the question and the prefix attend the whole cache in one batch
            if should_stop is not None and should_stop():
                return AskResult("", [], True, 0.0, 0.0, [], "stopped")
            self._prefill_prompt(p_toks, base)
        else:
            # ours: the question and the prefix are decoded, not prefilled: the policy sees them
            for t in p_toks:
                if should_stop is not None and should_stop():
                    return AskResult("", [], True, 0.0, 0.0, [], "stopped")
                self._decode_one(t, base)
        self._dense_next = False
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        stopper = StopStrings(stop)
        vocab = self._llama_cpp.llama_model_get_vocab(self.llm.model)
        out_tokens: list[int] = []
        pieces: list[str] = []
        steps: list[StepRetrieval] = []
        ttft = 0.0
        t_first = 0.0
        stopped = False
        reason = "max_tokens"
        for i in range(max_tokens):
            if should_stop is not None and should_stop():
                stopped = True
                reason = "stopped"
                break
            tok = self._sample(temperature)
            if not ignore_eos and self._llama_cpp.llama_vocab_is_eog(vocab, tok):
                reason = "eos"
                break
            if i == 0:
                t_first = time.perf_counter()
                ttft = t_first - t0
            out_tokens.append(tok)
            raw = decoder.decode(self.llm.detokenize([tok], special=False))
            dense = self._decode_one(tok, base, raw, sentence_start == "dense")
            text = stopper.push(raw)
            pieces.append(text)
            step = None if dense else self._retrieval(i)
            if step is not None:
                steps.append(step)
            if on_token is not None:
                on_token(tok, text, step)
            if stopper.hit:
                reason = "stop"
                break
        tail = stopper.push(decoder.decode(b"", final=True)) + stopper.flush()
        if tail:  # held back for a possible stop string, or an incomplete character: released at the end
            pieces.append(tail)
            if on_token is not None:
                on_token(-1, tail, None)
        decode_s = time.perf_counter() - t_first if out_tokens else 0.0
        return AskResult("".join(pieces), out_tokens, stopped, ttft, decode_s, steps, reason)

    def rewind(self, n: int) -> None:
        """Drop everything after the first n tokens. The last two kept tokens are decoded again as one batch so
        the next decode step is seeded from their queries, as after a prefill."""
        if not 0 <= n <= self.n_past:
            raise ValueError(f"cannot rewind to {n} tokens: the context holds {self.n_past}")
        if n < self.n_doc_tokens:
            self._doc_snap = None  # the documents themselves are cut
        keep = max(0, n - 2)
        tail = [int(t) for t in self.llm.input_ids[keep:n]]
        self._llama_cpp.llama_memory_seq_rm(self._llama_cpp.llama_get_memory(self.llm.ctx), 0, keep, -1)
        self.llm.n_tokens = keep
        self.spans = [s for s in self.spans if s.tok_end <= n]
        self._declare([s.tok_end for s in self.spans if s.tok_end > keep])
        if tail:
            self._eval(tail)

    def _decode_one(self, tok: int, base: int, text: str | None = None, dense_starts: bool = False) -> bool:
        """Decode one token under the policy; returns True when it ran as a dense step instead (dense_starts: the
        first token after a generated sentence closed)."""
        if self.n_past >= self.n_ctx:
            raise SessionError("the context is full: start a new chat or raise n_ctx")
        dense = dense_starts and self._dense_next and self.skv is not None
        if dense:
            params = self.skv.get_params()
            dense = params.policy != Policy.FULL
        if dense:
            self.skv.set_params(replace(params, policy=Policy.FULL))
            try:
                self._eval([tok])
            finally:
                self.skv.set_params(params)
        else:
            self._eval([tok])
        if text is None:
            text = self.llm.detokenize([tok], special=False).decode("utf-8", errors="replace")
        assert self._stream is not None
        ends = [base + n for n in self._stream.push(text)]
        self._dense_next = bool(ends)
        if ends:
            self._declare(ends)
        return dense

    def _prefill_prompt(self, tokens: list[int], base: int) -> None:
        """The question and prefix as dense batches (their sentences declared first, as a document's are)."""
        assert self._stream is not None
        if self.n_past + len(tokens) > self.n_ctx:
            raise SessionError("the context is full: start a new chat or raise n_ctx")
        ends = []
        for t in tokens:
            text = self.llm.detokenize([t], special=False).decode("utf-8", errors="replace")
            ends += [base + n for n in self._stream.push(text)]
        self._declare(ends)
        for i in range(0, len(tokens), self.config.n_batch):
            self._eval(tokens[i : i + self.config.n_batch])

    def _sample(self, temperature: float) -> int:
        logits = self.logits()
        if temperature <= 0.0:
            return int(np.argmax(logits))
        z = logits.astype(np.float64) / temperature
        z -= z.max()
        p = np.exp(z)
        p /= p.sum()
        return int(self._rng.choice(self.n_vocab, p=p))

    def _retrieval(self, step: int) -> StepRetrieval | None:
        """The sentences the last decode step attended, merged over SKV layers and KV heads."""
        if self.skv is None or self.skv.get_params().policy == Policy.FULL:
            return None
        st = self.skv.stats()
        counts: dict[int, int] = {}
        per_layer = []
        for li, layer_id in enumerate(self._skv_layers):
            mine: dict[int, int] = {}
            for h in range(st.n_head_kv):
                for pick in self.skv.selection(li, h):
                    mine[pick.sentence] = mine.get(pick.sentence, 0) + 1
            for sid, n in mine.items():
                counts[sid] = counts.get(sid, 0) + n
            per_layer.append((layer_id, tuple(sorted(mine.items()))))
        return StepRetrieval(step, tuple(sorted(counts.items())), st.n_layers * st.n_head_kv, tuple(per_layer),
                             st.n_head_kv)

    # ----------------------------------------------------------------- reporting

    def span_of(self, sentence_id: int) -> SpanInfo | None:
        """What native sentence id refers to; prompt/answer sentences get spans built from the native table."""
        if 0 <= sentence_id < len(self.spans):
            return self.spans[sentence_id]
        return None

    def retrieved(self, steps: list[StepRetrieval], top: int = 10) -> list[dict]:
        """Top sentences by weight: the fraction of (step, layer, head) selections that chose them."""
        total = sum(s.n_selections for s in steps)
        if total == 0:
            return []
        counts: dict[int, int] = {}
        for s in steps:
            for sid, n in s.counts:
                counts[sid] = counts.get(sid, 0) + n
        out = []
        for sid, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])):
            sp = self.span_of(sid)
            if sp is None or sp.doc < 0:
                continue
            doc = self.documents[sp.doc]
            out.append({"doc": doc.name, "location": doc.location(sp.char_start), "text": sp.text.strip(),
                        "weight": n / total, "sentence": sid})
            if len(out) >= top:
                break
        return out

    def memory(self) -> dict:
        """Bytes read from the ggml buffers (SentenceKV stats) plus the full-KV figure for this context."""
        out = {"host_kv_bytes": 0, "device_skv_bytes": 0, "device_vec_bytes": 0, "device_stage_bytes": 0,
               "full_kv_bytes": self.full_kv_bytes()}
        if self.skv is not None:
            st = self.skv.stats()
            out["host_kv_bytes"] = st.host_kv_bytes
            out["device_skv_bytes"] = st.device_skv_bytes
            out["device_vec_bytes"] = st.device_vec_bytes
            out["device_stage_bytes"] = st.device_stage_bytes
        return out

    def full_kv_bytes(self) -> int:
        """K/V bytes that every layer of this model would need for n_ctx tokens with a dense F16 cache."""
        md = self.llm.metadata
        arch = md.get("general.architecture", "llama")

        def get(key: str, default: int) -> int:
            try:
                return int(md.get(f"{arch}.{key}", default))
            except (TypeError, ValueError):
                return default

        n_layer = get("block_count", 0)
        n_head = get("attention.head_count", 1)
        n_head_kv = get("attention.head_count_kv", n_head)
        n_embd = get("embedding_length", 0)
        k_len = get("attention.key_length", n_embd // max(n_head, 1))
        v_len = get("attention.value_length", k_len)
        return n_layer * self.n_ctx * n_head_kv * (k_len + v_len) * 2

    def close(self) -> None:
        llm = getattr(self, "llm", None)
        if llm is not None:
            llm.close()
            self.llm = None  # type: ignore[assignment]
