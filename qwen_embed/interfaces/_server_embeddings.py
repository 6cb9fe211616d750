"""``POST /v1/embeddings`` (and ``/embeddings``): OpenAI's request and answer, the library's prompt options.

OpenAI's fields: ``model``, ``input`` (a string or a list of strings), ``encoding_format``
(``float`` or ``base64``) and ``dimensions`` (Matryoshka). The prompt options use the library's
one vocabulary (:class:`~qwen_embed.EncodeCall`):

* ``side``: ``"query"`` (the task's query instruction applies, as
  :meth:`~qwen_embed.Embedder.encode_queries`) or ``"document"`` (as
  :meth:`~qwen_embed.Embedder.encode_documents`); absent: the inputs are embedded as given,
  which for retrieval is how documents are embedded;
* ``task``: a registered prompt name (``"qa"``, ``"sts"``, ...);
* ``instruction``: a task in words, in the official query format; it wins over ``task``.

``prompt_name`` (what the server took before, sentence-transformers' name) is still accepted:
it is ``task``, except ``"passage"``, which is ``side: "document"``.

``return_receipts: true`` adds to each ``data[i]`` a ``receipt`` object: what happened to that
input (:class:`~qwen_embed.Receipt`: ``n_tokens``, ``tokens_used``, ``truncated``,
``dropped_tokens``, ``chunks``, ``fusion``, ``spans``), counted while it was embedded. ``usage``
keeps OpenAI's shape; OpenAI clients ignore the extra field (the openai package keeps it in
``model_extra``).

Clients that cannot add fields (LangChain's ``OpenAIEmbeddings``, LlamaIndex's ``OpenAIEmbedding``)
pick the side by the model name instead: ``<name>-query`` is the same model with ``side:
"query"``, so queries get exactly :meth:`~qwen_embed.Embedder.encode_queries`' vectors.
"""

from __future__ import annotations

import base64
import json
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .. import _config
from ..calls import SIDES, EncodeCall, Receipt, Side
from ..embedder import Embedder
from ..errors import QwenEmbedError, UnknownPromptError
from ._server_http import ClientGone, RequestError, check_model, json_kind, load_object, optional_text
from ._server_options import QUERY_SUFFIX
from ._server_route import AppParts, ModelRoute, Plan, Tally
from ._server_scheduler import Rows

__all__ = [
    "LANGCHAIN_HINT",
    "EmbedWork",
    "EmbeddingsRequest",
    "EmbeddingsRoute",
    "input_costs",
    "optional_flag",
    "parse_embeddings",
    "render_embeddings",
    "render_receipt",
    "served_names",
]

LANGCHAIN_HINT = (
    "LangChain's OpenAIEmbeddings sends token ids by default: create it with "
    "OpenAIEmbeddings(..., check_embedding_ctx_length=False) so it sends the texts."
)


def served_names(aliases: frozenset[str], name: str) -> dict[str, Side | None]:
    """Every ``model`` value of the embedding model, with the side it picks: the aliases, and each ``-query``."""
    names: dict[str, Side | None] = {alias: None for alias in aliases}
    names.update({alias + QUERY_SUFFIX: "query" for alias in aliases})
    names[name + QUERY_SUFFIX] = "query"
    return names


@dataclass(frozen=True)
class EmbeddingsRequest:
    """A checked ``/v1/embeddings`` request.

    Attributes:
        texts: The inputs.
        call: The library call they get (side, task, instruction, dimensions).
        encoding: ``"float"`` or ``"base64"``.
        model: The name to answer with (the one asked for, else the served name).
        prompt_field: The request field that chose the prompt (what a prompt error names).
        receipts: Whether each ``data[i]`` gets its input's receipt (``return_receipts``).
    """

    texts: list[str]
    call: EncodeCall
    encoding: str
    model: str
    prompt_field: str | None
    receipts: bool = False


def parse_embeddings(raw: bytes, *, names: Mapping[str, Side | None], name: str, max_inputs: int) -> EmbeddingsRequest:
    """Decode and check the JSON body; every problem is a :class:`RequestError` naming the field.

    Args:
        raw: The body.
        names: Every accepted ``model`` value with the side it picks (see :func:`served_names`).
        name: The served name (the answer's ``model`` when the request names none).
        max_inputs: Most inputs per request.
    """
    body = load_object(raw)
    offer = f"{name!r} (documents) and {name + QUERY_SUFFIX!r} (queries)"
    model = check_model(body, aliases=names, name=offer)
    texts = _texts(body.get("input"), max_inputs)
    encoding = body.get("encoding_format")
    if encoding is None:
        encoding = "float"
    elif not isinstance(encoding, str) or encoding not in ("float", "base64"):
        raise RequestError(
            400,
            f'\'encoding_format\' must be "float" or "base64", not {json.dumps(encoding)}.',
            param="encoding_format",
        )
    dim = body.get("dimensions")
    if dim is not None and (isinstance(dim, bool) or not isinstance(dim, int)):
        raise RequestError(400, f"'dimensions' must be an integer, not {json.dumps(dim)}.", param="dimensions")
    side, task, instruction, field = _prompt(body, names.get(model) if model is not None else None, model)
    try:
        call = EncodeCall(side=side, task=task, instruction=instruction, dim=dim)
    except QwenEmbedError as error:  # what the library's own check refuses
        raise RequestError(400, str(error), param=field) from None
    receipts = optional_flag(body, "return_receipts", default=False)
    return EmbeddingsRequest(texts, call, encoding, model or name, field, receipts)


def optional_flag(body: Mapping[str, Any], field: str, *, default: bool) -> bool:
    """``body[field]`` when it is ``true`` or ``false``, ``default`` when absent; else a 400 naming it."""
    value = body.get(field)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise RequestError(400, f"'{field}' must be true or false, not {json.dumps(value)}.", param=field)
    return value


def _prompt(
    body: Mapping[str, Any], model_side: Side | None, model: str | None
) -> tuple[Side | None, str | None, str | None, str | None]:
    """``(side, task, instruction, field)`` of the body and model; ``field``: where the prompt came from."""
    side = body.get("side")
    if side is not None and side not in SIDES:
        shown = json.dumps(side)
        raise RequestError(400, f'\'side\' must be "query" or "document", not {shown}; or leave it out.', param="side")
    if model_side is not None and side is not None and side != model_side:
        raise RequestError(
            400,
            f"'side' is {json.dumps(side)} but the model {model!r} is the {model_side} side; send one of them.",
            param="side",
        )
    task, legacy = optional_text(body, "task"), optional_text(body, "prompt_name")
    if legacy is not None:
        if task is not None and task != legacy:
            raise RequestError(
                400, f"'prompt_name' ({legacy!r}) and 'task' ({task!r}) name the same option; send one.", param="task"
            )
        if legacy == "passage":  # the server's old name for documents
            legacy = None
            if side == "query" or model_side == "query":
                raise RequestError(400, "'prompt_name' is \"passage\" but the side is query; send one.", param="side")
            side = "document"
        task = legacy
    instruction = optional_text(body, "instruction")
    chosen: Side | None = side if side is not None else model_side
    field = (
        "instruction" if instruction is not None
        else "prompt_name" if legacy is not None
        else "task" if task is not None
        else "side" if side is not None
        else "model" if model_side is not None
        else None
    )  # fmt: skip
    return chosen, task, instruction, field


def _texts(raw: object, max_inputs: int) -> list[str]:
    if raw is None:
        raise RequestError(400, "'input' is required: a string or a list of strings.", param="input")
    texts = [raw] if isinstance(raw, str) else raw
    if not isinstance(texts, list) or not texts:
        raise RequestError(400, "'input' must be a non-empty string or a non-empty list of strings.", param="input")
    if len(texts) > max_inputs:
        raise RequestError(
            400,
            f"Too many inputs: {len(texts):,} (at most {max_inputs:,} per request, "
            "--max-inputs); split them over several requests.",
            param="input",
        )
    if all(isinstance(t, int) and not isinstance(t, bool) for t in texts) or any(isinstance(t, list) for t in texts):
        raise RequestError(
            400,
            "'input' holds token ids; this server embeds text only, so send the strings. " + LANGCHAIN_HINT,
            param="input",
            code="token_ids_not_supported",
        )
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise RequestError(400, f"input[{i}] is {json_kind(text)}, not a string.", param="input")
        if not text:
            raise RequestError(400, f"input[{i}] is empty.", param="input")
    return texts


def render_embeddings(
    vectors: np.ndarray, *, encoding: str, model: str, tokens: int, receipts: Sequence[Receipt] | None = None
) -> bytes:
    """The ``/v1/embeddings`` answer as JSON bytes, built one vector at a time.

    Row by row, so another thread (the event loop) gets the GIL between rows instead of waiting
    for one long C call to finish. With ``receipts``, each ``data[i]`` gets ``"receipt"``.
    """
    parts: list[str] = []
    for i, vector in enumerate(vectors):
        if encoding == "base64":
            value = '"' + base64.b64encode(np.ascontiguousarray(vector, dtype="<f4").tobytes()).decode("ascii") + '"'
        else:
            value = json.dumps(vector.tolist(), separators=(",", ":"))
        receipt = "" if receipts is None else ',"receipt":' + render_receipt(receipts[i])
        parts.append(f'{{"object":"embedding","index":{i},"embedding":{value}{receipt}}}')
    usage = json.dumps({"prompt_tokens": tokens, "total_tokens": tokens})
    return f'{{"object":"list","data":[{",".join(parts)}],"model":{json.dumps(model)},"usage":{usage}}}'.encode()


def render_receipt(receipt: Receipt) -> str:
    """One input's receipt as a JSON object (:meth:`Receipt.as_dict <qwen_embed.Receipt.as_dict>`)."""
    return json.dumps(receipt.as_dict(), separators=(",", ":"), default=_plain_number)


def _plain_number(value: object) -> int | float:
    """NumPy's scalars (a chunk span's offsets) as JSON numbers."""
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return float(value)
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


class EmbedWork:
    """One engine call of the embedding model under one :class:`~qwen_embed.EncodeCall` (equal calls share decodes).

    It answers the vectors with each input's :class:`~qwen_embed.Receipt` (counted while embedding, at no cost).
    """

    kind = "embeddings"

    def __init__(self, embedder: Embedder, call: EncodeCall) -> None:
        self.embedder, self.call = embedder, call

    def __call__(self, items: list[str]) -> Rows:
        result = self.embedder.run(items, self.call)
        return Rows(result.vectors, list(result.receipts))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, EmbedWork) and other.embedder is self.embedder and other.call == self.call

    def __hash__(self) -> int:
        return hash((id(self.embedder), self.call))


class EmbeddingsRoute(ModelRoute[EmbeddingsRequest, Rows]):
    """``POST /v1/embeddings`` over ``embedder`` (see the module docstring).

    Args:
        embedder: The model (run on the scheduler's engine thread, token counts on the workers).
        aliases: Every ``model`` value that names it; each with ``-query`` names its query side.
        name: Its served name.
        parts: The app's shared parts.
        tally: Its request counts.
    """

    verb = "embed"
    long_input_param = "input"

    def __init__(
        self, embedder: Embedder, *, aliases: frozenset[str], name: str, parts: AppParts, tally: Tally
    ) -> None:
        super().__init__(name=name, parts=parts, tally=tally)
        self.embedder = embedder
        self.names = served_names(aliases, self.name)

    def plan(self, raw: bytes, stop: threading.Event) -> Plan[EmbeddingsRequest]:
        request = parse_embeddings(raw, names=self.names, name=self.name, max_inputs=self.options.max_inputs)
        costs = self._costs(request, stop)
        return Plan(request, request.texts, costs, EmbedWork(self.embedder, request.call), sum(costs))

    async def execute(self, plan: Plan[EmbeddingsRequest], stop: threading.Event) -> Rows:
        return await self.submit(plan)

    def render(self, plan: Plan[EmbeddingsRequest], out: Rows, request_id: str) -> bytes:
        request = plan.request
        receipts = out.receipts if request.receipts else None
        return render_embeddings(
            out.values, encoding=request.encoding, model=request.model, tokens=plan.tokens, receipts=receipts
        )

    def served(self, plan: Plan[EmbeddingsRequest], out: Rows) -> None:
        self.metrics.embedded(len(plan.items), plan.tokens)

    def _costs(self, request: EmbeddingsRequest, stop: threading.Event) -> list[int]:
        """Tokens each input costs the engine (prompt and EOS included); checks the per-text and per-request limits."""
        return input_costs(
            self.embedder, request.call, request.texts, stop=stop, budget=self.options.max_request_tokens,
            prompt_field=request.prompt_field, inputs="input",
        )  # fmt: skip


def input_costs(
    emb: Embedder,
    call: EncodeCall,
    texts: Sequence[str],
    *,
    stop: threading.Event,
    budget: int,
    prompt_field: str | None,
    inputs: str,
) -> list[int]:
    """Tokens each text costs the engine under ``call`` (prompt and EOS included), checking the limits.

    Args:
        emb: The model.
        call: The encode call (its dimensions, side, task and instruction).
        texts: The inputs.
        stop: Set when the client went away (raises :class:`ClientGone`).
        budget: Most tokens in all (``--max-request-tokens``).
        prompt_field: The request field that chose the prompt (what a prompt error names).
        inputs: The request field of the texts (``input``, ``queries``).
    """
    if call.dim is not None:
        low = min(_config.MIN_DIM, emb.native_dim)
        if not low <= call.dim <= emb.native_dim:
            raise RequestError(
                400, f"'dimensions' is {call.dim}; this model gives {low} to {emb.native_dim}.", param="dimensions"
            )

    def count(text: str) -> int:
        return emb.count_tokens(text, side=call.side, task=call.task, instruction=call.instruction)

    limit, policy = emb.max_length, emb.long_text
    try:
        alone = count("")  # the prompt and the EOS
    except UnknownPromptError as error:
        raise RequestError(400, str(error), param=prompt_field) from None
    if alone >= limit:
        prompt = call.prompt_name(emb.default_prompt_name)
        what = "instruction" if call.instruction is not None else f"prompt {prompt!r}"
        raise RequestError(
            400,
            f"The {what} alone takes {alone:,} tokens (EOS included); the limit is {limit:,} tokens per input "
            "(--max-length), which leaves no room for the text. Shorten it.",
            param=prompt_field,
        )
    costs: list[int] = []
    total = 0
    for i, text in enumerate(texts):
        if stop.is_set():
            raise ClientGone
        n = count(text)
        if n > limit and policy == "error":
            raise RequestError(
                400,
                f"{inputs}[{i}] is {n:,} tokens (prompt and EOS included); the limit is {limit:,}. Shorten it, or "
                "start the server with --long-text truncate or --long-text chunk.",
                param=inputs,
            )
        cost = min(n, limit) if policy == "truncate" else n
        total += cost
        if total > budget:
            raise RequestError(
                400,
                f"The request has more than {budget:,} tokens (--max-request-tokens; "
                f"reached at {inputs}[{i}]); split it over several requests.",
                param=inputs,
                code="request_too_large",
            )
        costs.append(cost)
    return costs
