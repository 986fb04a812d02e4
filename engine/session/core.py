"""The Session: one llama context over documents — the dense prefill of the documents, then the question, the
answer prefix and the answer decoded token by token under the SentenceKV policy (docs/DESIGN.md, "The path of one question").

The session owns a `llama_cpp.Llama`, which is not thread-safe: only one thread (the engine worker, or the CLI's
main thread) may call into a Session.
"""

from __future__ import annotations

import codecs
import ctypes
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import numpy as np

from engine import native, rpc
from engine import params as defaults
from engine.documents import Document
from engine.native import SkvContext
from engine.params import Policy, SkvParams
from engine.prompts import PromptFormat, PromptFormatError, choose_format
from engine.sentences import SentenceStream
from engine.session.config import (
    Cancelled,
    ContextFullError,
    SessionConfig,
    SessionError,
    SessionInputError,
    check_model,
    check_protocol,
)
from engine.session.conversation import Turn, TurnRecord
from engine.session.layout import DocRange, DocumentPlan, LoadedContext, LoadReport, SpanInfo, plan_documents
from engine.session.persistence import (
    CHECKPOINT_MIN_TOKENS,
    CHECKPOINT_S,
    SessionSnapshot,
    partial_key,
    restore_stored,
    resume_partial,
    save_partial,
    save_stored,
    store_key,
)
from engine.session.retrieval import StepRetrieval, read_step, top_sentences
from engine.stopping import StopStrings

if TYPE_CHECKING:
    from engine.session_store import SessionStore

ShouldStop = Callable[[], bool]


@dataclass(slots=True)
class AskResult:
    answer: str
    tokens: list[int]
    stopped: bool
    ttft_s: float
    decode_s: float
    steps: list[StepRetrieval]
    reason: str = (
        "max_tokens"  # why the answer ended: "eos", "stop" (a stop string), "max_tokens" or "stopped"
    )
    # the selection behind the first answer token (made at the last prompt step); None when that step ran dense
    first_step: StepRetrieval | None = None
    turn: int = (
        0  # the conversation turn this answer is (1-based); 0 when it was stopped before its answer began
    )
    # of decode_s, the time inside the decode call (llama.cpp); the rest is the loop's own (Python) work
    decode_native_s: float = 0.0

    @property
    def decode_tokens(self) -> int:
        return len(self.tokens)


class Prefill:
    """A dense prefill in n_batch chunks (Session.begin_prefill): `step()` decodes the next chunk, `run()` all of
    them; the context is the documents' only once every chunk is in (`done`)."""

    def __init__(self, session: Session, tokens: list[int], loaded: LoadedContext) -> None:
        self._session = session
        self._tokens = tokens
        self._loaded = loaded
        self._next = 0

    @property
    def n_tokens(self) -> int:
        return len(self._tokens)

    @property
    def n_done(self) -> int:
        return self._next

    @property
    def done(self) -> bool:
        return self._next >= len(self._tokens)

    def step(self) -> int:
        """Decode the next chunk; returns the tokens prefilled so far."""
        s = self._session
        if not self.done:
            end = min(len(self._tokens), self._next + s.config.n_batch)
            s.eval(self._tokens[self._next : end])
            self._next = end
        if self.done:
            s._loaded = self._loaded
        return self._next

    def resume_at(self, n_done: int) -> None:
        """The context already holds the first n_done tokens (a restored partial prefill)."""
        self._next = n_done

    def run(
        self,
        on_progress: Callable[[int, int], None] | None = None,
        should_stop: ShouldStop | None = None,
        checkpoint: Callable[[int, bool], None] | None = None,
    ) -> None:
        """Every chunk, with progress; a stop (Cancelled) or a failure leaves an empty session. `checkpoint(n_done,
        stopping)` runs after each chunk and, on a stop, before the session empties (it may save what is done)."""
        try:
            while not self.done:
                if should_stop is not None and should_stop():
                    if checkpoint is not None and self._next > 0:
                        checkpoint(self._next, True)
                    raise Cancelled()
                n = self.step()
                if on_progress is not None:
                    on_progress(n, len(self._tokens))
                if checkpoint is not None and not self.done:
                    checkpoint(n, False)
        except BaseException:
            self._session.reset()
            raise


class Session:
    def __init__(self, config: SessionConfig) -> None:
        import llama_cpp  # late: loading libllama takes a moment

        self.config = config
        self._llama_cpp = llama_cpp
        self.info, self.warnings = check_model(config.model_path, config.n_ctx, remap=config.remaps_positions)
        n_gpu_layers = config.n_gpu_layers
        servers: tuple[str, ...] = ()
        if config.rpc:
            endpoints = rpc.parse_endpoints(",".join(config.rpc))
            rpc.connect(endpoints, config.rpc_allow_remote)
            servers = tuple(str(e) for e in endpoints)
            n_gpu_layers = n_gpu_layers or -1  # every layer on the servers unless told how many
        if config.skv is not None:
            native.request(config.skv, config.sent_cap)
        try:
            with rpc.model_devices(servers):
                self.llm = llama_cpp.Llama(
                    model_path=config.model_path,
                    n_ctx=config.n_ctx,
                    n_batch=config.n_batch,
                    n_ubatch=config.n_batch,
                    n_threads=config.n_threads,
                    n_threads_batch=config.n_threads,
                    n_gpu_layers=n_gpu_layers,
                    flash_attn=True,
                    swa_full=False,
                    seed=config.seed,
                    verbose=False,
                )
        except (ValueError, RuntimeError) as e:
            raise SessionError(
                f"the model could not be loaded ({e}): check that it is a llama.cpp GGUF file"
            ) from None
        self.skv: SkvContext | None = None
        if config.skv is not None:
            if not SkvContext.enabled(self.llm.ctx):
                raise SessionError(
                    "SentenceKV could not be enabled for this model (see the log): use --policy full"
                )
            self.skv = SkvContext(self.llm.ctx)
        self.skv_layers = self.skv.layers() if self.skv is not None else []  # model layer ids: fixed
        # sliding-window layers: llama.cpp restores their cache close to, not equal to, the live one (see ask)
        self._swa = self.info.sliding_window > 0
        self.n_vocab = self.llm.n_vocab()
        vocab = llama_cpp.llama_model_get_vocab(self.llm.model)
        # BOS only where the model's tokenizer adds one (gemma: yes; qwen2: no, its template starts with a turn)
        self._add_bos = self.llm.token_bos() >= 0 and bool(llama_cpp.llama_vocab_get_add_bos(vocab))
        try:
            self.prompts: PromptFormat = choose_format(
                config.prompt_format, {"tokenizer.chat_template": self.info.chat_template}
            )
        except PromptFormatError as e:
            self.llm.close()
            raise SessionInputError(str(e)) from None
        self._loaded = LoadedContext()
        self._stream: SentenceStream | None = None
        self._dense_next = False  # the last decoded token closed a generated sentence (sentence_start dense)
        self._doc_snap: SessionSnapshot | None = None  # the state right after the documents (see ask)
        self._rng = np.random.default_rng(config.seed)
        self._turns: list[Turn] = []  # the conversation after the documents (conversation.py)
        self._conv_spans: list[
            SpanInfo
        ] = []  # its index entries (and the running turn's), after the documents'
        self._turn_no = 0  # the running turn's number while it decodes (labels its entries)
        self._role = ""  # the role of the segment being decoded
        self._turn_tokens: list[int] = []  # the running turn's tokens so far (its entries' text)
        self._native_s = 0.0  # time spent in the decode call, summed (AskResult.decode_native_s)

    # ----------------------------------------------------------------- helpers

    @property
    def n_ctx(self) -> int:
        # llama.cpp pads the context to 256; llama-cpp-python's token arrays keep the requested size
        return min(self.llm.n_ctx(), self.config.n_ctx)

    @property
    def n_past(self) -> int:
        return self.llm.n_tokens

    @property
    def loaded(self) -> LoadedContext:
        return self._loaded

    @property
    def documents(self) -> tuple[Document, ...]:
        return self._loaded.documents

    @property
    def spans(self) -> tuple[SpanInfo, ...]:
        """What every native index entry is (documents' sentences, headers; not the question or the answer)."""
        return self._loaded.spans

    @property
    def n_doc_tokens(self) -> int:
        return self._loaded.n_doc_tokens

    @property
    def turns(self) -> tuple[Turn, ...]:
        """The conversation after the documents: every turn's question and answer are in the context."""
        return tuple(self._turns)

    def bos_tokens(self) -> list[int]:
        """[BOS] where the model's tokenizer adds one (gemma), else [] (qwen2: its template opens a turn)."""
        return [self.llm.token_bos()] if self._add_bos else []

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

    def reseed(self, seed: int) -> None:
        """Sample from here on from a generator seeded with `seed` (temperature > 0; an API request's `seed`)."""
        self._rng = np.random.default_rng(seed)

    def set_params(self, params: SkvParams) -> None:
        if self.skv is None:
            if params.policy != Policy.FULL:
                raise SessionError("this session runs without SentenceKV: only the full policy is available")
            return
        self.skv.set_params(params)

    def declare_sentences(self, ends: list[int]) -> None:
        """Sentence ends (positions one past their last token, increasing) for the native index; a sentence is
        indexed once all its tokens are in the cache."""
        if self.skv is not None and ends:
            self.skv.add_boundaries(ends)

    def eval(self, tokens: list[int]) -> None:
        """Decode tokens as one batch (a batch of more than one is dense; one token runs under the policy)."""
        t0 = time.perf_counter()
        try:
            self.llm.eval(tokens)
        except RuntimeError as e:
            raise SessionError(f"llama.cpp failed to decode ({e})") from None
        finally:
            self._native_s += time.perf_counter() - t0

    def teacher_force(self, tokens: list[int]) -> np.ndarray:
        """Decode tokens one at a time under the policy; the logits after each, [len(tokens), n_vocab] float32."""
        out = np.empty((len(tokens), self.n_vocab), dtype=np.float32)
        for i, t in enumerate(tokens):
            self.eval([t])
            out[i] = self.logits()
        return out

    def begin_prefill(
        self,
        tokens: list[int],
        spans: list[SpanInfo],
        documents: list[Document] = (),
        declare: list[int] | None = None,
    ) -> Prefill:
        """Start a dense prefill of `tokens` into an empty context: the spans' ends (or `declare`, for text whose
        sentences close later as it is decoded) are declared first, so the index closes as the chunks arrive.
        The one way to fill the context (load_documents, the benchmarks and tests go through it)."""
        self.reset()
        self.declare_sentences([sp.tok_end for sp in spans] if declare is None else list(declare))
        return Prefill(self, list(tokens), LoadedContext(tuple(documents), tuple(spans), len(tokens)))

    def prefill(
        self,
        tokens: list[int],
        spans: list[SpanInfo],
        documents: list[Document] = (),
        declare: list[int] | None = None,
    ) -> None:
        """begin_prefill(...).run(): the whole prefill at once."""
        self.begin_prefill(tokens, spans, documents, declare).run()

    def extend(self, tokens: list[int], spans: list[SpanInfo]) -> None:
        """Prefill more document tokens densely after what the context holds (e.g. after rewind): the new spans'
        ends are declared and the loaded context grows by them."""
        if self._conv_spans:
            raise SessionError(
                "documents cannot be added after a conversation's turns: cut them first (cut_turns(0))"
            )
        kept = self._loaded
        self.declare_sentences([sp.tok_end for sp in spans])
        self.eval(tokens)
        self._loaded = LoadedContext(kept.documents, kept.spans + tuple(spans), self.n_past)

    def debug_fill(self, n_tokens: int, seed: int, filler: int) -> None:
        """Benchmarks only: a synthetic cache of n_tokens tokens (random K/V, native llama_skv_debug_fill); the
        Python side (llama-cpp-python's token list) is told so. The cache must be empty; sentences are declared
        as for a prefill (before or after)."""
        native.debug_fill(self.llm.ctx, n_tokens, seed)
        self.llm.input_ids[:n_tokens] = filler
        self.llm.n_tokens = n_tokens
        self._loaded = LoadedContext((), (), n_tokens)
        self._turns = []
        self._conv_spans = []

    # ----------------------------------------------------------------- documents

    def plan(
        self, documents: list[Document], reserve: int, ranges: Mapping[int, DocRange] | None = None
    ) -> DocumentPlan:
        """Tokenize documents sentence by sentence (layout.plan_documents): what fits in n_ctx - reserve."""
        return plan_documents(self, documents, reserve, ranges)

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
                report = restore_stored(self, store, stored, documents, reserve, t0)
                if report is not None:
                    if on_progress is not None:
                        on_progress(self.n_doc_tokens, self.n_doc_tokens)
                    return report
        plan = self.plan(documents, reserve, ranges)
        # nothing half-loaded stays in the session: a stopped or failed prefill leaves it empty; a long one keeps
        # what it finished in the store (a partial session) and the next load resumes from there
        pre = self.begin_prefill(plan.tokens, plan.spans, documents)
        checkpoint = None
        if store is not None and len(plan.tokens) >= CHECKPOINT_MIN_TOKENS:
            pre.resume_at(resume_partial(self, store, key, plan))
            last = [time.perf_counter()]

            def checkpoint(n_done: int, stopping: bool) -> None:
                if stopping or time.perf_counter() - last[0] >= CHECKPOINT_S:
                    try:
                        save_partial(self, store, key, documents, plan, n_done)
                    except SessionError as e:  # a checkpoint never stops the prefill
                        store.warn(f"the partly prefilled session was not saved ({e})")
                    last[0] = time.perf_counter()

        pre.run(on_progress, should_stop, checkpoint)
        n_loaded = plan.n_loaded
        prefill_s = time.perf_counter() - t0
        save_s = 0.0
        if store is not None:
            t1 = time.perf_counter()
            save_stored(self, store, key, documents, plan)
            store.delete(partial_key(key))
            save_s = time.perf_counter() - t1
        return LoadReport(
            plan.n_total, n_loaded, n_loaded < plan.n_selected, prefill_s, False, plan.n_selected, save_s
        )

    def reset(self) -> None:
        self.llm.reset()
        self._llama_cpp.llama_memory_clear(self._llama_cpp.llama_get_memory(self.llm.ctx), True)
        self._loaded = LoadedContext()
        self._stream = None
        self._doc_snap = None
        self._turns = []
        self._conv_spans = []

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
        query_seed = self.skv.query_seed() if self.skv is not None else b""
        return SessionSnapshot(
            ctypes.string_at(buf, n),
            ids,
            tuple(self.spans),
            self.n_doc_tokens,
            tuple(self.documents),
            query_seed,
        )

    def restore(self, snap: SessionSnapshot) -> None:
        """Load a snapshot; the sentence table is declared again and closed (vectors are recomputed from the
        restored K) and the selection seed set again, so the next step is exactly the one after the original
        prefill. A snapshot without a seed (taken when none was pending) decodes its last two tokens again to make
        one. On failure the session is empty and SessionError says why."""
        try:
            self.set_state(snap.state, snap.input_ids)
            self._doc_snap = snap if snap.n_doc_tokens == len(snap.input_ids) // 4 else None
            self._loaded = LoadedContext(tuple(snap.documents), tuple(snap.spans), snap.n_doc_tokens)
            self._stream = None
            self._turns = []  # a snapshot holds documents only; turns are decoded again (replay)
            self._conv_spans = []
            if self.skv is None:
                pass  # plain llama.cpp: the state (logits included) is all there is
            elif snap.query_seed:
                self.declare_sentences([s.tok_end for s in self.spans])
                self.skv.close_cached()  # vectors on the device before the next step's graph is built
                self.skv.set_query_seed(snap.query_seed)
            else:
                # rewind() removes and re-decodes the last two tokens and declares the ends past them itself
                keep = max(0, self.n_past - 2)
                self.declare_sentences([s.tok_end for s in self.spans if s.tok_end <= keep])
                self.rewind(self.n_past)
        except BaseException:
            self.reset()
            raise

    def set_state(self, state: bytes, input_ids: bytes) -> None:
        """The raw llama state and the tokens it holds (restore, a resumed prefill); SessionError if refused."""
        ids = np.frombuffer(input_ids, dtype=np.int32)
        if len(ids) > self.n_ctx:
            raise SessionError(
                f"the saved session holds {len(ids)} tokens, more than this context ({self.n_ctx})"
            )
        src = ctypes.cast(ctypes.c_char_p(state), ctypes.POINTER(ctypes.c_uint8))
        n = int(self._llama_cpp.llama_state_set_data(self.llm.ctx, src, len(state)))
        if n != len(state):
            raise SessionError(f"llama.cpp rejected the saved session state ({n} of {len(state)} bytes read)")
        self.llm.input_ids[: len(ids)] = ids
        self.llm.n_tokens = len(ids)

    # ----------------------------------------------------------------- saved sessions

    def store_key(self, documents: list[Document], ranges: Mapping[int, DocRange] | None = None) -> str:
        """Key of a saved session: everything that makes its state valid for this context."""
        return store_key(self, documents, ranges)

    # ----------------------------------------------------------------- asking

    def prompt_text(self, question: str) -> str:
        return self.prompts.question(question)

    def ask(
        self,
        question: str,
        answer_prefix: str = "",
        max_tokens: int = defaults.MAX_TOKENS,
        temperature: float = 0.0,
        ignore_eos: bool = False,
        on_token: Callable[[int, str, StepRetrieval | None], None] | None = None,
        should_stop: ShouldStop | None = None,
        stop: tuple[str, ...] = (),
        question_attention: str | None = None,
        sentence_start: str | None = None,
        prompt_tokens: list[int] | None = None,
        sampler: Callable[[np.ndarray], int] | None = None,
        keep_turns: int = 0,
    ) -> AskResult:
        """Decode the question and answer prefix under the policy, then generate up to max_tokens: until an
        end-of-generation token (unless ignore_eos) or a stop string (never part of the answer; a token whose text
        might start one is streamed as "" until that is decided). The question and its answer stay in the context
        and in the sentence index as the conversation's turn keep_turns + 1 (`turns`).

        keep_turns: how many earlier turns the question follows — 0: right after the documents (an independent
        question; the conversation starts again), len(turns): a follow-up, fewer: the later turns are cut
        (regenerate or edit a turn). Every turn starts from the same state for the same history: the documents'
        state, or the earlier turns with their last two tokens decoded again (`rewind`), so asking a turn again
        gives bit-identical logits.

        question_attention / sentence_start (default: the config's): `dense` prefills the question and prefix as
        one dense batch over the documents (the paper's evaluation) instead of decoding them under the policy;
        `dense` sentence start gives the first token of every new generated sentence one full-attention step (the
        paper's decoder) instead of keeping the last selection.

        prompt_tokens: decode these instead of the prompt format's question (a benchmark's own prompt); sampler:
        picks each token from the logits instead of the temperature sampler (a test's script, a replay)."""
        if max_tokens < 0:
            raise ValueError(f"max_tokens must not be negative, got {max_tokens}")
        if not 0 <= keep_turns <= len(self._turns):
            raise ValueError(f"cannot keep {keep_turns} turns: the conversation has {len(self._turns)}")
        question_attention = question_attention or self.config.question_attention
        sentence_start = sentence_start or self.config.sentence_start
        check_protocol(question_attention, sentence_start)
        t0 = time.perf_counter()
        self._enter_turn(keep_turns)
        if prompt_tokens is not None:
            segments = [(list(prompt_tokens), "user")]
        else:
            segments = self._prompt_segments(question, answer_prefix, follow_up=keep_turns > 0)
        n_prompt = sum(len(toks) for toks, _ in segments)
        if self.n_past + n_prompt + max_tokens > self.n_ctx:
            left = self.n_ctx - self.n_past
            if self._turns:
                raise ContextFullError(
                    f"this turn needs {n_prompt + max_tokens} tokens but the conversation leaves {left} of the "
                    f"context: drop the oldest turns, start a new chat, or raise n_ctx",
                    n_prompt + max_tokens,
                    left,
                )
            raise ContextFullError(
                f"the question and answer need {n_prompt + max_tokens} tokens but only {left} are left in the "
                f"context: load less text or raise n_ctx",
                n_prompt + max_tokens,
                left,
            )
        return self._run_turn(
            question,
            answer_prefix,
            segments,
            max_tokens,
            temperature,
            ignore_eos,
            on_token,
            should_stop,
            stop,
            question_attention,
            sentence_start,
            sampler,
            prompt_tokens is not None,
            t0,
        )

    def _enter_turn(self, k: int) -> None:
        """The state a question after the first k turns starts from (see ask)."""
        if k == 0:
            # right after the documents. The state there is kept (taken at the first ask) and every such ask, the
            # first included, starts from it restored: removing the tail with seq_rm is not exact on
            # sliding-window models and loses the selection seed, and on those models (swa_full off) llama.cpp's
            # restored state is not bit-equal to the live one (up to ~1 logit on gemma-3, stock library too), so
            # there the same question always gets the same answer only if every ask runs on the restored state;
            # a saved session restores to that same state. Without sliding-window layers a restore equals the
            # live state and the first ask needs none.
            if self.n_past > self.n_doc_tokens and self._doc_snap is not None:
                self.restore(self._doc_snap)
            elif self.n_past > self.n_doc_tokens:
                self.rewind(self.n_doc_tokens)
            if self._doc_snap is None and self.n_past == self.n_doc_tokens and self.n_doc_tokens > 0:
                snap = self.snapshot()
                if self._swa:
                    self.restore(snap)
                self._doc_snap = snap
            self._turns = []
            self._conv_spans = []
            return
        n = self._turns[k - 1].tok_end
        if self._swa and n < self.n_past:
            # sliding-window layers do not keep what a tail removal would need: the documents' state, then the
            # kept turns decoded again exactly as they were
            kept = self._turns[:k]
            self._enter_turn(0)
            for t in kept:
                self.replay(t)
            n = self._turns[k - 1].tok_end
        # the kept turns stay in the cache; their last two tokens are decoded again (as one batch), which seeds the
        # next selection the same way whether the turn just ended, later turns were cut or the turns were replayed
        self.rewind(n)

    def cut_turns(self, k: int) -> None:
        """Keep the first k turns of the conversation: the context as right after them (see ask)."""
        if not 0 <= k <= len(self._turns):
            raise ValueError(f"cannot keep {k} turns: the conversation has {len(self._turns)}")
        self._enter_turn(k)

    def replay(self, turn: Turn | TurnRecord) -> Turn:
        """Decode a turn again after the conversation (a chat reopened, sliding-window models, the oldest turns
        dropped): the same prompt and answer tokens (under the parameters it had, for a Turn), so the context is as
        it was when the turn has the same place."""
        rec = turn.record() if isinstance(turn, Turn) else turn
        tokens = list(rec.answer_tokens) or (self.tokenize(rec.answer) if rec.answer else [])
        forced = iter(tokens)
        params = turn.params if isinstance(turn, Turn) else None
        saved = self.skv.get_params() if self.skv is not None else None
        if saved is not None and params is not None:
            self.skv.set_params(params)
        try:
            r = self.ask(
                rec.question,
                rec.answer_prefix,
                max_tokens=len(tokens),
                ignore_eos=True,
                question_attention=rec.question_attention,
                sentence_start=rec.sentence_start,
                prompt_tokens=list(turn.prompt_tokens)
                if isinstance(turn, Turn) and turn.prompt_tokens
                else None,
                sampler=lambda _logits: next(forced),
                keep_turns=len(self._turns),
            )
        finally:
            if saved is not None:
                self.skv.set_params(saved)
        assert r.tokens == tokens
        self._turns[-1] = replace(self._turns[-1], answer=rec.answer or r.answer, reason=rec.reason)
        return self._turns[-1]

    def _prompt_segments(
        self, question: str, answer_prefix: str, follow_up: bool
    ) -> list[tuple[list[int], str]]:
        """The prompt's segments as (tokens, role): the format's text (role ""), the question ("user"), the answer
        prefix ("assistant": it opens the answer)."""
        out: list[tuple[list[int], str]] = []
        asked = False
        for text, special in self.prompts.parts(question, answer_prefix, follow_up=follow_up):
            role = "" if special else ("assistant" if asked else "user")
            asked = asked or role == "user"
            out.append((self.tokenize(text, special=special), role))
        return [(toks, role) for toks, role in out if toks]

    def _run_turn(
        self,
        question,
        answer_prefix,
        segments,
        max_tokens,
        temperature,
        ignore_eos,
        on_token,
        should_stop,
        stop,
        question_attention,
        sentence_start,
        sampler,
        custom_prompt,
        t0,
    ) -> AskResult:
        self._stream = SentenceStream(
            max_tokens=self.config.skv.max_sentence_len if self.config.skv else defaults.MAX_SENTENCE_LEN
        )
        self._turn_no = len(self._turns) + 1
        self._turn_tokens = []
        base = self.n_past
        if question_attention == "dense":
            # the paper's protocol: the question and the prefix attend the whole cache in one batch
            if should_stop is not None and should_stop():
                return AskResult("", [], True, 0.0, 0.0, [], "stopped")
            self._prefill_prompt(segments, base)
        else:
            # ours: the question and the prefix are decoded, not prefilled: the policy sees them
            for toks, role in segments:
                self._role = role
                for t in toks:
                    if should_stop is not None and should_stop():
                        # a stop before the answer began: no turn (the next ask starts where this one did)
                        self._conv_spans = [s for s in self._conv_spans if s.tok_end <= base]
                        return AskResult("", [], True, 0.0, 0.0, [], "stopped")
                    self._decode_one(t, base)
                if role != "assistant":  # the answer prefix runs on into the answer
                    self._end_segment(base)
        self._role = "assistant"
        self._dense_next = False
        first_step = self._retrieval(-1) if question_attention != "dense" and segments else None
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
            tok = sampler(self.logits()) if sampler is not None else self._sample(temperature)
            if not ignore_eos and self._llama_cpp.llama_vocab_is_eog(vocab, tok):
                reason = "eos"
                break
            if i == 0:
                t_first = time.perf_counter()
                ttft = t_first - t0
                native0 = self._native_s
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
        native_s = self._native_s - native0 if out_tokens else 0.0
        self._end_segment(base)  # the turn ends: its answer's last sentence closes
        answer = "".join(pieces)
        n_turn = self._turn_no
        first_span = next(
            (i for i, s in enumerate(self._conv_spans) if s.tok_start >= base), len(self._conv_spans)
        )
        n_answer = len(out_tokens)
        self._turns.append(
            Turn(
                n_turn,
                question,
                answer_prefix,
                answer,
                tuple(out_tokens),
                reason,
                base,
                self.n_past,
                tuple(self._conv_spans[first_span:]),
                self.skv.get_params() if self.skv is not None else None,
                question_attention,
                sentence_start,
                tuple(self._turn_tokens[: len(self._turn_tokens) - n_answer]) if custom_prompt else (),
            )
        )
        return AskResult(
            answer, out_tokens, stopped, ttft, decode_s, steps, reason, first_step, n_turn, native_s
        )

    def rewind(self, n: int) -> None:
        """Drop everything after the first n tokens (and the turns it cuts). The last two kept tokens are decoded
        again as one batch so the next decode step is seeded from their queries, as after a prefill."""
        if not 0 <= n <= self.n_past:
            raise ValueError(f"cannot rewind to {n} tokens: the context holds {self.n_past}")
        if n < self.n_doc_tokens:
            self._doc_snap = None  # the documents themselves are cut
        keep = max(0, n - 2)
        tail = [int(t) for t in self.llm.input_ids[keep:n]]
        self._llama_cpp.llama_memory_seq_rm(self._llama_cpp.llama_get_memory(self.llm.ctx), 0, keep, -1)
        self.llm.n_tokens = keep
        kept = self._loaded
        self._loaded = LoadedContext(
            kept.documents, tuple(s for s in kept.spans if s.tok_end <= n), min(kept.n_doc_tokens, n)
        )
        self._turns = [t for t in self._turns if t.tok_end <= n]
        self._conv_spans = [s for s in self._conv_spans if s.tok_end <= n]
        self.declare_sentences([s.tok_end for s in (*self.spans, *self._conv_spans) if s.tok_end > keep])
        if tail:
            self.eval(tail)

    def _decode_one(self, tok: int, base: int, text: str | None = None, dense_starts: bool = False) -> bool:
        """Decode one token under the policy; returns True when it ran as a dense step instead (dense_starts: the
        first token after a generated sentence closed)."""
        if self.n_past >= self.n_ctx:
            raise SessionError("the context is full: start a new chat or raise n_ctx")
        params = self.skv.get_params() if self.skv is not None else None
        sparse = params is not None and params.policy != Policy.FULL
        dense = sparse and dense_starts and self._dense_next
        oracle = sparse and not dense and params.oracle in (native.Oracle.TOKENS, native.Oracle.SENTENCES)
        if dense or oracle:
            self.skv.set_params(replace(params, policy=Policy.FULL))
            try:
                self.eval([tok])
            finally:
                self.skv.set_params(params)
        if oracle:
            # the oracle (benchmarks): the dense pass left this step's queries in the native cache; the token is
            # removed and decoded again under the policy, which selects from that pass's true attention
            self.llm.n_tokens -= 1
        if not dense:
            self.eval([tok])
        self._turn_tokens.append(tok)
        if text is None:
            text = self.llm.detokenize([tok], special=False).decode("utf-8", errors="replace")
        assert self._stream is not None
        ends = [base + n for n in self._stream.push(text)]
        self._dense_next = bool(ends)
        self._declare_turn_ends(ends, base)
        return dense

    def _end_segment(self, base: int) -> None:
        """A segment of the turn ends (the format's text, the question, the answer): its open sentence closes."""
        assert self._stream is not None
        self._declare_turn_ends([base + n for n in self._stream.flush()], base)

    def _declare_turn_ends(self, ends: list[int], base: int) -> None:
        """Declare sentence ends of the running turn and record what each entry is (turn, role, text)."""
        for e in ends:
            a = self._conv_spans[-1].tok_end if self._conv_spans else self.n_doc_tokens
            a = max(a, base)
            text = self.llm.detokenize(self._turn_tokens[a - base : e - base], special=False)
            self._conv_spans.append(
                SpanInfo(-1, 0, 0, a, e, text.decode("utf-8", errors="replace"), self._turn_no, self._role)
            )
        self.declare_sentences(ends)

    def _prefill_prompt(self, segments: list[tuple[list[int], str]], base: int) -> None:
        """The question and prefix as dense batches (their sentences declared first, as a document's are)."""
        assert self._stream is not None
        tokens = [t for toks, _ in segments for t in toks]
        if self.n_past + len(tokens) > self.n_ctx:
            raise SessionError("the context is full: start a new chat or raise n_ctx")
        self._turn_tokens = list(tokens)
        for toks, role in segments:
            self._role = role
            ends = []
            for t in toks:
                text = self.llm.detokenize([t], special=False).decode("utf-8", errors="replace")
                ends += [base + n for n in self._stream.push(text)]
            if role != "assistant":
                ends += [base + n for n in self._stream.flush()]
            self._declare_turn_ends(ends, base)
        for i in range(0, len(tokens), self.config.n_batch):
            self.eval(tokens[i : i + self.config.n_batch])

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
        return read_step(self, step)

    # ----------------------------------------------------------------- reporting

    def span_of(self, sentence_id: int) -> SpanInfo | None:
        """What native sentence id refers to: a document's entry, then the conversation's (turn and role)."""
        if 0 <= sentence_id < len(self.spans):
            return self.spans[sentence_id]
        i = sentence_id - len(self.spans)
        if 0 <= i < len(self._conv_spans):
            return self._conv_spans[i]
        return None

    def turn_entries(self) -> list[tuple[int, SpanInfo]]:
        """The conversation's index entries (user and assistant sentences, not the format's text): (id, span)."""
        n = len(self.spans)
        return [(n + i, sp) for i, sp in enumerate(self._conv_spans) if sp.role]

    def retrieved(self, steps: list[StepRetrieval], top: int = 10, turn: int | None = None) -> list[dict]:
        """Top sentences by weight: the fraction of (step, layer, head) selections that chose them; the entries of
        `turn` itself (default: the last turn, the one these steps usually answer) are left out."""
        skip = turn if turn is not None else (self._turns[-1].number if self._turns else 0)
        return top_sentences(self, steps, top, skip)

    def memory(self) -> dict:
        """Bytes read from the ggml buffers (SentenceKV stats) plus the full-KV figure for this context."""
        out = {
            "host_kv_bytes": 0,
            "device_skv_bytes": 0,
            "device_vec_bytes": 0,
            "device_stage_bytes": 0,
            "full_kv_bytes": self.full_kv_bytes(),
        }
        if self.skv is not None:
            st = self.skv.stats()
            out["host_kv_bytes"] = st.host_kv_bytes
            out["device_skv_bytes"] = st.device_skv_bytes
            out["device_vec_bytes"] = st.device_vec_bytes
            out["device_stage_bytes"] = st.device_stage_bytes
        return out

    def full_kv_bytes(self) -> int:
        """K/V bytes that every layer of this model would need for n_ctx tokens with a dense F16 cache."""
        return self.info.kv_bytes_per_token() * self.n_ctx

    def close(self) -> None:
        llm = getattr(self, "llm", None)
        if llm is not None:
            llm.close()
            self.llm = None  # type: ignore[assignment]
