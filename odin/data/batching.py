"""Examples -> fixed-length training batches with a loss mask.

Layout of one example: ``<bos> prompt answer <end>`` followed by ``<pad>`` up to T+1 tokens.
A batch is ``tokens[B, T+1]`` (int32) and ``loss_mask[B, T]`` (uint8): the model reads
``tokens[:, :T]`` and predicts ``tokens[:, 1:]``; ``loss_mask[b, t]`` is 1 iff the target
``tokens[b, t+1]`` is counted in the loss:

* ``loss_on="answer"`` (default): the target is an answer token or the ``<end>`` token;
* ``loss_on="all"``: the target is any non-pad token (prompt, answer or ``<end>``).

An example of L tokens (bos..end inclusive) therefore needs ``T >= L - 1``;
:func:`max_sequence_length` returns that smallest T for a whole set.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterator, Sequence

import numpy as np

from odin.data.examples import Example
from odin.tokenizers import Tokenizer

LOSS_ON_CHOICES: tuple[str, ...] = ("answer", "all")


@dataclass(frozen=True, eq=False)  # arrays have no single truth value for ==
class EncodedSet:
    """Ragged token sequences in one flat array, so millions of examples stay cheap.

    Sequence i is ``tokens[offsets[i]:offsets[i+1]]`` = ``<bos> prompt answer <end>``;
    its first ``prompt_lengths[i]`` tokens are ``<bos>`` + prompt.
    """

    tokens: np.ndarray  # int32 [total_tokens]
    offsets: np.ndarray  # int64 [n + 1]
    prompt_lengths: np.ndarray  # int32 [n]
    pad_id: int

    def __len__(self) -> int:
        return int(self.prompt_lengths.shape[0])

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    def sequence(self, index: int) -> np.ndarray:
        return self.tokens[self.offsets[index] : self.offsets[index + 1]]


def encode_examples(examples: Sequence[Example], tokenizer: Tokenizer) -> EncodedSet:
    pieces: list[list[int]] = []
    prompt_lengths = np.empty(len(examples), dtype=np.int32)
    bos, end = tokenizer.bos_id, tokenizer.end_id
    for index, example in enumerate(examples):
        try:
            prompt_ids = tokenizer.encode(example.prompt)
            answer_ids = tokenizer.encode(example.answer)
        except ValueError as error:
            raise ValueError(f"example {index} ({example.prompt!r}): {error}") from None
        if not answer_ids:
            raise ValueError(f"example {index} ({example.prompt!r}) has an empty answer")
        pieces.append([bos, *prompt_ids, *answer_ids, end])
        prompt_lengths[index] = 1 + len(prompt_ids)
    lengths = np.fromiter((len(piece) for piece in pieces), dtype=np.int64, count=len(pieces))
    offsets = np.zeros(len(pieces) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    flat = np.fromiter(
        (token for piece in pieces for token in piece), dtype=np.int32, count=int(offsets[-1])
    )
    return EncodedSet(tokens=flat, offsets=offsets, prompt_lengths=prompt_lengths, pad_id=tokenizer.pad_id)


def max_sequence_length(encoded: EncodedSet) -> int:
    """Smallest context T that fits every example (its token count minus one)."""
    if len(encoded) == 0:
        return 0
    return int(encoded.lengths.max()) - 1


def check_fits(encoded: EncodedSet, context: int) -> None:
    too_long = np.flatnonzero(encoded.lengths - 1 > context)
    if too_long.size:
        index = int(too_long[0])
        raise ValueError(
            f"example {index} is {int(encoded.lengths[index])} tokens (<bos> to <end>) and needs "
            f"context >= {int(encoded.lengths[index]) - 1}, but T = {context}; "
            f"{too_long.size} example(s) are too long — raise [model].context or shorten examples"
        )


def make_batch(
    encoded: EncodedSet, indices: Sequence[int] | np.ndarray, context: int, loss_on: str = "answer"
) -> tuple[np.ndarray, np.ndarray]:
    """``(tokens[B, T+1] int32, loss_mask[B, T] uint8)`` for the given example indices."""
    if loss_on not in LOSS_ON_CHOICES:
        raise ValueError(f"loss_on must be one of {list(LOSS_ON_CHOICES)}, got {loss_on!r}")
    if context < 1:
        raise ValueError(f"context must be >= 1, got {context}")
    batch_size = len(indices)
    tokens = np.full((batch_size, context + 1), encoded.pad_id, dtype=np.int32)
    loss_mask = np.zeros((batch_size, context), dtype=np.uint8)
    for row, index in enumerate(indices):
        index = int(index)
        sequence = encoded.sequence(index)
        length = sequence.shape[0]
        if length - 1 > context:
            raise ValueError(
                f"example {index} is {length} tokens and needs context >= {length - 1}, "
                f"but T = {context}; raise [model].context or shorten examples"
            )
        tokens[row, :length] = sequence
        # Target position t holds token t+1; the first answer token sits at prompt_length.
        first_target = int(encoded.prompt_lengths[index]) - 1 if loss_on == "answer" else 0
        loss_mask[row, first_target : length - 1] = 1
    return tokens, loss_mask


class BatchSampler:
    """Endless stream of shuffled batches, exactly resumable.

    The example order is a concatenation of per-epoch permutations, epoch e being
    ``Generator(PCG64([seed, e])).permutation(n)``. A batch takes the next B indices of
    that stream and may cross an epoch boundary, so every batch is full and no example
    is dropped (a set smaller than B simply repeats within a batch). The state is
    ``{"seed", "epoch", "position"}`` (plus sizes, checked on load): the next index to
    emit is ``permutation(epoch)[position]``.

    Length buckets (``bucket_pool = P > 0``): the stream is read P batches at a time; each
    pool of P x B examples is sorted by length and cut into P batches of similar lengths,
    emitted in a shuffled order, each padded only to its own longest example (T + 1
    columns, T <= context). Sets whose lengths vary a lot (programs: 20 to 150 tokens)
    then cost what their tokens cost, not P x B x the longest. The state then points at
    the pool's start and counts the batches already taken from it (``pool_index``).
    """

    def __init__(
        self,
        encoded: EncodedSet,
        batch_size: int,
        context: int,
        seed: int,
        loss_on: str = "answer",
        bucket_pool: int = 0,
    ) -> None:
        if isinstance(bucket_pool, bool) or not isinstance(bucket_pool, int) or bucket_pool < 0:
            raise ValueError(f"bucket_pool must be an integer >= 0 (batches per length-sorted pool), got {bucket_pool!r}")
        if len(encoded) == 0:
            raise ValueError("cannot sample batches from an empty example set")
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}")
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
        if loss_on not in LOSS_ON_CHOICES:
            raise ValueError(f"loss_on must be one of {list(LOSS_ON_CHOICES)}, got {loss_on!r}")
        if isinstance(context, bool) or not isinstance(context, int) or context < 1:
            raise ValueError(f"context must be an integer >= 1, got {context!r}")
        check_fits(encoded, context)
        self.encoded = encoded
        self.batch_size = batch_size
        self.context = context
        self.seed = seed
        self.loss_on = loss_on
        self.epoch = 0
        self.position = 0
        self._permutation_epoch = -1
        self._permutation = np.empty(0, dtype=np.int64)
        self.bucket_pool = bucket_pool
        self.pool_index = 0  # batches taken from the pool that starts at (epoch, position)
        self._pool: list[np.ndarray] | None = None

    @property
    def batches_per_epoch(self) -> float:
        return len(self.encoded) / self.batch_size

    def _permutation_for(self, epoch: int) -> np.ndarray:
        if epoch != self._permutation_epoch:
            generator = np.random.Generator(np.random.PCG64([self.seed, epoch]))
            self._permutation = generator.permutation(len(self.encoded))
            self._permutation_epoch = epoch
        return self._permutation

    def next_indices(self) -> np.ndarray:
        chosen: list[np.ndarray] = []
        needed = self.batch_size
        n = len(self.encoded)
        while needed:
            permutation = self._permutation_for(self.epoch)
            take = min(needed, n - self.position)
            chosen.append(permutation[self.position : self.position + take])
            self.position += take
            needed -= take
            if self.position == n:
                self.epoch += 1
                self.position = 0
        return np.concatenate(chosen)

    def next_batch(self) -> tuple[np.ndarray, np.ndarray]:
        if not self.bucket_pool:
            return make_batch(self.encoded, self.next_indices(), self.context, self.loss_on)
        if self._pool is None:
            self._pool = self._build_pool()
        indices = self._pool[self.pool_index]
        self.pool_index += 1
        if self.pool_index == self.bucket_pool:  # pool used up: the stream pointer moves past it
            self._pool, self.pool_index = None, 0
            for _ in range(self.bucket_pool):
                self.next_indices()
        longest = int(self.encoded.lengths[indices].max()) - 1
        return make_batch(self.encoded, indices, longest, self.loss_on)

    def _build_pool(self) -> list[np.ndarray]:
        """The pool at the stream pointer: its batches of similar lengths, in emission order.
        Reads ahead without moving the pointer (the state stays at the pool's start)."""
        epoch, position = self.epoch, self.position
        flat = np.concatenate([self.next_indices() for _ in range(self.bucket_pool)])
        self.epoch, self.position = epoch, position
        by_length = flat[np.argsort(self.encoded.lengths[flat], kind="stable")]
        batches = [by_length[i * self.batch_size:(i + 1) * self.batch_size] for i in range(self.bucket_pool)]
        order = np.random.Generator(np.random.PCG64([self.seed, epoch, position, 1])).permutation(self.bucket_pool)
        return [batches[i] for i in order]

    def __iter__(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        while True:
            yield self.next_batch()

    def state_dict(self) -> dict[str, Any]:
        return {
            "batch_size": self.batch_size,
            "epoch": self.epoch,
            "n_examples": len(self.encoded),
            "position": self.position,
            "seed": self.seed,
            **({"bucket_pool": self.bucket_pool, "pool_index": self.pool_index} if self.bucket_pool else {}),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for key in ("seed", "epoch", "position"):
            value = state.get(key)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"sampler state {key!r} must be a non-negative integer, got {value!r}")
        n = len(self.encoded)
        if "n_examples" in state and state["n_examples"] != n:
            raise ValueError(
                f"sampler state was saved for {state['n_examples']} examples, this set has {n}; "
                f"resume needs the same dataset"
            )
        if state["position"] >= n:
            raise ValueError(f"sampler state 'position' {state['position']} must be < {n}")
        if state.get("bucket_pool", 0) != self.bucket_pool:
            raise ValueError(f"sampler state was saved with bucket_pool = {state.get('bucket_pool', 0)}, this "
                             f"sampler has {self.bucket_pool}; resume needs the same batching")
        if self.bucket_pool and state.get("batch_size", self.batch_size) != self.batch_size:
            raise ValueError(f"sampler state was saved with batch_size {state.get('batch_size')}, this sampler has "
                             f"{self.batch_size}; length-bucketed pools need the same batch size to resume")
        pool_index = state.get("pool_index", 0)
        if isinstance(pool_index, bool) or not isinstance(pool_index, int) or not 0 <= pool_index < max(1, self.bucket_pool):
            raise ValueError(f"sampler state 'pool_index' must be in [0, {max(1, self.bucket_pool)}), got {pool_index!r}")
        # batch_size may legitimately change on resume without buckets; the stream of indices is unaffected.
        self.seed = state["seed"]
        self.epoch = state["epoch"]
        self.position = state["position"]
        self.pool_index = pool_index
        self._pool = None
        self._permutation_epoch = -1


def make_prompt_batch(prompts: Sequence[str], tokenizer: Tokenizer) -> list[list[int]]:
    """``<bos>`` + prompt tokens per prompt, unpadded, for generation."""
    return [[tokenizer.bos_id, *tokenizer.encode(prompt)] for prompt in prompts]
