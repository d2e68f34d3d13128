"""Admin tests: a real hub (grpc.aio on port 0, a real SQLite file) with the HubAdmin service."""
