"""Hub integration tests: a real grpc.aio server on port 0 and a real SQLite file per test."""
