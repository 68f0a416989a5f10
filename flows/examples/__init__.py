"""Built-in example flows; importing this package registers them all."""

from flows.examples import fanout, flaky, hello, long, pipeline, review, stream, triage, wordcount

__all__ = [
    "fanout",
    "flaky",
    "hello",
    "long",
    "pipeline",
    "review",
    "stream",
    "triage",
    "wordcount",
]
