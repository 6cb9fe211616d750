"""How to reach the Hugging Face Hub: one frozen, self-checking options object.

:class:`HubOptions` travels unchanged from every entry point (``from_pretrained``,
:func:`~qwen_embed.download_model`, the CLI, the framework adapters' model cache, corpus jobs)
to the downloader, and is checked when it is built: a bad value fails before any request.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from ..errors import ConfigurationError

__all__ = ["HUB_OPTION_NAMES", "HubOptions", "check_option_names", "hub_options"]


@dataclass(frozen=True, repr=False)
class HubOptions:
    """Where and how to fetch a model from the Hugging Face Hub (not which file: that is ``quant``/``filename``).

    >>> HubOptions(revision="v1.0", local_files_only=True)
    HubOptions(revision='v1.0', local_files_only=True)
    >>> HubOptions(token="hf_secret")                       # the token is never shown
    HubOptions(token=<hidden>)

    Attributes:
        revision: Branch, tag or commit (default: ``"main"``).
        cache_dir: Hugging Face cache folder (default: ``HF_HUB_CACHE``).
        token: Hub token for gated or private repositories; ``True`` uses the stored login
            (default: ``HF_TOKEN`` or the stored login). Never shown in a repr, never pickled
            with a model's recipe.
        endpoint: Hub endpoint URL (default: ``HF_ENDPOINT`` or huggingface.co).
        local_files_only: Use the cache only, no request (like ``HF_HUB_OFFLINE=1``).
        memory_budget: Bytes that ``quant="auto"`` may fill with the file and its working
            memory (default: the RAM available now).
        download_progress: Show a progress bar while downloading.

    Raises:
        ConfigurationError: A value of the wrong type or out of range (the message names the option).
    """

    revision: str | None = None
    cache_dir: str | os.PathLike[str] | None = None
    token: str | bool | None = None
    endpoint: str | None = None
    local_files_only: bool = False
    memory_budget: int | None = None
    download_progress: bool = True

    def __post_init__(self) -> None:
        _optional_text("revision", self.revision)
        if self.cache_dir is not None and not isinstance(self.cache_dir, (str, os.PathLike)):
            raise ConfigurationError(f"cache_dir must be a folder path (str or Path), not {_kind(self.cache_dir)}")
        if self.cache_dir is not None and not os.fspath(self.cache_dir).strip():
            raise ConfigurationError("cache_dir must be a folder path, not an empty string")
        if self.token is not None and not isinstance(self.token, bool):
            if not isinstance(self.token, str):
                kind = type(self.token).__name__
                raise ConfigurationError(f"token must be a str (a Hub token), True or None, not {kind}")
            if not self.token.strip():
                raise ConfigurationError("token must be a Hub token, not an empty string (None uses HF_TOKEN)")
        _optional_text("endpoint", self.endpoint)
        if self.endpoint is not None and not self.endpoint.strip().lower().startswith(("http://", "https://")):
            raise ConfigurationError(f"endpoint must be an http:// or https:// URL, not {self.endpoint!r}")
        for name in ("local_files_only", "download_progress"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigurationError(f"{name} must be True or False, not {_kind(getattr(self, name))}")
        budget = self.memory_budget
        if budget is not None and (not isinstance(budget, int) or isinstance(budget, bool) or budget <= 0):
            raise ConfigurationError(f"memory_budget must be a positive number of bytes (an int), not {budget!r}")

    def __repr__(self) -> str:
        shown = []
        for item in dataclasses.fields(self):
            value = getattr(self, item.name)
            if value == item.default:
                continue
            shown.append(f"{item.name}=<hidden>" if item.name == "token" else f"{item.name}={value!r}")
        return f"HubOptions({', '.join(shown)})"

    def without_token(self) -> HubOptions:
        """These options with a token string removed (``True``, "use the stored login", is kept): what may be
        pickled or logged."""
        return dataclasses.replace(self, token=None) if isinstance(self.token, str) else self


#: The keyword names that build a :class:`HubOptions`.
HUB_OPTION_NAMES: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(HubOptions))


def hub_options(hub: HubOptions | None = None, **keywords: Any) -> HubOptions:
    """One :class:`HubOptions` from either ``hub`` or Hub keywords (``revision=``, ``cache_dir=``, ...).

    A keyword whose value is ``None`` counts as not given.

    Raises:
        ConfigurationError: Both ``hub`` and a keyword were given; ``hub`` is not a HubOptions; a
            keyword is not a Hub option (the closest one is named); a value is bad.
    """
    given = {name: value for name, value in keywords.items() if value is not None}
    check_option_names(given, HUB_OPTION_NAMES, where="HubOptions")
    if hub is None:
        return HubOptions(**given)
    if not isinstance(hub, HubOptions):
        raise ConfigurationError(f"hub must be a qwen_embed.HubOptions, not {_kind(hub)}")
    if given:
        names = ", ".join(f"{name}=" for name in given)
        raise ConfigurationError(
            f"give the Hub options either as hub=HubOptions(...) or as keywords, not both: {names} was given beside "
            f"hub={hub!r}. Put {names} into the HubOptions."
        )
    return hub


def check_option_names(given: Iterable[str] | Mapping[str, Any], accepted: Iterable[str], *, where: str) -> None:
    """Raise for the first name in ``given`` that ``accepted`` lacks, naming the closest accepted one.

    Raises:
        ConfigurationError: ``Unknown option 'n_thread' for Embedder.from_pretrained; did you mean 'n_threads'? ...``
    """
    choices = sorted(set(accepted))
    for name in given:
        if name in choices:
            continue
        close = difflib.get_close_matches(str(name), choices, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else "."
        raise ConfigurationError(f"Unknown option {name!r} for {where}{hint} Accepted: {', '.join(choices)}.")


def _optional_text(name: str, value: object) -> None:
    if value is None:
        return
    if not isinstance(value, str):
        raise ConfigurationError(f"{name} must be a str or None, not {_kind(value)}")
    if not value.strip():
        raise ConfigurationError(f"{name} must not be an empty string (None means the default)")


def _kind(value: object) -> str:
    text = repr(value)
    return f"{type(value).__name__} {text if len(text) <= 60 else text[:57] + '...'}"
