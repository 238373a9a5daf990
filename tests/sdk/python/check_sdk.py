"""The official clerk-backend-api Python SDK against the Frontdesk Clerk emulator.

The SDK validates responses strictly (pydantic models generated from Clerk's OpenAPI
spec), so any missing required field or wrong type in the emulator fails here.
Run by ../run.sh with FRONTDESK_EMULATOR_URL and CLERK_SECRET_KEY set.
"""

import json
import os
import sys
import traceback
import urllib.request

from clerk_backend_api import Clerk, models

API = os.environ["FRONTDESK_EMULATOR_URL"]
SK = os.environ["CLERK_SECRET_KEY"]


def control(path):
    with urllib.request.urlopen(f"{API}/__emulator{path}") as r:
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

if __name__ == "__main__":
    passed = failed = 0
    for i, check in enumerate(CHECKS, 1):
        try:
            check()
            passed += 1
            print(f"ok {i} - python {check.__name__}")
        except Exception:  # noqa: BLE001 - report every failure, keep going
            failed += 1
            print(f"not ok {i} - python {check.__name__}")
            traceback.print_exc(file=sys.stdout)
    print(f"# pass {passed}")
    print(f"# fail {failed}")
    sys.exit(1 if failed else 0)
