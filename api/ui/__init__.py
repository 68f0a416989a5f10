"""The operations dashboard (``GET /ui``) and the offline API docs (``/docs``): static
files shipped in the package, talking to the ``/v1`` API like any other client."""
