"""Talk to `torc-ledger mcp --http` with the Python MCP SDK's streamable HTTP client.

Usage: python3 http_client.py URL   (workflow 1 of the ledger has 2 pending_failed jobs)
"""

import asyncio
import json
import sys

from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client


def data(result):
    structured = getattr(result, "structured_content", None)
    if structured is None:
        structured = getattr(result, "structuredContent", None)
    return structured if structured is not None else json.loads(result.content[0].text)


async def main(url):
    async with streamable_http_client(url) as streams:
        read, write = streams[0], streams[1]
        async with ClientSession(read, write) as s:
            await s.initialize()
            tools = {t.name for t in (await s.list_tools()).tools}
            assert "list_pending_failed_jobs" in tools, tools
            assert "apply_proposal" not in tools, "default mode is propose"
            pend = data(await s.call_tool("list_pending_failed_jobs", {"workflow_id": 1}))
            assert pend["pending_failed_count"] == 2, pend
            dry = data(await s.call_tool("classify_and_resolve_failures", {
                "workflow_id": 1,
                "classifications": [{"job_id": 2, "action": "retry", "reason": "over http"}]}))
            assert dry["results"][0]["status"] == "would_apply", dry
    print("http client: all checks passed")


asyncio.run(main(sys.argv[1]))
