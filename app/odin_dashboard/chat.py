"""Type a prompt to the current model and watch the answer stream in.

Generation never touches the weights the trainer is updating: the model is copied into
a separate GPT first (a copy taken mid-step may mix two consecutive steps' weights, which
is harmless for a chat). Tokens come from `odin.model.stream_tokens` in a worker thread
and go through a queue that the render loop drains, so the GUI thread never waits.

Models trained on digit-reversed answers (the arithmetic recipe) produce the least
significant digit first; the transcript shows `answer_to_display(raw)`, which puts the
digits seen so far in reading order, so the answer still grows as it streams.
"""
from __future__ import annotations

import queue
import threading
from dataclasses import dataclass
from typing import Any, Optional

from odin.config import RunConfig
from odin.data.arithmetic import padded_operands
from odin.prompt_text import decode_escapes


@dataclass(frozen=True)
class ChatModel:
    """Where a chat's weights come from: a live or loaded GPT and how to read its answers."""

    model: Any  # odin.model.GPT or RWKV (only .params, .qblock, .weights and .shape are used)
    run_config: RunConfig
    tokenizer: Any
    reverse_answer: bool
    source: str  # "training run, step 1200" / "checkpoint runs/x/checkpoint (step 4000)"
    prompt_width: int = 0  # dataset prompt_zeros: arithmetic operands are padded to it


@dataclass
class ChatTurn:
    prompt: str
    raw: str = ""  # tokens as generated
    answer: str = ""  # as displayed (reading order)
    done: bool = False
    error: Optional[str] = None
    source: str = ""


@dataclass
class ChatEvent:
    turn_id: int
    raw: str
    done: bool = False
    error: Optional[str] = None


def clone_model(chat_model: ChatModel) -> Any:
    """A private copy of the weights in a new native model (of the same weight types)."""
    from odin.checkpoint import model_from_config

    clone = model_from_config(chat_model.run_config, chat_model.model.weights)
    clone.params[...] = chat_model.model.params  # one memcpy; never aliases the trainer's block
    clone.qblock[...] = chat_model.model.qblock  # a quantized model's blocks (empty for float32)
    return clone


class ChatWorker:
    # generation also stops at <end> and when the context is full; 512 leaves room for a
    # program's trace (the code recipe's answers run to ~300 tokens)
    def __init__(self, max_new_tokens: int = 512) -> None:
        self.max_new_tokens = max_new_tokens
        self.turns: list[ChatTurn] = []
        self._events: "queue.Queue[ChatEvent]" = queue.Queue()
        self._thread: Optional[threading.Thread] = None
        self._reverse: dict[int, bool] = {}

    @property
    def busy(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def ask(self, prompt: str, chat_model: Optional[ChatModel]) -> Optional[str]:
        """Start answering `prompt`; returns a message when it cannot (no model, busy, empty)."""
        prompt = prompt.strip()
        if not prompt:
            return "type a prompt first, e.g. 123+456="
        try:  # the box is one line: \n in it is a new line of the prompt (a program's lines)
            prompt = decode_escapes(prompt)
        except ValueError as error:
            return f"prompt: {error}"
        if chat_model is None:
            return "no model yet: start training or load a checkpoint"
        if self.busy:
            return "still answering the previous prompt"
        turn_id = len(self.turns)
        self.turns.append(ChatTurn(prompt=prompt, source=chat_model.source))
        self._reverse[turn_id] = chat_model.reverse_answer
        self._thread = threading.Thread(target=self._generate, args=(turn_id, prompt, chat_model),
                                        name="odin-dashboard-chat", daemon=True)
        self._thread.start()
        return None

    def _generate(self, turn_id: int, prompt: str, chat_model: ChatModel) -> None:
        from odin.evaluate import decode_until_end
        from odin.model import Sampler, position_limit, stream_tokens

        try:
            tokenizer = chat_model.tokenizer
            ids = [tokenizer.bos_id, *tokenizer.encode(padded_operands(prompt, chat_model.prompt_width))]
            model = clone_model(chat_model)
            context = position_limit(model)  # None: RWKV's recurrent state has no position limit
            if context is not None and len(ids) >= context:
                raise ValueError(f"the prompt is {len(ids)} tokens with <bos>; the model's context is {context}")
            generated: list[int] = []
            for token in stream_tokens(model, ids, self.max_new_tokens, Sampler(temperature=0.0),
                                       stop_ids=(tokenizer.end_id,)):
                if token == tokenizer.end_id:
                    break
                generated.append(token)
                self._events.put(ChatEvent(turn_id, decode_until_end(tokenizer, generated)[0]))
            self._events.put(ChatEvent(turn_id, decode_until_end(tokenizer, generated)[0], done=True))
        except Exception as error:  # unknown characters, context overflow: shown in the transcript
            self._events.put(ChatEvent(turn_id, "", done=True, error=str(error)))

    def drain(self) -> bool:
        """Apply queued tokens to the transcript; True when something changed."""
        from odin.data.arithmetic import answer_to_display

        changed = False
        while True:
            try:
                event = self._events.get_nowait()
            except queue.Empty:
                return changed
            turn = self.turns[event.turn_id]
            if event.error is not None:
                turn.error = event.error
            else:
                turn.raw = event.raw
                turn.answer = answer_to_display(event.raw, self._reverse.get(event.turn_id, False))
            turn.done = turn.done or event.done
            changed = True

    def wait(self, timeout: Optional[float] = None) -> None:
        if self._thread is not None:
            self._thread.join(timeout)

    def transcript(self, last: int = 6) -> str:
        lines = []
        for turn in self.turns[-last:]:
            if turn.error:
                lines.append(f"> {turn.prompt}\n  (error: {turn.error})")
            else:
                lines.append(f"> {turn.prompt}{turn.answer}{'' if turn.done else ' ...'}")
        return "\n".join(lines)
