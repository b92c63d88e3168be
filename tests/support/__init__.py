"""Servers the integration tests start and stop: real PostgreSQL, a DynamoDB-protocol server."""
