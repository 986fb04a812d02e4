"""How documents and a question become prompt text: a document-QA completion format for base models (the default
model is one) and the GGUF's own chat template for instruction models.

The documents are prefilled before the question is known, so a format is split in two around them:
  head          text after BOS, before the first document (a chat template's opening of the user turn; it may
                carry the template's own text, e.g. a system prompt)
  doc_header    per document ("Document: NAME\n\n")
  doc_tail      after each document
  question(q)   what is decoded at ask time: the question, then (chat) the end of the user turn and the opening of
                the model's turn
  follow_up_before  what a follow-up question (turn 2, 3, ...) starts with, right after the previous answer: the
                end of the model's turn and the opening of a new user turn
A chat template is rendered once with sentinels in the user message and cut at them, so any template that puts
the user's content verbatim into the prompt works; one that does not (it rewrites the content) is refused.
"""

from __future__ import annotations

from dataclasses import dataclass

FORMATS: tuple[str, ...] = ("auto", "completion", "chat")

_DOC = "\x00skv-documents\x00"
_QUESTION = "\x00skv-question\x00"
_ANSWER = "\x00skv-answer\x00"
_FOLLOW_UP = "\x00skv-follow-up\x00"


class PromptFormatError(ValueError):
    """The model's chat template cannot be used (one clear sentence)."""


@dataclass(frozen=True, slots=True)
class PromptFormat:
    name: str  # "completion" or "chat"
    head: str
    doc_header: str  # with {name}
    doc_tail: str
    question_before: str  # template text before the question
    question_after: str  # template text after it (chat: end of the user turn, opening of the model's turn)
    follow_up_before: str = ""  # a follow-up's text before its question, right after the previous answer

    def question(self, question: str) -> str:
        return self.question_before + question.strip() + self.question_after

    def parts(
        self, question: str, answer_prefix: str = "", follow_up: bool = False
    ) -> list[tuple[str, bool]]:
        """What is decoded at ask time as (text, special) pieces: special=True for the format's own text only.
        follow_up: the question follows an earlier answer in the context (turn 2 and later)."""
        before = self.follow_up_before if follow_up else self.question_before
        out = [(before, True), (question.strip(), False), (self.question_after, True)]
        prefix = answer_prefix.strip()
        if prefix:
            # the answer prefix opens the model's turn: after a newline as it is, after "Answer:" with a space
            sep = "" if not self.question_after or self.question_after[-1].isspace() else " "
            out.append((sep + prefix, False))
        return [(text, special) for text, special in out if text]

    def header(self, doc_name: str) -> str:
        return self.doc_header.format(name=doc_name)

    def key(self) -> list[str]:
        """What a saved session depends on (the text around the documents)."""
        return [self.name, self.head, self.doc_header, self.doc_tail]


COMPLETION = PromptFormat(
    name="completion",
    head="",
    doc_header="Document: {name}\n\n",
    doc_tail="\n\n",
    question_before="Question: ",
    question_after="\nAnswer:",
    follow_up_before="\n\nQuestion: ",
)


def chat_format(template: str, eos_token: str = "") -> PromptFormat:
    """Split a GGUF chat template (Jinja) around the documents and the question."""
    from jinja2 import TemplateError
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    def raise_exception(message: str) -> None:
        raise TemplateError(message)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    env.globals["raise_exception"] = raise_exception

    def render(messages: list[dict]) -> str:
        return env.from_string(template).render(
            messages=messages,
            add_generation_prompt=True,
            bos_token="",  # the session adds BOS itself
            eos_token=eos_token,
        )

    first = {"role": "user", "content": f"{_DOC}\n\n{_QUESTION}"}
    try:
        text = render([first])
    except TemplateError as e:
        raise PromptFormatError(
            f"the model's chat template does not render ({e}): use the completion format"
        ) from None
    if text.count(_DOC) != 1 or text.count(_QUESTION) != 1 or text.index(_DOC) > text.index(_QUESTION):
        raise PromptFormatError(
            "the model's chat template does not keep the user's text as it is: use the completion format"
        )
    head, rest = text.split(_DOC)
    after = rest.split(_QUESTION)[1]
    # a follow-up: the text between an answer and the next question (the end of the model's turn, a new user turn)
    follow_up = "\n\n"
    try:
        text2 = render(
            [first, {"role": "assistant", "content": _ANSWER}, {"role": "user", "content": _FOLLOW_UP}]
        )
    except TemplateError:
        text2 = ""
    if text2.count(_ANSWER) == 1 and text2.count(_FOLLOW_UP) == 1 and text2.endswith(_FOLLOW_UP + after):
        follow_up = text2.split(_ANSWER)[1].split(_FOLLOW_UP)[0]
    return PromptFormat(
        name="chat",
        head=head,
        doc_header="Document: {name}\n\n",
        doc_tail="\n\n",
        question_before="",
        question_after=after,
        follow_up_before=follow_up,
    )


def choose_format(requested: str, metadata: dict) -> PromptFormat:
    """`auto`: the chat template when the GGUF has one (an instruction model), else the completion format."""
    if requested not in FORMATS:
        raise ValueError(f"prompt format must be one of {', '.join(FORMATS)}, got {requested!r}")
    template = metadata.get("tokenizer.chat_template")
    if requested == "completion" or (requested == "auto" and not template):
        return COMPLETION
    if not template:
        raise PromptFormatError("this model has no chat template: use the completion format")
    return chat_format(str(template))
