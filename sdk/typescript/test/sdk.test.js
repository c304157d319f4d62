// The TypeScript/JS SDK against a real forkvmd with the probe guest: the same scenario as the
// Python SDK's test (tests/integration/test_daemon.py::test_python_sdk_scenario). Run by
// tests/integration/test_sdk_typescript.py (FORKVM_BUILD picks the build).
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { mkdtempSync, rmSync, readFileSync } from "node:fs";
import path from "node:path";
import { test } from "node:test";
import { fileURLToPath } from "node:url";

import { BadRequest, Client, Conflict, NotFound, Sandbox, Unavailable } from "../index.js";

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../../..");
const forkvm = path.join(root, process.env.FORKVM_BUILD ?? "build", "forkvm");

async function startDaemon() {
  const state = mkdtempSync("/tmp/fvt-");
  const proc = spawn(forkvm, ["daemon", "--state-dir", state, "--ready-fd", "3"],
    { stdio: ["ignore", "inherit", "inherit", "pipe"] });
  await new Promise((resolve, reject) => {
    proc.stdio[3].once("data", resolve);
    proc.once("exit", (code) => reject(new Error(`forkvm daemon exited ${code}`)));
  });
  return { state, proc, client: new Client({ socketPath: path.join(state, "api.sock") }) };
}

async function stopDaemon(d) {
  for (const sb of await Sandbox.list({ client: d.client })) await sb.kill();
  const exited = new Promise((resolve) => d.proc.once("exit", resolve));
  d.proc.kill("SIGTERM");
  assert.equal(await exited, 0);
  rmSync(d.state, { recursive: true, force: true });
}

test("sandbox lifecycle, fork, snapshot and errors through the SDK", async () => {
  const d = await startDaemon();
  try {
    const { client } = d;
    assert.deepEqual(await client.healthz(), { ok: true });
    assert.ok(Array.isArray(await client.images()));
    await assert.rejects(client.buildImage({ kind: "floppy" }), (e) => e instanceof BadRequest);
    const sb = await Sandbox.create({ memMib: 64, metadata: { user: "u1" }, limits: { pids_max: 256 }, client });
    assert.equal(sb.info.state, "running");
    assert.equal(sb.info.jailed, true);
    assert.ok(sb.info.limits && "pids_max" in sb.info.limits);
    await assert.rejects(Sandbox.create({ memMib: 64, limits: { pids_max: 1 }, client }),
      (e) => e instanceof BadRequest && e.message.includes("limits.pids_max"));
    assert.deepEqual(sb.info.metadata, { user: "u1" });
    const kids = await sb.fork({ count: 3 });
    assert.equal(kids.length, 3);
    for (const k of kids) assert.equal(k.info.parent, sb.id);
    const listed = await Sandbox.list({ parent: sb.id, client });
    assert.deepEqual(listed.map((s) => s.id).sort(), kids.map((k) => k.id).sort());
    assert.deepEqual((await Sandbox.list({ metadata: { user: "u1" }, client })).map((s) => s.id), [sb.id]);
    await sb.pause();
    assert.equal(sb.info.state, "paused");
    await sb.resume();
    assert.equal((await sb.refresh()).state, "running");
    const snap = await sb.snapshot();
    assert.equal((await snap.verify()).ok, true);
    const restored = await Sandbox.create({ snapshot: snap, client });
    assert.equal(restored.info.snapshot, snap.id);
    await assert.rejects(snap.delete(), (e) => e instanceof Conflict && e.code === "in_use");
    await restored.kill();
    await snap.delete();
    await assert.rejects(sb.commands.run("echo hi"), (e) => e instanceof Conflict && e.code === "no_agent");
    await assert.rejects(sb.eval("1 + 1"), (e) => e instanceof Conflict && e.code === "no_agent");
    await assert.rejects(Sandbox.create({ memMib: 1, client }), (e) => e instanceof BadRequest);
    await assert.rejects(Sandbox.connect("sb-000000000000", { client }), (e) => e instanceof NotFound && e.status === 404);
    for (const k of kids) await k.kill();
    await sb.kill();
    await sb.kill(); // gone already: not an error
    assert.deepEqual(await Sandbox.list({ client }), []);
    assert.match(await client.metrics(), /forkvm_api_requests_total\{op="branch"\} 1/);
    const audit = readFileSync(path.join(d.state, "audit.log"), "utf8").trim().split("\n").map(JSON.parse);
    assert.ok(audit.some((l) => l.op === "branch" && l.target === sb.id && l.result === 201));
  } finally {
    await stopDaemon(d);
  }
  await assert.rejects(new Client({ socketPath: "/nonexistent/api.sock" }).healthz(),
    (e) => e instanceof Unavailable && e.code === "unreachable");
});
