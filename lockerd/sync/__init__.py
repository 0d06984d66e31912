"""Cloud sync over MQTT, as docs/contract/mqtt-contract.md says: the outbox pump, status,
state and telemetry out; signed commands in."""
