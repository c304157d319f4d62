"""eval in a Linux guest (docs/AGENT.md): the agent's warm Python interpreter is a process in
guest memory, so every branch child inherits it, state and all, without restarting it, and
each child's later changes stay its own. Needs python3 in the guest image: the only skip is
the agent saying python3 is not installed."""
import pytest

STRATEGIES = ["full", "diff", "live", "cow"]
COUNT = 3


def evaluate(g, code, **fields):
    """The eval reply of code in guest g (skips the test when the guest has no python3)."""
    with g.agent() as a:
        r = a.request("eval", code=code, lang="python", timeout_ms=120000, **fields)
    if not r["ok"] and "is not installed in the guest" in r.get("error", ""):
        pytest.skip(f"{g.name}: {r['error']}")
    assert r["ok"], f"{g.name}: eval {code!r}: {r}"
    assert r["error"] is None, f"{g.name}: eval {code!r}: {r['error']}"
    return r


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_branch_children_inherit_the_warm_interpreter(env, strategy):
    src = env.boot("src", backing="memfd" if strategy == "live" else "anon")
    r = evaluate(src, "import decimal; n = 7")
    assert r["started"] is True
    pid = evaluate(src, "import os; os.getpid()")["result"]
    _, kids = env.branch(src, strategy, COUNT)
    assert len(kids) == COUNT
    for k in kids:
        r = evaluate(k, "n")
        assert r["result"] == "7", f"{k.name}: {r}"
        # The same interpreter, not a new one: the state came with the VM's memory.
        assert r["started"] is False and r["state_lost"] is False, f"{k.name}: {r}"
        assert evaluate(k, "os.getpid()")["result"] == pid
        assert evaluate(k, "str(decimal.Decimal(n) / 2)")["result"] == "'3.5'"
    assert evaluate(kids[0], "n = 8; n")["result"] == "8"
    for k in kids[1:]:
        assert evaluate(k, "n")["result"] == "7", f"{k.name} sees its sibling's change"
    assert evaluate(src, "n")["result"] == "7", "the source sees a child's change"
    assert evaluate(kids[0], "n")["result"] == "8"
    # Contexts are per interpreter: a new one in a child is fresh, and only there.
    r = evaluate(kids[1], "'n' in dir()", context="other")
    assert r["started"] is True and r["result"] == "False"
