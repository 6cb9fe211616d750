"""How an index stores and searches its vectors: :class:`IndexOptions`, and the extra it needs."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from types import ModuleType
from typing import Any

from ..errors import ConfigurationError

__all__ = ["INDEX_PRECISIONS", "RESCORE_MODES", "IndexOptions", "require_usearch"]

#: What an index stores: float32 and float16 vectors, int8 codes, or packed sign bits.
INDEX_PRECISIONS = ("float32", "float16", "int8", "binary")
#: What quantized candidates are rescored against: the stored float32 vectors, the codes, or nothing.
RESCORE_MODES = ("float", "quantized", "none")
_MAX_EXPANSION = 1 << 16  # candidates per graph search: past this, exact search of a segment costs less


@dataclass(frozen=True)
class IndexOptions:
    """How an index stores and searches its vectors (recorded in its manifest).

    Args:
        precision: ``"float32"``, ``"float16"``, ``"int8"`` (sentence-transformers' int8 codes,
            with per-dimension ranges computed from the first vectors added, or given) or
            ``"binary"`` (the sign bits, 1/32 of float32).
        keep_float: With ``int8``, ``binary`` or ``float16``: also keep the float32 vectors on
            disk (memory-mapped, read only for the candidates) so that rescoring uses them.
        exact_max_values: A segment of fewer values (rows x dim) is searched exactly (brute
            force) without trying a graph; a larger one gets an HNSW graph when the graph reaches
            ``graph_recall`` and costs less than exact search (``graph_visit_cost``). 16 Mi values:
            16,384 rows of width 1024, below which no graph measured here beat exact search
            (benchmarks/RESULTS.md, issue 22).
        connectivity: HNSW edges per node (usearch's ``connectivity``).
        expansion_add: HNSW candidates considered when adding (quality of the graph).
        expansion_search: HNSW candidates considered when searching (recall against speed); the
            least a segment's graph uses (see ``graph_recall``).
        graph_recall: When a graph is built, ``expansion_search`` is doubled (up to
            ``max_expansion_search``) until the graph finds this fraction of the exact top 10 for 100
            queries between the segment's own rows (in the segment's metric); the value found is
            recorded with the segment. A graph that cannot reach it is not kept: the segment is
            searched exactly, which finds every neighbour (data without near neighbours, such as
            random vectors, defeats HNSW; a large segment is tried on a sample of rows first, and a
            graph the sample already fails is not built in full). ``0``: keep any graph, untuned.
        max_expansion_search: The most HNSW candidates tuning tries per search (a graph search's
            cost grows with it).
        graph_visit_cost: What one graph candidate costs, in rows of exact search. A tuned graph
            of float vectors is kept only when its search (``expansion_search x connectivity``
            candidate visits) costs less than exact search of the segment: ``expansion_search x
            connectivity x graph_visit_cost < rows``. Measured (benchmarks/RESULTS.md): a visit
            costs 1.9 rows at 20,000 model vectors, 8.4 at 100,000 random ones; 4 by default. Not
            applied to int8 and binary, whose graphs measured faster than their exact search.
            ``0``: keep every graph that reaches ``graph_recall``.
        rescore_multiplier: Candidates fetched per result before rescoring int8 and binary
            search with the float query (the default of :meth:`SearchIndex.search`).
        merge_factor: Segments of one size tier merged together (a tier holds segments within
            this factor of each other's size); fewer, larger segments search faster.
    """

    precision: str = "float32"
    keep_float: bool = True
    exact_max_values: int = 16 * 2**20
    connectivity: int = 16
    expansion_add: int = 128
    expansion_search: int = 64
    graph_recall: float = 0.99
    max_expansion_search: int = 4096
    graph_visit_cost: float = 4.0
    rescore_multiplier: int = 4
    merge_factor: int = 4

    def __post_init__(self) -> None:
        if self.precision not in INDEX_PRECISIONS:
            raise ConfigurationError(
                f"IndexOptions.precision={self.precision!r} is not one of {', '.join(map(repr, INDEX_PRECISIONS))}"
            )
        if not isinstance(self.keep_float, bool):
            raise ConfigurationError(f"IndexOptions.keep_float must be a bool, not {self.keep_float!r}")
        for name, low in (("exact_max_values", 0), ("connectivity", 2), ("expansion_add", 1), ("expansion_search", 1),
                          ("rescore_multiplier", 1), ("merge_factor", 2)):  # fmt: skip
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ConfigurationError(f"IndexOptions.{name} must be an int >= {low}, not {value!r}")
        if (
            isinstance(self.max_expansion_search, bool)
            or not isinstance(self.max_expansion_search, int)
            or not (self.expansion_search <= self.max_expansion_search <= _MAX_EXPANSION)
        ):
            raise ConfigurationError(
                f"IndexOptions.max_expansion_search must be an int from expansion_search ({self.expansion_search}) "
                f"to {_MAX_EXPANSION:,}, not {self.max_expansion_search!r}"
            )
        cost = self.graph_visit_cost
        if isinstance(cost, bool) or not isinstance(cost, (int, float)) or not 0 <= cost <= 1e6:
            raise ConfigurationError(f"IndexOptions.graph_visit_cost must be a number in [0, 1e6], not {cost!r}")
        recall = self.graph_recall
        if isinstance(recall, bool) or not isinstance(recall, (int, float)) or not 0 <= recall <= 1:
            raise ConfigurationError(f"IndexOptions.graph_recall must be a number in [0, 1], not {recall!r}")

    @property
    def quantized(self) -> bool:
        """Whether the searched vectors are int8 codes or sign bits."""
        return self.precision in ("int8", "binary")

    @property
    def stores_float(self) -> bool:
        """Whether float32 vectors are on disk (as the searched vectors, or beside them)."""
        return self.precision == "float32" or self.keep_float

    def row_bytes(self, dim: int) -> int:
        """Bytes of one searched vector."""
        return {"float32": 4 * dim, "float16": 2 * dim, "int8": dim, "binary": (dim + 7) // 8}[self.precision]

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, value: Any) -> IndexOptions:
        if not isinstance(value, dict):
            raise ConfigurationError(f"index options must be a JSON object, not {type(value).__name__}")
        known = {k: v for k, v in value.items() if k in cls.__dataclass_fields__}
        return cls(**known)


def require_usearch() -> ModuleType:
    """``usearch.index``, or :class:`~qwen_embed.integrations.MissingExtraError` with the pip command."""
    try:
        import usearch.index
    except ImportError as error:
        from ..integrations import MissingExtraError

        raise MissingExtraError(
            f"search indexes need the 'usearch' package, which is not installed ({error}). "
            'Install it with: pip install "qwen-embed[search]"'
        ) from error
    return usearch.index
