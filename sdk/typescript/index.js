// forkvm's TypeScript/JavaScript SDK: sandboxes through forkvmd's REST API (docs/DAEMON.md).
// Node's http only, over the daemon's Unix socket (default $FORKVM_DAEMON_SOCKET or
// /var/lib/forkvm/api.sock) or TCP with a bearer token ($FORKVM_DAEMON_URL, $FORKVM_DAEMON_TOKEN).
// Types: index.d.ts.
import http from "node:http";
import https from "node:https";

export const DEFAULT_SOCKET = "/var/lib/forkvm/api.sock";

export class ForkvmError extends Error {
  constructor(status, code, message) {
    super(code ? `${code}: ${message}` : message);
    this.name = new.target.name;
    this.status = status;
    this.code = code;
    this.detail = message;
  }
}
export class BadRequest extends ForkvmError {}
export class Unauthorized extends ForkvmError {}
export class NotFound extends ForkvmError {}
export class Conflict extends ForkvmError {}
export class TooLarge extends ForkvmError {}
export class GuestError extends ForkvmError {}
export class Unavailable extends ForkvmError {}

const BY_STATUS = { 400: BadRequest, 401: Unauthorized, 404: NotFound, 405: NotFound,
  409: Conflict, 413: TooLarge, 422: GuestError };

function errorFor(status, code, message) {
  const Cls = BY_STATUS[status] ?? (status >= 500 ? Unavailable : ForkvmError);
  return new Cls(status, code, message);
}

/** A response's whole body. */
function collect(res, where) {
  return new Promise((resolve, reject) => {
    const chunks = [];
    res.on("data", (c) => chunks.push(c));
    res.on("end", () => resolve(Buffer.concat(chunks)));
    res.on("error", (e) => reject(new Unavailable(null, "unreachable", `forkvm daemon at ${where}: ${e.message}`)));
  });
}

export class Client {
  constructor(opts = {}) {
    this.url = opts.url ?? process.env.FORKVM_DAEMON_URL;
    this.token = opts.token ?? process.env.FORKVM_DAEMON_TOKEN;
    this.socketPath = opts.socketPath ?? process.env.FORKVM_DAEMON_SOCKET ?? DEFAULT_SOCKET;
    this.timeoutMs = opts.timeoutMs ?? 900000;
  }

  /** The decoded JSON answer, or a Buffer for non-JSON answers; rejects with a ForkvmError. */
  async request(method, path, { body, raw, query } = {}) {
    const res = await this.#open(method, path, { body, raw, query });
    const payload = await collect(res, this.#where());
    const ctype = res.headers["content-type"] ?? "";
    return ctype.startsWith("application/json") ? JSON.parse(payload.toString("utf8")) : payload;
  }

  /** An NDJSON answer (a streamed exec), one decoded line at a time as it arrives. Leaving
   * the loop early closes the connection. */
  async *stream(method, path, { body } = {}) {
    const res = await this.#open(method, path, { body });
    let pending = "";
    try {
      for await (const chunk of res) {
        pending += chunk.toString("utf8");
        let nl;
        while ((nl = pending.indexOf("\n")) >= 0) {
          const line = pending.slice(0, nl);
          pending = pending.slice(nl + 1);
          if (line.trim()) yield JSON.parse(line);
        }
      }
    } catch (e) {
      throw new Unavailable(null, "unreachable", `forkvm daemon at ${this.#where()}: ${e.message}`);
    } finally {
      res.destroy();
    }
  }

  #where() { return this.url ?? this.socketPath; }

  /** Send a request; resolves with the response once its status is not an error. */
  #open(method, path, { body, raw, query } = {}) {
    if (query) {
      const q = new URLSearchParams();
      for (const [k, v] of Object.entries(query)) if (v !== undefined && v !== null) q.set(k, String(v));
      const s = q.toString();
      if (s) path += `?${s}`;
    }
    const headers = {};
    let data = null;
    if (body !== undefined) {
      data = Buffer.from(JSON.stringify(body));
      headers["Content-Type"] = "application/json";
    } else if (raw !== undefined) {
      data = Buffer.isBuffer(raw) ? raw : Buffer.from(raw);
      headers["Content-Type"] = "application/octet-stream";
    }
    if (data) headers["Content-Length"] = String(data.length);
    if (this.token) headers.Authorization = `Bearer ${this.token}`;
    let opts;
    let mod = http;
    if (this.url) {
      const u = new URL(this.url);
      mod = u.protocol === "https:" ? https : http;
      opts = { hostname: u.hostname, port: u.port || (u.protocol === "https:" ? 443 : 80) };
    } else {
      opts = { socketPath: this.socketPath };
    }
    const where = this.#where();
    return new Promise((resolve, reject) => {
      const req = mod.request({ ...opts, method, path, headers, timeout: this.timeoutMs }, (res) => {
        if (res.statusCode < 400) {
          resolve(res);
          return;
        }
        collect(res, where).then((payload) => {
          let code = null;
          let message = payload.toString("utf8").slice(0, 500);
          try {
            const err = JSON.parse(payload.toString("utf8")).error;
            code = err.code ?? null;
            message = err.message ?? "";
          } catch { /* not our JSON: keep the text */ }
          reject(errorFor(res.statusCode, code, message));
        }, reject);
      });
      req.on("timeout", () => req.destroy(new Error(`no answer within ${this.timeoutMs} ms`)));
      req.on("error", (e) => reject(new Unavailable(null, "unreachable", `forkvm daemon at ${where}: ${e.message}`)));
      if (data) req.write(data);
      req.end();
    });
  }

  healthz() { return this.request("GET", "/v1/healthz"); }

  async metrics() { return (await this.request("GET", "/v1/metrics")).toString("utf8"); }

  images() { return this.request("GET", "/v1/images"); }

  buildImage({ kind = "rootfs", packages } = {}) {
    const body = { kind };
    if (packages?.length) body.packages = [...packages];
    return this.request("POST", "/v1/images", { body });
  }

  deleteImage(kind, { force = false } = {}) {
    return this.request("DELETE", `/v1/images/${kind}`, { query: { force: force ? "true" : undefined } });
  }
}

function execBody(cmd, { timeoutMs, env, cwd, stdin } = {}) {
  const body = { argv: typeof cmd === "string" ? ["sh", "-c", cmd] : [...cmd] };
  if (timeoutMs !== undefined) body.timeout_ms = timeoutMs;
  if (env) body.env = env;
  if (cwd) body.cwd = cwd;
  if (stdin !== undefined) {
    body.stdin = Buffer.from(stdin).toString("base64");
    body.stdin_base64 = true;
  }
  return body;
}

function stream(reply, name) {
  const v = reply[name] ?? "";
  return reply[`${name}_encoding`] === "base64" ? Buffer.from(v, "base64") : Buffer.from(v, "utf8");
}

export class ExecResult {
  constructor(reply) {
    this.exitCode = reply.exit_code ?? null;
    this.signal = reply.signal ?? null;
    this.timedOut = Boolean(reply.timed_out);
    this.durationMs = reply.duration_ms ?? null;
    this.stdout = stream(reply, "stdout");
    this.stderr = stream(reply, "stderr");
  }

  get text() { return this.stdout.toString("utf8"); }
}

/** A running streamed exec (Sandbox.execStream). */
export class ExecStream {
  #client;
  #lines;
  #started;

  constructor(client, lines) {
    this.#client = client;
    this.#lines = lines;
    this.execId = null;
    this.#started = lines.next().then(({ value }) => {
      if (!value || value.type !== "start") throw new Unavailable(null, "stream_cut", `a streamed exec began with ${JSON.stringify(value)}`);
      this.execId = value.exec_id;
    });
    this.#started.catch(() => {}); // reported where it is awaited
  }

  /** Resolves once the exec runs (execId is set); rejects as its request failed. */
  started() { return this.#started; }

  /** Input for the command; eof closes its stdin afterwards. */
  async sendStdin(data, { eof = false } = {}) {
    await this.#started;
    return this.#client.request("POST", `/v1/execs/${this.execId}/stdin`,
      { raw: data, query: { eof: eof ? "true" : undefined } });
  }

  closeStdin() { return this.sendStdin(Buffer.alloc(0), { eof: true }); }

  /** End the stream (and the command, if it still runs). */
  async close() { await this.#lines.return(); }

  async *[Symbol.asyncIterator]() {
    await this.#started;
    try {
      for await (const line of this.#lines) {
        if (line.type === "stdout" || line.type === "stderr") {
          yield { type: line.type, data: Buffer.from(line.data ?? "", line.encoding === "base64" ? "base64" : "utf8") };
        } else if (line.type === "exit") {
          yield { type: "exit", result: new ExecResult(line) };
          return;
        } else if (line.type === "error") {
          const err = line.error ?? {};
          throw errorFor(err.code === "guest_error" ? 422 : 502, err.code ?? null, err.message ?? "");
        }
      }
    } finally {
      await this.#lines.return();
    }
  }
}

export class EvalResult {
  constructor(reply) {
    this.result = reply.result ?? null;
    this.error = reply.error ?? null;
    this.timedOut = Boolean(reply.timed_out);
    this.stdout = stream(reply, "stdout");
    this.stderr = stream(reply, "stderr");
  }
}

export class Snapshot {
  constructor(info, client) {
    this.info = info;
    this.id = info.id;
    this.client = client;
  }

  /** Check it as a restore would; rejects with code "snapshot_invalid" when damaged. */
  verify() { return this.client.request("POST", `/v1/snapshots/${this.id}/verify`); }

  async delete({ force = false } = {}) {
    await this.client.request("DELETE", `/v1/snapshots/${this.id}`, { query: { force: force ? "true" : undefined } });
  }
}

export class Sandbox {
  constructor(info, client) {
    this.info = info;
    this.id = info.id;
    this.client = client;
    this.commands = { run: (cmd, opts) => this.exec(cmd, opts) };
    this.files = {
      write: (path, data) => this.client.request("PUT", `/v1/sandboxes/${this.id}/files`, { raw: data, query: { path } }),
      read: (path) => this.client.request("GET", `/v1/sandboxes/${this.id}/files`, { query: { path } }),
    };
  }

  static async create(opts = {}) {
    const client = opts.client ?? new Client();
    const body = {};
    for (const [k, key] of [["guest", "guest"], ["memMib", "mem_mib"], ["vcpus", "vcpus"],
      ["metadata", "metadata"], ["ttlS", "ttl_s"], ["paused", "paused"], ["readyTimeoutMs", "ready_timeout_ms"],
      ["network", "network"], ["backing", "backing"], ["limits", "limits"]]) {
      if (opts[k] !== undefined) body[key] = opts[k];
    }
    if (opts.snapshot !== undefined) body.snapshot = opts.snapshot instanceof Snapshot ? opts.snapshot.id : opts.snapshot;
    return new Sandbox(await client.request("POST", "/v1/sandboxes", { body }), client);
  }

  static async connect(id, { client } = {}) {
    client = client ?? new Client();
    return new Sandbox(await client.request("GET", `/v1/sandboxes/${id}`), client);
  }

  static async list({ state, parent, metadata, client } = {}) {
    client = client ?? new Client();
    const query = { state, parent };
    for (const [k, v] of Object.entries(metadata ?? {})) query[`metadata.${k}`] = typeof v === "string" ? v : JSON.stringify(v);
    const all = await client.request("GET", "/v1/sandboxes", { query });
    return all.map((i) => new Sandbox(i, client));
  }

  async refresh() {
    this.info = await this.client.request("GET", `/v1/sandboxes/${this.id}`);
    return this.info;
  }

  /** Run a command; with onStdout / onStderr its output is streamed to them as text while it
   * runs (the result still holds all of it). */
  async exec(cmd, { timeoutMs, env, cwd, stdin, onStdout, onStderr } = {}) {
    if (onStdout || onStderr) {
      const calls = { stdout: onStdout, stderr: onStderr };
      const decoders = { stdout: new TextDecoder(), stderr: new TextDecoder() };
      const chunks = { stdout: [], stderr: [] };
      for await (const ev of this.execStream(cmd, { timeoutMs, env, cwd, stdin })) {
        if (ev.type === "exit") {
          for (const name of ["stdout", "stderr"]) {
            const tail = decoders[name].decode();
            if (calls[name] && tail) calls[name](tail);
          }
          ev.result.stdout = Buffer.concat(chunks.stdout);
          ev.result.stderr = Buffer.concat(chunks.stderr);
          return ev.result;
        }
        chunks[ev.type].push(ev.data);
        const text = decoders[ev.type].decode(ev.data, { stream: true });
        if (calls[ev.type] && text) calls[ev.type](text);
      }
      throw new Unavailable(null, "stream_cut", `exec in ${this.id}: the stream ended early`);
    }
    const body = execBody(cmd, { timeoutMs, env, cwd, stdin });
    return new ExecResult(await this.client.request("POST", `/v1/sandboxes/${this.id}/exec`, { body }));
  }

  /** Run a command and get its output as produced: an ExecStream to iterate with for await
   * ({type: "stdout"|"stderr", data: Buffer}, then {type: "exit", result}). With stdinOpen
   * its input stays open for sendStdin() until closeStdin(). Leaving the loop early ends
   * the command. */
  execStream(cmd, opts = {}) {
    const body = { ...execBody(cmd, opts), stream: true };
    if (opts.stdinOpen) body.stdin_open = true;
    return new ExecStream(this.client, this.client.stream("POST", `/v1/sandboxes/${this.id}/exec`, { body }));
  }

  /** Python code in the guest's warm interpreter; its state stays, and children inherit it. */
  async eval(code, { context, timeoutMs } = {}) {
    const body = { code };
    if (context !== undefined) body.context = context;
    if (timeoutMs !== undefined) body.timeout_ms = timeoutMs;
    return new EvalResult(await this.client.request("POST", `/v1/sandboxes/${this.id}/eval`, { body }));
  }

  async branch({ count = 1, strategy = "cow", metadata, ttlS } = {}) {
    const body = { count, strategy };
    if (metadata !== undefined) body.metadata = metadata;
    if (ttlS !== undefined) body.ttl_s = ttlS;
    const r = await this.client.request("POST", `/v1/sandboxes/${this.id}/branch`, { body });
    return r.children.map((c) => new Sandbox(c, this.client));
  }

  fork(opts) { return this.branch(opts); }

  async pause() { this.info = await this.client.request("POST", `/v1/sandboxes/${this.id}/pause`); }

  async resume() { this.info = await this.client.request("POST", `/v1/sandboxes/${this.id}/resume`); }

  async snapshot() {
    return new Snapshot(await this.client.request("POST", `/v1/sandboxes/${this.id}/snapshot`), this.client);
  }

  /** End the VM; a sandbox already gone is not an error. */
  async kill() {
    try {
      await this.client.request("DELETE", `/v1/sandboxes/${this.id}`);
    } catch (e) {
      if (!(e instanceof NotFound)) throw e;
    }
  }
}
