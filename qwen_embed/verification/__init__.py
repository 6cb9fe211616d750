"""``qwen-embed verify``: check a GGUF file against the official Transformers recipe.

>>> from qwen_embed import verify
>>> report = verify("Qwen3-Embedding-0.6B-Q8_0.gguf", "Qwen/Qwen3-Embedding-0.6B")  # doctest: +SKIP
>>> print(report)                                                                    # doctest: +SKIP

A built-in probe set (several languages and scripts, code, a long text, control-token
look-alikes) runs through the file with this library and through the official recipe on the
checkpoint the file was converted from; the report compares token ids, the EOS, the pooling
(or the reranker's head), per-text cosines (or score differences) and the retrieval ranking,
and gives a verdict with a pass mark by file type. Needs the ``parity`` extra.
"""

from .options import KINDS, Threshold, VerifyOptions, threshold_for
from .probes import Probe, ProbeQuery, ProbeSet, load_probes
from .report import EosCheck, Finding, HeadCheck, ProbeResult, TopKCheck, VerifyReport
from .run import guess_reference, verify

__all__ = [
    "KINDS",
    "EosCheck",
    "Finding",
    "HeadCheck",
    "Probe",
    "ProbeQuery",
    "ProbeResult",
    "ProbeSet",
    "Threshold",
    "TopKCheck",
    "VerifyOptions",
    "VerifyReport",
    "guess_reference",
    "load_probes",
    "threshold_for",
    "verify",
]
