"""Drive keyward with the official Python MCP SDK and check what it answers.

Usage (normally through tests/interop/run.sh, which provides the SDK):

    python_client.py stdio KEYWARD_BIN HOME   spawn `KEYWARD_BIN --home HOME serve`
    python_client.py http URL API_KEY         Streamable HTTP at URL (…/mcp)
    python_client.py sse URL API_KEY          legacy HTTP+SSE at URL (…/sse)

Environment: EXPECT_LOGIN — the GitHub login the connection of the session's user answers with.
The script initializes, lists tools, calls tools against the upstream keyward is configured
with, and checks the results; it exits non-zero (with the reason) on the first mismatch.
"""

import asyncio
import os
import sys

from mcp import ClientSession, StdioServerParameters
from mcp.client.sse import sse_client
from mcp.client.stdio import stdio_client


def check(condition, message):
    if not condition:
        raise AssertionError(message)


def step(text):
    print(f"  {text}", file=sys.stderr, flush=True)


async def exercise(read, write, mode):
    await asyncio.wait_for(run_session(read, write, mode), timeout=60)
    print(f"python MCP SDK over {mode}: ok")


async def run_session(read, write, mode):
    expect_login = os.environ["EXPECT_LOGIN"]
    step(f"{mode}: initialize")
    async with ClientSession(read, write) as session:
        init = await session.initialize()
        check(init.serverInfo.name == "keyward", f"server name: {init.serverInfo.name}")
        check(init.capabilities.tools is not None, "tools capability")
        check(init.capabilities.tools.listChanged is True, "tools.listChanged")

        step(f"{mode}: tools/list")
        listed = await session.list_tools()
        names = [t.name for t in listed.tools]
        check("github_get_me" in names, f"github_get_me listed: {names}")
        issue_tool = next(t for t in listed.tools if t.name == "github_get_issue")
        check(issue_tool.annotations.readOnlyHint is True, "readOnlyHint")
        # Left out: the MCP default (true); keyward sends only hints that differ from it.
        check(issue_tool.annotations.openWorldHint in (None, True), "openWorldHint")
        check(issue_tool.meta["keyward/provider"] == "github", f"_meta: {issue_tool.meta}")
        check(issue_tool.meta["keyward/scopes"] == ["repo"], f"_meta: {issue_tool.meta}")
        check(issue_tool.inputSchema["required"] == ["owner", "repo", "number"], "schema")

        step(f"{mode}: tools/call")
        me = await session.call_tool("github_get_me", {})
        check(not me.isError, f"github_get_me failed: {me.content}")
        check(me.structuredContent["login"] == expect_login, f"login: {me.structuredContent}")
        check(me.content[0].type == "text" and expect_login in me.content[0].text, "text")

        issue = await session.call_tool(
            "github_get_issue", {"owner": "octo", "repo": "seen-by", "number": 5}
        )
        check(not issue.isError, f"github_get_issue failed: {issue.content}")
        title = issue.structuredContent["title"]
        check(title == f"octo/seen-by#5 seen by {expect_login}", f"title: {title}")

        bad = await session.call_tool("github_get_issue", {"owner": "octo"})
        check(bad.isError, "missing arguments are an error result")
        check("repo" in bad.content[0].text, f"the error names the argument: {bad.content}")

        # Several calls in flight at once on one session.
        step(f"{mode}: 20 concurrent calls")
        results = await asyncio.gather(
            *[
                session.call_tool(
                    "github_get_issue", {"owner": "octo", "repo": "seen-by", "number": n}
                )
                for n in range(1, 21)
            ]
        )
        for n, result in zip(range(1, 21), results):
            check(not result.isError, f"call {n}: {result.content}")
            check(result.structuredContent["number"] == n, f"call {n}: {result.structuredContent}")


async def main(argv):
    if len(argv) != 4 or argv[1] not in ("stdio", "http", "sse"):
        print(__doc__, file=sys.stderr)
        return 2
    mode = argv[1]
    if mode == "stdio":
        params = StdioServerParameters(
            command=argv[2],
            args=["--home", argv[3], "serve"],
            env={**os.environ, "RUST_LOG": os.environ.get("RUST_LOG", "info")},
        )
        async with stdio_client(params) as (read, write):
            await exercise(read, write, mode)
    elif mode == "http":
        headers = {"Authorization": f"Bearer {argv[3]}"}
        try:
            import httpx
            from mcp.client.streamable_http import streamable_http_client

            async with httpx.AsyncClient(headers=headers, timeout=30) as http:
                async with streamable_http_client(argv[2], http_client=http) as (read, write, _):
                    await exercise(read, write, mode)
        except ImportError:
            from mcp.client.streamable_http import streamablehttp_client

            async with streamablehttp_client(argv[2], headers=headers) as (read, write, _):
                await exercise(read, write, mode)
    else:
        headers = {"Authorization": f"Bearer {argv[3]}"}
        async with sse_client(argv[2], headers=headers) as (read, write):
            await exercise(read, write, mode)
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main(sys.argv)))
