"""Property-based fuzzing of the whole OpenAPI schema with schemathesis and every check it
has, against a live server with an admin key: no 5xx, and no status, content type, header
or body the schema does not document; schema-invalid requests refused, valid ones taken."""

from __future__ import annotations

import subprocess

import pytest

from tests.support import BIN, TEST_ADMIN_KEY

# The allowances: a request valid by the OpenAPI schema may still be 422 on createRun,
# because what ``input`` must hold is each flow's own schema (one operation serves every
# flow), and on it and each flow's own typed copy of it an Idempotency-Key reused with
# another body is refused (DESIGN.md section 4); on getRunState, because a ``seq`` past
# the run's last step depends on the run; on the control calls, because what a resume's
# payload must match is the waiting run's own schema, a replay's ``from_seq`` must be one
# of the run's steps, and a payload or patch holding text no database can keep (NUL) is
# refused as any stored JSON is, and a migration's target must be a version loaded here;
# on createWebhook, because a URL valid by the schema may not resolve or may resolve to a
# private address (refused unless WEBHOOK_ALLOW_PRIVATE); on createSchedule and
# updateSchedule, because the flow must be loaded, the input must match its schema and the
# cron text and time zone must mean something, which no JSON Schema says;
# and on registerFlow, because a document valid by its
# schema may still name an unknown node type or node, or an existing version.
CONFIG = """
[[operations]]
include-operation-id = "registerFlow"
checks.positive_data_acceptance.expected-statuses = [
    "2xx", "3xx", "401", "403", "409", "422", "429",
]

[[operations]]
include-operation-id = "createWebhook"
checks.positive_data_acceptance.expected-statuses = [
    "2xx", "3xx", "401", "403", "409", "422", "429",
]

[[operations]]
include-operation-id = "createSchedule"
checks.positive_data_acceptance.expected-statuses = [
    "2xx", "3xx", "401", "403", "409", "422", "429",
]

[[operations]]
include-operation-id = "updateSchedule"
checks.positive_data_acceptance.expected-statuses = [
    "2xx", "3xx", "401", "403", "404", "409", "422", "429",
]

[[operations]]
include-operation-id = "createRun"
checks.positive_data_acceptance.expected-statuses = [
    "2xx", "3xx", "401", "403", "404", "409", "422", "429",
]

[[operations]]
include-tag = "flow runs"
checks.positive_data_acceptance.expected-statuses = [
    "2xx", "3xx", "401", "403", "404", "409", "422", "429",
]

[[operations]]
include-operation-id = "resumeRun"
checks.positive_data_acceptance.expected-statuses = [
    "2xx", "3xx", "401", "403", "404", "409", "422", "429",
]

[[operations]]
include-operation-id = "retryRun"
checks.positive_data_acceptance.expected-statuses = [
    "2xx", "3xx", "401", "403", "404", "409", "422", "429",
]

[[operations]]
include-operation-id = "migrateRun"
checks.positive_data_acceptance.expected-statuses = [
    "2xx", "3xx", "401", "403", "404", "409", "422", "429",
]

[[operations]]
include-operation-id = "replayRun"
checks.positive_data_acceptance.expected-statuses = [
    "2xx", "3xx", "401", "403", "404", "409", "422", "429",
]

[[operations]]
include-operation-id = "getRunState"
checks.positive_data_acceptance.expected-statuses = [
    "2xx", "3xx", "401", "403", "404", "422", "429",
]
"""


def _schemathesis(server, tmp_path, *selection: str) -> subprocess.CompletedProcess:
    config = tmp_path / "schemathesis.toml"
    config.write_text(CONFIG)
    return subprocess.run(
        [
            str(BIN / "st"),
            "--config-file",
            str(config),
            "run",
            f"{server.url}/openapi.json",
            "-H",
            f"Authorization: Bearer {TEST_ADMIN_KEY}",
            "--checks",
            "all",
            "--max-examples",
            "15",
            "--phases",
            "examples,coverage,fuzzing",
            "--generation-database",
            "none",
            "--seed",
            "4",
            "--workers",  # one: hypothesis' lambda introspection is not thread-safe on 3.11
            "1",
            "--request-timeout",
            "20",
            "--no-color",
            *selection,
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=240,
    )


@pytest.mark.timeout(300)
def test_fuzzing_the_schema_with_every_check_finds_nothing(server_factory, tmp_path):
    # The built-in flows only: each flow's typed operation is fuzzed with valid input, and
    # some test flows write files at paths their input names.
    env = {"POCKETRUN_WAIT_CAP": "0.5", "POCKETRUN_INLINE_BUDGET": "1", "POCKETRUN_FLOWS": ""}
    server = server_factory(env)
    # Revoking keys is fuzzed on its own, last: it may well revoke the key doing the fuzzing.
    for selection in (("--exclude-method", "DELETE"), ("--include-method", "DELETE")):
        result = _schemathesis(server, tmp_path, *selection)
        start = max(result.stdout.find("ERRORS"), result.stdout.find("FAILURES"), 0)
        report = result.stdout[start : start + 6000] + result.stderr[-2000:]
        assert result.returncode == 0, report
        assert "passed" in result.stdout, report
    assert server.proc is not None and server.proc.poll() is None  # it is still up
