"""The throwaway PostgreSQL cluster: unsynced for tests, PostgreSQL's own durable settings for benchmarks."""

from __future__ import annotations

from servicekit.testing.postgres import PostgresCluster


def test_a_durable_cluster_syncs_every_commit_and_the_test_cluster_does_not(pg_cluster: PostgresCluster) -> None:
    settings = "SELECT current_setting('fsync') || current_setting('synchronous_commit')"
    assert pg_cluster.psql(settings).strip() == "offoff"
    durable = PostgresCluster(durable=True).init().start()
    try:
        assert durable.psql(settings).strip() == "onon"
    finally:
        durable.destroy()


def test_a_durable_cluster_starts_with_recycled_wal_segments_like_a_running_server() -> None:
    """Without them every 16 MB of WAL zero-fills a new segment while commits wait: the benchmarks measured
    that first-hour stall (single-POST p99 75-85 ms instead of 33-36 ms), not the service."""
    durable = PostgresCluster(durable=True).init().start()
    try:
        current = durable.psql("SELECT pg_walfile_name(pg_current_wal_lsn())")
        ahead = [
            name for name in (durable.data_dir / "pg_wal").iterdir() if len(name.name) == 24 and name.name > current
        ]
        assert len(ahead) >= 32, f"{len(ahead)} WAL segments ready ahead of {current}"
        assert durable.psql("SHOW min_wal_size") == "1GB"
    finally:
        durable.destroy()
