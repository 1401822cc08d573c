"""Drive keyward with the official Python MCP SDK 2.x over protocol revision 2026-07-28.

Usage (normally through `tests/interop/run.sh sdk2 ...`, which provides the SDK):

    python_client_2026.py stdio MODE KEYWARD_BIN HOME   spawn `KEYWARD_BIN --home HOME serve`
    python_client_2026.py http MODE URL API_KEY         Streamable HTTP at URL (…/mcp)
    python_client_2026.py oauth MODE URL CLIENT_ID      the same, signed in with the SDK's
                                                        OAuthClientProvider: from the 401 through
                                                        RFC 9728 metadata to the identity provider

MODE is the SDK's `mode=`: `2026-07-28` (adopt the revision directly, no probe) or `auto` (probe
`server/discover`, fall back to `initialize` on servers that do not answer it). Either way the
connection must end up on 2026-07-28: stateless, no session.

Environment: EXPECT_LOGIN — the GitHub login the connection of the session's user answers with.
Over stdio the script also listens for `tools/list_changed` (`subscriptions/listen`) while it
imports a Slack connection with the real CLI, and checks the new tools are listed.
"""

import asyncio
import json
import os
import subprocess
import sys

import httpx2
from mcp.client import Client
from mcp.client.stdio import StdioServerParameters
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.subscriptions import ToolsListChanged


def check(condition, message):
    if not condition:
        raise AssertionError(message)


def step(text):
    print(f"  {text}", file=sys.stderr, flush=True)


async def exercise(client, transport, mode):
    expect_login = os.environ["EXPECT_LOGIN"]
    label = f"{transport} mode={mode}"
    check(client.protocol_version == "2026-07-28", f"{label}: version {client.protocol_version}")
    if mode == "auto":
        # What `server/discover` answered (a pinned mode adopts the revision without asking).
        check(client.server_info is not None and client.server_info.name == "keyward", f"server info: {client.server_info}")
        tools_caps = client.server_capabilities.tools
        check(tools_caps is not None and tools_caps.list_changed is True, f"tools.listChanged: {tools_caps}")

    step(f"{label}: tools/list")
    listed = await client.list_tools()
    names = [t.name for t in listed.tools]
    check("github_get_me" in names, f"github_get_me listed: {names}")
    check(listed.ttl_ms == 10000, f"ttlMs: {listed.ttl_ms}")
    check(listed.cache_scope == "private", f"cacheScope: {listed.cache_scope}")
    issue_tool = next(t for t in listed.tools if t.name == "github_get_issue")
    check(issue_tool.annotations.read_only_hint is True, "readOnlyHint")
    check(issue_tool.meta["keyward/provider"] == "github", f"_meta: {issue_tool.meta}")
    check(issue_tool.input_schema["required"] == ["owner", "repo", "number"], "schema")

    step(f"{label}: tools/call")
    me = await client.call_tool("github_get_me", {})
    check(not me.is_error, f"github_get_me failed: {me.content}")
    check(me.result_type == "complete", f"resultType: {me.result_type}")
    check(me.structured_content["login"] == expect_login, f"login: {me.structured_content}")

    issue = await client.call_tool("github_get_issue", {"owner": "octo", "repo": "seen-by", "number": 5})
    check(not issue.is_error, f"github_get_issue failed: {issue.content}")
    title = issue.structured_content["title"]
    check(title == f"octo/seen-by#5 seen by {expect_login}", f"title: {title}")

    bad = await client.call_tool("github_get_issue", {"owner": "octo"})
    check(bad.is_error, "missing arguments are an error result")
    check("repo" in bad.content[0].text, f"the error names the argument: {bad.content}")

    step(f"{label}: 20 concurrent calls")
    results = await asyncio.gather(
        *[
            client.call_tool("github_get_issue", {"owner": "octo", "repo": "seen-by", "number": n})
            for n in range(1, 21)
        ]
    )
    for n, result in zip(range(1, 21), results):
        check(not result.is_error, f"call {n}: {result.content}")
        check(result.structured_content["number"] == n, f"call {n}: {result.structured_content}")


async def listen_for_a_new_connection(client, keyward_bin, home):
    """`subscriptions/listen` hears a Slack connection the CLI adds; the list then has it."""
    step("stdio: subscriptions/listen while the CLI imports a Slack connection")
    before = await client.list_tools()
    check(not any(t.name.startswith("slack_") for t in before.tools), "no Slack tools yet")
    async with client.listen(tools_list_changed=True) as subscription:
        token = {"access_token": "xoxp-interop", "token_type": "bearer", "scope": "chat:write"}
        env = {k: v for k, v in os.environ.items() if k not in ("KEYWARD_HOME", "KEYWARD_MASTER_KEY")}
        done = await asyncio.to_thread(
            subprocess.run,
            [keyward_bin, "--home", home, "import", "slack"],
            input=json.dumps(token),
            capture_output=True,
            text=True,
            env=env,
        )
        check(done.returncode == 0, f"keyward import slack: {done.stderr}")
        async for event in subscription:
            check(isinstance(event, ToolsListChanged), f"event: {event}")
            break
    after = await client.list_tools()
    check(any(t.name == "slack_post_message" for t in after.tools), "Slack tools listed after the change")


class MemoryStorage:
    """The SDK's TokenStorage, in memory, with the client pre-registered at the identity provider
    (so no dynamic client registration is needed)."""

    def __init__(self, client_info):
        self.tokens = None
        self.client_info = client_info

    async def get_tokens(self):
        return self.tokens

    async def set_tokens(self, tokens):
        self.tokens = tokens

    async def get_client_info(self):
        return self.client_info

    async def set_client_info(self, client_info):
        self.client_info = client_info


def oauth_provider(url, client_id):
    """An OAuthClientProvider whose "browser" follows the identity provider's redirect (the test
    issuer signs the user in without a page) and hands the code back."""
    from urllib.parse import parse_qs, urlparse

    from mcp.client.auth import OAuthClientProvider
    from mcp.shared.auth import AuthorizationCodeResult, OAuthClientInformationFull, OAuthClientMetadata

    redirect_uri = "http://127.0.0.1:9/callback"
    metadata = OAuthClientMetadata(
        redirect_uris=[redirect_uri],
        client_name="keyward interop",
        grant_types=["authorization_code"],
        response_types=["code"],
        token_endpoint_auth_method="none",
    )
    info = OAuthClientInformationFull(client_id=client_id, **metadata.model_dump(exclude_none=True))
    answer = {}

    async def redirect_handler(authorization_url):
        step(f"oauth: the browser opens {urlparse(authorization_url).path} at the identity provider")
        query = parse_qs(urlparse(authorization_url).query)
        check(query.get("resource") == [url], f"RFC 8707 resource: {query.get('resource')}")
        check(query.get("code_challenge_method") == ["S256"], "PKCE S256")
        async with httpx2.AsyncClient(follow_redirects=False, timeout=30) as browser:
            response = await browser.get(authorization_url)
        check(response.status_code in (302, 303), f"the identity provider redirects: {response.status_code}")
        back = parse_qs(urlparse(response.headers["location"]).query)
        answer["code"] = back["code"][0]
        answer["state"] = back.get("state", [None])[0]

    async def callback_handler():
        return AuthorizationCodeResult(code=answer["code"], state=answer["state"])

    return OAuthClientProvider(
        server_url=url,
        client_metadata=metadata,
        storage=MemoryStorage(info),
        redirect_handler=redirect_handler,
        callback_handler=callback_handler,
    )


async def main(argv):
    if len(argv) != 5 or argv[1] not in ("stdio", "http", "oauth") or argv[2] not in ("2026-07-28", "auto"):
        print(__doc__, file=sys.stderr)
        return 2
    transport, mode = argv[1], argv[2]
    if transport == "stdio":
        keyward_bin, home = argv[3], argv[4]
        params = StdioServerParameters(
            command=keyward_bin,
            args=["--home", home, "serve"],
            env={**os.environ, "RUST_LOG": os.environ.get("RUST_LOG", "info")},
        )
        async with Client(params, mode=mode) as client:
            await asyncio.wait_for(exercise(client, transport, mode), timeout=60)
            if os.environ.get("LISTEN") == "1":
                await asyncio.wait_for(listen_for_a_new_connection(client, keyward_bin, home), timeout=60)
    elif transport == "oauth":
        url, client_id = argv[3], argv[4]
        provider = oauth_provider(url, client_id)
        async with httpx2.AsyncClient(auth=provider, timeout=30) as http:
            async with Client(streamable_http_client(url, http_client=http), mode=mode) as client:
                await asyncio.wait_for(exercise(client, transport, mode), timeout=60)
        tokens = provider.context.storage.tokens
        check(tokens is not None and tokens.access_token, "the SDK holds the identity provider's token")
    else:
        url, key = argv[3], argv[4]
        async with httpx2.AsyncClient(headers={"Authorization": f"Bearer {key}"}, timeout=30) as http:
            async with Client(streamable_http_client(url, http_client=http), mode=mode) as client:
                await asyncio.wait_for(exercise(client, transport, mode), timeout=60)
    print(f"python MCP SDK 2.x over {transport} (mode={mode}): ok")
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main(sys.argv)))
