"""The library's exceptions: one root, :class:`QwenEmbedError`.

Every error the library raises on purpose subclasses :class:`QwenEmbedError` and,
where one fits, the matching built-in exception, so ``except ValueError`` keeps
working for callers who do not know this library.
"""

from __future__ import annotations

__all__ = [
    "ConfigurationError",
    "DimensionError",
    "EmbedderClosedError",
    "EngineError",
    "InputTooLongError",
    "InputTypeError",
    "InvalidInputError",
    "InvalidModelFileError",
    "InvalidPromptError",
    "ModelLoadError",
    "ModelNotFoundError",
    "QwenEmbedError",
    "UnknownPromptError",
    "UnsupportedModelError",
]


class QwenEmbedError(Exception):
    """Root of every exception raised by ``qwen_embed``."""


class ModelNotFoundError(QwenEmbedError, FileNotFoundError):
    """The model file does not exist."""


class InvalidModelFileError(QwenEmbedError, ValueError):
    """The file is not a readable GGUF file (wrong magic, truncated, corrupt)."""


class UnsupportedModelError(QwenEmbedError, ValueError):
    """The GGUF file is valid but not an embedding model this library supports."""


class ModelLoadError(QwenEmbedError, RuntimeError):
    """llama.cpp refused to load the model or to create a context for it."""


class InvalidInputError(QwenEmbedError, ValueError):
    """A text cannot be embedded (for example, it holds a lone surrogate)."""


class InputTypeError(QwenEmbedError, TypeError):
    """An input is not a ``str`` (or the inputs are not a sequence of ``str``)."""


class InputTooLongError(QwenEmbedError, ValueError):
    """A text is longer than the model's limit under ``long_text="error"``.

    Attributes:
        index: Position of the text in the input (``None`` for a single string).
        n_tokens: Tokens the model would see, EOS and prompt included.
        limit: The limit in force (``max_length``).
    """

    def __init__(self, message: str, *, index: int | None, n_tokens: int, limit: int) -> None:
        super().__init__(message)
        self.index = index
        self.n_tokens = n_tokens
        self.limit = limit


class DimensionError(QwenEmbedError, ValueError):
    """An output dimension (Matryoshka ``dim``) outside what the model supports."""


class ConfigurationError(QwenEmbedError, ValueError):
    """An option has a value the library does not accept (the message lists the choices)."""


class InvalidPromptError(QwenEmbedError, ValueError):
    """A prompt, instruction, template or prompts file is malformed."""


class UnknownPromptError(QwenEmbedError, ValueError):
    """No prompt of that name (the message lists the names and the closest one)."""


class EngineError(QwenEmbedError, RuntimeError):
    """The inference engine failed during a decode or returned unusable vectors."""


class EmbedderClosedError(QwenEmbedError, RuntimeError):
    """The embedder was used after :meth:`Embedder.close`."""
