"""A second engine behind the same seam: PyTorch on the same GGUF file (``pip install "qwen-embed[torch]"``).

The GGUF's tensors are read and dequantized by torch tensor ops straight into the chosen
dtype, a MiB at a time on ``n_threads`` threads (:mod:`._weights`, :mod:`._dequant`); text
is tokenized by a ``tokenizers`` BPE built from the file's own vocabulary and merges with
the Qwen2 split, checked against llama.cpp on a sample at load time (falling back to
llama.cpp's tokenizer where they differ). The forward pass is a compact Qwen3 encoder that,
under last-token pooling, runs the final layer's attention output and FFN for the last
token of each sequence only.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ConfigurationError, EngineError, ModelLoadError
from ._guard import NativeGuard, check_fork_safe, mark_threads_started
from .gguf_info import GGUFInfo, read_gguf_info
from .hardware import detect_hardware

__all__ = ["TorchEngine", "default_torch_dtype", "torch_available"]

logger = logging.getLogger(__name__)

QWEN2_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
_CONTROL = 3
_USER_DEFINED = 4
# Checked at load: the tokenizers BPE must give llama.cpp's ids on these, else llama.cpp tokenizes.
_TOKENIZER_PROBES = (
    "Hello, world! It's 2026; naïve café — déjà vu.",
    "def f(x):\n    return x ** 2  # comment\n\n\n\tindent",
    "中文分词测试，日本語のテキスト，한국어 텍스트",
    "Привет мир, مرحبا بالعالم, שלום עולם",
    "emoji 🎉🚀 and symbols ∑∫√ and numbers 1234567890 3.14159",
    "   leading and trailing spaces   \r\n\r\nCRLF lines\n",
    "<|endoftext|> is plain text here <|im_end|>",
)


def torch_available() -> bool:
    """Whether PyTorch is installed (found, not imported: importing it takes about a second)."""
    import importlib.util

    return importlib.util.find_spec("torch") is not None


def default_torch_dtype(device: str) -> str:
    """bfloat16 on CUDA and on CPUs with AMX or AVX512-BF16 (per :func:`~.hardware.detect_hardware`), else float32."""
    return detect_hardware().torch_dtype(device)


class _Tokenizer:
    """Qwen2 byte-level BPE from the GGUF's vocabulary, with llama.cpp as the fallback."""

    def __init__(self, path: Path) -> None:
        self._fallback: Any = None
        self._fallback_vocab: Any = None
        self._bytes_cache: dict[int, bytes] = {}
        arrays = ("tokenizer.ggml.tokens", "tokenizer.ggml.merges", "tokenizer.ggml.token_type")
        meta = read_gguf_info(path, full_arrays=arrays).metadata  # one read of the vocabulary
        tokens = list(meta["tokenizer.ggml.tokens"])
        self._tokens = tokens
        self._types = list(meta.get("tokenizer.ggml.token_type") or [1] * len(tokens))
        self.bpe: Any = None
        if meta.get("tokenizer.ggml.model") == "gpt2" and meta.get("tokenizer.ggml.pre") in ("qwen2", None):
            try:
                user_defined = [t for t, kind in zip(tokens, self._types) if kind == _USER_DEFINED]
                self.bpe = _build_bpe(tokens, list(meta.get("tokenizer.ggml.merges") or []), user_defined)
            except Exception as error:  # an odd vocabulary: llama.cpp tokenizes instead
                logger.debug("tokenizers BPE not built (%s); using llama.cpp's tokenizer", error)
        self._byte_decoder = _byte_decoder()
        self.path = path
        if self.bpe is not None and not all(self._agrees(text) for text in _TOKENIZER_PROBES):
            logger.debug("tokenizers BPE disagrees with llama.cpp on the probes; using llama.cpp's tokenizer")
            self.bpe = None

    @property
    def source(self) -> str:
        return "tokenizers (GGUF vocabulary)" if self.bpe is not None else "llama.cpp"

    def _agrees(self, text: str) -> bool:
        return bool(np.array_equal(self._bpe_ids(text), self._llama_ids(text)))

    def _bpe_ids(self, text: str) -> np.ndarray:
        try:
            ids = self.bpe.encode(text, add_special_tokens=False).ids
        except BaseException as error:  # pyo3's PanicException is a BaseException
            if type(error).__name__ != "PanicException":
                raise
            # Oniguruma gives up on some huge inputs (a run of ~10M spaces: "retry-limit-in-match over") and
            # tokenizers panics; llama.cpp's tokenizer gives the same ids without a backtracking regex.
            logger.debug("tokenizers failed on a %d-character text (%s); llama.cpp tokenizes it", len(text), error)
            return self._llama_ids(text)
        return np.asarray(ids, dtype=np.int32)

    def _llama_ids(self, text: str, special: bool = False) -> np.ndarray:
        if self._fallback is None:
            import llama_cpp

            from ._native import install_log_router

            install_log_router()
            params = llama_cpp.llama_model_default_params()
            params.vocab_only = True
            model = llama_cpp.llama_model_load_from_file(str(self.path).encode(), params)
            if not model:
                raise ModelLoadError(f"llama.cpp could not read the vocabulary of {self.path}")
            self._fallback = model
            self._fallback_vocab = llama_cpp.llama_model_get_vocab(model)
        from ._native import tokenize

        try:
            return tokenize(self._fallback_vocab, text, special=special)
        except RuntimeError as error:
            raise EngineError(str(error)) from error

    def tokenize(self, text: str, *, special: bool = False) -> np.ndarray:
        text.encode("utf-8")  # a lone surrogate raises UnicodeEncodeError, as with llama.cpp
        if special:
            return self._llama_ids(text, special=True)
        return self._bpe_ids(text) if self.bpe is not None else self._llama_ids(text)

    def token_bytes(self, token: int) -> bytes:
        cached = self._bytes_cache.get(token)
        if cached is None:
            if self._types[token] == _CONTROL:
                cached = b""
            else:
                piece = self._tokens[token]
                try:
                    cached = bytes(self._byte_decoder[ch] for ch in piece)
                except KeyError:
                    cached = piece.encode("utf-8")
            self._bytes_cache[token] = cached
        return cached

    def token_facts(self) -> tuple[int, tuple[str, ...]]:
        """``(longest token in bytes, user-defined token texts)``, from the file's vocabulary (cached)."""
        facts = getattr(self, "_facts", None)
        if facts is None:
            normal = (len(t) for t, kind in zip(self._tokens, self._types) if kind not in (_CONTROL, _USER_DEFINED))
            user = tuple(sorted((t for t, kind in zip(self._tokens, self._types) if kind == _USER_DEFINED), key=len,
                                reverse=True))  # fmt: skip
            longest = max(max(normal, default=0), max((len(t.encode("utf-8")) for t in user), default=0))
            facts = self._facts = (longest, user)
        return facts

    def close(self) -> None:
        if self._fallback is not None:
            import llama_cpp

            llama_cpp.llama_model_free(self._fallback)
            self._fallback = None


def _byte_decoder() -> dict[str, int]:
    """GPT-2's byte-to-unicode table, inverted."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {chr(c): b for b, c in zip(bs, cs)}


def _build_bpe(tokens: list[str], merges: list[str], user_defined: list[str]) -> Any:
    """The BPE with the Qwen2 split; user-defined tokens (``<think>``) are split out first, as llama.cpp and
    Hugging Face's tokenizer split them (they are whole tokens even in user text)."""
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers

    vocab = {t: i for i, t in enumerate(tokens)}
    pairs = [tuple(m.split(" ", 1)) for m in merges]
    tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=pairs, ignore_merges=False))  # type: ignore[arg-type]
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(QWEN2_SPLIT), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False),
        ]
    )
    tokenizer.decoder = decoders.ByteLevel()
    if user_defined:
        tokenizer.add_tokens([AddedToken(t, normalized=False, special=False) for t in user_defined])
    return tokenizer


class TorchEngine:
    """Qwen3 encoder in PyTorch on a GGUF's weights."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        pooling: str,
        n_threads: int,
        dtype: str | None = None,
        device: str = "cpu",
        max_sequences: int = 64,
        batch_tokens: int = 1024,
    ) -> None:
        try:
            import torch
        except ImportError as error:
            raise ConfigurationError('backend="torch" needs PyTorch: pip install "qwen-embed[torch]"') from error
        self._torch = torch
        self._path = Path(path)
        check_fork_safe(f"Loading {self._path.name}")
        device = _check_device(torch, device)
        self._lock = threading.Lock()
        self._guard = NativeGuard(self._path.name, free=self._free)  # forwards poll guard.stopping
        self._pooling = pooling
        self._device = device
        dtype = dtype or default_torch_dtype(device)
        if dtype not in ("float32", "bfloat16", "float16"):
            raise ConfigurationError(f"dtype must be 'float32', 'bfloat16' or 'float16', not {dtype!r}")
        self.dtype = dtype
        self._dtype = getattr(torch, dtype)
        self._max_sequences = max_sequences
        self._batch_tokens = batch_tokens
        if device == "cpu":
            torch.set_num_threads(n_threads)
        info = read_gguf_info(self._path)
        self._info = info
        arch = info.architecture
        self._n_layer = int(info.block_count or 0)
        self._n_embd = int(info.embedding_length or 0)
        self._n_head = int(info.arch_value("attention.head_count") or 0)
        self._n_head_kv = int(info.arch_value("attention.head_count_kv") or self._n_head)
        self._eps = float(info.arch_value("attention.layer_norm_rms_epsilon") or 1e-6)
        self._rope_base = float(info.arch_value("rope.freq_base") or 1_000_000.0)
        q_shape = next(t.shape for t in info.tensors if t.name == "blk.0.attn_q.weight")
        self._head_dim = int(q_shape[1]) // self._n_head
        if arch != "qwen3" or not self._n_layer:
            raise ModelLoadError(f"{self._path}: the torch engine runs qwen3 models, not {arch!r}")
        mark_threads_started()  # torch's intra-op pool runs from the first tensor op on
        self._weights, self._tokenizer = self._load_both(info, n_threads)
        self._inv_freq = 1.0 / (
            self._rope_base ** (torch.arange(0, self._head_dim, 2, dtype=torch.float32, device=device) / self._head_dim)
        )
        logger.debug(
            "torch engine: %s, dtype=%s, device=%s, threads=%d, tokenizer=%s",
            self._path.name,
            dtype,
            device,
            torch.get_num_threads(),
            self._tokenizer.source,
        )

    def _load_both(self, info: GGUFInfo, n_threads: int) -> tuple[dict[str, Any], _Tokenizer]:
        """The weights, and meanwhile on a second thread the tokenizer (its parsing overlaps the tensor work)."""
        built: dict[str, Any] = {}

        def build() -> None:
            try:
                built["tokenizer"] = _Tokenizer(self._path)
            except BaseException as error:  # re-raised on the loading thread
                built["error"] = error

        thread = threading.Thread(target=build, name="qwen-embed-tokenizer", daemon=True)
        thread.start()
        try:
            weights = self._read_weights(info, n_threads)
        except BaseException:
            thread.join()
            if "tokenizer" in built:
                built["tokenizer"].close()
            raise
        thread.join()
        if "error" in built:
            raise built["error"]
        return weights, built["tokenizer"]

    def _read_weights(self, info: GGUFInfo, n_threads: int) -> dict[str, Any]:
        """Weights straight into their dtype (see :mod:`._weights`); q/k/v and gate/up fused into one matrix each."""
        from ._weights import load_gguf_weights

        try:
            return load_gguf_weights(
                info,
                n_layer=self._n_layer,
                torch=self._torch,
                dtype=self._dtype,
                device=self._device,
                threads=n_threads,
            )
        except (OSError, ValueError) as error:
            raise ModelLoadError(f"{self._path}: {error}") from error

    # ------------------------------------------------------------------ the Engine protocol

    @property
    def n_embd(self) -> int:
        return self._n_embd

    @property
    def workarounds(self) -> tuple[str, ...]:
        return ()

    @property
    def tokenizer_source(self) -> str:
        return self._tokenizer.source

    @property
    def max_sequences(self) -> int:
        return self._max_sequences

    def tokenize(self, text: str, *, special: bool = False) -> np.ndarray:
        with self._guard.use():
            return self._tokenizer.tokenize(text, special=special)

    def token_bytes(self, token: int) -> bytes:
        with self._guard.use():
            return self._tokenizer.token_bytes(int(token))

    def token_facts(self) -> tuple[int, tuple[str, ...]]:
        """``(longest token in bytes, user-defined token texts)`` (see :mod:`qwen_embed.text.token_prefix`)."""
        with self._guard.use():
            return self._tokenizer.token_facts()

    def embed(self, sequences: Sequence[np.ndarray]) -> np.ndarray:
        if not sequences:
            self._guard.check()
            return np.empty((0, self._n_embd), dtype=np.float32)
        torch = self._torch
        with self._guard.use(), self._lock, torch.inference_mode():
            lengths = [len(s) for s in sequences]
            if min(lengths) < 1:
                raise EngineError("cannot embed an empty token sequence")
            width = max(lengths)
            ids = torch.zeros((len(sequences), width), dtype=torch.long)
            for row, seq in enumerate(sequences):  # right padding; positions start at 0 for each sequence
                ids[row, : len(seq)] = torch.from_numpy(np.asarray(seq, dtype=np.int64))
            out = self._forward(ids.to(self._device), torch.tensor(lengths, device=self._device))
            result: np.ndarray = out.float().cpu().numpy()
        if not np.isfinite(result).all():
            raise EngineError("the torch engine returned non-finite values (NaN/inf)")
        return result

    @property
    def closed(self) -> bool:
        return self._guard.closed

    def close(self) -> None:
        """Free the weights once no call uses them; a running forward stops at its next layer."""
        guard = getattr(self, "_guard", None)
        if guard is not None:
            guard.close()

    def _free(self) -> None:
        self._weights = {}
        tokenizer = getattr(self, "_tokenizer", None)
        if tokenizer is not None:
            tokenizer.close()

    # ------------------------------------------------------------------ the forward pass

    def _rms(self, x: Any, weight: Any) -> Any:
        torch = self._torch
        xf = x.float()
        xf = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self._eps)
        return (xf * weight).to(x.dtype)

    def _rope(self, x: Any, cos: Any, sin: Any) -> Any:
        half = x.shape[-1] // 2
        xf = x.float()  # float32 maths: bfloat16 element-wise ops are slow on CPUs
        rotated = self._torch.cat((-xf[..., half:], xf[..., :half]), dim=-1)
        return (xf * cos + rotated * sin).to(x.dtype)

    def _forward(self, ids: Any, lengths: Any) -> Any:
        torch = self._torch
        F = torch.nn.functional
        w = self._weights
        batch, width = ids.shape
        h, hkv, hd = self._n_head, self._n_head_kv, self._head_dim
        q_size, kv_size = h * hd, hkv * hd
        positions = torch.arange(width, device=ids.device, dtype=torch.float32)
        angles = positions[:, None] * self._inv_freq[None, :]
        cos = torch.cat((angles.cos(), angles.cos()), dim=-1)  # (T, hd), float32
        sin = torch.cat((angles.sin(), angles.sin()), dim=-1)
        valid = torch.arange(width, device=ids.device)[None, :] < lengths[:, None]  # (B, T) keys that exist
        causal = torch.ones(width, width, dtype=torch.bool, device=ids.device).tril()
        mask = causal[None, None] & valid[:, None, None, :]  # (B, 1, T, T)
        last = lengths - 1
        rows = torch.arange(batch, device=ids.device)
        x = w["token_embd"].lookup(ids, self._dtype)
        for i in range(self._n_layer):
            if self._guard.stopping:  # closed, or a daemon thread at exit: the guard raises ModelClosedError
                raise EngineError("forward stopped: the model is being closed")
            p = f"blk.{i}."
            final = i == self._n_layer - 1 and self._pooling == "last"
            hn = self._rms(x, w[p + "attn_norm"])
            if final:  # only the last token's query, attention output and FFN are needed
                kv = F.linear(hn, w[p + "attn_qkv"][q_size:])
                q = F.linear(hn[rows, last][:, None], w[p + "attn_qkv"][:q_size])
                q_cos, q_sin = cos[last][:, None, None, :], sin[last][:, None, None, :]
                q_mask = valid[:, None, None, :]
            else:
                qkv = F.linear(hn, w[p + "attn_qkv"])
                q, kv = qkv[..., :q_size], qkv[..., q_size:]
                q_cos, q_sin, q_mask = cos[None, None], sin[None, None], mask
            k, v = kv[..., :kv_size], kv[..., kv_size:]
            q = self._rms(q.reshape(batch, -1, h, hd), w[p + "attn_q_norm"]).transpose(1, 2)
            k = self._rms(k.reshape(batch, width, hkv, hd), w[p + "attn_k_norm"]).transpose(1, 2)
            v = v.reshape(batch, width, hkv, hd).transpose(1, 2)
            q = self._rope(q, q_cos, q_sin)
            k = self._rope(k, cos[None, None], sin[None, None])
            attn = F.scaled_dot_product_attention(q, k, v, attn_mask=q_mask, enable_gqa=hkv != h)
            attn = attn.transpose(1, 2).reshape(batch, q.shape[2], q_size)
            residual = x[rows, last][:, None] if final else x
            x = residual + F.linear(attn, w[p + "attn_output"])
            if self._guard.stopping:  # (again before the FFN: a long layer's other half)
                raise EngineError("forward stopped: the model is being closed")
            hn = self._rms(x, w[p + "ffn_norm"])
            gate, up = F.linear(hn, w[p + "ffn_gate_up"]).chunk(2, dim=-1)
            x = x + F.linear(F.silu(gate) * up, w[p + "ffn_down"])
        x = self._rms(x, w["output_norm"])
        if self._pooling == "last":
            return x[:, -1] if x.shape[1] == 1 else x[rows, last]
        m = valid[:, :, None].to(x.dtype)
        return (x * m).sum(1) / m.sum(1)


def _check_device(torch: Any, device: object) -> str:
    """``device`` as a string torch accepts and can use here, else a ConfigurationError saying why."""
    if not isinstance(device, str):
        raise ConfigurationError(f"device must be a string such as 'cpu' or 'cuda', not {device!r}")
    try:
        parsed = torch.device(device)
    except (RuntimeError, ValueError) as error:
        raise ConfigurationError(
            f"device={device!r} is not a device PyTorch knows ({error}); use 'cpu' or 'cuda'"
        ) from error
    if parsed.type == "cuda" and not torch.cuda.is_available():
        built = torch.version.cuda
        raise ConfigurationError(
            f"device={device!r}, but PyTorch sees no CUDA GPU here (this PyTorch is "
            f"{'built for CUDA ' + built if built else 'a CPU-only build'}); use device='cpu', or "
            "backend='llama' with n_gpu_layers for llama.cpp's GPU offload."
        )
    if parsed.type not in ("cpu", "cuda"):
        raise ConfigurationError(f"device={device!r}: the torch engine runs on 'cpu' or 'cuda'")
    return device
