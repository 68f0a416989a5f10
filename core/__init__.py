"""Settings, logging, errors and small shared types. Imports nothing of pocketrun's."""
