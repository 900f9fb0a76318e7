// Keep-alive HTTP load client with strict accounting: every non-200, every
// transport error and every wrong echo is a failure, and nothing is retried.
// Standard library only.
import * as crypto from "crypto";
import * as http from "http";
import * as https from "https";
import { performance } from "perf_hooks";

export type RequestKind = "get" | "slow" | "post";
export type FailureKind = "status" | "transport" | "echo";

export interface LoadMix {
  get: number;
  slowGet: number;
  post: number;
}

export interface LoadOptions {
  /** Base URL, e.g. http://10.213.1.2 (a path prefix is kept). */
  url: string;
  /** Sent as Host (to hit an nginx server_name while connecting by IP). */
  hostHeader?: string;
  /** Number of workers = sockets; each issues requests back to back. */
  concurrency: number;
  /** Stop by itself after this long (otherwise stop via handle/signal). */
  durationMs?: number;
  /** Stop when the signal aborts or the promise settles. */
  stopSignal?: AbortSignal | Promise<unknown>;
  /** Relative weights; default 60/20/20. */
  mix?: LoadMix;
  /** ms for GET /slow?ms=; default 300. */
  slowMs?: number;
  /** Per-request timeout (counted as transport failure "TIMEOUT"); default 30000 + slowMs. */
  requestTimeoutMs?: number;
}

/** One request, as reconstructed from the compact log. */
export interface RequestRecord {
  /** Epoch ms (sub-ms precision), comparable with Date.now(). */
  start: number;
  end: number;
  kind: RequestKind;
  ok: boolean;
  failure?: FailureKind;
  /** HTTP status, if a response head arrived. */
  status?: number;
  /** Transport error code (ECONNRESET, TIMEOUT, ...), for transport failures. */
  errorCode?: string;
  /** X-App-Version of the response, if any. */
  version?: string;
}

export interface LatencyStats {
  count: number;
  p50: number;
  p90: number;
  p99: number;
  max: number;
}

export interface TimelineBucket {
  /** Seconds since load start (bucketed by request start time). */
  second: number;
  requests: number;
  failures: number;
  /** Responses per X-App-Version ("none" = response without the header). */
  versions: Record<string, number>;
}

export interface FailureSample {
  at: number;
  kind: RequestKind;
  failure: FailureKind;
  detail: string;
}

const KINDS: RequestKind[] = ["get", "slow", "post"];
const FAILURE_KINDS: FailureKind[] = ["status", "transport", "echo"];
const DEFAULT_MIX: LoadMix = { get: 60, slowGet: 20, post: 20 };
const MAX_FAILURE_SAMPLES = 50;
const NO_STATUS = 0;
const NO_VERSION = -1;

/**
 * Wall clock with sub-ms resolution (timeOrigin + monotonic offset): the clock of every
 * record's start and end. It can drift from Date.now() by a millisecond or more, so a
 * time compared with records should come from here.
 */
export const now = (): number => performance.timeOrigin + performance.now();

/**
 * Struct-of-arrays log: long runs make hundreds of thousands of requests,
 * so numbers live in plain arrays and strings are interned.
 */
class RecordLog {
  readonly starts: number[] = [];
  readonly ends: number[] = [];
  readonly kinds: number[] = []; // index into KINDS
  readonly failures: number[] = []; // -1 ok, else index into FAILURE_KINDS
  readonly statuses: number[] = []; // NO_STATUS if none
  readonly errorCodes: number[] = []; // index into strings, or -1
  readonly versions: number[] = []; // index into strings, or NO_VERSION
  readonly strings: string[] = [];
  private readonly stringIndex = new Map<string, number>();

  intern(s: string): number {
    let i = this.stringIndex.get(s);
    if (i === undefined) {
      i = this.strings.length;
      this.strings.push(s);
      this.stringIndex.set(s, i);
    }
    return i;
  }

  add(r: RequestRecord): void {
    this.starts.push(r.start);
    this.ends.push(r.end);
    this.kinds.push(KINDS.indexOf(r.kind));
    this.failures.push(r.failure ? FAILURE_KINDS.indexOf(r.failure) : -1);
    this.statuses.push(r.status ?? NO_STATUS);
    this.errorCodes.push(r.errorCode === undefined ? -1 : this.intern(r.errorCode));
    this.versions.push(r.version === undefined ? NO_VERSION : this.intern(r.version));
  }

  get length(): number {
    return this.starts.length;
  }

  get(i: number): RequestRecord {
    const failure = this.failures[i] >= 0 ? FAILURE_KINDS[this.failures[i]] : undefined;
    const r: RequestRecord = { start: this.starts[i], end: this.ends[i], kind: KINDS[this.kinds[i]], ok: !failure };
    if (failure) r.failure = failure;
    if (this.statuses[i] !== NO_STATUS) r.status = this.statuses[i];
    if (this.errorCodes[i] >= 0) r.errorCode = this.strings[this.errorCodes[i]];
    if (this.versions[i] !== NO_VERSION) r.version = this.strings[this.versions[i]];
    return r;
  }
}

function percentile(sorted: number[], p: number): number {
  if (sorted.length === 0) return 0;
  const idx = Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1);
  return sorted[Math.max(0, idx)];
}

const round = (ms: number) => Math.round(ms * 10) / 10;

export class LoadReport {
  readonly startedAt: number;
  readonly endedAt: number;
  readonly totals: { requests: number; ok: number; failed: number };
  readonly failures: Record<FailureKind, number>;
  /** Failed responses by HTTP status code. */
  readonly statusCodes: Record<string, number>;
  /** Transport failures by error code. */
  readonly transportErrors: Record<string, number>;
  /** Latency (ms) of all completed requests of each kind, failed ones included. */
  readonly latency: Record<RequestKind, LatencyStats>;
  readonly versions: Record<string, number>;
  readonly timeline: TimelineBucket[];
  readonly failureSamples: FailureSample[];

  constructor(
    private readonly log: RecordLog,
    startedAt: number,
    endedAt: number,
    failureSamples: FailureSample[],
  ) {
    this.startedAt = startedAt;
    this.endedAt = endedAt;
    this.failureSamples = failureSamples;
    this.failures = { status: 0, transport: 0, echo: 0 };
    this.statusCodes = {};
    this.transportErrors = {};
    this.versions = {};
    const latencies: Record<RequestKind, number[]> = { get: [], slow: [], post: [] };
    const buckets = new Map<number, TimelineBucket>();
    let failed = 0;
    for (let i = 0; i < log.length; i++) {
      const r = log.get(i);
      latencies[r.kind].push(r.end - r.start);
      const second = Math.max(0, Math.floor((r.start - startedAt) / 1000));
      let bucket = buckets.get(second);
      if (!bucket) buckets.set(second, (bucket = { second, requests: 0, failures: 0, versions: {} }));
      bucket.requests++;
      if (r.status !== undefined) {
        const v = r.version ?? "none";
        bucket.versions[v] = (bucket.versions[v] ?? 0) + 1;
        if (r.version !== undefined) this.versions[v] = (this.versions[v] ?? 0) + 1;
      }
      if (r.failure) {
        failed++;
        bucket.failures++;
        this.failures[r.failure]++;
        if (r.failure === "status") this.statusCodes[r.status!] = (this.statusCodes[r.status!] ?? 0) + 1;
        if (r.failure === "transport") this.transportErrors[r.errorCode!] = (this.transportErrors[r.errorCode!] ?? 0) + 1;
      }
    }
    this.totals = { requests: log.length, ok: log.length - failed, failed };
    this.latency = {} as Record<RequestKind, LatencyStats>;
    for (const kind of KINDS) {
      const sorted = latencies[kind].sort((a, b) => a - b);
      this.latency[kind] = {
        count: sorted.length,
        p50: round(percentile(sorted, 50)),
        p90: round(percentile(sorted, 90)),
        p99: round(percentile(sorted, 99)),
        max: round(sorted.length ? sorted[sorted.length - 1] : 0),
      };
    }
    const lastSecond = Math.max(-1, ...buckets.keys());
    this.timeline = [];
    for (let s = 0; s <= lastSecond; s++) this.timeline.push(buckets.get(s) ?? { second: s, requests: 0, failures: 0, versions: {} });
  }

  get durationMs(): number {
    return this.endedAt - this.startedAt;
  }

  /** Every request, oldest start first within each worker (not globally sorted). */
  records(): RequestRecord[] {
    const out: RequestRecord[] = [];
    for (let i = 0; i < this.log.length; i++) out.push(this.log.get(i));
    return out;
  }

  /** Requests that started at or after t (epoch ms), e.g. right after a deploy finished. */
  recordsAfter(t: number): RequestRecord[] {
    const out: RequestRecord[] = [];
    for (let i = 0; i < this.log.length; i++) if (this.log.starts[i] >= t) out.push(this.log.get(i));
    return out;
  }

  /** X-App-Version values seen in responses to requests that started at or after t. */
  versionsAfter(t: number): Set<string> {
    const seen = new Set<string>();
    for (let i = 0; i < this.log.length; i++) {
      if (this.log.starts[i] >= t && this.log.versions[i] !== NO_VERSION) seen.add(this.log.strings[this.log.versions[i]]);
    }
    return seen;
  }

  /** Failed requests that started in [from, to). */
  failuresBetween(from: number, to = Infinity): RequestRecord[] {
    const out: RequestRecord[] = [];
    for (let i = 0; i < this.log.length; i++) {
      if (this.log.failures[i] >= 0 && this.log.starts[i] >= from && this.log.starts[i] < to) out.push(this.log.get(i));
    }
    return out;
  }

  toJSON(): object {
    return {
      startedAt: new Date(this.startedAt).toISOString(),
      endedAt: new Date(this.endedAt).toISOString(),
      durationMs: Math.round(this.durationMs),
      totals: this.totals,
      failures: this.failures,
      statusCodes: this.statusCodes,
      transportErrors: this.transportErrors,
      latency: this.latency,
      versions: this.versions,
      timeline: this.timeline,
      failureSamples: this.failureSamples,
    };
  }
}

export interface LoadHandle {
  /** Stop issuing requests, wait for in-flight ones, return the report. */
  stop(): Promise<LoadReport>;
  /** Resolves when load ends by itself (duration/stopSignal) or via stop(). */
  readonly done: Promise<LoadReport>;
  /** Requests completed so far. */
  completed(): number;
}

function pickKind(mix: LoadMix): RequestKind {
  const total = mix.get + mix.slowGet + mix.post;
  let x = Math.random() * total;
  if ((x -= mix.get) < 0) return "get";
  if ((x -= mix.slowGet) < 0) return "slow";
  return "post";
}

function randomBody(): Buffer {
  return crypto.randomBytes(16 + Math.floor(Math.random() * (2048 - 16 + 1)));
}

function errorCode(err: unknown): string {
  const e = err as NodeJS.ErrnoException;
  return e?.code ?? e?.name ?? "UNKNOWN";
}

/** Start load in the background; call stop() (or wait for done) to get the report. */
export function startLoad(opts: LoadOptions): LoadHandle {
  if (!(opts.concurrency >= 1)) throw new Error("concurrency must be >= 1");
  const base = new URL(opts.url);
  const transport = base.protocol === "https:" ? https : http;
  const basePath = base.pathname.replace(/\/+$/, "");
  const mix = opts.mix ?? DEFAULT_MIX;
  const slowMs = opts.slowMs ?? 300;
  const timeoutMs = opts.requestTimeoutMs ?? 30_000 + slowMs;
  // One agent, one socket per worker: requests are back to back on reused
  // connections, which is what exposes keep-alive races during a switch.
  const agent = new transport.Agent({ keepAlive: true, maxSockets: opts.concurrency });
  const log = new RecordLog();
  const samples: FailureSample[] = [];
  const startedAt = now();
  let stopping = false;

  const record = (r: RequestRecord, detail?: string) => {
    log.add(r);
    if (r.failure && samples.length < MAX_FAILURE_SAMPLES) {
      samples.push({ at: Math.round(r.start), kind: r.kind, failure: r.failure, detail: detail ?? "" });
    }
  };

  function oneRequest(kind: RequestKind): Promise<void> {
    return new Promise((resolve) => {
      const body = kind === "post" ? randomBody() : undefined;
      const reqPath = kind === "get" ? "/" : kind === "slow" ? `/slow?ms=${slowMs}` : "/echo";
      const headers: http.OutgoingHttpHeaders = {};
      if (opts.hostHeader) headers.host = opts.hostHeader;
      if (body) {
        headers["content-type"] = "application/octet-stream";
        headers["content-length"] = body.length;
      }
      const start = now();
      let settled = false;
      const finish = (r: Omit<RequestRecord, "start" | "end" | "kind">, detail?: string) => {
        if (settled) return;
        settled = true;
        record({ start, end: now(), kind, ...r }, detail);
        resolve();
      };
      const req = transport.request(
        {
          protocol: base.protocol,
          hostname: base.hostname,
          port: base.port || undefined,
          method: body ? "POST" : "GET",
          path: basePath + reqPath,
          headers,
          agent,
        },
        (res) => {
          const status = res.statusCode ?? 0;
          const rawVersion = res.headers["x-app-version"];
          const version = Array.isArray(rawVersion) ? rawVersion.join(",") : rawVersion;
          const chunks: Buffer[] = [];
          res.on("data", (c: Buffer) => chunks.push(c));
          res.on("end", () => {
            if (status !== 200) {
              finish({ ok: false, failure: "status", status, version }, `HTTP ${status}`);
            } else if (body && !Buffer.concat(chunks).equals(body)) {
              finish({ ok: false, failure: "echo", status, version }, `echo mismatch: sent ${body.length} bytes`);
            } else {
              finish({ ok: true, status, version });
            }
          });
          // Body cut short (connection reset mid-response) is a transport failure.
          res.on("error", (err) => finish({ ok: false, failure: "transport", status, errorCode: errorCode(err), version }, String(err)));
          res.on("close", () => {
            if (!res.complete) finish({ ok: false, failure: "transport", status, errorCode: "INCOMPLETE_BODY", version }, "response closed before end");
          });
        },
      );
      req.setTimeout(timeoutMs, () => {
        const err = new Error(`no response within ${timeoutMs} ms`) as NodeJS.ErrnoException;
        err.code = "TIMEOUT";
        req.destroy(err);
      });
      // Includes reuse of a keep-alive socket the server just closed
      // (ECONNRESET / "socket hang up"): counted, never retried.
      req.on("error", (err) => finish({ ok: false, failure: "transport", errorCode: errorCode(err) }, String(err)));
      req.end(body);
    });
  }

  async function worker(): Promise<void> {
    while (!stopping) await oneRequest(pickKind(mix));
  }

  const stopNow = () => {
    stopping = true;
  };
  const durationTimer = opts.durationMs !== undefined ? setTimeout(stopNow, opts.durationMs) : undefined;
  const workers = Array.from({ length: opts.concurrency }, () => worker());
  let report: LoadReport | undefined;
  const done = Promise.all(workers).then(() => {
    agent.destroy();
    clearTimeout(durationTimer);
    report ??= new LoadReport(log, startedAt, now(), samples);
    return report;
  });
  if (opts.stopSignal) {
    const sig = opts.stopSignal;
    if (typeof (sig as Promise<unknown>).then === "function") {
      (sig as Promise<unknown>).then(stopNow, stopNow);
    } else {
      const signal = sig as AbortSignal;
      if (signal.aborted) stopNow();
      else signal.addEventListener("abort", stopNow, { once: true });
    }
  }

  return {
    stop: () => {
      stopNow();
      return done;
    },
    done,
    completed: () => log.length,
  };
}

/** Run load until durationMs / stopSignal ends it; returns the report. */
export async function runLoad(opts: LoadOptions): Promise<LoadReport> {
  if (opts.durationMs === undefined && opts.stopSignal === undefined) {
    throw new Error("runLoad needs durationMs or stopSignal (or use startLoad)");
  }
  return startLoad(opts).done;
}
