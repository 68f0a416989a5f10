"""The HTTP API: app factory, routes, schemas, problem+json."""
