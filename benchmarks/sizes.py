"""How big each scenario is: the full run, ``--quick``, and ``--tiny`` (the test suite's smoke run)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Sizes:
    name: str
    share_clusters: bool  # one cluster per system for b, c, d, e, g (a and f start their own)
    start_repeats: int  # a: cluster start/close cycles (median reported)
    latency_n: int  # b: sequential round trips measured
    latency_warmup: int  # b: round trips before measuring
    map_ns: tuple[int, ...]  # c: tasks per gather(map(...))
    map_repeats: int  # c: runs per N (best reported)
    tree_leaves: int  # d: leaves of the reduction (a power of two)
    tree_repeats: int  # d: runs (best reported)
    transfer_bytes: int  # e: the array's size
    transfer_repeats: int  # e: fetches timed (best reported)
    pending_tasks: int  # f: tasks waiting on one slow future
    asyncio_latency_n: int  # g: round trips
    asyncio_map_ns: tuple[int, ...]  # g: tasks per gather(map(...))
    asyncio_map_repeats: int  # g: trioclust's runs per N under each loop, alternating (best reported)
    raw_pings: int  # h: ping-pong round trips
    raw_messages: int  # h: small messages sent in batches
    raw_bulk_bytes: int  # h: bytes streamed into a reused buffer
    raw_bulk_buffer: int  # h: the reused receive buffer
    collection_array: int  # j: side of the square dask array summed
    collection_small_chunk: int  # j1: its chunks' side, small
    collection_big_chunk: int  # j2: its chunks' side, big
    collection_rows: int  # j3: dataframe rows
    collection_partitions: int  # j3: dataframe partitions
    collection_leaves: int  # j4: leaves of the dask.delayed tree (2 * leaves - 1 tasks)
    collection_repeats: int  # j: runs of each (best reported)


FULL = Sizes(
    name="full",
    share_clusters=False,
    start_repeats=3,
    latency_n=500,
    latency_warmup=50,
    map_ns=(10_000, 50_000),
    map_repeats=2,
    tree_leaves=8192,
    tree_repeats=2,
    transfer_bytes=200_000_000,
    transfer_repeats=3,
    pending_tasks=100_000,
    asyncio_latency_n=500,
    asyncio_map_ns=(10_000, 50_000),
    asyncio_map_repeats=4,
    raw_pings=20_000,
    raw_messages=2_000_000,
    raw_bulk_bytes=4_000_000_000,
    raw_bulk_buffer=200_000_000,
    collection_array=20_000,
    collection_small_chunk=200,
    collection_big_chunk=2_000,
    collection_rows=10_000_000,
    collection_partitions=100,
    collection_leaves=50_000,
    collection_repeats=2,
)

QUICK = Sizes(
    name="quick",
    share_clusters=True,
    start_repeats=1,
    latency_n=200,
    latency_warmup=20,
    map_ns=(1_000, 3_000),
    map_repeats=1,
    tree_leaves=512,
    tree_repeats=1,
    transfer_bytes=50_000_000,
    transfer_repeats=2,
    pending_tasks=10_000,
    asyncio_latency_n=100,
    asyncio_map_ns=(1_000,),
    asyncio_map_repeats=2,
    raw_pings=5_000,
    raw_messages=500_000,
    raw_bulk_bytes=1_000_000_000,
    raw_bulk_buffer=50_000_000,
    collection_array=4_000,
    collection_small_chunk=100,
    collection_big_chunk=1_000,
    collection_rows=1_000_000,
    collection_partitions=20,
    collection_leaves=5_000,
    collection_repeats=1,
)

TINY = Sizes(
    name="tiny",
    share_clusters=True,
    start_repeats=1,
    latency_n=20,
    latency_warmup=5,
    map_ns=(200,),
    map_repeats=1,
    tree_leaves=64,
    tree_repeats=1,
    transfer_bytes=4_000_000,
    transfer_repeats=1,
    pending_tasks=1_000,
    asyncio_latency_n=20,
    asyncio_map_ns=(200,),
    asyncio_map_repeats=1,
    raw_pings=200,
    raw_messages=10_000,
    raw_bulk_bytes=40_000_000,
    raw_bulk_buffer=4_000_000,
    collection_array=400,
    collection_small_chunk=100,
    collection_big_chunk=200,
    collection_rows=20_000,
    collection_partitions=4,
    collection_leaves=200,
    collection_repeats=1,
)
