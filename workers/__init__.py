"""The engine: step runner, shared stores, executors, leases and the sweeper."""
