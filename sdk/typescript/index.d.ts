// Types of @forkvm/sdk (index.js): a client for forkvmd (docs/DAEMON.md).
/// <reference types="node" />

export declare const DEFAULT_SOCKET: string;

export declare class ForkvmError extends Error {
  /** HTTP status, or null when the daemon could not be reached. */
  readonly status: number | null;
  /** Stable machine-readable code, e.g. "not_found", "unknown_field", "in_use". */
  readonly code: string | null;
  readonly detail: string;
}
export declare class BadRequest extends ForkvmError {}
export declare class Unauthorized extends ForkvmError {}
export declare class NotFound extends ForkvmError {}
export declare class Conflict extends ForkvmError {}
export declare class TooLarge extends ForkvmError {}
export declare class GuestError extends ForkvmError {}
export declare class Unavailable extends ForkvmError {}

export interface ClientOptions {
  /** The daemon's Unix socket (default $FORKVM_DAEMON_SOCKET or /var/lib/forkvm/api.sock). */
  socketPath?: string;
  /** http(s)://host:port of a daemon started with --listen; needs token. */
  url?: string;
  token?: string;
  timeoutMs?: number;
}

export interface RequestOptions {
  body?: unknown;
  raw?: Buffer | Uint8Array | string;
  query?: Record<string, string | number | boolean | undefined | null>;
}

export declare class Client {
  constructor(opts?: ClientOptions);
  request(method: string, path: string, opts?: RequestOptions): Promise<any>;
  /** An NDJSON answer (a streamed exec), one decoded line at a time as it arrives. */
  stream(method: string, path: string, opts?: { body?: unknown }): AsyncGenerator<any, void, undefined>;
  healthz(): Promise<{ ok: boolean }>;
  metrics(): Promise<string>;
  images(): Promise<ImageInfo[]>;
  buildImage(opts?: { kind?: "kernel" | "rootfs"; packages?: string[] }): Promise<ImageInfo>;
  deleteImage(kind: "kernel" | "rootfs", opts?: { force?: boolean }): Promise<{ kind: string; deleted: boolean }>;
}

export interface ImageInfo {
  kind: "kernel" | "rootfs";
  dir: string;
  manifest: Record<string, unknown>;
}

export type SandboxState = "running" | "paused" | "dead";

export interface SandboxInfo {
  id: string;
  state: SandboxState;
  pid: number;
  socket: string;
  parent: string | null;
  snapshot: string | null;
  guest: "probe" | "linux";
  mem_mib: number;
  vcpus: number;
  metadata: Record<string, unknown>;
  created_at: number;
  expires_at: number | null;
  end_reason: string | null;
  /** Whether its VMM runs in a jail (docs/DAEMON.md, "Confinement"). */
  jailed: boolean;
  /** Create and get: the limits its cgroup has (null: unlimited); a jailed family's. */
  limits?: { memory_mib: number | null; cpus: number | null; cpu_weight: number;
    pids_max: number | null };
  /** With a network: its mode, addresses and published ports (docs/NET.md). */
  network?: {
    mode: "isolated" | "nat";
    guest: string;
    gateway: string;
    host_address: string;
    published: { host_ip: string; host_port: number; guest_port: number }[];
    [key: string]: unknown;
  };
}

export interface SnapshotInfo {
  id: string;
  dir: string;
  sandbox: string;
  guest: string;
  created_at: number;
}

export declare class ExecResult {
  /** Exit status, or null when a signal ended the command. */
  readonly exitCode: number | null;
  readonly signal: number | null;
  readonly timedOut: boolean;
  readonly durationMs: number | null;
  readonly stdout: Buffer;
  readonly stderr: Buffer;
  readonly text: string;
}

export declare class EvalResult {
  /** repr() of the last expression's value, or null. */
  readonly result: string | null;
  readonly error: { name: string; value: string; traceback: string } | null;
  readonly timedOut: boolean;
  readonly stdout: Buffer;
  readonly stderr: Buffer;
}

export interface ExecOptions {
  timeoutMs?: number;
  env?: Record<string, string>;
  cwd?: string;
  stdin?: Buffer | Uint8Array | string;
  /** Stream: called with the command's stdout text as it is produced. */
  onStdout?: (text: string) => void;
  /** Stream: called with the command's stderr text as it is produced. */
  onStderr?: (text: string) => void;
}

export interface ExecStreamOptions extends Omit<ExecOptions, "onStdout" | "onStderr"> {
  /** Keep the command's stdin open for sendStdin() until closeStdin(). */
  stdinOpen?: boolean;
}

/** A running streamed exec: iterate it with for await. */
export declare class ExecStream implements AsyncIterable<ExecEvent> {
  /** Set once started() resolves. */
  readonly execId: string | null;
  started(): Promise<void>;
  sendStdin(data: Buffer | Uint8Array | string, opts?: { eof?: boolean }): Promise<{ exec_id: string; bytes: number; eof: boolean }>;
  closeStdin(): Promise<{ exec_id: string; bytes: number; eof: boolean }>;
  close(): Promise<void>;
  [Symbol.asyncIterator](): AsyncIterator<ExecEvent>;
}

/** One item of a streamed exec: output as produced, then how the command ended. */
export type ExecEvent =
  | { type: "stdout" | "stderr"; data: Buffer }
  | { type: "exit"; result: ExecResult };

export interface CreateOptions {
  guest?: "probe" | "linux";
  memMib?: number;
  vcpus?: number;
  snapshot?: Snapshot | string;
  metadata?: Record<string, unknown>;
  ttlS?: number;
  paused?: boolean;
  /** How long a Linux guest may take to answer (default 240000 ms). */
  readyTimeoutMs?: number;
  /** A network of its own (docs/NET.md); info.network then has the published host ports. */
  network?: NetworkOptions;
  /** Guest RAM: "anon" (default), "memfd" (live branches), "hugetlb", "uffd" (with snapshot). */
  backing?: "anon" | "memfd" | "hugetlb" | "uffd";
  /** The VM's cgroup limits (docs/DAEMON.md); info.limits is what the kernel applies. */
  limits?: Limits;
  client?: Client;
}

export interface Limits {
  /** memory.max in MiB, above memMib (default guest RAM + 256). */
  memory_mib?: number;
  /** cpu.max as CPUs (1.5 = 150 ms per 100 ms). */
  cpus?: number;
  /** cpu.weight, 1-10000. */
  cpu_weight?: number;
  /** pids.max, at least 16. */
  pids_max?: number;
}

export interface NetworkOptions {
  mode?: "isolated" | "nat";
  /** nat: only these destinations (CIDRs). */
  allow?: string[];
  /** nat: never these (CIDRs). */
  deny?: string[];
  /** "[IP:]HOSTPORT:GUESTPORT" (TCP; HOSTPORT 0 picks a free port). */
  publish?: string[];
}

export interface BranchOptions {
  count?: number;
  strategy?: "cow" | "full" | "diff" | "live";
  metadata?: Record<string, unknown>;
  ttlS?: number;
}

export declare class Snapshot {
  readonly id: string;
  info: SnapshotInfo;
  verify(): Promise<{ id: string; ok: boolean; report: string }>;
  delete(opts?: { force?: boolean }): Promise<void>;
}

export declare class Sandbox {
  readonly id: string;
  info: SandboxInfo;
  readonly client: Client;
  readonly commands: { run(cmd: string | string[], opts?: ExecOptions): Promise<ExecResult> };
  readonly files: {
    write(path: string, data: Buffer | Uint8Array | string): Promise<{ bytes: number }>;
    read(path: string): Promise<Buffer>;
  };
  static create(opts?: CreateOptions): Promise<Sandbox>;
  static connect(id: string, opts?: { client?: Client }): Promise<Sandbox>;
  static list(opts?: { state?: SandboxState; parent?: string; metadata?: Record<string, unknown>; client?: Client }): Promise<Sandbox[]>;
  refresh(): Promise<SandboxInfo>;
  exec(cmd: string | string[], opts?: ExecOptions): Promise<ExecResult>;
  /** Output as the command produces it; leaving the loop early ends the command. */
  execStream(cmd: string | string[], opts?: ExecStreamOptions): ExecStream;
  eval(code: string, opts?: { context?: string; timeoutMs?: number }): Promise<EvalResult>;
  branch(opts?: BranchOptions): Promise<Sandbox[]>;
  fork(opts?: BranchOptions): Promise<Sandbox[]>;
  pause(): Promise<void>;
  resume(): Promise<void>;
  snapshot(): Promise<Snapshot>;
  kill(): Promise<void>;
}
