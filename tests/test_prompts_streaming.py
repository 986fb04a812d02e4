"""Prompt formats (completion for base models, the GGUF chat template for instruction models), stop strings, and
UTF-8-safe streaming of multi-byte characters split over byte tokens."""

from __future__ import annotations

import pytest
from tiny_gguf import TinyConfig, find_vocab_file, write_tiny_gguf

from engine.documents import Document
from engine.params import Policy, SkvParams
from engine.prompts import COMPLETION, PromptFormatError, chat_format, choose_format
from engine.session import Session, SessionConfig
from engine.stopping import StopStrings

GEMMA_LIKE = (
    "{{ bos_token }}{% for message in messages %}<start_of_turn>{{ message['role'] }}\n"
    "{{ message['content'] | trim }}<end_of_turn>\n{% endfor %}"
    "{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}"
)


def test_stop_string_split_over_pushes_never_reaches_the_output() -> None:
    s = StopStrings(["<END>", "Question:"])
    out = [s.push(t) for t in ["The answer", " is 4", "2.<E", "N", "D> trailing"]]
    assert "".join(out) == "The answer is 42." and s.hit == "<END>"
    assert out[2] == "2." and out[3] == "", "a possible stop prefix is held back"
    assert s.push("more") == "" and s.flush() == ""


def test_held_text_that_is_no_stop_is_released() -> None:
    s = StopStrings(["Question:"])
    assert s.push("see Ques") == "see "
    assert s.push("t") == "" and s.push("s") == "Quests"
    assert s.push(" Qu") == " " and s.flush() == "Qu" and not s.hit
    assert StopStrings().push("anything") == "anything"


def test_chat_template_is_split_around_documents_and_question() -> None:
    f = chat_format(GEMMA_LIKE)
    assert f.name == "chat" and f.head == "<start_of_turn>user\n"
    assert f.question(" What is it? ") == "What is it?<end_of_turn>\n<start_of_turn>model\n"
    assert choose_format("auto", {"tokenizer.chat_template": GEMMA_LIKE}) == f
    assert choose_format("auto", {}) is COMPLETION
    assert choose_format("completion", {"tokenizer.chat_template": GEMMA_LIKE}) is COMPLETION
    with pytest.raises(PromptFormatError, match="no chat template"):
        choose_format("chat", {})


def test_templates_that_rewrite_the_text_or_fail_are_refused() -> None:
    with pytest.raises(PromptFormatError, match="does not keep the user's text"):
        chat_format("{% for m in messages %}{{ m['content'] | upper }}{% endfor %}")
    with pytest.raises(PromptFormatError, match="does not render"):
        chat_format("{{ raise_exception('only system+user pairs') }}")


@pytest.fixture(scope="module")
def chat_model(tmp_path_factory):
    vocab = find_vocab_file()
    if vocab is None:
        pytest.skip("the llama.cpp vocab GGUF is missing; run native/build.py first")
    return write_tiny_gguf(
        tmp_path_factory.mktemp("chat") / "tiny-chat.gguf", vocab, TinyConfig(chat_template=GEMMA_LIKE)
    )


def _session(path, **kw) -> Session:
    return Session(SessionConfig(str(path), n_ctx=1024, n_threads=1, skv=SkvParams(budget=256), **kw))


def test_instruction_model_gets_its_chat_template_around_documents_and_question(chat_model) -> None:
    s = _session(chat_model)
    try:
        assert s.prompts.name == "chat"
        doc = Document.from_text("notes.txt", "The mill is by the river. The hill is green.")
        plan = s.plan([doc], reserve=64)
        head = s.tokenize("<start_of_turn>user\n")
        assert plan.tokens[1 : 1 + len(head)] == head, "the user turn opens before the documents"
        assert s.prompt_text("Where is the mill?").endswith("<end_of_turn>\n<start_of_turn>model\n")
        s.load_documents([doc], reserve=64)
        r = s.ask("Where is the mill?", max_tokens=4, ignore_eos=True)
        assert len(r.tokens) == 4
    finally:
        s.close()
    forced = _session(chat_model, prompt_format="completion")
    try:
        assert forced.prompts is COMPLETION and forced.prompt_text("Q?") == "Question: Q?\nAnswer:"
    finally:
        forced.close()


@pytest.fixture
def scripted(tiny_model_path):
    """A tiny-model session whose sampler returns scripted tokens (then the end-of-generation token)."""
    s = _session(tiny_model_path)
    s.load_documents([Document.from_text("d.txt", "One sentence here. Another one there.")], reserve=128)

    def script(tokens: list[int]):
        """A sampler for Session.ask that returns these tokens, then the end-of-generation token."""
        queue = list(tokens)
        return lambda _logits: queue.pop(0) if queue else s.llm.token_eos()

    yield s, script
    s.close()


TEXT = " naïve café: 東京 🙂 and ☃ done"


def test_multibyte_characters_stream_whole_even_when_split_over_byte_tokens(scripted) -> None:
    s, script = scripted
    toks = s.tokenize(TEXT)
    pieces = [s.llm.detokenize([t], special=False) for t in toks]
    assert any(_incomplete(p) for p in pieces), "the script must contain byte tokens that split a character"
    sampler = script(toks)
    streamed: list[str] = []
    r = s.ask(
        "Say it.",
        sampler=sampler,
        max_tokens=len(toks) + 2,
        on_token=lambda _tok, text, _st: streamed.append(text),
    )
    assert r.reason == "eos" and r.tokens == toks
    assert "\ufffd" not in "".join(streamed)
    expected = b"".join(pieces).decode("utf-8")  # SPM adds its word-start space
    assert expected.strip() == TEXT.strip()
    assert "".join(streamed) == r.answer == expected
    assert "" in streamed, "an incomplete character was held back, not shown broken"


def _incomplete(b: bytes) -> bool:
    try:
        b.decode("utf-8")
        return False
    except UnicodeDecodeError:
        return True


def test_stop_string_ends_the_answer_and_is_not_shown(scripted) -> None:
    s, script = scripted
    toks = s.tokenize(TEXT)
    sampler = script(toks)
    streamed: list[str] = []
    r = s.ask(
        "Say it.",
        sampler=sampler,
        max_tokens=len(toks) + 2,
        stop=("東京",),
        on_token=lambda _tok, text, _st: streamed.append(text),
    )
    assert r.reason == "stop" and r.answer.strip() == "naïve café:" and "".join(streamed) == r.answer
    assert len(r.tokens) < len(toks)


def test_memory_estimate_matches_the_buffers_for_a_plain_attention_model(tiny_model_path) -> None:
    from engine.models import estimate_memory, read_model_info

    info = read_model_info(tiny_model_path)
    est = estimate_memory(info, 1024)
    assert est.weights_bytes == tiny_model_path.stat().st_size
    s = _session(tiny_model_path)
    try:
        # every layer of the tiny llama is full attention, F16: the bound is exact
        assert est.kv_bytes_max == s.skv.stats().full_kv_bytes == s.skv.stats().host_kv_bytes
    finally:
        s.close()
    assert "at most" in est.describe() and "1024 tokens" in est.describe()
    with pytest.raises(ValueError):
        estimate_memory(info, 0)


IM_START, IM_END = 151644, 151645  # Qwen2.5's <|im_start|> and <|im_end|>


@pytest.mark.slow
def test_default_model_gets_real_turn_tokens_and_documents_stay_text(default_model_path) -> None:
    """The template's control tokens are fed as the special tokens they are (not as `<`, `|`, `im`, ...); the
    same characters inside a document or a question stay plain text; the answer ends on the end-of-turn token."""
    s = Session(SessionConfig(str(default_model_path), n_ctx=2048, n_threads=2, skv=SkvParams(budget=512)))
    try:
        assert s.prompts.name == "chat"
        toks = s.prompt_tokens("Hi")
        assert toks.count(IM_START) == 1 and toks.count(IM_END) == 1
        assert toks == s.llm.tokenize(s.prompt_text("Hi").encode(), add_bos=False, special=True)
        assert len(s.tokenize("<|im_start|>user\nHi<|im_end|>", special=True)) == 5
        doc = Document.from_text("tricky.txt", "This line has <|im_end|> in it. The river is wide.")
        plan = s.plan([doc], reserve=128)
        assert plan.tokens[0] == IM_START, "no BOS: Qwen's vocab adds none; the system turn opens the prompt"
        doc_tokens = [t for sp in plan.spans if sp.doc == 0 for t in plan.tokens[sp.tok_start : sp.tok_end]]
        assert IM_END not in doc_tokens and IM_START not in doc_tokens
        assert s.prompt_tokens("What does <|im_end|> mean?").count(IM_END) == 1  # the turn's own only
        s.load_documents([doc], reserve=128)
        r = s.ask("Which line mentions the river? Answer in five words.", max_tokens=48)
        assert r.reason == "eos", r
        assert "<|im_end|>" not in r.answer and "im_end" not in r.answer
    finally:
        s.close()


SENTENCES = " The mill is old. It stands by the river. The hill is green and wide."


def test_dense_question_attention_prefills_the_question_in_one_batch(scripted) -> None:
    s, script = scripted
    toks = s.tokenize(" Yes.")
    before = s.skv.stats()
    sampler = script(toks)
    r = s.ask("Where is the mill?", sampler=sampler, max_tokens=4, question_attention="dense")
    after = s.skv.stats()
    n_prompt = len(s.prompt_tokens("Where is the mill?"))
    # one dense ubatch for the whole question (not n_prompt staged steps), then the answer under the policy
    assert after.n_dense_steps - before.n_dense_steps == 1
    assert after.n_skv_steps - before.n_skv_steps == len(r.tokens) < n_prompt
    assert r.steps and len(r.steps) == len(r.tokens)
    sampler = script(toks)
    before = s.skv.stats()
    r2 = s.ask(
        "Where is the mill?", sampler=sampler, max_tokens=4
    )  # ours: every question token is a staged step
    assert s.skv.stats().n_skv_steps - before.n_skv_steps == n_prompt + len(r2.tokens)


def test_dense_sentence_start_gives_the_first_token_of_each_new_sentence_a_full_step(scripted) -> None:
    s, script = scripted
    toks = s.tokenize(SENTENCES)
    sampler = script(toks)
    keep = s.ask("Describe it.", sampler=sampler, max_tokens=len(toks) + 1)
    sampler = script(toks)
    before = s.skv.stats()
    dense = s.ask("Describe it.", sampler=sampler, max_tokens=len(toks) + 1, sentence_start="dense")
    after = s.skv.stats()
    assert dense.tokens == keep.tokens == toks and dense.answer == keep.answer
    n_dense = after.n_dense_steps - before.n_dense_steps
    # three sentences: the first token after each of the two closed ones ran dense (not reported as retrieval)
    assert n_dense == 2, n_dense
    assert len(dense.steps) == len(keep.steps) - 2
    assert s.skv.get_params().policy != Policy.FULL  # the policy is back after each dense step
    with pytest.raises(ValueError, match="sentence start must be one of"):
        s.ask("x", sentence_start="sometimes")
