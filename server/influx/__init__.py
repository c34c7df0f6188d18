"""The InfluxDB sink: line protocol in batches through a durable outbox."""
