// Compile-only: code a user writes against index.d.ts, checked with `tsc --noEmit`
// (tests/integration/test_sdk_typescript.py). A wrong type here fails the check.
import { Client, Conflict, EvalResult, ExecEvent, ExecResult, ExecStream, ImageInfo, Sandbox, SandboxInfo, Snapshot } from "../index.js";

export async function scenario(): Promise<number> {
  const client = new Client({ socketPath: "/tmp/api.sock", timeoutMs: 5000 });
  const sb: Sandbox = await Sandbox.create({ guest: "linux", memMib: 512, vcpus: 2, client, metadata: { a: 1 } });
  const r: ExecResult = await sb.commands.run("echo hi", { timeoutMs: 1000, env: { K: "V" } });
  const code: number | null = r.exitCode;
  let streamed = 0;
  const live: ExecResult = await sb.exec(["sh", "-c", "echo a"], { onStdout: (t: string) => { streamed += t.length; } });
  const p: ExecStream = sb.execStream("cat", { stdinOpen: true });
  await p.sendStdin("x");
  await p.closeStdin();
  const id: string | null = p.execId;
  streamed += (id ?? "").length;
  for await (const e of p) {
    const item: ExecEvent = e;
    if (item.type === "exit") streamed += item.result.exitCode ?? 0;
    else streamed += item.data.length;
  }
  streamed += live.stdout.length;
  const out: string = r.stdout.toString("utf8") + r.text;
  await sb.files.write("/root/x", Buffer.from(out));
  const back: Buffer = await sb.files.read("/root/x");
  const ev: EvalResult = await sb.eval("x = 41", { context: "nb", timeoutMs: 1000 });
  const shown: string | null = ev.error ? ev.error.traceback : ev.result;
  const kids: Sandbox[] = await sb.fork({ count: 3, strategy: "cow" });
  const info: SandboxInfo = await kids[0].refresh();
  const snap: Snapshot = await sb.snapshot();
  const imgs: ImageInfo[] = await client.images();
  const kinds: string = imgs.map((i) => i.kind).join(",");
  await snap.delete({ force: true });
  try {
    await sb.pause();
  } catch (e) {
    if (e instanceof Conflict && e.code === "not_running") return -1;
  }
  await sb.kill();
  return (code ?? 0) + streamed + back.length + info.vcpus + (shown ?? "").length + kinds.length;
}
