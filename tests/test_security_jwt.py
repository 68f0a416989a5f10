"""JWT bearer tokens: HS256 with a secret, RS256/ES256 against a file:// JWKS.

Token checking touches no database, so one SQLite-backed server serves the module.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from api.auth import parse_role_map
from core.principal import Role
from tests.security_support import bearer
from tests.support import Server

SECRET = "test-hs256-secret-that-is-long-enough-0123456789"
ISSUER = "https://idp.example.test/"
AUDIENCE = "pocketrun-tests"
ROLE_MAP = "pr-users=consumer,pr-ops=operator,pr-eng=engineer,pr-admins=admin"
RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
EC_KEY = ec.generate_private_key(ec.SECP256R1())
OTHER_RSA = rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _jwk(private: Any, kid: str, alg: str) -> dict[str, Any]:
    algorithm = jwt.algorithms.RSAAlgorithm if alg == "RS256" else jwt.algorithms.ECAlgorithm
    data = json.loads(algorithm.to_jwk(private.public_key()))
    return {**data, "kid": kid, "use": "sig", "alg": alg}


@pytest.fixture(scope="module")
def jwt_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    tmp = tmp_path_factory.mktemp("jwt")
    jwks = tmp / "jwks.json"
    jwks.write_text(
        json.dumps({"keys": [_jwk(RSA_KEY, "rsa1", "RS256"), _jwk(EC_KEY, "ec1", "ES256")]})
    )
    server = Server(
        f"sqlite+aiosqlite:///{tmp / 'jwt.db'}",
        env={
            "POCKETRUN_JWT_SECRET": SECRET,
            "POCKETRUN_JWKS_URL": jwks.as_uri(),
            "POCKETRUN_JWT_ISSUER": ISSUER,
            "POCKETRUN_JWT_AUDIENCE": AUDIENCE,
            "POCKETRUN_JWT_ROLE_CLAIM": "groups",
            "POCKETRUN_JWT_TENANT_CLAIM": "org",
            "POCKETRUN_JWT_ROLE_MAP": ROLE_MAP,
        },
        log_path=tmp / "server.log",
    )
    server.start()
    yield server
    server.kill()


def claims(**overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    base = {
        "sub": "alice",
        "org": "acme",
        "groups": ["pr-users"],
        "iss": ISSUER,
        "aud": AUDIENCE,
        "iat": now,
        "exp": now + 300,
    }
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not None}


def hs(**overrides: Any) -> str:
    return jwt.encode(claims(**overrides), SECRET, algorithm="HS256")


def rs(key: Any = RSA_KEY, kid: str = "rsa1", **overrides: Any) -> str:
    return jwt.encode(claims(**overrides), key, algorithm="RS256", headers={"kid": kid})


def es(**overrides: Any) -> str:
    return jwt.encode(claims(**overrides), EC_KEY, algorithm="ES256", headers={"kid": "ec1"})


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unsigned(alg: str = "none") -> str:
    header = _b64(json.dumps({"alg": alg, "typ": "JWT"}).encode())
    return f"{header}.{_b64(json.dumps(claims(groups=['pr-admins'])).encode())}."


def hs_with_rsa_public_key() -> str:
    """The classic confusion: HS256 keyed with the RSA public key the server trusts."""
    pem = RSA_KEY.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    header = _b64(json.dumps({"alg": "HS256", "typ": "JWT", "kid": "rsa1"}).encode())
    payload = _b64(json.dumps(claims(groups=["pr-admins"])).encode())
    signature = hmac.new(pem, f"{header}.{payload}".encode(), hashlib.sha256).digest()
    return f"{header}.{payload}.{_b64(signature)}"


def tampered() -> str:
    header, _, signature = rs().split(".")
    forged = _b64(json.dumps(claims(groups=["pr-admins"])).encode())
    return f"{header}.{forged}.{signature}"


def status(server: Server, token: str, path: str = "/v1/flows", method: str = "GET") -> int:
    response = httpx.request(method, server.url + path, headers=bearer(token), timeout=30)
    if response.status_code == 401:
        assert response.headers["www-authenticate"].startswith("Bearer")
        assert response.headers["content-type"] == "application/problem+json"
    return response.status_code


def test_valid_tokens_of_each_kind_are_accepted(jwt_server: Server) -> None:
    for token in (hs(), rs(), es(), rs(kid="rsa1", groups="pr-users")):
        assert status(jwt_server, token) == 200


@pytest.mark.parametrize(
    "make",
    [
        pytest.param(lambda: unsigned("none"), id="alg-none"),
        pytest.param(lambda: unsigned("None"), id="alg-None"),
        pytest.param(tampered, id="tampered-signature"),
        pytest.param(hs_with_rsa_public_key, id="hs-rs-confusion"),
        pytest.param(lambda: hs(exp=int(time.time()) - 120), id="expired"),
        pytest.param(lambda: rs(exp=int(time.time()) - 120), id="expired-rs256"),
        pytest.param(lambda: hs(aud="someone-else"), id="wrong-audience"),
        pytest.param(lambda: hs(aud=None), id="no-audience"),
        pytest.param(lambda: hs(iss="https://evil.example/"), id="wrong-issuer"),
        pytest.param(lambda: hs(nbf=int(time.time()) + 3600), id="not-yet-valid"),
        pytest.param(lambda: hs(exp=None), id="no-expiry"),
        pytest.param(lambda: rs(key=OTHER_RSA), id="signed-by-another-key"),
        pytest.param(lambda: rs(kid="unknown"), id="unknown-kid"),
        pytest.param(
            lambda: jwt.encode(
                claims(), "another-secret-of-the-same-length-0123456789abc", algorithm="HS256"
            ),
            id="hs-bad",
        ),
        pytest.param(
            lambda: jwt.encode(claims(), SECRET * 2, algorithm="HS512"), id="hs512-unpinned"
        ),
        pytest.param(lambda: hs(org="*", groups=["pr-admins"]), id="tenant-star"),
        pytest.param(lambda: hs(org=None), id="no-tenant"),
        pytest.param(lambda: hs(groups=["admin"]), id="unmapped-group"),
        pytest.param(lambda: hs(sub=None), id="no-subject"),
        pytest.param(lambda: "a.b.c", id="garbage"),
    ],
)
def test_bad_tokens_are_401(jwt_server: Server, make) -> None:
    assert status(jwt_server, make()) == 401


def test_role_map_decides_what_a_token_may_do(jwt_server: Server) -> None:
    assert status(jwt_server, hs(groups=["pr-ops"]), "/v1/audit") == 403
    assert status(jwt_server, hs(groups=["pr-ops"]), "/v1/runs") == 200
    assert status(jwt_server, rs(groups=["pr-ops", "pr-admins"]), "/v1/audit") == 200
    assert status(jwt_server, es(groups=["unrelated", "pr-eng"]), "/v1/keys") == 403


def test_jwt_principals_are_isolated_by_subject_and_tenant(jwt_server: Server) -> None:
    alice, bob, carol = hs(sub="alice"), hs(sub="bob"), hs(sub="carol", org="globex")
    made = httpx.post(
        jwt_server.url + "/v1/flows/hello/runs?wait=10",
        json={"input": {"name": "jwt"}},
        headers=bearer(alice),
        timeout=30,
    )
    assert made.status_code in (201, 202), made.text
    path = f"/v1/runs/{made.json()['id']}"
    assert status(jwt_server, alice, path) == 200
    assert status(jwt_server, bob, path) == 404
    assert status(jwt_server, carol, path) == 404
    assert status(jwt_server, hs(sub="ops", groups=["pr-ops"]), path) == 200


def test_role_map_parsing() -> None:
    assert parse_role_map('{"devs": "engineer"}') == {"devs": Role.engineer}
    assert parse_role_map("a=admin, b = consumer") == {"a": Role.admin, "b": Role.consumer}
    assert parse_role_map(None) == {}
    with pytest.raises(ValueError):
        parse_role_map("a=superuser")
    with pytest.raises(ValueError):
        parse_role_map("nonsense")


def test_tokens_never_reach_the_log(jwt_server: Server) -> None:
    token = hs()
    status(jwt_server, token)
    status(jwt_server, tampered())
    assert jwt_server.log_path is not None
    text = Path(jwt_server.log_path).read_text()
    assert token.split(".")[2] not in text
    assert SECRET not in text
