"""kopf's login: a credential the API server refused, read again, ends the operator instead of a loop."""

from __future__ import annotations

import asyncio
import datetime

import aiohttp
import kopf
import pytest
from kopf._cogs.structs.credentials import Vault  # kopf's store of credentials, as the operator's

from workerfleet.handlers.startup import CredentialSession
from workerfleet.kube.credentials import ApiCredentials

SERVER = "https://127.0.0.1:6443"


def _session(token: str, *, expires_in: float = 600.0) -> CredentialSession:
    credentials = ApiCredentials(server=SERVER, authorization=f"Bearer {token}")
    return CredentialSession(
        fingerprint=credentials.fingerprint,
        server=SERVER,
        aiohttp_session=aiohttp.ClientSession(),
        expiration=datetime.datetime.now(datetime.UTC) + datetime.timedelta(seconds=expires_in),
    )


async def _refuse_then_log_in_with(token: str) -> None:
    """kopf's vault after a 401 on the `revoked` token: it asks the login again, which returns `token`."""
    vault = Vault()
    refused = _session("revoked")
    await vault.populate({"login": refused})
    again = _session(token, expires_in=300.0)

    async def log_in_again() -> None:
        await vault.wait_for_emptiness()
        await vault.populate({"login": again})

    login = asyncio.create_task(log_in_again())
    try:
        async for key, info in vault:
            await vault.invalidate(key, info, exc=RuntimeError("401 Unauthorized"))
            break
    finally:
        await login
        await refused.aiohttp_session.close()
        await again.aiohttp_session.close()


def test_the_same_refused_token_read_again_runs_kopf_out_of_credentials() -> None:
    # A new session object and a later expiry do not make a refused token new to kopf
    with pytest.raises(kopf.LoginError):
        asyncio.run(_refuse_then_log_in_with("revoked"))


def test_a_rotated_token_is_taken_after_a_refusal() -> None:
    asyncio.run(_refuse_then_log_in_with("rotated"))


def test_the_fingerprint_covers_what_is_presented_and_not_how_long_it_is_trusted() -> None:
    base = ApiCredentials(server=SERVER, authorization="Bearer a")
    trusted_briefly = ApiCredentials(server=SERVER, authorization="Bearer a", valid_seconds=5)
    assert trusted_briefly.fingerprint == base.fingerprint
    for other in (
        ApiCredentials(server=SERVER, authorization="Bearer b"),
        ApiCredentials(server="https://127.0.0.1:7443", authorization="Bearer a"),
        ApiCredentials(server=SERVER, authorization="Bearer a", impersonate_user="jane"),
        ApiCredentials(server=SERVER, certificate_pem="cert", private_key_pem="key"),
    ):
        assert other.fingerprint != base.fingerprint
