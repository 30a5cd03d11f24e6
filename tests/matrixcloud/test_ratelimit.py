"""Brute force: writes limited per client IP, or per credential once it authenticated
(shared on the bus), tool calls on a budget of their own, runtime heartbeats not counted;
failed sign-ins backed off per account; all 429 with Retry-After, all recover."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.test import RequestFactory
from rest_framework.test import APIClient

from accounts import throttle
from accounts.models import LoginThrottle
from matrixcloud.errors import RateLimited
from matrixcloud.lib import addresses, ratelimit
from tests import factories
from tests.factories import PASSWORD, actor_of, error

pytestmark = pytest.mark.django_db

cast = factories.cast
clock = factories.clock

LIMITED = error("rate limit exceeded — slow down and retry", 429)
BACKED_OFF = error("too many failed sign-ins for this account; retry later", 429)
WRITE = "/v1/auth/logout"  # an open write that costs nothing


def client(ip: str) -> APIClient:
    api = APIClient(REMOTE_ADDR=ip)
    api.default_format = "json"
    return api


def counted(subject: str, budget: str = ratelimit.WRITES) -> int:
    return ratelimit.counted(budget, subject)


def write(api: APIClient, **headers: str) -> Any:
    return api.post(WRITE, {}, **headers)


@pytest.fixture
def rpm(settings: Any) -> int:
    settings.MATRIX_RATE_LIMIT_RPM = 3
    return 3


# --- writes per IP ------------------------------------------------------------------


def test_the_write_after_the_limit_is_429_with_retry_after(api, clock, rpm):
    assert clock.now.second == 30  # half of the 60 s window is left
    assert [write(api).status_code for _ in range(rpm)] == [200] * rpm

    refused = write(api)

    assert refused.status_code == 429
    assert refused.json() == LIMITED
    assert refused["Retry-After"] == "31"
    assert counted("ip:127.0.0.1") == rpm + 1
    # Other writes are refused too, and before they do anything.
    signup = api.post("/v1/auth/signup", {"name": "N", "email": "n@x.test", "password": PASSWORD})
    assert (signup.status_code, signup.json()) == (429, LIMITED)


def test_refused_writes_count_too(api, clock, rpm, settings):
    """Guessing the operator token on gated writes is limited like any other write."""
    settings.MATRIX_API_TOKEN = "operator-token-for-rate-tests-0123456789"
    guesses = [
        api.post("/v1/jobs", {"type": "x"}, HTTP_AUTHORIZATION=f"Bearer guess-{n}").status_code
        for n in range(rpm)
    ]
    assert guesses == [401] * rpm
    assert api.post("/v1/jobs", {"type": "x"}).json() == LIMITED
    assert api.put("/v1/no-such-endpoint", {}).status_code == 429


def test_reads_are_never_limited(api, clock, rpm):
    for _ in range(rpm * 3):
        assert api.get("/v1/health").status_code == 200
        assert api.get("/v1/auth/me").status_code == 401
    assert [write(api).status_code for _ in range(rpm)] == [200] * rpm
    assert write(api).status_code == 429
    assert api.get("/v1/health").status_code == 200
    assert api.head("/v1/health").status_code == 200


def test_another_ip_is_unaffected(api, clock, rpm):
    for _ in range(rpm + 1):
        write(api)
    assert write(api).status_code == 429
    other = client("192.0.2.10")
    assert [write(other).status_code for _ in range(rpm)] == [200] * rpm
    assert write(other).status_code == 429


def test_a_new_window_recovers(api, clock, rpm):
    for _ in range(rpm):
        write(api)
    assert write(api).status_code == 429
    clock.advance(seconds=29)  # the last second of the window
    assert write(api).status_code == 429
    clock.advance(seconds=1)  # the next window
    assert [write(api).status_code for _ in range(rpm)] == [200] * rpm
    assert write(api).status_code == 429


def test_a_limit_of_zero_disables_the_limiter(api, clock, settings):
    settings.MATRIX_RATE_LIMIT_RPM = 0
    assert {write(api).status_code for _ in range(10)} == {200}
    assert counted("ip:127.0.0.1") == 0


def test_a_meter_counts_in_fixed_windows(clock):
    meter = ratelimit.Meter(ratelimit.WRITES, "ip:198.51.100.7", 2)
    now = clock.now
    for _ in range(2):
        ratelimit.meter_hit(meter, now=now)
    assert counted("ip:198.51.100.7") == 2
    with pytest.raises(RateLimited) as refused:
        ratelimit.meter_hit(meter, now=now + timedelta(seconds=10))
    assert refused.value.retry_after == 21
    ratelimit.meter_hit(meter, now=now + timedelta(seconds=30))  # the next window
    assert ratelimit.counted(ratelimit.WRITES, "ip:198.51.100.7", now + timedelta(seconds=30)) == 1


# --- per credential, tool calls, heartbeats ------------------------------------------

JOBS = "/v1/jobs"
CALL = "/v1/sandbox/sessions/sbx_missing/tools/call"


def job_post(api: APIClient, token: str) -> int:
    return api.post(JOBS, {"type": "no.such.type"}, **factories.bearer(token)).status_code


def test_a_proven_credential_has_its_own_budget_whatever_the_address(api, cast, clock, rpm):
    """The first write of a token is counted by address (not proven yet); from then on
    the token's writes are counted by the token, from any address."""
    token = factories.issue(cast.member)
    statuses = [job_post(api, token)]  # counted by 127.0.0.1, and proves the token
    statuses += [job_post(client(f"192.0.2.{n}"), token) for n in range(rpm)]
    assert statuses == [400] * (rpm + 1)
    assert job_post(client("192.0.2.99"), token) == 429
    assert counted(f"cred:{ratelimit.credential_digest('bearer', token)}") == rpm + 1
    assert counted("ip:127.0.0.1") == 1


def test_agents_behind_one_address_do_not_share_a_budget(api, cast, clock, rpm):
    """Each agent's first write is counted by the address, the rest by its token."""
    first, second = factories.issue(cast.member), factories.issue(cast.admin)
    assert [job_post(api, first) for _ in range(rpm + 1)] == [400] * (rpm + 1)
    assert job_post(api, first) == 429
    assert [job_post(api, second) for _ in range(rpm + 1)] == [400] * (rpm + 1)
    assert job_post(api, second) == 429
    assert write(api).status_code == 200  # anonymous: the address spent 2 of 3
    assert write(api).status_code == 429


def test_guessed_tokens_are_counted_by_the_guessers_address(api, cast, clock, rpm):
    """A new token per guess is no fresh budget: a credential that never authenticated
    is counted by the address, and a proven one that fails is forgotten."""
    guesses = [job_post(api, f"mxs_guess{n:060d}") for n in range(rpm)]
    assert guesses == [401] * rpm
    assert job_post(api, "mxs_guess-one-more") == 429
    token = factories.issue(cast.member)
    assert job_post(api, token) == 429  # not proven here yet: the address is spent


def test_a_cookie_that_never_signed_in_is_counted_by_address(api, clock, rpm, settings):
    for n in range(rpm):
        api.cookies[settings.SESSION_COOKIE_NAME] = f"made-up-session-{n}"
        assert write(api).status_code == 200
    api.cookies[settings.SESSION_COOKIE_NAME] = "made-up-session-last"
    assert write(api).status_code == 429


def test_tool_calls_have_a_budget_of_their_own(api, cast, clock, rpm, settings):
    settings.MATRIX_TOOL_CALL_RATE_LIMIT_RPM = 5
    token = factories.issue(cast.member)
    auth = factories.bearer(token)
    assert job_post(api, token) == 400  # proves the token (1 of the address's 3)
    calls = [api.post(CALL, {"name": "echo"}, **auth).status_code for _ in range(5)]
    assert calls == [404] * 5  # counted on the call budget, not the writes one
    refused = api.post(CALL, {"name": "echo"}, **auth)
    assert (refused.status_code, refused.json()) == (429, LIMITED)
    assert refused["Retry-After"] == "31"
    assert [job_post(api, token) for _ in range(rpm)] == [400] * rpm  # writes untouched
    assert job_post(api, token) == 429
    digest = ratelimit.credential_digest("bearer", token)
    assert counted(f"cred:{digest}", ratelimit.CALLS) == 6


def test_a_runtimes_heartbeats_are_not_counted_once_its_token_is_proven(api, cast, clock, rpm):
    from tests.runtimes.test_cloud_runtimes import beat, registered

    owner = factories.issue(cast.owner)
    _, runtime_token = registered(api, owner)  # a join token minted, then registered
    beats = [beat(api, runtime_token).status_code for _ in range(rpm * 5)]
    assert beats == [200] * (rpm * 5)
    # By address: the owner's first write, the registration and the first beat only.
    assert counted("ip:127.0.0.1") == 3
    assert write(api).status_code == 429


def test_a_wrong_runtime_token_is_counted_by_address(api, clock, rpm):
    from tests.runtimes.test_cloud_runtimes import beat

    statuses = [beat(api, f"{n:064x}").status_code for n in range(rpm + 1)]
    assert statuses == [401] * rpm + [429]


def test_without_a_bus_the_process_counts_for_itself(api, clock, rpm, settings):
    """A process started alone, without REDIS_URL (serve always has a bus)."""
    settings.REDIS_URL = ""
    assert [write(api).status_code for _ in range(rpm + 1)] == [200] * rpm + [429]
    assert counted("ip:127.0.0.1") == rpm + 1
    clock.advance(seconds=30)
    assert write(api).status_code == 200


def test_a_bus_that_is_down_does_not_refuse_writes(api, clock, rpm, settings):
    """The counts live on the bus; while it cannot be reached nothing is counted (and
    it is logged), rather than every write refused."""
    from matrixcloud.lib.bus import free_port

    settings.REDIS_URL = f"redis://127.0.0.1:{free_port()}/0"
    assert [write(api).status_code for _ in range(rpm + 2)] == [200] * (rpm + 2)


# --- X-Forwarded-For ----------------------------------------------------------------


def test_forwarded_for_is_ignored_from_an_untrusted_peer(api, clock, rpm, settings):
    settings.MATRIX_TRUSTED_PROXIES = []
    statuses = [
        write(api, HTTP_X_FORWARDED_FOR=f"203.0.113.{n}").status_code for n in range(rpm + 1)
    ]
    assert statuses == [200] * rpm + [429]
    assert counted("ip:127.0.0.1") == rpm + 1
    assert all(counted(f"ip:203.0.113.{n}") == 0 for n in range(rpm + 1))


def test_forwarded_for_is_ignored_when_the_peer_is_not_a_listed_proxy(clock, rpm, settings):
    settings.MATRIX_TRUSTED_PROXIES = ["10.0.0.0/8"]
    api = client("192.0.2.50")
    statuses = [
        write(api, HTTP_X_FORWARDED_FOR=f"203.0.113.{n}").status_code for n in range(rpm + 1)
    ]
    assert statuses == [200] * rpm + [429]


def test_forwarded_for_names_the_client_behind_a_trusted_proxy(api, clock, rpm, settings):
    settings.MATRIX_TRUSTED_PROXIES = ["127.0.0.1"]
    first = {"HTTP_X_FORWARDED_FOR": "203.0.113.1"}
    second = {"HTTP_X_FORWARDED_FOR": "203.0.113.2"}
    assert [write(api, **first).status_code for _ in range(rpm + 1)] == [200] * rpm + [429]
    assert write(api, **second).status_code == 200
    assert (counted("ip:203.0.113.1"), counted("ip:203.0.113.2")) == (rpm + 1, 1)
    assert counted("ip:127.0.0.1") == 0


@pytest.mark.parametrize(
    ("peer", "forwarded", "expected"),
    [
        ("10.0.0.5", "203.0.113.7", "203.0.113.7"),
        ("10.0.0.5", "203.0.113.7, 10.0.0.2", "203.0.113.7"),  # skip trusted hops
        ("10.0.0.5", "6.6.6.6, 203.0.113.7", "203.0.113.7"),  # a forged left entry loses
        ("10.0.0.5", "", "10.0.0.5"),
        ("192.0.2.1", "203.0.113.7", "192.0.2.1"),  # peer not trusted
        ("10.0.0.5", "10.0.0.9, 10.0.0.8", "10.0.0.9"),  # all trusted: the first
    ],
)
def test_client_ip(settings, peer, forwarded, expected):
    settings.MATRIX_TRUSTED_PROXIES = ["10.0.0.0/8"]
    headers = {"HTTP_X_FORWARDED_FOR": forwarded} if forwarded else {}
    request = RequestFactory().get("/", REMOTE_ADDR=peer, **headers)
    assert addresses.client_ip(request) == expected


# --- failed sign-ins per account ----------------------------------------------------


@pytest.fixture
def two_tries(settings: Any) -> int:
    settings.LOGIN_FAILURES_BEFORE_BACKOFF = 2
    return 2


def login(api: APIClient, email: str, password: str) -> Any:
    return api.post("/v1/auth/login", {"email": email, "password": password})


def test_failed_logins_back_off_the_account_then_recover(api, cast, clock, two_tries):
    email = "member@northwind.test"
    assert [login(api, email, "wrong guess 1").status_code for _ in range(two_tries)] == [401, 401]

    locked = login(client("192.0.2.77"), email, PASSWORD)  # right password, another IP
    assert locked.status_code == 429
    assert locked.json() == BACKED_OFF
    assert locked["Retry-After"] == "31"

    clock.advance(seconds=29)
    assert login(api, email, PASSWORD).status_code == 429
    clock.advance(seconds=1)
    assert login(api, email, PASSWORD).status_code == 200
    assert not LoginThrottle.objects.filter(email=email).exists()  # success resets
    assert login(api, email, "wrong guess 2").status_code == 401
    assert login(api, email, PASSWORD).status_code == 200  # one failure is no back-off


def test_unknown_accounts_back_off_alike(api, cast, clock, two_tries):
    known = [login(api, "member@northwind.test", "wrong guess").status_code for _ in range(2)]
    unknown = [login(api, "ghost@northwind.test", "wrong guess").status_code for _ in range(2)]
    assert known == unknown == [401, 401]
    a = login(api, "member@northwind.test", "wrong guess")
    b = login(api, "ghost@northwind.test", "wrong guess")
    assert (a.status_code, a.json(), a["Retry-After"]) == (
        b.status_code,
        b.json(),
        b["Retry-After"],
    )
    assert a.json() == BACKED_OFF


def test_each_failure_past_the_allowance_doubles_the_wait(cast, clock, two_tries):
    email = "admin@northwind.test"
    for _ in range(two_tries):
        throttle.login_failed(email)

    waits = []
    for _ in range(3):
        with pytest.raises(RateLimited) as backed_off:
            throttle.login_check(email)
        waits.append(backed_off.value.retry_after)
        clock.advance(seconds=backed_off.value.retry_after)
        throttle.login_check(email)  # the wait is over
        throttle.login_failed(email)
    assert waits == [31, 61, 121]


def test_the_back_off_is_capped(cast, clock, two_tries):
    email = "admin@northwind.test"
    for _ in range(two_tries + 20):
        throttle.login_failed(email)
    with pytest.raises(RateLimited) as backed_off:
        throttle.login_check(email)
    assert backed_off.value.retry_after == throttle.BACKOFF_MAX_SECONDS + 1


def test_old_failures_are_forgotten(cast, clock, two_tries):
    email = "admin@northwind.test"
    throttle.login_failed(email)
    clock.advance(hours=1, seconds=1)
    throttle.login_failed(email)
    throttle.login_check(email)  # one recent failure: no back-off
    assert LoginThrottle.objects.get(email=email).failures == 1


def test_a_password_reset_lifts_the_back_off(api, cast, clock, two_tries):
    from accounts.models import PasswordReset
    from accounts.services.passwords import password_reset_complete, password_reset_issue
    from matrixcloud.lib.tokens import secret_hash

    email = "member@northwind.test"
    for _ in range(two_tries):
        login(api, email, "wrong guess 3")
    assert login(api, email, PASSWORD).status_code == 429
    password_reset_issue(email=email)
    reset = PasswordReset.objects.get(user=cast.member, used_at__isnull=True)
    # The link is only in the email; mint a known one on the row to use it here.
    secret = "mxpr_" + "ab" * 32
    PasswordReset.objects.filter(pk=reset.pk).update(token_hash=secret_hash(secret))
    password_reset_complete(token=secret, password="a brand new passphrase 9")

    assert login(api, email, "a brand new passphrase 9").status_code == 200


def test_accepting_an_invitation_as_an_existing_account_is_backed_off(api, cast, clock, two_tries):
    from accounts.services import invitation_create

    _, secret = invitation_create(
        email="member@northwind.test", actor=actor_of(cast.other_workspace, name="operator")
    )
    accept = {"token": secret, "password": "wrong guess 4"}
    tries = [api.post("/v1/auth/invitations/accept", accept).status_code for _ in range(2)]
    assert tries == [401, 401]
    locked = api.post("/v1/auth/invitations/accept", {"token": secret, "password": PASSWORD})
    assert locked.status_code == 429
    assert locked.json() == BACKED_OFF
