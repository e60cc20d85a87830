-- Tapio's table for UnifiedEvent (see README.md beside this file). The `clickhouse` sink runs
-- this statement, with the database and table substituted, when `create_table = true`.
-- Portable: ClickHouse 18.16 and current releases (no DateTime64, LowCardinality or Map).
CREATE TABLE IF NOT EXISTS {database}.{table}
(
    timestamp DateTime('UTC'),
    timestamp_ns UInt32,
    id String,
    type String,
    source String,
    entity_type String,
    entity_id String,
    entity_name String,
    namespace String,
    node String,
    severity String,
    pattern String,
    correlation_id String,
    business_impact Float64,
    event String
)
ENGINE = MergeTree
PARTITION BY toYYYYMMDD(timestamp)
ORDER BY (entity_id, timestamp)
-- Optional, ClickHouse 19.6 or later: drop events after 30 days.
-- TTL timestamp + INTERVAL 30 DAY
