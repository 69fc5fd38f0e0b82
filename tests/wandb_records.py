"""Reads what W&B wrote in offline mode (OUT/wandb/offline-run-*/run-ID.wandb), to check the metrics that reached it.

The file is W&B's record log: a 7-byte header, then LevelDB-log records (4-byte CRC, 2-byte length, 1-byte type:
1 full, 2 first, 3 middle, 4 last) in 32 KiB blocks, each record a `wandb_internal_pb2.Record`.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

BLOCK = 32 * 1024
HEADER = 7


def _records(path: Path) -> list[bytes]:
    data = path.read_bytes()
    assert data[:4] == b":W&B", f"{path} is not a W&B record log"
    pos, out, pending = HEADER, [], b""
    while pos + HEADER <= len(data):
        left = BLOCK - pos % BLOCK
        if left < HEADER:  # block trailer padding
            pos += left
            continue
        _, length, kind = struct.unpack("<IHB", data[pos:pos + HEADER])
        if kind == 0 and length == 0:
            pos += left
            continue
        pending += data[pos + HEADER:pos + HEADER + length]
        pos += HEADER + length
        if kind in (1, 4):
            out.append(pending)
            pending = b""
    return out


def offline_runs(out_dir: Path) -> list[dict]:
    """Each offline run under OUT/wandb, oldest first: {"id", "project", "name", "config", "history": [{key: value}]}."""
    from wandb.proto import wandb_internal_pb2 as pb

    runs = []
    for path in sorted(Path(out_dir).glob("wandb/offline-run-*/run-*.wandb")):
        run = {"config": {}, "history": []}
        for raw in _records(path):
            record = pb.Record()
            record.ParseFromString(raw)
            kind = record.WhichOneof("record_type")
            if kind == "run":
                run.update(id=record.run.run_id, project=record.run.project, name=record.run.display_name)
                run["config"].update({i.key: json.loads(i.value_json) for i in record.run.config.update})
            elif kind == "config":
                run["config"].update({i.key: json.loads(i.value_json) for i in record.config.update})
            elif kind == "history":
                run["history"].append({i.key or "/".join(i.nested_key): json.loads(i.value_json)
                                       for i in record.history.item})
        runs.append(run)
    return runs
