"""Load a built model (manifest + compiled chunk blobs) and run it: prefill, decode, KV cache.

The runtime reads only `manifest.json` and the artifacts it names; it never imports the build code.

The KV cache is one numpy buffer per decoder chunk, [2*layers,KV,capacity,hd] (layer j's keys at 2j, its values
at 2j+1), laid out as the chunk's `kv` output so that each call's new rows are placed with one copy; every
graph's past inputs are bound to its slices. Static graphs (NPU) read all `max_seq_len` slots, so their cache
has that many from the start; dynamic graphs (CPU, GPU) read only the slots allocated so far, so their cache
starts small and grows with the sequence (cache_capacity); a sequence's first call, with nothing cached, is given
one masked slot instead. A dynamic build with a decode graph (one token, open cache length) runs its one-token
calls through it. The other inputs (ids, positions, the hidden state each chunk's output is copied into for the
next) are numpy buffers too, bound when their length changes: a static graph's once, a dynamic graph's when a
call brings another number of tokens than the last. Outputs are read after each call, never bound: not every
device plugin writes into a caller's output tensor (the NPU's NPUW path does not).
"""
from __future__ import annotations

import mmap
from importlib import metadata
from pathlib import Path

import numpy as np
import openvino as ov
from tqdm import tqdm

from ..artifacts import (DECODE, DYNAMIC, INPUT_IDS, KV, POSITION_IDS, PREFILL, ArtifactError, Manifest,
                         device_core, past_name, read_manifest, rebuild_hint, verify)

# KV precision -> (numpy storage dtype, OpenVINO element type); numpy has no bf16, so it is stored as uint16.
KV_TYPES = {"f32": (np.float32, ov.Type.f32), "f16": (np.float16, ov.Type.f16), "bf16": (np.uint16, ov.Type.bf16)}


class ContextOverflow(ValueError):
    """The sequence would not fit in the KV cache the model was built with. Every caller (the runtime, the
    commands, the chat, the server) raises this one check's message, with the hint that fits its user."""

    hint = ("shorten the input, ask for fewer new tokens, or rebuild with a larger max_seq_len in the recipe "
            "and run snakemake again")

    def __init__(self, input_tokens: int, new_tokens: int, max_seq_len: int):
        self.input_tokens, self.new_tokens, self.max_seq_len = input_tokens, new_tokens, max_seq_len
        super().__init__(f"{input_tokens} tokens of input + {new_tokens} new tokens = {input_tokens + new_tokens} "
                         f"exceeds this build's max_seq_len = {max_seq_len}; {self.hint}")


def check_fits(input_tokens: int, new_tokens: int, max_seq_len: int, overflow=ContextOverflow):
    if input_tokens + new_tokens > max_seq_len:
        raise overflow(input_tokens, new_tokens, max_seq_len)


def _shared(array: np.ndarray, ov_type=None) -> ov.Tensor:
    """An ov.Tensor over the array's memory (no copy)."""
    if ov_type is None:
        return ov.Tensor(array, shared_memory=True)
    return ov.Tensor(array, list(array.shape), ov_type)


CACHE_STEP = 256  # past this many slots, a dynamic graph's cache grows by this many at a time


def cache_capacity(length: int, max_seq_len: int, dynamic: bool, current: int = 0) -> int:
    """KV slots to allocate for a sequence of `length` (never fewer than the `current` ones): all `max_seq_len`
    for static graphs, which read every slot; for dynamic ones the next power of two from 16 up to CACHE_STEP,
    then the next multiple of CACHE_STEP. Attention reads every allocated slot, so past CACHE_STEP it reads at
    most CACHE_STEP - 1 slots it does not need, and the cache is copied once every CACHE_STEP tokens. (Powers
    of two all the way read up to twice the slots: SmolLM2 after a 1024-token prompt decoded 18.0 ms a token
    over 2048 slots, 16.2 ms over 1280.)"""
    if not dynamic:
        return max_seq_len
    if length > CACHE_STEP:
        capacity = -(-length // CACHE_STEP) * CACHE_STEP
    else:
        capacity = 16
        while capacity < length:
            capacity *= 2
    return min(max(capacity, current), max_seq_len)


def _run_on_zeros(request: ov.InferRequest):
    """One inference on zero inputs, one token and one cache slot where the graph's shape is open."""
    for port in request.model_inputs:
        tensor = ov.Tensor(port.get_element_type(), [d.get_length() if d.is_static else 1
                                                     for d in port.get_partial_shape()])
        tensor.data[...] = 0
        request.set_tensor(port, tensor)
    request.infer()


def _layers(chunk: dict) -> range:
    return range(chunk["first_layer"], chunk["first_layer"] + chunk["num_layers"])


class Model:
    """A built model loaded for inference on one sequence (batch 1)."""

    def __init__(self, root: Path, manifest: Manifest | None = None, progress: bool = False,
                 check_hashes: bool = True):
        """Load the build in `root` (its manifest, unless given), after checking every file the manifest lists
        is there with its size and (with `check_hashes`) its sha256 (see nitro.artifacts.verify); `progress`
        shows a bar over the chunks on a terminal."""
        self.root = Path(root)
        self.manifest = manifest or read_manifest(self.root)
        m = self.manifest
        problems = verify(self.root, m["files"], hashes=check_hashes)
        if problems:
            more = f" (and {len(problems) - 1} more files: nitro verify {self.root})" if len(problems) > 1 else ""
            raise ArtifactError(problems[0] + more)
        self.max_seq_len, self.prefill_len = m["max_seq_len"], m["prefill_len"]
        self.spec = m["spec"]
        self.vocab_size = self.spec["vocab_size"]
        self.device = m["device"]["device"]
        self.core = device_core(m["device"])
        chunks = m["chunks"]
        steps = tqdm(chunks, desc=f"loading {self.root}", unit="chunk", leave=False, disable=not progress or None)
        self.requests = {}  # (chunk name, variant) -> InferRequest
        self._mapped = []  # the blobs' memory maps, which must outlive the compiled models pointing into them
        for chunk in steps:
            for variant, info in chunk["variants"].items():
                self.requests[chunk["name"], variant] = self._load(chunk, info)
        self.head = chunks[-1]["name"]
        embed = chunks[0]
        (embed_variant,) = embed["variants"]  # dynamic, or prefill (static)
        self._embed, self._embed_ids = self.requests[embed["name"], embed_variant], None
        self.decoders = [c for c in chunks if c["kind"] == "decoder"]
        self.dynamic = DYNAMIC in self.decoders[0]["variants"]
        # a one-token graph for decode steps: a static build's, or a dynamic build's with decode_graph
        self.decode_graph = DECODE in self.decoders[0]["variants"]
        self.kv_dtype, self.kv_type = KV_TYPES[m["kv_precision"]]
        self.cache, self.capacity = {}, 0  # decoder chunk name -> [2*layers,KV,capacity,hd]
        self._no_past = np.zeros((1, self.spec["num_kv_heads"], 1, self.spec["head_dim"]), self.kv_dtype)
        self._reserve(1)
        self.head_in = np.zeros((1, 1, self.spec["hidden_size"]), np.float32)
        self.requests[self.head, DECODE].set_input_tensor(0, _shared(self.head_in))
        self._bound = {}  # variant -> its input buffers (see _inputs)
        self.position = 0

    def _load(self, chunk: dict, variant: dict) -> ov.InferRequest:
        """Import a compiled blob from a private memory map of the file, run it once, then drop the map's pages.

        The CPU plugin copies most weights into its own layout on a graph's first inference, reading them from
        the blob; afterwards only what it keeps in place (the embedding rows a prompt looks up) is read from the
        map, and such pages come back from the file when touched. Releasing each chunk's pages right after its
        first run bounds the peak to the plugin's copies plus one blob (Llama-3.2-1B shape, after generating:
        2595 MB resident with the pages kept, 1411 MB with them released). A weightless blob (NPU) reads its
        weights from the chunk's IR, into one copy its graphs share (the variant's properties name it)."""
        device, path = self.manifest["device"], self.root / variant["blob"]
        properties = {**device["properties"], **variant["properties"]}
        if chunk["weights"]:
            properties["WEIGHTS_PATH"] = str(self.root / chunk["weights"])
        try:
            with open(path, "rb") as f:
                mapped = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_COPY)
            compiled = self.core.import_model(ov.Tensor(np.frombuffer(mapped, np.uint8), shared_memory=True),
                                              device["device"], properties)
        except (OSError, ValueError, RuntimeError) as exc:  # unreadable, empty (mmap), rejected by the plugin
            raise ArtifactError(self._unloadable(path, exc)) from None
        request = compiled.create_infer_request()
        _run_on_zeros(request)
        if hasattr(mmap, "MADV_DONTNEED"):  # not on Windows, where the pages stay until memory is short
            mapped.madvise(mmap.MADV_DONTNEED)
        self._mapped.append(mapped)
        return request

    def _unloadable(self, path: Path, exc: Exception) -> str:
        """Why a compiled blob does not load, and the command that fixes it: another OpenVINO version (only when
        the versions differ), another kind of device, or a damaged file."""
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
        reason = lines[-1] if lines else type(exc).__name__  # OpenVINO's own words come after where it was raised
        built, here = self.manifest["versions"]["openvino"], metadata.version("openvino")
        if built != here:
            return (f"cannot load {path}: it was compiled by OpenVINO {built}, this is OpenVINO {here}; compile the "
                    "chunks again with this one: snakemake --forcerun compile_chunk")
        return (f"cannot load {path} on {self.device} ({reason}): the file is damaged, or was compiled on another "
                f"kind of device; {rebuild_hint(self.root, path.parent)}")

    def _reserve(self, length: int):
        """Make the cache hold at least `length` slots (see cache_capacity), copying what is cached."""
        if length <= self.capacity:
            return
        capacity = cache_capacity(length, self.max_seq_len, self.dynamic, self.capacity)
        spec = self.spec
        for chunk in self.decoders:
            grown = np.zeros((2 * chunk["num_layers"], spec["num_kv_heads"], capacity, spec["head_dim"]),
                             self.kv_dtype)
            if chunk["name"] in self.cache:
                grown[:, :, :self.capacity] = self.cache[chunk["name"]]
            self.cache[chunk["name"]] = grown
            self._bind_past(chunk)
        self.capacity = capacity

    def _bind_past(self, chunk: dict, first_call: bool = False):
        """Bind the chunk's past K/V inputs to the cache, or for a dynamic graph's first call of a sequence, when
        every cache slot is masked, to one masked slot: a 128-token SmolLM2 prompt over a 256-slot cache took
        460 ms reading the masked slots, 344 ms with one."""
        cache = self.cache[chunk["name"]]
        for j, layer in enumerate(_layers(chunk)):
            for kind, row in (("key", 2 * j), ("value", 2 * j + 1)):
                buffer = self._no_past if first_call else cache[row:row + 1]
                for variant in chunk["variants"]:
                    self.requests[chunk["name"], variant].set_tensor(past_name(kind, layer),
                                                                     _shared(buffer, self.kv_type))

    def _ids(self, n: int) -> np.ndarray:
        """The ids buffer [1,T] bound to the embedding's one graph: T is n (dynamic) or prefill_len (static, where a
        decode call looks its one id up through the prefill graph). Bound when T changes, as _inputs."""
        T = n if self.dynamic else self.prefill_len
        if self._embed_ids is None or self._embed_ids.shape[1] != T:
            self._embed_ids = np.zeros((1, T), np.int64)
            self._embed.set_tensor(INPUT_IDS, _shared(self._embed_ids))
        return self._embed_ids

    def _inputs(self, variant: str, n: int) -> tuple[np.ndarray, np.ndarray]:
        """The positions [1,T] and hidden-state [1,T,D] buffers bound to the variant's decoder graphs, where T is
        the graph's token count where it is fixed (prefill, decode) or n (dynamic). They are bound when T changes,
        not every call: rebinding a graph's inputs costs the CPU plugin more than the copies into bound buffers do."""
        T = 1 if variant == DECODE else n if self.dynamic else self.prefill_len
        bound = self._bound.get(variant)
        if bound is None or bound[0].shape[1] != T:
            bound = np.zeros((1, T), np.int64), np.zeros((1, T, self.spec["hidden_size"]), np.float32)
            positions, hidden = bound
            for chunk in self.decoders:
                req = self.requests[chunk["name"], variant]
                req.set_input_tensor(0, _shared(hidden))
                req.set_tensor(POSITION_IDS, _shared(positions))
            self._bound[variant] = bound
        return bound

    def reset(self):
        """Forget the sequence; stale cache slots are masked by position, so nothing needs clearing."""
        self.rewind(0)

    def rewind(self, position: int):
        """Keep only the first `position` cached tokens (a chat turn that shares a prefix with the cache)."""
        if not 0 <= position <= self.position:
            raise ValueError(f"cannot rewind to {position}: {self.position} tokens are cached")
        self.position = position

    def _run(self, ids: np.ndarray) -> np.ndarray:
        """Run `len(ids)` (≤ prefill_len) tokens at the current position; returns their hidden states [n,D]."""
        n, pos = len(ids), self.position
        self._reserve(pos + n)
        variant = DECODE if n == 1 and self.decode_graph else DYNAMIC if self.dynamic else PREFILL
        id_buffer = self._ids(n)
        positions, hidden = self._inputs(variant, n)
        id_buffer[0, :n] = ids
        id_buffer[0, n:] = 0
        positions[0] = np.arange(pos, pos + positions.shape[1])
        first = self.dynamic and pos == 0  # nothing cached yet: see _bind_past
        self._embed.infer()
        out = self._embed.get_output_tensor(0)
        for chunk in self.decoders:
            np.copyto(hidden, out.data[:, :hidden.shape[1]])  # a static decode call's id is the lookup's first row
            req = self.requests[chunk["name"], variant]
            if first:
                self._bind_past(chunk, first_call=True)
            req.infer()
            if first:
                self._bind_past(chunk)
            # bf16 rows come back as a float16 view of the same bits; the cache stores them as uint16
            self.cache[chunk["name"]][:, :, pos:pos + n] = req.get_tensor(KV).data[:, :, :n].view(self.kv_dtype)
            out = req.get_output_tensor(0)
        self.position = pos + n
        return out.data[0, :n]

    def logits(self, hidden_row: np.ndarray) -> np.ndarray:
        """The head over one final hidden state [D] (a row `hidden` returned): that token's next-token logits [V]."""
        self.head_in[0, 0] = hidden_row
        head = self.requests[self.head, DECODE]
        head.infer()
        return head.get_output_tensor(0).data[0, 0].copy()

    def hidden(self, ids) -> np.ndarray:
        """Append tokens to the sequence, their logits not computed yet: returns each token's final hidden state
        [n,D], for `logits` to compute only the rows a caller needs (a verified draft stops at its first miss)."""
        ids = np.asarray(ids, dtype=np.int64)
        check_fits(self.position, len(ids), self.max_seq_len)
        return np.concatenate([self._run(ids[s:s + self.prefill_len]).copy()
                               for s in range(0, len(ids), self.prefill_len)])

    def forward(self, ids, all_logits: bool = False) -> np.ndarray:
        """Append tokens to the sequence. Returns the last token's logits [V], or every token's [n, V]."""
        hidden = self.hidden(ids)
        if not all_logits:
            return self.logits(hidden[-1])
        return np.stack([self.logits(row) for row in hidden])
