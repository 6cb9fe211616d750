"""Instructions and prompts: the official Qwen3-Embedding query format and a registry.

Qwen3-Embedding is instruction-aware. A query is embedded as
``Instruct: {instruction}\\nQuery:{text}`` (no space after ``Query:``); a retrieval
document gets no instruction. Symmetric tasks (STS, bitext mining, classification,
clustering) instruct every input; a task with separate ``query`` and ``passage``
instructions instructs each side with its own (Qwen's evaluation code,
``evaluation/qwen3_embedding_model.py``). Instructions work best in English.

Example:
    >>> from qwen_embed.prompts import get_prompt
    >>> get_prompt("query").format_query("What is GGUF?")
    'Instruct: Given a web search query, retrieve relevant passages that answer the query\\nQuery:What is GGUF?'
"""

from __future__ import annotations

import difflib
import json
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from ..errors import InvalidPromptError, UnknownPromptError

__all__ = [
    "DEFAULT_REGISTRY",
    "OFFICIAL_TEMPLATE",
    "Prompt",
    "PromptRegistry",
    "check_instruction",
    "get_prompt",
    "list_prompts",
    "load_prompts",
    "official_query",
    "register_prompt",
]

#: The official format: instruction, newline, ``Query:`` and the text with no space.
OFFICIAL_TEMPLATE = "Instruct: {instruction}\nQuery:{text}"
DEFAULT_QUERY_INSTRUCTION = "Given a web search query, retrieve relevant passages that answer the query"


def official_query(instruction: str, text: str) -> str:
    """``Instruct: {instruction}\\nQuery:{text}``."""
    return OFFICIAL_TEMPLATE.format(instruction=instruction, text=text)


def check_instruction(value: object, what: str = "instruction") -> str | None:
    """``value`` if it is a usable instruction (a non-blank str) or ``None``; else an InvalidPromptError."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidPromptError(f"{what} must be a str, not {type(value).__name__}")
    if not value.strip():
        raise InvalidPromptError(f"{what} is empty; give a task description such as {DEFAULT_QUERY_INSTRUCTION!r}")
    return value


def _check_template(template: str) -> str:
    if not isinstance(template, str) or "{text}" not in template or "{instruction}" not in template:
        raise InvalidPromptError(
            f"template {template!r} must be a str containing both {{instruction}} and {{text}}, "
            "for example '<instruct>{instruction}</instruct><text>{text}</text>'"
        )
    try:
        template.format(instruction="", text="")
    except (KeyError, IndexError, ValueError) as exc:
        raise InvalidPromptError(f"template {template!r} has other placeholders: {exc!r}") from None
    return template


@dataclass(frozen=True)
class Prompt:
    """A task: the instruction for each side, and the template that applies it.

    Attributes:
        name: Registry name.
        query: Instruction for queries (``None``: queries are embedded bare).
        passage: Instruction for passages/documents (``None``: bare, the retrieval default).
        template: ``{instruction}``/``{text}`` template; the official one unless you must
            reproduce another format (for example ``<instruct>{instruction}</instruct><text>{text}</text>``).
        description: What the task is for.
    """

    name: str
    query: str | None
    passage: str | None = None
    template: str = OFFICIAL_TEMPLATE
    description: str = ""

    @property
    def symmetric(self) -> bool:
        """Both sides carry the same instruction."""
        return self.query is not None and self.query == self.passage

    def _apply(self, instruction: str | None, text: str) -> str:
        return text if instruction is None else self.template.format(instruction=instruction, text=text)

    def format_query(self, text: str) -> str:
        """The string the model sees for a query."""
        return self._apply(self.query, text)

    def format_passage(self, text: str) -> str:
        """The string the model sees for a passage/document."""
        return self._apply(self.passage, text)

    def split(self, side: str) -> tuple[str, str]:
        """The text before and after ``{text}`` for ``side`` (``"query"`` or ``"passage"``)."""
        instruction = self.query if side == "query" else self.passage
        if instruction is None:
            return "", ""
        marker = "\x00qwen-embed-text\x00"
        before, _, after = self.template.format(instruction=instruction, text=marker).partition(marker)
        return before, after


class PromptRegistry(Mapping[str, Prompt]):
    """Named prompts, sentence-transformers style; built-ins plus your own."""

    def __init__(self, prompts: Mapping[str, Prompt] | None = None) -> None:
        self._prompts: dict[str, Prompt] = dict(prompts or {})

    def __getitem__(self, name: str) -> Prompt:
        return self.get_prompt(name)

    def __iter__(self) -> Iterator[str]:
        return iter(self._prompts)

    def __len__(self) -> int:
        return len(self._prompts)

    def __contains__(self, name: object) -> bool:
        return name in self._prompts

    def list_prompts(self) -> list[str]:
        """Registered names, sorted."""
        return sorted(self._prompts)

    def get_prompt(self, name: str) -> Prompt:
        """The prompt called ``name``; an unknown name lists the choices and the closest one."""
        if not isinstance(name, str):
            raise InvalidPromptError(f"prompt name must be a str, not {type(name).__name__}")
        try:
            return self._prompts[name]
        except KeyError:
            close = difflib.get_close_matches(name, self._prompts, n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise UnknownPromptError(
                f"Unknown prompt {name!r}.{hint} Available: {', '.join(self.list_prompts())}. "
                "Add your own with register_prompt(name, instruction)."
            ) from None

    def register_prompt(
        self,
        name: str,
        instruction: str | None,
        *,
        symmetric: bool = False,
        passage_instruction: str | None = None,
        template: str = OFFICIAL_TEMPLATE,
        description: str = "",
        overwrite: bool = False,
    ) -> Prompt:
        """Add a prompt.

        Args:
            name: Registry name.
            instruction: Instruction for queries (``None``: no instruction).
            symmetric: Instruct passages with the same instruction (STS, clustering, ...).
            passage_instruction: A separate instruction for passages (excludes ``symmetric``).
            template: A custom ``{instruction}``/``{text}`` template (non-default formats).
            description: Free text shown by tools.
            overwrite: Replace an existing prompt of that name.
        """
        if not isinstance(name, str) or not name.strip():
            raise InvalidPromptError(f"prompt name must be a non-empty str, not {name!r}")
        if name in self._prompts and not overwrite:
            raise InvalidPromptError(f"A prompt named {name!r} exists; pass overwrite=True to replace it.")
        query = check_instruction(instruction, "instruction")
        passage = check_instruction(passage_instruction, "passage_instruction")
        if symmetric and passage is not None:
            raise InvalidPromptError("give either symmetric=True or passage_instruction, not both")
        if symmetric:
            if query is None:
                raise InvalidPromptError("a symmetric prompt needs an instruction")
            passage = query
        prompt = Prompt(name, query, passage, _check_template(template), description)
        self._prompts[name] = prompt
        return prompt

    def load_json(self, path: str | os.PathLike[str], *, overwrite: bool = False) -> list[str]:
        """Register every task of a file in Qwen's ``task_prompts.json`` shape.

        Each key maps to an instruction string (queries only) or to
        ``{"query": "...", "passage": "..."}`` (each side its own). Returns the names added.
        """
        p = Path(path)
        try:
            data = json.loads(p.read_text(encoding="utf-8"))
        except OSError as exc:
            raise InvalidPromptError(f"cannot read prompts file {p}: {exc}") from exc
        except json.JSONDecodeError as exc:
            raise InvalidPromptError(f"{p} is not valid JSON: {exc}") from exc
        if not isinstance(data, dict):
            raise InvalidPromptError(f"{p}: expected an object of task name -> instruction, got {type(data).__name__}")
        staged: list[tuple[str, str | None, str | None]] = []
        for key, value in data.items():
            if isinstance(value, str):
                staged.append((key, value, None))
            elif isinstance(value, dict) and set(value) <= {"query", "passage"} and "query" in value:
                staged.append((key, value.get("query"), value.get("passage")))
            else:
                raise InvalidPromptError(
                    f"{p}: key {key!r} must map to an instruction string or to "
                    f'{{"query": "...", "passage": "..."}}, not {value!r}'
                )
        # Validate everything before registering anything.
        scratch = PromptRegistry(self._prompts)
        for key, query, passage in staged:
            try:
                scratch.register_prompt(key, query, passage_instruction=passage, overwrite=overwrite)
            except InvalidPromptError as exc:
                raise InvalidPromptError(f"{p}: key {key!r}: {exc}") from None
        self._prompts = scratch._prompts
        return [key for key, _, _ in staged]


def _builtin() -> PromptRegistry:
    reg = PromptRegistry()
    add = reg.register_prompt
    add("query", DEFAULT_QUERY_INSTRUCTION, description="Web search queries (the default query prompt)")
    add("document", None, description="Retrieval documents: no instruction, as the official recipe does")
    add("web_search", DEFAULT_QUERY_INSTRUCTION, description="Web search")
    add("qa", "Given a question, retrieve passages that answer the question", description="Question answering")
    add("code_search", "Given a natural language description, retrieve code snippets that implement it")
    add(
        "duplicate_question",
        "Retrieve questions that are semantically equivalent to the given question",
        symmetric=True,
        description="Duplicate question detection",
    )
    add("sts", "Retrieve semantically similar text", symmetric=True, description="Semantic textual similarity")
    add("pair_classification", "Retrieve semantically similar text", symmetric=True)
    add("bitext", "Retrieve parallel sentences", symmetric=True, description="Bitext mining / parallel sentences")
    add("classification", "Classify the given text by its topic and intent", symmetric=True)
    add("clustering", "Identify the main topic or theme of the given text", symmetric=True)
    add("fact_checking", "Given a claim, retrieve documents that support or refute the claim")
    add("code_retrieval", "Given a programming question, retrieve code and documentation that answer it")
    add("patent_classification", "Classify the patent by its technical field", symmetric=True)
    add("medical_literature", "Given a medical question, retrieve relevant passages from the biomedical literature")
    add("legal_case_retrieval", "Given a description of a legal case, retrieve prior cases and rulings relevant to it")
    add("ecommerce_search", "Given a product search query, retrieve product listings that match it")
    add("cross_lingual", "Given a query, retrieve relevant passages in any language that answer the query")
    return reg


#: The registry the module-level functions and new embedders use.
DEFAULT_REGISTRY = _builtin()


def list_prompts() -> list[str]:
    """Names in the default registry."""
    return DEFAULT_REGISTRY.list_prompts()


def get_prompt(name: str) -> Prompt:
    """A prompt of the default registry."""
    return DEFAULT_REGISTRY.get_prompt(name)


def register_prompt(
    name: str,
    instruction: str | None,
    *,
    symmetric: bool = False,
    passage_instruction: str | None = None,
    template: str = OFFICIAL_TEMPLATE,
    description: str = "",
    overwrite: bool = False,
) -> Prompt:
    """Add a prompt to the default registry (see :meth:`PromptRegistry.register_prompt`)."""
    return DEFAULT_REGISTRY.register_prompt(
        name,
        instruction,
        symmetric=symmetric,
        passage_instruction=passage_instruction,
        template=template,
        description=description,
        overwrite=overwrite,
    )


def load_prompts(path: str | os.PathLike[str], *, overwrite: bool = False) -> list[str]:
    """Load a ``task_prompts.json``-shaped file into the default registry."""
    return DEFAULT_REGISTRY.load_json(path, overwrite=overwrite)
