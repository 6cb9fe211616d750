"""The library's exceptions: one root, :class:`QwenEmbedError`.

Every error the library raises on purpose subclasses :class:`QwenEmbedError` and,
where one fits, the matching built-in exception, so ``except ValueError`` keeps
working for callers who do not know this library.
"""

from __future__ import annotations

__all__ = [
    "AmbiguousFileError",
    "CacheNotWritableError",
    "ChecksumMismatchError",
    "ConfigurationError",
    "DimensionError",
    "DownloadError",
    "EmbedderClosedError",
    "EngineError",
    "GatedRepoError",
    "HubError",
    "InputTooLongError",
    "InputTypeError",
    "InvalidInputError",
    "InvalidModelFileError",
    "InvalidPromptError",
    "MemoryBudgetError",
    "ModelClosedError",
    "ModelLoadError",
    "ModelNotFoundError",
    "NoGGUFFilesError",
    "NotCachedError",
    "QuantNotFoundError",
    "QwenEmbedError",
    "RepoNotFoundError",
    "UnknownModelError",
    "UnknownPromptError",
    "UnsafeForkError",
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
    """A text is longer than the model's limit under ``long_text="error"``, or a reranker's query or
    instruction leaves no room for the document.

    Attributes:
        index: Position of the text (or pair) in the input (``None`` for a single string).
        n_tokens: Tokens the model would see, EOS and prompt included (a lower bound when the text was
            refused before it was tokenized to its end; the message then says "at least").
        limit: The limit in force (``max_length``).
        param: What is too long: ``"input"`` (a text), or a reranker's ``"query"``, ``"instruction"`` or
            ``"document"`` (under ``long_text="error"``).
    """

    def __init__(self, message: str, *, index: int | None, n_tokens: int, limit: int, param: str = "input") -> None:
        super().__init__(message)
        self.index = index
        self.n_tokens = n_tokens
        self.limit = limit
        self.param = param

    def __reduce__(self) -> tuple[object, ...]:  # picklable: process pools send errors back
        return (_input_too_long, (str(self), self.index, self.n_tokens, self.limit, self.param))


def _input_too_long(
    message: str, index: int | None, n_tokens: int, limit: int, param: str = "input"
) -> InputTooLongError:
    return InputTooLongError(message, index=index, n_tokens=n_tokens, limit=limit, param=param)


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


class ModelClosedError(QwenEmbedError, RuntimeError):
    """A model (an Embedder or a Reranker) was used after ``close()``, or closed while the call was running.

    The message names the class of the model. :class:`EmbedderClosedError` is this class under its
    older name, so ``except EmbedderClosedError`` keeps catching it.
    """


#: The name this error had before the Reranker existed; the same class as :class:`ModelClosedError`.
EmbedderClosedError = ModelClosedError


class UnsafeForkError(QwenEmbedError, RuntimeError):
    """A model is used in a child forked after its parent ran llama.cpp or PyTorch (it would hang).

    Use a ``spawn`` or ``forkserver`` process pool; an Embedder pickles as its recipe.
    """


class UnknownModelError(QwenEmbedError, ValueError):
    """A model name that is neither a catalog alias, a repo id nor a local file (the message lists the catalog)."""


class HubError(QwenEmbedError):
    """Root of the errors met while resolving or downloading a model from the Hugging Face Hub."""


class RepoNotFoundError(HubError, LookupError):
    """The repository does not exist, or it is private and no valid token was given."""


class GatedRepoError(HubError, PermissionError):
    """The repository is gated: accept its terms on the Hub and pass a token."""


class NoGGUFFilesError(HubError, LookupError):
    """The repository (at that revision) holds no ``.gguf`` file."""


class QuantNotFoundError(HubError, LookupError):
    """No file for the requested quantization (the message lists the available ones)."""


class AmbiguousFileError(HubError, LookupError):
    """Several files match one quantization; pass ``filename=`` to pick one (the message lists them)."""


class MemoryBudgetError(HubError, ValueError):
    """``quant="auto"`` found no quantization whose file and working memory fit the budget."""


class NotCachedError(HubError, FileNotFoundError):
    """Offline (``HF_HUB_OFFLINE`` or ``local_files_only``) and the file is not in the cache."""


class DownloadError(HubError, OSError):
    """The download failed (network, server error) after the retries."""


class ChecksumMismatchError(DownloadError):
    """The downloaded file's SHA-256 differs from the Hub's; the bad file was deleted."""


class CacheNotWritableError(HubError, PermissionError):
    """The cache directory cannot be created or written to."""
