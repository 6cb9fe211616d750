"""Search indexes (qwen_embed.search): exact and HNSW search, quantized storage and rescoring, updates by
id, atomic commits under SIGKILL, the Retriever and the CLI, end to end on generated models."""

from __future__ import annotations

import json
import logging
import random
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from qwen_embed import ConfigurationError, DimensionError, Embedder, InputTypeError, InvalidInputError, Reranker
from qwen_embed.corpus import embed_corpus
from qwen_embed.integrations import MissingExtraError
from qwen_embed.interfaces.cli import main
from qwen_embed.quantization import QuantizationRanges, dequantize_embeddings, quantize_embeddings
from qwen_embed.search import (
    CORPUS_INDEX,
    EmbedderMismatchError,
    EmbeddingRecipe,
    IndexFormatError,
    IndexNotFoundError,
    IndexOptions,
    IndexSourceError,
    Retriever,
    SearchIndex,
    index_corpus,
)
from qwen_embed.testing import make_reranker_model

pq = pytest.importorskip("pyarrow.parquet")
pytest.importorskip("usearch")

ROOT = Path(__file__).resolve().parents[1]


def unit(n: int, dim: int, seed: int) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def clustered(n: int, dim: int, seed: int, clusters: int = 20) -> np.ndarray:
    """Vectors around a few centres, varying along a few directions, as embeddings do (random unit vectors
    spread over every dimension and have no near neighbours). Fixed centres and directions: the same space
    for every seed."""
    base = np.random.default_rng(dim)
    centres = base.standard_normal((clusters, dim))
    directions = base.standard_normal((6, dim))
    rng = np.random.default_rng(seed)
    x = centres[rng.integers(0, clusters, n)] + 0.8 * rng.standard_normal((n, 6)) @ directions
    x += 0.1 * rng.standard_normal((n, dim))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def brute_force(vectors: np.ndarray, ids: list[str], query: np.ndarray, k: int) -> list[tuple[str, float]]:
    scores = vectors @ query
    order = np.argsort(-scores, kind="stable")[:k]
    return [(ids[i], float(scores[i])) for i in order]


def as_pairs(hits: list[Any]) -> list[tuple[str, float]]:
    return [(h.id, h.score) for h in hits]


def same(got: list[tuple[str, float]], expected: list[tuple[str, float]], atol: float = 1e-5) -> bool:
    """The same ids in the same order, and scores within ``atol``."""
    return [i for i, _ in got] == [i for i, _ in expected] and bool(
        np.allclose([s for _, s in got], [s for _, s in expected], rtol=0, atol=atol)
    )


def recall(found: list[list[Any]], vectors: np.ndarray, ids: list[str], queries: np.ndarray, k: int) -> float:
    hits = 0
    for hits_of_query, query in zip(found, queries):
        truth = {i for i, _ in brute_force(vectors, ids, query, k)}
        hits += len(truth & {h.id for h in hits_of_query})
    return hits / (k * len(queries))


def make_index(path: Path, vectors: np.ndarray, **options: Any) -> tuple[SearchIndex, list[str]]:
    ids = [f"d{i}" for i in range(len(vectors))]
    index = SearchIndex.create(path, vectors.shape[1], options=IndexOptions(**options))
    index.upsert(ids, vectors, texts=[f"text {i}" for i in range(len(vectors))])
    return index, ids


# ---------------------------------------------------------------------- exact and HNSW search


def test_exact_float_search_equals_brute_force(tmp_path: Path) -> None:
    x = unit(500, 48, seed=1)
    index, ids = make_index(tmp_path / "idx", x)
    queries = unit(8, 48, seed=2)
    found = index.search(queries, k=7)
    for hits, query in zip(found, queries):
        expected = brute_force(x, ids, query, 7)
        assert [h.id for h in hits] == [i for i, _ in expected]
        np.testing.assert_allclose([h.score for h in hits], [s for _, s in expected], rtol=0, atol=1e-5)
        assert [h.text for h in hits] == [f"text {int(h.id[1:])}" for h in hits]
    reopened = SearchIndex.open(tmp_path / "idx")
    assert [as_pairs(h) for h in reopened.search(queries, k=7)] == [as_pairs(h) for h in found]
    single = reopened.search(queries[0], k=3)  # one vector in, one list of hits out
    assert as_pairs(single) == as_pairs(found[0][:3])


def test_broken_index_differs_from_brute_force(tmp_path: Path) -> None:
    """The twin of the test above: a row with another vector changes the answer, so the comparison can fail."""
    x = unit(500, 48, seed=1)
    query = unit(1, 48, seed=2)[0]
    expected = brute_force(x, [f"d{i}" for i in range(500)], query, 7)
    broken = x.copy()
    best = int(expected[0][0][1:])
    broken[best] = -broken[best]
    index, _ = make_index(tmp_path / "idx", broken)
    assert [h.id for h in index.search(query, k=7)] != [i for i, _ in expected]


def test_graph_segments_find_the_neighbours_and_exact_overrides(tmp_path: Path) -> None:
    x = clustered(3000, 64, seed=3)
    # every segment gets an HNSW graph (graph_visit_cost=0: kept although exact search is cheaper at this size)
    index, ids = make_index(tmp_path / "idx", x, exact_max_values=1, graph_visit_cost=0)
    assert index.manifest["segments"][0]["hnsw"] is True
    queries = clustered(30, 64, seed=4)
    assert recall(index.search(queries, k=10), x, ids, queries, 10) >= 0.95
    exact = index.search(queries, k=10, exact=True)
    for hits, query in zip(exact, queries):
        assert same(as_pairs(hits), brute_force(x, ids, query, 10))


def test_graph_search_breadth_is_tuned_to_the_data(tmp_path: Path) -> None:
    """Random vectors have no near neighbours: the graph needs more candidates than structured ones."""
    options = {"exact_max_values": 1, "expansion_search": 4, "graph_visit_cost": 0}
    easy, _ = make_index(tmp_path / "easy", clustered(2000, 64, seed=30), **options)
    hard, ids = make_index(tmp_path / "hard", unit(2000, 64, seed=31), **options)
    (easy_info,), (hard_info,) = easy.segment_info(), hard.segment_info()
    assert easy_info["graph_recall"] >= 0.99 and hard_info["graph_recall"] >= 0.99
    assert hard_info["expansion_search"] > easy_info["expansion_search"] >= 4
    queries = unit(30, 64, seed=32)
    narrow = SearchIndex.open(tmp_path / "hard", expansion_search=2)
    assert recall(hard.search(queries, k=10), unit(2000, 64, seed=31), ids, queries, 10) > recall(
        narrow.search(queries, k=10), unit(2000, 64, seed=31), ids, queries, 10
    )
    untuned, _ = make_index(tmp_path / "untuned", unit(2000, 64, seed=31), **options, graph_recall=0)
    assert untuned.segment_info()[0]["expansion_search"] == 4
    with pytest.raises(ConfigurationError, match=r"IndexOptions.graph_recall must be a number in \[0, 1\], not 2"):
        IndexOptions(graph_recall=2)


def test_a_graph_that_misses_graph_recall_is_not_kept(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Random vectors have no near neighbours: held to 8 candidates, the graph misses 0.99 of the top 10, so the
    segment is searched exactly (every answer brute force's) and says why. Untuned, the same graph is kept."""
    x = unit(3000, 64, seed=31)
    options = {"exact_max_values": 1, "expansion_search": 4, "max_expansion_search": 8, "graph_visit_cost": 0}
    with caplog.at_level(logging.INFO, logger="qwen_embed.search.segment"):
        index, ids = make_index(tmp_path / "idx", x, **options)
    (info,) = index.segment_info()
    assert info["hnsw"] is False and not (tmp_path / "idx" / info["name"] / "hnsw.usearch").exists()
    assert re.fullmatch(
        r"a graph of 3,000 rows found \d+\.\d% of the exact top 10 at expansion_search=8 \(graph_recall=0.99, "
        r"max_expansion_search=8\): the vectors have no near neighbours a graph can follow, and exact search finds "
        r"them all",
        info["graph_refused"],
    ), info
    assert "no HNSW graph, searched exactly" in caplog.text
    queries = unit(20, 64, seed=32)
    for hits, query in zip(index.search(queries, k=10), queries):
        assert same(as_pairs(hits), brute_force(x, ids, query, 10))
    # The twin: without tuning the graph is kept, and it does miss neighbours.
    kept, _ = make_index(tmp_path / "kept", x, **options, graph_recall=0)
    assert kept.segment_info()[0]["hnsw"] is True
    assert recall(kept.search(queries, k=10), x, ids, queries, 10) < 0.99


def test_a_graph_dearer_than_exact_search_is_not_kept(tmp_path: Path) -> None:
    """Structured vectors: the graph reaches 0.99 with few candidates, but at 3,000 rows exact search costs less
    than ``expansion_search x connectivity x graph_visit_cost`` visits, so the segment stays exact. The twin
    (visits free) keeps the graph."""
    x = clustered(3000, 64, seed=3)
    index, ids = make_index(tmp_path / "idx", x, exact_max_values=1)
    (info,) = index.segment_info()
    assert info["hnsw"] is False and re.fullmatch(
        r"the graph needs expansion_search=\d+ to find \d+\.\d% of the exact top 10: [\d,]+ candidate visits x "
        r"graph_visit_cost=4 cost more than exact search of 3,000 rows, which finds them all",
        info["graph_refused"],
    ), info
    query = clustered(1, 64, seed=4)[0]
    assert same(as_pairs(index.search(query, k=10)), brute_force(x, ids, query, 10))
    kept, _ = make_index(tmp_path / "kept", x, exact_max_values=1, graph_visit_cost=0)
    assert kept.segment_info()[0]["hnsw"] is True
    # int8 and binary graphs measured faster than their exact search: the rule leaves them alone
    codes, _ = make_index(tmp_path / "int8", x, exact_max_values=1, precision="int8")
    assert codes.segment_info()[0]["hnsw"] is True
    with pytest.raises(
        ConfigurationError, match=r"IndexOptions.graph_visit_cost must be a number in \[0, 1e6\], not -1"
    ):
        IndexOptions(graph_visit_cost=-1)


def test_a_large_segment_is_judged_on_a_sample_first(tmp_path: Path) -> None:
    """The sample's graph misses graph_recall, so the whole segment's graph is never built."""
    from qwen_embed.search.segment import SAMPLE_ROWS

    x = unit(4 * SAMPLE_ROWS, 32, seed=33)
    index, ids = make_index(
        tmp_path / "idx", x, exact_max_values=1, expansion_search=1, max_expansion_search=1, graph_visit_cost=0
    )
    (info,) = index.segment_info()
    assert info["hnsw"] is False and info["graph_refused"].startswith(f"a graph of {SAMPLE_ROWS:,} rows found"), info
    query = unit(1, 32, seed=34)[0]
    assert same(as_pairs(index.search(query, k=10)), brute_force(x, ids, query, 10))
    with pytest.raises(
        ConfigurationError,
        match=r"IndexOptions.max_expansion_search must be an int from expansion_search \(64\) to "
        r"65,536, not 8",
    ):
        IndexOptions(max_expansion_search=8)


def test_view_memory_maps_and_answers_the_same(tmp_path: Path) -> None:
    x = clustered(2000, 32, seed=5)
    index, _ = make_index(tmp_path / "idx", x, exact_max_values=1, graph_visit_cost=0)
    queries = clustered(10, 32, seed=6)
    viewed = SearchIndex.open(tmp_path / "idx", view=True)
    assert [as_pairs(h) for h in viewed.search(queries, k=5)] == [as_pairs(h) for h in index.search(queries, k=5)]


def test_exact_search_memory_does_not_grow_with_the_index(tmp_path: Path) -> None:
    """An index larger than memory must answer from its mapped vectors: exact search holds a block of scores
    and the running best rows, never a queries x rows matrix (which grew 8x with 8x the rows before)."""
    import tracemalloc

    queries = unit(128, 16, seed=41)
    peaks = []
    for n in (50_000, 400_000):
        x = unit(n, 16, seed=40)
        make_index(tmp_path / f"idx{n}", x, exact_max_values=2**40)
        index = SearchIndex.open(tmp_path / f"idx{n}", view=True)
        del x
        tracemalloc.start()
        found = index.search(queries, k=10)
        peaks.append(tracemalloc.get_traced_memory()[1])
        tracemalloc.stop()
        assert len(found) == 128 and all(len(hits) == 10 for hits in found)
    assert peaks[1] < 1.5 * peaks[0], peaks
    x = unit(400_000, 16, seed=40)  # and the answers are still brute force's
    ids = [f"d{i}" for i in range(len(x))]
    for hits, query in zip(found[:5], queries[:5]):
        assert same(as_pairs(hits), brute_force(x, ids, query, 10))


@pytest.mark.parametrize("precision", ["int8", "binary"])
def test_exact_search_of_codes_keeps_memory_bounded(tmp_path: Path, precision: str) -> None:
    """usearch's exact search holds a distance per (query, row) of a call: the rows go in blocks. Measured in a
    child (usearch allocates outside Python's tracing): 128 queries over 400,000 rows took ~600 MB more before."""
    x = unit(400_000, 16, seed=40)
    make_index(tmp_path / "idx", x, exact_max_values=2**40, precision=precision)
    queries = unit(128, 16, seed=41)
    np.save(tmp_path / "queries.npy", queries)
    child = textwrap.dedent(f"""
        import json, numpy as np
        from qwen_embed.search import SearchIndex

        def peak():
            line = next(l for l in open("/proc/self/status") if l.startswith("VmHWM:"))
            return int(line.split()[1]) * 1024

        index = SearchIndex.open({str(tmp_path / "idx")!r}, view=True)
        queries = np.load({str(tmp_path / "queries.npy")!r})
        index.search(queries[:1], k=10)
        before = peak()
        found = index.search(queries, k=10, rescore="none")
        print(json.dumps({{"growth": peak() - before, "scores": [[h.score for h in hits] for hits in found[:5]]}}))
    """)
    done = subprocess.run([sys.executable, "-c", child], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["growth"] < 150 * 2**20, out["growth"]  # the (query, row) distances alone are 614 MB
    index = SearchIndex.open(tmp_path / "idx")
    expected = [[h.score for h in hits] for hits in index.search(queries[:5], k=10, rescore="none")]
    np.testing.assert_allclose(out["scores"], expected, rtol=0, atol=1e-6)  # rows of equal score may differ


@pytest.mark.parametrize("precision", ["int8", "binary"])
def test_blocked_exact_search_of_codes_equals_usearch_in_one_call(precision: str) -> None:
    import usearch.index

    from qwen_embed.search.segment import exact_search

    rng = np.random.default_rng(7)
    if precision == "int8":
        codes, probe = (
            rng.integers(-127, 128, (150_000, 24), dtype=np.int8),
            rng.integers(-127, 128, (9, 24), dtype=np.int8),
        )
        metric, dtype = "ip", "i8"
    else:
        codes, probe = (
            np.packbits(rng.standard_normal((150_000, 64)) > 0, axis=-1),
            np.packbits(rng.standard_normal((9, 64)) > 0, axis=-1),
        )
        metric, dtype = "hamming", "b1"
    for fetch in (1, 10, 40):
        blocked = exact_search(codes, probe, fetch, metric, dtype)[0]
        whole = usearch.index.search(codes, probe, fetch, metric, exact=True, dtype=dtype)
        keys = np.asarray(whole.keys, dtype=np.int64).reshape(len(probe), -1)
        distances = np.asarray(whole.distances).reshape(len(probe), -1)
        assert blocked.shape == keys.shape
        for qi in range(len(probe)):  # the same distances, in order (rows at equal distance may differ)
            ours = usearch.index.search(codes[blocked[qi]], probe[qi : qi + 1], fetch, metric, exact=True, dtype=dtype)
            np.testing.assert_allclose(np.sort(np.asarray(ours.distances).ravel()), distances[qi], rtol=0, atol=1e-6)


# ---------------------------------------------------------------------- quantized storage and rescoring


@pytest.mark.parametrize("precision", ["int8", "binary"])
def test_stored_codes_are_sentence_transformers_codes(tmp_path: Path, precision: str) -> None:
    x = clustered(400, 64, seed=7)
    index, _ = make_index(tmp_path / "idx", x, precision=precision)
    stored = np.load(index.path / index.manifest["segments"][0]["name"] / "vectors.npy")
    if precision == "int8":
        assert index.ranges == QuantizationRanges.from_embeddings(x)  # from the first vectors, recorded
        assert np.array_equal(stored, quantize_embeddings(x, "int8", ranges=index.ranges))
    else:
        assert np.array_equal(stored, quantize_embeddings(x, "ubinary"))
    reopened = SearchIndex.open(index.path)
    assert reopened.ranges == index.ranges


@pytest.mark.parametrize("precision", ["int8", "binary", "float16"])
def test_rescoring_with_every_candidate_equals_exact_float_search(tmp_path: Path, precision: str) -> None:
    x = clustered(600, 64, seed=8)
    index, ids = make_index(tmp_path / "idx", x, precision=precision)
    queries = clustered(6, 64, seed=9)
    found = index.search(queries, k=10, rescore="float", rescore_multiplier=60)  # 600 candidates: all rows
    for hits, query in zip(found, queries):
        assert same(as_pairs(hits), brute_force(x, ids, query, 10))


def test_rescoring_against_the_codes_scores_the_dequantized_vectors(tmp_path: Path) -> None:
    x = clustered(300, 64, seed=10)
    index, ids = make_index(tmp_path / "idx", x, precision="int8", keep_float=False)
    query = clustered(1, 64, seed=11)[0]
    approx = dequantize_embeddings(quantize_embeddings(x, "int8", ranges=index.ranges), "int8", index.ranges)
    hits = index.search(query, k=5, rescore_multiplier=60)  # default without float32 vectors: the codes
    assert same(as_pairs(hits), brute_force(approx, ids, query, 5))
    with pytest.raises(ConfigurationError, match=r"rescore='float' needs the float32 vectors, which .* does not keep"):
        index.search(query, rescore="float")
    with pytest.raises(ConfigurationError, match=r"rescore='best' is not one of 'float', 'quantized', 'none'"):
        index.search(query, rescore="best")


@pytest.mark.parametrize(("precision", "floor"), [("int8", 0.97), ("binary", 0.8)])
def test_default_rescoring_keeps_recall(tmp_path: Path, precision: str, floor: float) -> None:
    x = clustered(2000, 128, seed=12)
    index, ids = make_index(tmp_path / "idx", x, precision=precision)
    queries = clustered(40, 128, seed=13)
    rescored = recall(index.search(queries, k=10), x, ids, queries, 10)
    plain = recall(index.search(queries, k=10, rescore="none"), x, ids, queries, 10)
    assert rescored >= floor and rescored >= plain


def test_int8_ranges_given_or_kept_for_later_rows(tmp_path: Path) -> None:
    calibration = QuantizationRanges.from_embeddings(unit(100, 16, seed=14))
    index = SearchIndex.create(tmp_path / "given", 16, options=IndexOptions(precision="int8"), ranges=calibration)
    index.upsert(["a"], unit(1, 16, seed=15))
    index.upsert(["b"], unit(1, 16, seed=16) * 3)  # outside the ranges: clipped, the ranges stay
    assert SearchIndex.open(tmp_path / "given").ranges == calibration
    with pytest.raises(ConfigurationError, match=r"ranges= is for int8 indexes, not float32"):
        SearchIndex.create(tmp_path / "other", 16, ranges=calibration)


# ---------------------------------------------------------------------- updates by id


def test_add_replace_delete_by_id(tmp_path: Path) -> None:
    x = clustered(200, 32, seed=17)
    index, ids = make_index(tmp_path / "idx", x)
    new = clustered(10, 32, seed=18)
    result = index.upsert(ids[:10], new, texts=[f"new {i}" for i in range(10)])
    assert (result.added, result.replaced, result.rows) == (0, 10, 200)
    gone = index.delete(["d10", "d11", "nope"])
    assert (gone.deleted, gone.rows) == (2, 198)
    added = index.upsert(["extra"], clustered(1, 32, seed=19), metadata=[{"source": "x"}])
    assert (added.added, added.rows) == (1, 199)
    live = np.concatenate([new, x[12:], clustered(1, 32, seed=19)])
    live_ids = ids[:10] + ids[12:] + ["extra"]
    reopened = SearchIndex.open(tmp_path / "idx")
    assert len(reopened) == 199 and "d10" not in reopened and "extra" in reopened
    for query in [*clustered(5, 32, seed=20), x[10], x[0]]:  # the old vectors of deleted or replaced rows too
        assert same(as_pairs(reopened.search(query, k=8)), brute_force(live, live_ids, query, 8))
    vector, text, metadata = reopened.get("d3")
    np.testing.assert_array_equal(vector, new[3])
    assert text == "new 3" and metadata is None
    assert reopened.get("extra")[1:] == (None, {"source": "x"})
    assert reopened.search(new[0], k=1)[0].text == "new 0"


def test_skip_unchanged_rows(tmp_path: Path) -> None:
    x = clustered(50, 16, seed=21)
    index, ids = make_index(tmp_path / "idx", x)
    y = x.copy()
    y[3] = clustered(1, 16, seed=22)[0]
    texts = [f"text {i}" for i in range(50)]
    result = index.upsert(ids, y, texts=texts, skip_unchanged=True)
    assert (result.added, result.replaced, result.unchanged) == (0, 1, 49)
    texts[7] = "edited"
    result = index.upsert(ids, y, texts=texts, skip_unchanged=True)
    assert (result.replaced, result.unchanged) == (1, 49)  # the text changed, the vector did not


def test_small_updates_merge_and_compact_keeps_answers(tmp_path: Path) -> None:
    dim = 24
    index = SearchIndex.create(tmp_path / "idx", dim, options=IndexOptions(merge_factor=2))
    live: dict[str, np.ndarray] = {}
    rng = random.Random(23)
    for step in range(12):
        batch = clustered(20, dim, seed=100 + step)
        ids = [f"s{step}-{i}" for i in range(20)]
        doomed = rng.sample(sorted(live), k=min(5, len(live)))
        index.update(ids, batch, delete=doomed)
        for i, v in zip(ids, batch):
            live[i] = v
        for i in doomed:
            del live[i]
    assert index.segments <= 6  # tiers merged: not one segment per update
    names, vectors = list(live), np.stack(list(live.values()))
    queries = clustered(5, dim, seed=24)
    expected = [brute_force(vectors, names, q, 6) for q in queries]
    assert all(same(as_pairs(h), e) for h, e in zip(index.search(queries, k=6), expected))
    index.compact()
    assert index.segments == 1 and len(index) == len(live)
    assert all(same(as_pairs(h), e) for h, e in zip(SearchIndex.open(index.path).search(queries, k=6), expected))
    leftovers = [p.name for p in index.path.iterdir() if p.name not in ("index.json", ".lock")]
    assert leftovers == [index.manifest["segments"][0]["name"]]  # old segments and tombstones removed


def test_overwrite_keeps_the_old_index_until_the_first_commit(tmp_path: Path) -> None:
    x = unit(30, 8, seed=25)
    make_index(tmp_path / "idx", x)
    with pytest.raises(ConfigurationError, match=r"already holds an index; open it with SearchIndex.open"):
        SearchIndex.create(tmp_path / "idx", 8)
    fresh = SearchIndex.create(tmp_path / "idx", 8, options=IndexOptions(precision="binary"), overwrite=True)
    assert len(SearchIndex.open(tmp_path / "idx")) == 30  # readers still see the old one
    fresh.upsert(["only"], x[:1])
    reopened = SearchIndex.open(tmp_path / "idx")
    assert (len(reopened), reopened.precision) == (1, "binary")


def test_bad_inputs(tmp_path: Path) -> None:
    index, _ = make_index(tmp_path / "idx", unit(10, 8, seed=26))
    with pytest.raises(DimensionError, match=r"vectors must have shape \(1, 8\), not \(1, 9\)"):
        index.upsert(["x"], unit(1, 9, seed=0))
    with pytest.raises(InputTypeError, match=r"ids\[0\] is int, not str"):
        index.upsert([1], unit(1, 8, seed=0))  # type: ignore[list-item]
    with pytest.raises(InvalidInputError, match=r"ids: id 'a' appears more than once"):
        index.upsert(["a", "a"], unit(2, 8, seed=0))
    with pytest.raises(InvalidInputError, match=r"id 'a' is both added and deleted in one update"):
        index.update(["a"], unit(1, 8, seed=0), delete=["a"])
    with pytest.raises(InvalidInputError, match=r"a vector holds a NaN or an infinity"):
        index.upsert(["a"], np.full((1, 8), np.nan, dtype=np.float32))
    with pytest.raises(InvalidInputError, match=r"metadata\[0\] is not JSON-serializable"):
        index.upsert(["a"], unit(1, 8, seed=0), metadata=[object()])
    with pytest.raises(DimensionError, match=r"query vectors must have 8 dimensions, not shape \(3,\)"):
        index.search(np.zeros(3, dtype=np.float32))
    with pytest.raises(ConfigurationError, match=r"k must be a positive int, not 0"):
        index.search(np.zeros(8, dtype=np.float32), k=0)
    with pytest.raises(IndexNotFoundError, match=r"no search index at"):
        SearchIndex.open(tmp_path / "nowhere")
    manifest = json.loads((index.path / "index.json").read_text())
    (index.path / "index.json").write_text(json.dumps({**manifest, "format_version": 99}))
    with pytest.raises(IndexFormatError, match=r"has format version 99; this qwen-embed reads version 1"):
        SearchIndex.open(index.path)
    with pytest.raises(ConfigurationError, match=r"IndexOptions.precision='int4' is not one of"):
        IndexOptions(precision="int4")
    assert len(index.search(np.ones(8, dtype=np.float32), k=50)) == 10  # k over the rows: all of them


# ---------------------------------------------------------------------- crashes, extras


KILL_SCRIPT = textwrap.dedent(
    """
    import sys
    import numpy as np
    from qwen_embed.search import IndexOptions, SearchIndex

    path, start = sys.argv[1], int(sys.argv[2])
    n, dim = 3000, 32
    if start == 1:
        index = SearchIndex.create(path, dim, options=IndexOptions(precision="int8", exact_max_values=1,
                                                                  merge_factor=2, graph_visit_cost=0))
    else:
        index = SearchIndex.open(path)
    for gen in range(start, start + 1000):
        x = np.random.default_rng(gen).standard_normal((n, dim)).astype(np.float32)
        index.update([f"{gen}-{i}" for i in range(n)], x, delete=[f"{gen - 1}-{i}" for i in range(n)])
        print(gen, flush=True)
    """
)


def _check_one_batch(path: Path) -> int:
    """The index holds exactly one update's rows, all of them findable; returns that update's number."""
    index = SearchIndex.open(path)
    ids = list(index.ids())
    gens = {i.split("-")[0] for i in ids}
    assert len(gens) == 1 and len(ids) == 3000, (len(gens), len(ids))
    gen = int(gens.pop())
    x = np.random.default_rng(gen).standard_normal((3000, 32)).astype(np.float32)
    for row in (0, 1234, 2999):
        assert index.search(x[row], k=1, exact=True)[0].id == f"{gen}-{row}"
    return gen


def test_sigkill_during_updates_leaves_the_last_commit(tmp_path: Path) -> None:
    path = tmp_path / "idx"
    start, leftovers = 1, {}
    for when in ("update starts", "segment written", "random moment"):
        process = subprocess.Popen(
            [sys.executable, "-c", KILL_SCRIPT, str(path), str(start)], stdout=subprocess.PIPE, text=True
        )
        assert process.stdout is not None
        committed = [int(process.stdout.readline()) for _ in range(2)]  # gate: updates done so far
        began = time.monotonic()
        committed.append(int(process.stdout.readline()))
        duration = time.monotonic() - began
        if when == "segment written":  # kill while a segment's temporary folder exists
            _wait_for(lambda: any(p.name.startswith(".seg-") for p in path.iterdir()))
        elif when == "random moment":
            time.sleep(random.Random(start).uniform(0, duration))
        process.send_signal(signal.SIGKILL)
        assert process.wait(timeout=120) == -signal.SIGKILL
        named = {r["name"] for r in json.loads((path / "index.json").read_text())["segments"]}
        leftovers[when] = [
            p.name for p in path.iterdir() if p.name.startswith((".seg-", "seg-")) and p.name not in named
        ]
        gen = _check_one_batch(path)
        assert gen in (committed[-1], committed[-1] + 1)  # the last commit, or the one the kill interrupted
        start = gen + 1
    assert leftovers["segment written"]  # that kill did land inside an update
    index = SearchIndex.open(path)
    x = np.random.default_rng(start).standard_normal((3000, 32)).astype(np.float32)
    index.update([f"{start}-{i}" for i in range(3000)], x, delete=[f"{start - 1}-{i}" for i in range(3000)])
    assert _check_one_batch(path) == start
    assert not [p.name for p in path.iterdir() if p.name.endswith(".tmp")]  # the crashed writers' files are gone


def _wait_for(condition: Any, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.0005)


def test_imports_and_the_missing_extra() -> None:
    code = textwrap.dedent(
        """
        import sys
        import qwen_embed, qwen_embed.search, qwen_embed.quantization
        assert not [m for m in sys.modules if m.startswith(("usearch", "pyarrow"))], "imported too early"
        sys.modules["usearch"] = None  # as if it were not installed
        from qwen_embed.search import SearchIndex
        from qwen_embed.integrations import MissingExtraError
        try:
            SearchIndex.create(sys.argv[1], 8)
        except MissingExtraError as error:
            print(error)
        """
    )
    done = subprocess.run([sys.executable, "-c", code, "/tmp/never-made"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert 'pip install "qwen-embed[search]"' in done.stdout
    assert issubclass(MissingExtraError, ImportError)


# ---------------------------------------------------------------------- corpus -> index -> search -> rerank


def corpus_texts(n: int) -> list[str]:
    rng = random.Random(7)
    words = ["gguf", "vector", "llama", "query", "passage", "token", "model", "search", "corpus", "shard"]
    return [f"{i} " + " ".join(rng.choice(words) for _ in range(rng.randint(1, 10))) for i in range(n)]


def write_jsonl(path: Path, texts: list[str], ids: list[str]) -> Path:
    path.write_text("".join(json.dumps({"doc_id": i, "text": t}) + "\n" for i, t in zip(ids, texts)))
    return path


def corpus_vectors(folder: Path) -> tuple[list[str], np.ndarray]:
    table = pq.read_table(folder)
    dim = table.schema.field("embedding").type.list_size
    ids = [str(i) for i in table["id"].to_pylist()]
    return ids, table["embedding"].combine_chunks().values.to_numpy().reshape(-1, dim)


@pytest.fixture(scope="module")
def reranker_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_reranker_model(tmp_path_factory.mktemp("rr") / "reranker.gguf")


QUERIES = ["gguf vector search", "llama token", "corpus shard model"]


def test_corpus_index_search_rerank_end_to_end(
    tiny_embedder: Embedder, reranker_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    texts = corpus_texts(120)
    ids = [f"doc-{i}" for i in range(120)]
    source = write_jsonl(tmp_path / "corpus.jsonl", texts, ids)
    folder = tmp_path / "vectors"
    embed_corpus(source, folder, embedder=tiny_embedder, id_field="doc_id", shard_rows=40)
    assert main(["index", str(folder)]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert (summary["rows"], summary["added"], summary["texts"]) == (120, 120, True)
    assert (folder / CORPUS_INDEX / "index.json").is_file()
    assert pq.read_table(folder).num_rows == 120  # the dataset readers skip _index

    stored_ids, vectors = corpus_vectors(folder)
    retriever = Retriever(tiny_embedder, folder)
    query_vectors = tiny_embedder.encode_queries(QUERIES)
    found = retriever.search(QUERIES, k=5)
    for hits, query in zip(found, query_vectors):
        assert same(as_pairs(hits), brute_force(vectors, stored_ids, query, 5))
        assert [h.text for h in hits] == [texts[ids.index(h.id)] for h in hits]
    # the twin: embedding the query as a document gives other neighbours, so the check above can fail
    as_document = tiny_embedder.encode_documents(QUERIES)
    assert any(
        [i for i, _ in brute_force(vectors, stored_ids, q, 5)] != [h.id for h in hits]
        for q, hits in zip(as_document, found)
    )

    with Reranker(reranker_path, n_threads=2) as reranker:
        reranking = Retriever(tiny_embedder, folder, reranker)
        reranked = reranking.search(QUERIES[0], k=3, rerank_top=10)
        candidates = retriever.search(QUERIES[0], k=10)
        expected = reranker.rank(QUERIES[0], [h.text for h in candidates], top_k=3)
    assert [h.id for h in reranked] == [candidates[e["corpus_id"]].id for e in expected]
    assert [h.rerank_score for h in reranked] == pytest.approx([e["score"] for e in expected], abs=1e-6)
    assert [h.vector_score for h in reranked] == pytest.approx([candidates[e["corpus_id"]].score for e in expected])

    assert main(["search", str(folder), *QUERIES, "--top-k", "5"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(line["query"], line["id"]) for line in lines] == [
        (q, h.id) for q, hits in zip(QUERIES, found) for h in hits
    ]
    assert [line["score"] for line in lines] == pytest.approx([h.score for hits in found for h in hits], abs=1e-6)
    assert main(["search", str(folder), QUERIES[0], "--top-k", "3", "--rerank-top", "10",
                 "--reranker", str(reranker_path)]) == 0  # fmt: skip
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [line["id"] for line in lines] == [h.id for h in reranked]
    assert [line["text"] for line in lines] == [h.text for h in reranked]


def test_index_cli_takes_the_graph_options(
    tiny_embedder: Embedder, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = write_jsonl(tmp_path / "corpus.jsonl", corpus_texts(60), [f"doc-{i}" for i in range(60)])
    folder = tmp_path / "vectors"
    embed_corpus(source, folder, embedder=tiny_embedder, id_field="doc_id")
    assert main(["index", str(folder), "--max-expansion-search", "8"]) == 1
    assert (
        "qwen-embed index: ConfigurationError: IndexOptions.max_expansion_search must be an int from "
        "expansion_search (64) to 65,536, not 8" in capsys.readouterr().err
    )
    assert main(["index", str(folder), "--exact-max-values", "1", "--graph-recall", "0"]) == 0
    with SearchIndex.open(folder) as index:
        assert index.options.graph_recall == 0 and [s["hnsw"] for s in index.segment_info()] == [True]
    assert main(["index", str(folder), "--rebuild", "--exact-max-values", "1", "--max-expansion-search", "64"]) == 0
    with SearchIndex.open(folder) as index:  # the twin: tuned (and kept, or refused with its reason)
        assert index.options.max_expansion_search == 64 and index.options.graph_recall == 0.99
        (info,) = index.segment_info()
        # no graph at 60 rows: it misses graph_recall or costs more than exact search (usearch builds with threads,
        # so which of the two depends on the run)
        assert info["hnsw"] is False and "60 rows" in info["graph_refused"]
    assert main(["index", str(folder), "--rebuild", "--exact-max-values", "1", "--graph-visit-cost", "0"]) == 0
    with SearchIndex.open(folder) as index:
        assert index.options.graph_visit_cost == 0


def test_reindexing_an_edited_corpus_touches_only_what_changed(tiny_embedder: Embedder, tmp_path: Path) -> None:
    texts = corpus_texts(160)
    ids = [f"doc-{i}" for i in range(160)]
    source = write_jsonl(tmp_path / "corpus.jsonl", texts, ids)
    folder = tmp_path / "vectors"
    embed_corpus(source, folder, embedder=tiny_embedder, id_field="doc_id", shard_rows=40)
    index_corpus(folder, options=IndexOptions(precision="int8"))
    texts[5] = "an edited text about llama"  # shard 0 changes
    del texts[159], ids[159]  # shard 3 loses its last row
    write_jsonl(source, texts, ids)
    embed_corpus(source, folder, embedder=tiny_embedder, id_field="doc_id", shard_rows=40)
    result = index_corpus(folder)
    update = result.update
    assert (result.shards_read, result.shards_skipped) == (2, 2)
    assert update.deleted == 1 and update.added == 0 and update.rows == 159
    assert 1 <= update.replaced and update.replaced + update.unchanged == 79
    index = SearchIndex.open(folder)
    assert index.precision == "int8" and "doc-159" not in index
    assert index.get("doc-5")[1] == "an edited text about llama"
    stored_ids, vectors = corpus_vectors(folder)
    query = tiny_embedder.encode_queries("llama")
    hits = index.search(query, k=5, rescore_multiplier=40)
    assert same(as_pairs(hits), brute_force(vectors, stored_ids, query, 5))
    again = index_corpus(folder)
    assert (again.shards_read, again.update.added, again.update.replaced, again.update.deleted) == (0, 0, 0, 0)


def test_corpus_index_refusals(tiny_embedder: Embedder, model_factory: Any, tmp_path: Path) -> None:
    texts = corpus_texts(30)
    source = write_jsonl(tmp_path / "corpus.jsonl", texts, [f"d{i}" for i in range(30)])
    folder = tmp_path / "vectors"
    with pytest.raises(IndexSourceError, match=r"holds no corpus job"):
        index_corpus(folder)
    embed_corpus(source, folder, embedder=tiny_embedder, id_field="doc_id")
    with pytest.raises(IndexNotFoundError, match=r"is a corpus folder without an index; build it with: qwen-embed"):
        SearchIndex.open(folder)
    index_corpus(folder)
    with pytest.raises(IndexSourceError, match=r"options: IndexOptions\(precision='float32'.* then, .*binary"):
        index_corpus(folder, options=IndexOptions(precision="binary"))
    assert index_corpus(folder, options=IndexOptions(precision="binary"), rebuild=True).update.rows == 30
    source.write_text(source.read_text().replace("gguf", "GGUF"))  # the texts changed, the vectors did not
    manifest = json.loads((folder / "_manifest.json").read_text())
    with pytest.raises(IndexSourceError, match=r"the source .* changed since the corpus job embedded its rows 0-29"):
        index_corpus(folder, rebuild=True, options=IndexOptions(precision="binary"))
    assert index_corpus(folder, rebuild=True, texts=False).update.rows == 30  # without texts, no check needed
    (folder / "_manifest.json").write_text(json.dumps({**manifest, "complete": False}))
    with pytest.raises(IndexSourceError, match=r"has not finished"):
        index_corpus(folder)


def test_retriever_refuses_an_embedder_with_other_settings(
    tiny_embedder: Embedder, tiny_model: Path, model_factory: Any, tmp_path: Path
) -> None:
    x = tiny_embedder.encode_documents(corpus_texts(20))
    recipe = EmbeddingRecipe.from_embedder(tiny_embedder)
    index = SearchIndex.create(tmp_path / "idx", x.shape[1], recipe=recipe)
    index.upsert([str(i) for i in range(20)], x)
    Retriever(tiny_embedder, tmp_path / "idx")  # the same settings: accepted
    with Embedder(tiny_model, n_threads=1, dim=32, normalize=False) as other:
        with pytest.raises(EmbedderMismatchError, match=r"dim: index 64, embedder 32; normalize: index True, embedder"):
            Retriever(other, tmp_path / "idx")
    with Embedder(model_factory(seed=5), n_threads=1) as other:
        with pytest.raises(EmbedderMismatchError, match=r"model: index .*\(sha256 [0-9a-f]{12}\.\.\.\), embedder"):
            Retriever(other, index)
    plain = SearchIndex.create(tmp_path / "plain", x.shape[1])
    with pytest.raises(ConfigurationError, match=r"records no embedding recipe"):
        Retriever(tiny_embedder, plain)
    with pytest.raises(ConfigurationError, match=r"reranking needs the documents' texts"):
        Retriever(tiny_embedder, index, reranker=object())  # type: ignore[arg-type]


def test_a_corpus_without_ids_is_indexed_by_row_number(tiny_embedder: Embedder, tmp_path: Path) -> None:
    texts = corpus_texts(25)
    source = tmp_path / "corpus.txt"
    source.write_text("\n".join(texts) + "\n")
    folder = tmp_path / "vectors"
    embed_corpus(source, folder, embedder=tiny_embedder, shard_rows=10)
    index_corpus(folder)
    index = SearchIndex.open(folder)
    assert sorted(index.ids(), key=int) == [str(i) for i in range(25)]
    assert index.get("13")[1] == texts[13]
    stored_ids, vectors = corpus_vectors(folder)
    hits = Retriever(tiny_embedder, folder).search("gguf", k=4)
    assert same(as_pairs(hits), brute_force(vectors, stored_ids, tiny_embedder.encode_queries("gguf"), 4))
