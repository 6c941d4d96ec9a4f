"""Drive `torc-ledger mcp` over stdio with the official Python MCP SDK (PyPI `mcp`).

Usage: python3 stdio_client.py BIN WORKDIR

WORKDIR holds a ledger whose workflow 1 has jobs 2 and 3 in pending_failed (the demo). The
script checks, through MCP and then through the CLI: the tool list per mode, status, the pending
list, a dry run, applying by proposal, history, undo, and a refused apply in propose mode.
Exits non-zero with a message on the first failed check.
"""

import asyncio
import json
import subprocess
import sys

from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client

BIN, WORK = sys.argv[1], sys.argv[2]


def check(cond, msg):
    if not cond:
        print(f"FAILED: {msg}", file=sys.stderr)
        sys.exit(1)


def cli(*args):
    out = subprocess.run([BIN, "-f", "json", *args], cwd=WORK, capture_output=True, text=True)
    check(out.returncode == 0, f"torc-ledger {' '.join(args)} exited {out.returncode}: {out.stderr}")
    return json.loads(out.stdout)


def data(result):
    """The structured answer of a tool call (or the JSON in its text)."""
    structured = getattr(result, "structured_content", None)
    if structured is None:
        structured = getattr(result, "structuredContent", None)
    if structured is not None:
        return structured
    return json.loads(result.content[0].text)


def is_error(result):
    v = getattr(result, "is_error", None)
    return v if v is not None else getattr(result, "isError", False)


async def session(mode, fn):
    params = StdioServerParameters(command=BIN, args=["mcp", "--mode", mode], cwd=WORK)
    async with stdio_client(params) as (read, write):
        async with ClientSession(read, write) as s:
            await s.initialize()
            return await fn(s)


async def propose_mode(s):
    tools = {t.name for t in (await s.list_tools()).tools}
    for name in ["get_workflow_status", "list_pending_failed_jobs", "classify_and_resolve_failures",
                 "get_job_details", "get_job_logs", "list_jobs_by_status", "list_failed_jobs",
                 "get_decision_history"]:
        check(name in tools, f"propose mode lists {name}: {sorted(tools)}")
    check("apply_proposal" not in tools and "undo_decision" not in tools,
          f"propose mode hides apply tools: {sorted(tools)}")

    st = data(await s.call_tool("get_workflow_status", {"workflow_id": 1}))
    check(st["total_jobs"] == 5 and st["job_counts_by_status"]["pending_failed"] == 2, f"status {st}")

    pend = data(await s.call_tool("list_pending_failed_jobs", {"workflow_id": 1}))
    check(pend["pending_failed_count"] == 2, f"pending {pend}")
    train = next(j for j in pend["pending_failed_jobs"] if j["name"] == "train")
    check("NCCL" in train["stderr_tail"], f"stderr tail {train}")
    check("guidance" in pend and "retry" in pend["guidance"], "guidance present")

    # Applying is refused in propose mode, and says what to do instead.
    r = await s.call_tool("classify_and_resolve_failures", {
        "workflow_id": 1, "dry_run": False,
        "classifications": [{"job_id": 2, "action": "retry", "reason": "NCCL transient"}]})
    check(is_error(r), "apply refused in propose mode")
    check("dry_run: true" in data(r)["error"], f"refusal teaches: {data(r)}")
    r = await s.call_tool("apply_proposal", {"proposal_id": 1})
    check(is_error(r), "apply_proposal is not available in propose mode")

    dry = data(await s.call_tool("classify_and_resolve_failures", {
        "workflow_id": 1, "dry_run": True,
        "classifications": [{"job_id": 2, "action": "retry", "memory": "1g", "reason": "NCCL transient"}]}))
    check(dry["dry_run"] is True and dry["results"][0]["status"] == "would_apply", f"dry run {dry}")
    return dry["proposal_id"]


async def apply_mode(s, proposal_id):
    tools = {t.name for t in (await s.list_tools()).tools}
    check({"apply_proposal", "undo_decision"} <= tools, f"apply mode lists all tools: {sorted(tools)}")
    applied = data(await s.call_tool("apply_proposal", {"proposal_id": proposal_id}))
    check(applied["applied"] is True and applied["seqs"], f"applied {applied}")
    # A person at the CLI while the agent holds the server open: same ledger, no lock errors.
    jobs = {j["name"]: j["status"] for j in cli("jobs", "list", "1")["items"]}
    check(jobs["train"] == "ready", f"CLI sees the agent's apply while the server runs: {jobs}")
    again = await s.call_tool("apply_proposal", {"proposal_id": proposal_id})
    check(is_error(again) and "already applied" in data(again)["error"], f"second apply refused {data(again)}")

    fail = data(await s.call_tool("classify_and_resolve_failures", {
        "workflow_id": 1, "dry_run": False,
        "classifications": [{"job_id": 3, "action": "fail", "reason": "KeyError: a code bug"}]}))
    check(fail["results"][0]["status"] == "applied", f"fail applied {fail}")

    hist = data(await s.call_tool("get_decision_history", {"workflow_id": 1}))
    check(hist["count"] == 2, f"history {hist}")
    first = hist["decisions"][0]
    check(first["proposal_id"] == proposal_id, f"from proposal {first}")
    check(first["actor"].startswith("agent:python-sdk-test"), f"actor is the MCP client {first}")

    undo = data(await s.call_tool("undo_decision", {"seq": fail["seqs"][0]}))
    check(undo["seqs"], f"undo {undo}")

    bad = await s.call_tool("classify_and_resolve_failures", {
        "workflow_id": 1, "dry_run": False,
        "classifications": [{"job_id": 3, "action": "fail", "reason": "x"},
                            {"job_id": 999, "action": "explode"}]})
    results = data(bad)["results"]
    check(is_error(bad) and results[0]["status"] == "skipped" and results[1]["status"] == "error",
          f"per-item refusal {results}")
    return fail["seqs"][0]


async def main():
    proposal_id = await session("propose", propose_mode)
    # Name the client so the actor check above is meaningful.
    from mcp.types import Implementation
    import mcp.client.session as cs
    orig = cs.ClientSession.__init__

    def named(self, *a, **kw):
        kw["client_info"] = Implementation(name="python-sdk-test", version="1.0")
        orig(self, *a, **kw)

    cs.ClientSession.__init__ = named
    await session("apply", lambda s: apply_mode(s, proposal_id))

    # Checked through the CLI: the retry applied, the fail undone, all recorded with its actor.
    train = cli("jobs", "get", "2")
    check(train["status"] == "ready" and train["memory_bytes"] == 1 << 30, f"train via CLI {train}")
    validate = cli("jobs", "get", "3")
    check(validate["status"] == "pending_failed", f"validate back to pending_failed {validate}")
    log = cli("log", "-n", "200")
    actors = {e["actor"]["agent"]["name"] for e in log["items"] if "agent" in e["actor"]}
    check("python-sdk-test" in actors, f"agent actor recorded: {actors}")
    check(cli("replay", "--verify")["chain_ok"] is True, "chain ok")
    print("python mcp client: all checks passed")


asyncio.run(main())
