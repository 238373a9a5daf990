"""The official clerk-backend-api Python SDK against the Frontdesk Clerk emulator, or
(with the argument `proxy`) against the Frontdesk Backend API proxy in front of it.

The SDK validates responses strictly (pydantic models generated from Clerk's OpenAPI
spec), so any missing required field or wrong type in the emulator fails here.
Run by ../run.sh with FRONTDESK_EMULATOR_URL and CLERK_SECRET_KEY set, and
FRONTDESK_PROXY_URL (http://<api listener>/clerk) for `proxy`.
"""

import json
import os
import sys
import traceback
import urllib.request

from clerk_backend_api import Clerk, models

API = os.environ["FRONTDESK_EMULATOR_URL"]
SK = os.environ["CLERK_SECRET_KEY"]


def control(path, method="GET"):
    req = urllib.request.Request(f"{API}/__emulator{path}", method=method)
    with urllib.request.urlopen(req) as r:
        return json.loads(r.read())


info = control("")
U0, U1 = info["sample_user_ids"][0], info["sample_user_ids"][1]
clerk = Clerk(bearer_auth=SK, server_url=f"{API}/v1")


def check_list_users():
    users = clerk.users.list(request={"limit": 20})
    assert len(users) == 20, len(users)
    assert all(u.object == models.UserObject.USER for u in users)
    assert users[0].created_at >= users[-1].created_at


def check_list_users_by_id():
    users = clerk.users.list(request={"user_id": [U0, U1, "user_unknown"]})
    assert sorted(u.id for u in users) == sorted([U0, U1]), [u.id for u in users]


def check_get_user():
    u = clerk.users.get(user_id=U0)
    assert u.id == U0
    assert u.email_addresses[0].id == u.primary_email_address_id
    assert u.email_addresses[0].email_address.endswith("@example.com")
    assert isinstance(u.public_metadata, dict)


def check_count():
    c = clerk.users.count(request={})
    assert c.object == models.TotalCountObject.TOTAL_COUNT, c.object
    assert c.total_count >= 2


def check_not_found_is_clerk_errors():
    try:
        clerk.users.get(user_id="user_doesnotexist")
    except models.ClerkErrors as e:
        assert e.data.errors[0].code == "resource_not_found", e.data
        return
    raise AssertionError("expected ClerkErrors")


def check_update_metadata():
    u = clerk.users.update_metadata(user_id=U1, public_metadata={"py": {"a": 1}})
    assert u.public_metadata["py"] == {"a": 1}, u.public_metadata
    u = clerk.users.update_metadata(user_id=U1, public_metadata={"py": {"a": None, "b": 2}})
    assert u.public_metadata["py"] == {"b": 2}, u.public_metadata


def check_organizations():
    orgs = clerk.organizations.list(limit=5)
    assert orgs.total_count >= 1
    org = clerk.organizations.get(organization_id=orgs.data[0].slug)
    assert org.id == orgs.data[0].id
    ms = clerk.organization_memberships.list(organization_id=org.id, limit=10)
    assert ms.total_count >= 1
    assert ms.data[0].public_user_data.user_id.startswith("user_")


def check_jwks():
    jwks = clerk.jwks.get_jwks()
    key = jwks.keys[0]
    assert key.kid == info["kid"], key


CHECKS = [v for k, v in list(globals().items()) if k.startswith("check_")]


# Through the proxy: the app changes `server_url` and nothing else. The emulator-direct
# client is the ground truth; the emulator's counters show what the proxy spared it.
PROXY = os.environ.get("FRONTDESK_PROXY_URL")
proxied = Clerk(bearer_auth=SK, server_url=f"{PROXY}/v1") if PROXY else None
# Users neither this script nor the Node suites change.
P0, P1 = info["sample_user_ids"][3], info["sample_user_ids"][4]


def proxy_check_list_users_by_id():
    users = proxied.users.list(request={"user_id": [P0, P1, "user_unknown"]})
    assert sorted(u.id for u in users) == sorted([P0, P1]), [u.id for u in users]
    truth = clerk.users.list(request={"user_id": [P0, P1, "user_unknown"]})
    assert [u.model_dump() for u in users] == [u.model_dump() for u in truth]


def proxy_check_get_user():
    u = proxied.users.get(user_id=P0)
    assert u.id == P0
    assert u.email_addresses[0].id == u.primary_email_address_id
    assert u.model_dump() == clerk.users.get(user_id=P0).model_dump()
    # This SDK sends Clerk-API-Version 2025-11-10, not the version Frontdesk is
    # configured for (2026-05-12, @clerk/backend's): Clerk may shape a user differently
    # per version, so its reads are cached per version and path (the shared user cache
    # holds the configured version only). The look-up above filled that entry: the same
    # look-up again makes no upstream call.
    control("/reset", method="POST")
    again = proxied.users.get(user_id=P0)
    assert again.model_dump() == u.model_dump()
    stats = control("/stats")
    assert stats["total"] == 0, stats


def proxy_check_not_found_is_clerk_errors():
    try:
        proxied.users.get(user_id="user_doesnotexist")
    except models.ClerkErrors as e:
        assert e.data.errors[0].code == "resource_not_found", e.data
        return
    raise AssertionError("expected ClerkErrors")


PROXY_CHECKS = [v for k, v in list(globals().items()) if k.startswith("proxy_check_")]

if __name__ == "__main__":
    target = sys.argv[1] if len(sys.argv) > 1 else "emulator"
    assert target in ("emulator", "proxy"), f"unknown target {target}"
    assert target == "emulator" or PROXY, "FRONTDESK_PROXY_URL must be set"
    checks, label = (CHECKS, "python") if target == "emulator" else (PROXY_CHECKS, "python proxy")
    passed = failed = 0
    for i, check in enumerate(checks, 1):
        try:
            check()
            passed += 1
            print(f"ok {i} - {label} {check.__name__}")
        except Exception:  # noqa: BLE001 - report every failure, keep going
            failed += 1
            print(f"not ok {i} - {label} {check.__name__}")
            traceback.print_exc(file=sys.stdout)
    print(f"# pass {passed}")
    print(f"# fail {failed}")
    sys.exit(1 if failed else 0)
