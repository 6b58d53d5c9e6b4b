"""A feature set on disk: shards of features plus a parquet index.

The contract between ``ctx extract`` (which writes ``features.out/<name>/``,
one folder per embedder: ``learned``, ``random_init``, ``raw_pixels``) and its
readers (``ctx nn``, ``ctx discover``).

Layout of one feature set folder::

    shard-00000.npy ...   (rows, dim) float16 or float32, written as extraction goes
    index.parquet         one row per feature row (see ``INDEX``), in shard/row order
    meta.json             dim, dtype, encoder, layer, patch size, sampling, ...

The global row number of a feature is its position in ``index.parquet``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pandas as pd
import pandera.pandas as pa
import torch

from ctx_core.errors import UserError
from ctx_core.store.schemas import IMAGE_ID, validate_table

LEARNED = "learned"  # the feature set of the pretrained encoder; the others are baselines

INDEX = pa.DataFrameSchema(
    {
        "image_id": pa.Column(str, pa.Check.str_matches(IMAGE_ID)),
        "x0": pa.Column(int, pa.Check.ge(0)),
        "y0": pa.Column(int, pa.Check.ge(0)),
        "x1": pa.Column(int, pa.Check.ge(1)),
        "y1": pa.Column(int, pa.Check.ge(1)),
        "scale": pa.Column(float, pa.Check.gt(0)),
        "shard": pa.Column(int, pa.Check.ge(0)),
        "row": pa.Column(int, pa.Check.ge(0)),
    },
    checks=[
        pa.Check(lambda df: (df["x0"] < df["x1"]) & (df["y0"] < df["y1"]), name="x0 < x1 and y0 < y1", element_wise=False),
    ],
    strict=True,
    ordered=True,
    name="features index",
)
BOX = ["x0", "y0", "x1", "y1"]


class FeatureSetError(UserError):
    """A feature set that is missing, empty, damaged or inconsistent."""


# what to do when a file of a feature set is damaged
REMEDY = "re-run `ctx extract` to rebuild the feature sets"


def validate_index(index: pd.DataFrame) -> None:
    validate_table(INDEX, index, "index.parquet")


class FeatureWriter:
    """Buffers at most ``shard_rows`` rows, then writes a shard; memory stays bounded."""

    def __init__(self, folder: Path, dim: int, float16: bool, shard_rows: int, meta: dict[str, Any]):
        self.folder, self.dim, self.shard_rows = folder, dim, shard_rows
        self.dtype = np.float16 if float16 else np.float32
        self.meta = meta
        folder.mkdir(parents=True, exist_ok=True)
        self._feats: list[np.ndarray] = []
        self._index: list[pd.DataFrame] = []
        self._buffered = 0
        self._shards = 0
        self._index_done: list[pd.DataFrame] = []

    def add(self, features: torch.Tensor, index: pd.DataFrame) -> None:
        """``features`` (n, dim) for the ``n`` patches of ``index`` (image_id, x0..y1, scale)."""
        if features.shape != (len(index), self.dim):
            raise ValueError(f"features {tuple(features.shape)} do not match {len(index)} index rows of dim {self.dim}")
        feats = features.numpy().astype(self.dtype)
        start = 0
        while start < len(index):
            take = min(self.shard_rows - self._buffered, len(index) - start)
            self._feats.append(feats[start:start + take])
            self._index.append(index.iloc[start:start + take])
            self._buffered += take
            start += take
            if self._buffered == self.shard_rows:
                self._flush()

    def _flush(self) -> None:
        if not self._buffered:
            return
        np.save(self.folder / f"shard-{self._shards:05d}.npy", np.concatenate(self._feats))
        part = pd.concat(self._index, ignore_index=True)
        part["shard"] = self._shards
        part["row"] = np.arange(len(part), dtype=np.int64)
        self._index_done.append(part)
        self._feats, self._index, self._buffered = [], [], 0
        self._shards += 1

    def close(self) -> pd.DataFrame:
        """Write the last shard, ``index.parquet`` (validated) and ``meta.json``; returns the index."""
        self._flush()
        cols = {"image_id": "str", "x0": "int64", "y0": "int64", "x1": "int64", "y1": "int64",
                "scale": "float64", "shard": "int64", "row": "int64"}
        index = pd.concat(self._index_done, ignore_index=True) if self._index_done else pd.DataFrame(columns=list(cols))
        index = index[list(cols)].astype(cols)
        validate_index(index)
        index.to_parquet(self.folder / "index.parquet", index=False)
        meta = {**self.meta, "dim": self.dim, "dtype": np.dtype(self.dtype).name, "rows": len(index), "shards": self._shards}
        (self.folder / "meta.json").write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
        return index


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


@dataclass
class FeatureSet:
    """Read side: ``index`` (one row per feature), ``meta`` and the shard files."""

    folder: Path
    index: pd.DataFrame
    meta: dict[str, Any]

    @classmethod
    def open(cls, folder: Path) -> "FeatureSet":
        folder = Path(folder)
        if not (folder / "index.parquet").is_file() or not (folder / "meta.json").is_file():
            raise FeatureSetError(f"no feature set at {folder} (index.parquet and meta.json); run `ctx extract` first")
        import pyarrow

        try:
            index = pd.read_parquet(folder / "index.parquet")
        except (pyarrow.ArrowException, OSError, ValueError) as exc:
            raise FeatureSetError(f"{folder / 'index.parquet'} is truncated or corrupt ({_first_line(exc)}); {REMEDY}") from None
        validate_index(index)
        if index.empty:
            raise FeatureSetError(f"feature set {folder} is empty: no image held a patch (check features.scales and the image sizes)")
        try:
            meta = json.loads((folder / "meta.json").read_text())
            rows, shards = int(meta["rows"]), int(meta["shards"])
        except (ValueError, KeyError, TypeError) as exc:
            raise FeatureSetError(f"{folder / 'meta.json'} is truncated or corrupt ({_first_line(exc)}); {REMEDY}") from None
        fs = cls(folder, index, meta)
        if rows != len(index) or shards != int(index["shard"].max()) + 1:
            raise FeatureSetError(f"{folder}: meta.json ({rows} rows, {shards} shards) does not match index.parquet "
                                  f"({len(index)} rows, {int(index['shard'].max()) + 1} shards); {REMEDY}")
        for k, n in index.groupby("shard").size().items():
            fs._shard(int(k), rows=int(n))  # a cut or foreign shard fails here, before any work
        return fs

    @property
    def dim(self) -> int:
        return int(self.meta["dim"])

    def __len__(self) -> int:
        return len(self.index)

    def _shard(self, k: int, rows: int | None = None) -> np.ndarray:
        """Shard ``k`` memory-mapped, checked to hold (``rows``, dim) features; a missing,
        truncated or mis-shaped file is a :class:`FeatureSetError` naming it."""
        path = self.folder / f"shard-{k:05d}.npy"
        try:
            shard = np.load(path, mmap_mode="r")
        except (OSError, ValueError, EOFError) as exc:
            raise FeatureSetError(f"feature shard {path} is missing, truncated or corrupt ({_first_line(exc)}); {REMEDY}") from None
        if shard.ndim != 2 or shard.shape[1] != self.dim or (rows is not None and shard.shape[0] != rows):
            expected = f"({rows if rows is not None else 'n'}, {self.dim})"
            raise FeatureSetError(f"feature shard {path} holds {tuple(shard.shape)} features, index.parquet and "
                                  f"meta.json expect {expected}; {REMEDY}")
        return shard

    def chunks(self, max_rows: int = 65536) -> Iterator[tuple[int, torch.Tensor]]:
        """(global offset, float32 (n, dim)) pieces of at most ``max_rows`` rows, shard by shard."""
        offset = 0
        for k in range(int(self.meta["shards"])):
            shard = self._shard(k)
            for start in range(0, len(shard), max_rows):
                part = torch.from_numpy(np.asarray(shard[start:start + max_rows], dtype=np.float32))
                yield offset + start, part
            offset += len(shard)

    def rows(self, rows: np.ndarray) -> torch.Tensor:
        """Features of global ``rows`` (any order, repeats allowed): float32 (len(rows), dim)."""
        rows = np.asarray(rows, dtype=np.int64)
        sel = self.index.iloc[rows]
        out = np.empty((len(rows), self.dim), dtype=np.float32)
        for k, pos in pd.Series(np.arange(len(rows))).groupby(sel["shard"].to_numpy()):
            out[pos.to_numpy()] = self._shard(int(k))[sel["row"].to_numpy()[pos.to_numpy()]]
        return torch.from_numpy(out)
