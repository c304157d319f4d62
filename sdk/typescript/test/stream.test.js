// Streamed exec through the TypeScript SDK. Needs a sandbox whose agent answers: run by
// tests/integration/test_sdk_typescript.py, which sets FORKVM_TEST_SOCKET (the daemon) and
// FORKVM_TEST_SANDBOX (an agent-backed sandbox); skipped without them (node --test test/).
import assert from "node:assert/strict";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import path from "node:path";
import { test } from "node:test";

import { Client, GuestError, Sandbox } from "../index.js";

const socketPath = process.env.FORKVM_TEST_SOCKET;
const sandboxId = process.env.FORKVM_TEST_SANDBOX;
const skip = !socketPath || !sandboxId ? "needs FORKVM_TEST_SOCKET and FORKVM_TEST_SANDBOX" : false;

test("streamed exec: output while it runs, callbacks, errors, leaving early", { skip }, async () => {
  const client = new Client({ socketPath });
  const sb = await Sandbox.connect(sandboxId, { client });
  const t0 = Date.now();
  const seen = [];
  for await (const ev of sb.execStream("echo first; echo warn >&2; sleep 2; echo second; exit 3")) {
    seen.push([Date.now() - t0, ev]);
  }
  const exit = seen.at(-1)[1];
  assert.equal(exit.type, "exit");
  assert.equal(exit.result.exitCode, 3);
  const out = Buffer.concat(seen.filter(([, e]) => e.type === "stdout").map(([, e]) => e.data));
  const err = Buffer.concat(seen.filter(([, e]) => e.type === "stderr").map(([, e]) => e.data));
  assert.equal(out.toString(), "first\nsecond\n");
  assert.equal(err.toString(), "warn\n");
  const firstAt = seen.find(([, e]) => e.type === "stdout")[0];
  assert.ok(firstAt < 1500 && Date.now() - t0 >= 1900, `first at ${firstAt} ms`);

  const texts = [];
  const r = await sb.exec("printf 'caf\\303'; sleep 0.2; printf '\\251\\n'", { onStdout: (t) => texts.push(t) });
  assert.equal(texts.join(""), "caf\u00e9\n");
  assert.equal(r.stdout.toString("utf8"), "caf\u00e9\n");
  assert.equal(r.exitCode, 0);

  await assert.rejects(async () => { for await (const _ of sb.execStream(["/no/such/program"])) { /* none */ } },
    (e) => e instanceof GuestError && e.detail.includes("/no/such/program"));

  const p = sb.execStream("while read l; do echo got:$l; done; echo bye", { stdinOpen: true });
  await p.started();
  assert.match(p.execId, /^ex-[0-9a-f]{12}$/);
  const it = p[Symbol.asyncIterator]();
  await p.sendStdin("one\n");
  assert.equal((await it.next()).value.data.toString(), "got:one\n");
  await p.sendStdin(Buffer.from("two\n"), { eof: true });
  let rest = "";
  for (let r = await it.next(); !r.done; r = await it.next()) {
    if (r.value.type === "stdout") rest += r.value.data.toString();
    else assert.equal(r.value.result.exitCode, 0);
  }
  assert.equal(rest, "got:two\nbye\n");

  const dir = mkdtempSync("/tmp/fvs-");
  const pidfile = path.join(dir, "pid");
  for await (const ev of sb.execStream(`echo $$ > ${pidfile}; while :; do echo tick; sleep 0.05; done`)) {
    assert.equal(ev.type, "stdout");
    break; // leaving the loop ends the command
  }
  const pid = Number(readFileSync(pidfile, "utf8"));
  let gone = false;
  for (let i = 0; i < 300 && !gone; i++) {
    try {
      const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
      gone = ["Z", "X"].includes(stat.slice(stat.lastIndexOf(")") + 2, stat.lastIndexOf(")") + 3));
    } catch { gone = true; }
    if (!gone) await new Promise((res) => setTimeout(res, 50));
  }
  assert.ok(gone, `command ${pid} outlived its stream`);
  rmSync(dir, { recursive: true, force: true });
});
