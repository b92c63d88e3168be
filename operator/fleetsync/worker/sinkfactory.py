"""Build the configured sink from the manifest, resolving its Secret references."""

from __future__ import annotations

from pathlib import Path

from fleetsync.api.v1alpha1.syncjob import SyncJobSpec
from fleetsync.errors import ManifestError
from fleetsync.sinks.base import Sink
from fleetsync.worker.secrets import SecretResolver

__all__ = ["build_sink"]


def build_sink(
    spec: SyncJobSpec, *, secrets: SecretResolver, base_dir: Path, create_tables: bool = True
) -> Sink:
    sink = spec.resolved_sink
    monotonic = spec.write.monotonic_on
    if sink.sqlite is not None:
        from fleetsync.sinks.sqlite import SqliteSink

        path = Path(sink.sqlite.path)
        path = path if path.is_absolute() else base_dir / path
        return SqliteSink(str(path), sink.sqlite.table, monotonic_attribute=monotonic)
    if sink.postgres is not None:
        from fleetsync.sinks.postgres import PostgresSink
        from fleetsync.sinks.postgres_dsn import dsn_problem

        ref = sink.postgres.dsn_secret_ref
        field = "spec.sink.postgres.dsnSecretRef"
        dsn = secrets.get(ref.name, ref.key, field=field)
        problem = dsn_problem(dsn.reveal())
        if problem is not None:
            raise ManifestError([(field, f"the DSN in Secret {ref.name}/{ref.key} {problem}")])
        return PostgresSink(
            dsn.reveal(),
            sink.postgres.table,
            conflict_key=sink.postgres.conflict_key,
            monotonic_attribute=monotonic,
            columns=sink.postgres.columns,
        )
    assert sink.dynamodb is not None
    from fleetsync.sinks.dynamodb import DynamoDBSink

    dynamo = sink.dynamodb
    credentials = None
    if dynamo.credentials_secret_ref is not None:
        aws = dynamo.credentials_secret_ref
        field = "spec.sink.dynamodb.credentialsSecretRef"
        credentials = (
            secrets.get(aws.name, aws.access_key_id_key, field=field).reveal(),
            secrets.get(aws.name, aws.secret_access_key_key, field=field).reveal(),
        )
    return DynamoDBSink(
        dynamo.table,
        region=dynamo.region,
        key_template=dynamo.key,
        endpoint_url=dynamo.endpoint_url,
        batch_size=dynamo.batch_size,
        ttl_attribute=dynamo.ttl.attribute if dynamo.ttl else None,
        ttl_days=dynamo.ttl.days if dynamo.ttl else None,
        monotonic_attribute=monotonic,
        credentials=credentials,
        create_table=dynamo.create_table and create_tables,
    )
