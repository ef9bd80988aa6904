"""MemoryConfig: where the memory actor keeps its data, and its index, limits and judge settings."""

from __future__ import annotations

import os
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator


class MemoryConfig(BaseModel):
    """Settings of one mission's memory actor. Every threshold of the bus is here."""

    model_config = ConfigDict(extra="forbid")

    data_dir: str | None = Field(None, description="Directory or fsspec URL (file://, or any filesystem with append) "
                                 "for the write-ahead log and the index snapshots. Reused on restart. None: the "
                                 "mission's run directory (`runs/<mission-id>/memory`).")
    namespaces: list[str] = Field(default_factory=list, description="Namespaces that exist from the start; "
                                                                    "every namespace named in a grant exists too.")
    exact_below: int = Field(default=50_000, ge=1, description="A namespace with fewer entries than this uses an "
                                                              "exact flat index; from this size on, `large_index`.")
    large_index: Literal["hnsw", "ivf"] = Field(default="hnsw", description="Index of a namespace from `exact_below` "
                                                "entries on: hnsw (best recall, slow to build), or ivf (IVF-Flat, "
                                                "builds in seconds at 1M entries; see docs/cluster.md for recall).")
    ivf_nprobe: int = Field(default=32, ge=1, description="IVF lists probed by an unfiltered search; a filter "
                            "keeping a fraction f of the entries probes 1/f times as many (up to all).")
    hnsw_m: int = Field(default=32, ge=4, description="HNSW graph degree (M) above `exact_below`.")
    hnsw_ef_search: int = Field(default=128, ge=8, description="HNSW efSearch; raised to k when k is larger.")
    max_text_chars: int = Field(default=8_000, ge=1, description="Longest text accepted in one entry.")
    max_k: int = Field(default=1_000, ge=1, description="Largest k a search may ask for.")
    max_batch: int = Field(default=10_000, ge=1, description="Most entries in one post, and queries in one search.")
    embedding_batch_size: int = Field(default=64, ge=1, description="Texts per forward pass of the embedding model.")
    embedding_model_path: str | None = Field(default=None, description="Folder of a sentence-transformers model; "
                                                                       "None uses the bundled all-MiniLM-L6-v2.")
    num_gpus: float = Field(default=0.0, ge=0, description="GPU share the actor asks Ray for; with CUDA present "
                                                          "the embedding model runs on it.")
    cpu_threads: int | None = Field(default=None, ge=1, description="FAISS threads in the actor, and torch's for "
                                    "embedding 32 texts or more (fewer go on one thread); None uses every core "
                                    "(Ray's default is 1).")
    snapshot_every_writes: int = Field(default=1_000, ge=1, description="Write a snapshot and start a new log "
                                                                        "segment after this many logged writes.")
    max_restarts: int = Field(default=-1, ge=-1, description="Ray restarts of the actor after a crash; -1 forever.")
    conflict_similarity: float = Field(default=0.7, ge=-1.0, le=1.0, description="Cosine at or above which a new "
                                       "finding and another agent's finding on the same topic go to the judge.")
    max_judge_calls_per_post: int = Field(default=3, ge=0, description="Most candidates of one new entry sent to "
                                                                       "the judge, the most similar first.")
    judge_model: str | None = Field(default=None, description="Router model that judges candidate pairs with a "
                                                              "guided choice; None turns contradiction checks off.")
    judge_max_tokens: int = Field(default=8, ge=1, description="max_tokens of a judge call.")
    judge_timeout_s: float = Field(default=60.0, gt=0, description="Timeout of one judge call.")
    app_name: str = Field(default="controlplane", description="Serve application name of the router.")
    read_channel: bool = Field(default=True, description="Also serve searches on a direct TCP connection from the "
                               "actor's node address (a secret from a Ray call opens it), which skips Ray's round "
                               "trip; a caller that cannot connect uses Ray calls. False: Ray calls only.")

    @field_validator("data_dir")
    @classmethod
    def _absolute_data_dir(cls, value: str | None) -> str | None:
        """A relative path means relative to where the config is made, not to the actor's working directory."""
        if value is None:
            return None
        if not value:
            raise ValueError("data_dir is empty; give a directory or an fsspec URL")
        return value if "://" in value else os.path.abspath(os.path.expanduser(value))

    @model_validator(mode="after")
    def _check_namespaces(self) -> MemoryConfig:
        for name in self.namespaces:
            if not name or name == "*":
                raise ValueError(f"namespaces: {name!r} is not a namespace name; use a non-empty name other than '*'")
        return self
