"""The throwaway PostgreSQL cluster: unsynced for tests, PostgreSQL's own durable settings for benchmarks."""

from __future__ import annotations

from servicekit.testing.postgres import PostgresCluster


def test_a_durable_cluster_syncs_every_commit_and_starts_with_recycled_wal_segments(
    pg_cluster: PostgresCluster,
) -> None:
    """The test cluster does not sync. A durable one (benchmarks) does, and starts with WAL segments ready to
    reuse, like a running server: without them every 16 MB of WAL zero-fills a new segment while commits wait,
    and the benchmarks measured that first-hour stall (single-POST p99 75-85 ms instead of 31-36 ms), not the
    service. One cluster for both checks: a durable start costs several seconds."""
    settings = "SELECT current_setting('fsync') || current_setting('synchronous_commit')"
    assert pg_cluster.psql(settings).strip() == "offoff"
    durable = PostgresCluster(durable=True).init().start()
    try:
        assert durable.psql(settings).strip() == "onon"
        current = durable.psql("SELECT pg_walfile_name(pg_current_wal_lsn())")
        names = [path.name for path in (durable.data_dir / "pg_wal").iterdir() if len(path.name) == 24]
        ahead = [name for name in names if name > current]
        assert len(ahead) >= 32, f"{len(ahead)} WAL segments ready ahead of {current}"
        assert durable.psql("SHOW min_wal_size") == "1GB"
    finally:
        durable.destroy()
