"""A stand-in for Claude Code and GitHub Copilot CLI in non-interactive mode, for tests.

It accepts the real CLIs' flags (`claude -p PROMPT --mcp-config FILE --strict-mcp-config
--allowedTools ... --output-format json`; `copilot -p PROMPT -s --additional-mcp-config @FILE
--allow-tool ... --deny-tool ...`), starts the MCP server named in the configuration it is given,
and classifies the workflow's parked jobs over MCP with the official Python SDK: the real
protocol, a trivial brain. STANDIN_BEHAVIOUR=nothing makes it answer without deciding anything.
"""

import argparse
import asyncio
import json
import os
import re
import sys

from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client


def parse(flavor, argv):
    p = argparse.ArgumentParser(prog=flavor)
    if flavor == "claude":
        p.add_argument("-p", "--print", dest="print_mode", action="store_true")
        p.add_argument("prompt", nargs="?")
        p.add_argument("--mcp-config", required=True)
        p.add_argument("--strict-mcp-config", action="store_true")
        p.add_argument("--allowedTools", "--allowed-tools", dest="allowed", default="")
        p.add_argument("--output-format", default="text")
        p.add_argument("--permission-mode")
        p.add_argument("--model")
        a = p.parse_args(argv)
        if not a.print_mode or not a.prompt:
            p.error("non-interactive mode needs -p PROMPT")
        with open(a.mcp_config) as f:
            config = json.load(f)
        allowed = [t for t in re.split(r"[ ,]+", a.allowed) if t]
        return a.prompt, config, allowed
    p.add_argument("-p", "--prompt", required=True)
    p.add_argument("-s", "--silent", action="store_true")
    p.add_argument("--additional-mcp-config", required=True)
    p.add_argument("--allow-tool", action="append", default=[])
    p.add_argument("--deny-tool", action="append", default=[])
    p.add_argument("--no-color", action="store_true")
    p.add_argument("--model")
    a = p.parse_args(argv)
    raw = a.additional_mcp_config
    if raw.startswith("@"):
        with open(raw[1:]) as f:
            config = json.load(f)
    else:
        config = json.loads(raw)
    return a.prompt, config, [f"torc-ledger:{t}" for t in a.allow_tool]


def data(result):
    s = getattr(result, "structured_content", None)
    if s is None:
        s = getattr(result, "structuredContent", None)
    return s if s is not None else json.loads(result.content[0].text)


def decide(job):
    """A trivial brain: our own code's exceptions fail; anything else is retried."""
    tail = job.get("stderr_tail") or ""
    if re.search(r"(KeyError|ZeroDivisionError|TypeError|SyntaxError)", tail):
        return {"job_id": job["job_id"], "action": "fail", "reason": "an exception in the job's own code"}
    return {"job_id": job["job_id"], "action": "retry", "reason": "looks transient to the stand-in agent"}


async def run(flavor, prompt, config, allowed):
    m = re.search(r"workflow (\d+)", prompt)
    if not m:
        print(f"{flavor}: the prompt names no workflow", file=sys.stderr)
        return 2
    wf = int(m.group(1))
    server = config["mcpServers"]["torc-ledger"]
    expected_type = "local" if flavor == "copilot" else "stdio"
    if server.get("type") != expected_type:
        print(f"{flavor}: unexpected server type {server.get('type')}", file=sys.stderr)
        return 2
    if flavor == "claude" and "mcp__torc-ledger__classify_and_resolve_failures" not in allowed:
        print("claude: classify_and_resolve_failures is not allowed", file=sys.stderr)
        return 2
    params = StdioServerParameters(command=server["command"], args=server["args"], env=dict(os.environ))
    async with stdio_client(params) as (read, write):
        from mcp.types import Implementation
        info = Implementation(name=f"{flavor}-standin", version="1.0")
        async with ClientSession(read, write, client_info=info) as s:
            await s.initialize()
            tools = {t.name for t in (await s.list_tools()).tools}
            pend = data(await s.call_tool("list_pending_failed_jobs", {"workflow_id": wf}))
            if os.environ.get("STANDIN_BEHAVIOUR") == "nothing" or not pend["pending_failed_jobs"]:
                print(json.dumps({"type": "result", "result": "nothing decided"}))
                return 0
            items = [decide(j) for j in pend["pending_failed_jobs"]]
            dry = data(await s.call_tool("classify_and_resolve_failures",
                                         {"workflow_id": wf, "dry_run": True, "classifications": items}))
            if "apply_proposal" in tools:
                applied = data(await s.call_tool("apply_proposal", {"proposal_id": dry["proposal_id"]}))
                print(json.dumps({"type": "result", "result": f"applied {len(applied['results'])}"}))
            else:
                print(json.dumps({"type": "result", "result": f"proposed {dry['proposal_id']}"}))
    return 0


def main():
    flavor = sys.argv[1]
    prompt, config, allowed = parse(flavor, sys.argv[2:])
    sys.exit(asyncio.run(run(flavor, prompt, config, allowed)))


main()
