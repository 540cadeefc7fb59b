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
