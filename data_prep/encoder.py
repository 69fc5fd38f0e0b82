"""Document batches -> one flat token array per batch (EOD after every document), in this process or in workers.

Only numpy and ``tokenizers`` are imported here, so spawned worker processes start in a fraction of a second. Workers
rebuild the exact tokenizer the main process loaded (``Tokenizer.from_str`` of its backend), so their ids are the
ids ``AutoTokenizer(text)["input_ids"]`` gives.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from dataclasses import dataclass

import numpy as np

DTYPES: dict[str, type] = {"uint16": np.uint16, "int32": np.int32}
"""Token dtypes of the .bin file (Megatron reads both); ``auto`` picks uint16 when every id fits."""


@dataclass(frozen=True)
class EncoderSettings:
    tokenizer_json: str
    """The backend tokenizer serialised with ``Tokenizer.to_str()``."""
    add_special_tokens: bool
    """Apply the tokenizer's post-processor (e.g. prepend BOS), as ``tokenizer(text)`` does by default."""
    eod_id: int
    """Appended after every document."""
    dtype: str
    """Key of ``DTYPES``."""


class DocumentEncoder:
    def __init__(self, settings: EncoderSettings):
        from tokenizers import Tokenizer

        self.settings = settings
        self.tokenizer = Tokenizer.from_str(settings.tokenizer_json)
        self.tokenizer.no_truncation()
        self.tokenizer.no_padding()
        self.dtype = DTYPES[settings.dtype]
        self.max_id = int(np.iinfo(self.dtype).max)

    def __call__(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """(tokens, lengths): all documents' ids back to back, each followed by EOD, and each one's length."""
        encodings = self.tokenizer.encode_batch_fast(texts, add_special_tokens=self.settings.add_special_tokens)
        eod = self.settings.eod_id
        ids: list[int] = []
        lengths = np.empty(len(encodings), dtype=np.int64)
        for i, encoding in enumerate(encodings):
            doc = encoding.ids
            ids.extend(doc)
            ids.append(eod)
            lengths[i] = len(doc) + 1
        tokens = np.array(ids, dtype=np.int64)
        if tokens.size and (tokens.max() > self.max_id or tokens.min() < 0):
            raise ValueError(f"token id {int(tokens.max())} does not fit {self.settings.dtype}; use --dtype int32")
        return tokens.astype(self.dtype), lengths


_WORKER_ENCODER: DocumentEncoder | None = None


def _exit_with_parent(parent_pid: int) -> None:
    while os.getppid() == parent_pid:
        time.sleep(1.0)
    os._exit(1)  # the parent was killed (SIGKILL): nobody will collect our results


def init_worker(settings: EncoderSettings, parent_pid: int) -> None:
    """Process-pool initializer: one tokenizer per worker, one thread each, Ctrl-C left to the parent, and exit
    when the parent (``parent_pid``, passed in: it may already be dead by now) dies."""
    global _WORKER_ENCODER
    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    threading.Thread(target=_exit_with_parent, args=(parent_pid,), daemon=True).start()
    _WORKER_ENCODER = DocumentEncoder(settings)


def encode_in_worker(texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
    assert _WORKER_ENCODER is not None, "encode_in_worker runs only in a pool started with init_worker"
    return _WORKER_ENCODER(texts)
