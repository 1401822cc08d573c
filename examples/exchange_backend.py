"""A backend that calls GitHub as one of keyward's users, without storing their token.

It is registered with keyward once (`keyward clients add my-backend --providers github
--scopes "repo read:user"`), and keyward serves `keyward serve --http` with `[exchange]
enabled = true`. When it must act for a user, it presents that user's keyward credential (their
API key) at keyward's RFC 8693 token-exchange endpoint and gets the user's GitHub access token,
refreshed by keyward if it was about to expire. It keeps the token no longer than `expires_in`,
and never logs it.

Configuration (environment): KEYWARD_URL (e.g. http://127.0.0.1:8787), KEYWARD_CLIENT_ID,
KEYWARD_CLIENT_SECRET, USER_API_KEY (the user's key; a real backend receives it with the
request it serves), GITHUB_API (default https://api.github.com).
"""

import os
import sys
import time

import httpx

GRANT = "urn:ietf:params:oauth:grant-type:token-exchange"
ACCESS_TOKEN = "urn:ietf:params:oauth:token-type:access_token"


class Refused(Exception):
    """keyward refused the exchange: `error` is the RFC 6749 / RFC 8693 code."""

    def __init__(self, status, error, description):
        super().__init__(f"{error} (HTTP {status}): {description}")
        self.error = error


class KeywardTokens:
    """Provider tokens from keyward's token-exchange endpoint, each kept until it expires."""

    def __init__(self, url, client_id, client_secret):
        self.http = httpx.Client(base_url=url, auth=(client_id, client_secret), timeout=30)
        self.cache = {}

    def token(self, user_api_key, provider, account="default"):
        key = (user_api_key, provider, account)
        cached = self.cache.get(key)
        if cached and cached[1] > time.monotonic():
            return cached[0]
        response = self.http.post(
            "/oauth/token",
            data={
                "grant_type": GRANT,
                "subject_token": user_api_key,
                "subject_token_type": ACCESS_TOKEN,
                "audience": provider,
                "account": account,
            },
        )
        body = response.json()
        if response.status_code != 200:
            raise Refused(response.status_code, body.get("error"), body.get("error_description"))
        # Come back a little early rather than present an expired token.
        self.cache[key] = (body["access_token"], time.monotonic() + body["expires_in"] * 0.9)
        return body["access_token"]


def main():
    tokens = KeywardTokens(
        os.environ["KEYWARD_URL"],
        os.environ["KEYWARD_CLIENT_ID"],
        os.environ["KEYWARD_CLIENT_SECRET"],
    )
    github = os.environ.get("GITHUB_API", "https://api.github.com")
    try:
        token = tokens.token(os.environ["USER_API_KEY"], "github")
    except Refused as refused:
        print(f"keyward refused the exchange: {refused}", file=sys.stderr)
        return 1
    me = httpx.get(
        f"{github}/user",
        headers={"Authorization": f"Bearer {token}", "Accept": "application/vnd.github+json"},
        timeout=30,
    )
    me.raise_for_status()
    print(f"signed in to GitHub as {me.json()['login']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
