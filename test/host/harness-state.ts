// Pure (no I/O except the state file) part of the remote-command harness:
// the Pulumi-like state model and the diff/plan logic. Kept separate from the
// SSH executor so unit tests can exercise it with a fake executor.
import * as crypto from "crypto";
import * as fs from "fs";
import * as path from "path";

export const COMMAND_TYPE = "command:remote:Command";
export const COPY_TYPE = "command:remote:CopyToRemote";
export type RemoteType = typeof COMMAND_TYPE | typeof COPY_TYPE;

/** The `connection` input as the provider receives it (SDK defaults applied). */
export interface Connection {
    host: string;
    port?: number;
    user?: string;
    privateKey?: string;
    privateKeyPassword?: string;
    password?: string;
    hostKey?: string;
    agentSocketPath?: string;
    dialErrorLimit?: number;
    perDialTimeout?: number;
    proxy?: Connection;
}

/** Source of a CopyToRemote, decoded from the serialized asset/archive. */
export type CopySource =
    | { kind: "file"; path: string }
    | { kind: "text"; text: string }
    | { kind: "archive"; path: string }
    | { kind: "unsupported"; detail: string };

export interface CommandInputs {
    connection: Connection;
    create?: string;
    update?: string;
    delete?: string;
    stdin?: string;
    environment?: Record<string, string>;
    triggers?: any[];
    addPreviousOutputInEnv?: boolean;
    logging?: string;
}

export interface CopyInputs {
    connection: Connection;
    source: CopySource;
    remotePath: string;
    triggers?: any[];
}

export interface ResourceOptionsSeen {
    deleteBeforeReplace: boolean;
    /** user-supplied replaceOnChanges (the SDK always adds "triggers[*]" for these types) */
    replaceOnChanges: string[];
    ignoreChanges: string[];
    retainOnDelete: boolean;
    protect: boolean;
}

export interface RemoteResource {
    type: RemoteType;
    name: string;
    urn: string;
    /** URN of the direct parent ("" if none / the stack) */
    parent: string;
    /** ancestor URNs, nearest first (the root stack excluded) */
    parents: string[];
    /** inputs as sent to the provider (secrets unwrapped, assets decoded) */
    inputs: CommandInputs | CopyInputs;
    /** top-level input names whose value was (or contained) a secret; always includes "connection" (the SDK wraps it) */
    secrets: string[];
    /** dotted paths of every secret value found, e.g. "environment.TOKEN" */
    secretPaths: string[];
    /** top-level input names that were unknown (preview only) */
    unknowns: string[];
    /**
     * URNs of the remote resources (Command/CopyToRemote) this one must wait for:
     * everything the SDK sent as `dependencies` (explicit dependsOn — a component
     * expanded to all its custom descendants — plus implicit deps of Output inputs),
     * followed transitively through non-remote resources.
     */
    dependsOn: string[];
    /** the raw `dependencies` list the SDK sent (may include cloud resources) */
    allDependencies: string[];
    /** per-input dependencies the SDK sent */
    propertyDependencies: Record<string, string[]>;
    /** allDependencies minus every property dependency ≈ explicit `dependsOn` */
    explicitDependsOn: string[];
    /** constructor order (0-based) among all resources of the program */
    order: number;
    options: ResourceOptionsSeen;
}

export type Action = "create" | "update" | "replace" | "delete" | "same";

export interface StateEntry {
    urn: string;
    type: RemoteType;
    name: string;
    /** hash over all inputs */
    inputsHash: string;
    /** per top-level input hash (sha256 of canonical JSON) */
    fieldHashes: Record<string, string>;
    /** names of inputs that were secret when recorded */
    secrets: string[];
    /** non-secret connection parts; privateKey/password only as hashes */
    connection: { host: string; port: number; user: string; secretHash: string; hostKey?: string };
    /** delete command, if set and not secret */
    delete?: string;
    /** set when the delete command was secret: only its hash is stored */
    deleteHash?: string;
    /** non-secret environment values (needed to run delete); secret ones as hashes */
    environment?: Record<string, string>;
    environmentSecretHashes?: Record<string, string>;
    stdin?: string;
    stdinHash?: string;
    addPreviousOutputInEnv?: boolean;
    /** previous stdout/stderr (PULUMI_COMMAND_STDOUT/STDERR for update/delete); omitted when the command had secret stdin/env/commands */
    stdout?: string;
    stderr?: string;
    /** remote deps at the time of recording (for delete ordering) */
    dependsOn: string[];
    deleteBeforeReplace?: boolean;
    retainOnDelete?: boolean;
    createdAt: string;
    updatedAt: string;
}

export interface HarnessState {
    version: 1;
    resources: Record<string, StateEntry>;
    /** old resources replaced create-before-delete whose delete has not run yet */
    pendingDeletes: StateEntry[];
}

export function emptyState(): HarnessState {
    return { version: 1, resources: {}, pendingDeletes: [] };
}

export function loadState(statePath: string): HarnessState {
    if (!fs.existsSync(statePath)) return emptyState();
    const raw = JSON.parse(fs.readFileSync(statePath, "utf8"));
    if (raw.version !== 1) throw new Error(`harness state ${statePath}: unsupported version ${raw.version}`);
    return { version: 1, resources: raw.resources ?? {}, pendingDeletes: raw.pendingDeletes ?? [] };
}

export function saveState(statePath: string, state: HarnessState): void {
    fs.mkdirSync(path.dirname(path.resolve(statePath)), { recursive: true });
    const tmp = `${statePath}.tmp-${process.pid}`;
    fs.writeFileSync(tmp, JSON.stringify(state, null, 2) + "\n", { mode: 0o600 });
    fs.renameSync(tmp, statePath);
}

// ---------------------------------------------------------------- hashing

/** JSON with sorted keys, undefined dropped (like the provider's property map). */
export function canonical(v: any): string {
    if (v === undefined) return "null";
    if (v === null || typeof v !== "object") return JSON.stringify(v);
    if (Array.isArray(v)) return "[" + v.map(canonical).join(",") + "]";
    const keys = Object.keys(v).filter((k) => v[k] !== undefined).sort();
    return "{" + keys.map((k) => JSON.stringify(k) + ":" + canonical(v[k])).join(",") + "}";
}

export function sha256(s: string | Buffer): string {
    return crypto.createHash("sha256").update(s).digest("hex");
}

/** Content hash of a file or a directory tree (like Pulumi's asset/archive hash). */
export function contentHash(p: string): string {
    const h = crypto.createHash("sha256");
    const walk = (abs: string, rel: string) => {
        const st = fs.statSync(abs);
        if (st.isDirectory()) {
            h.update(`D ${rel}\n`);
            for (const e of fs.readdirSync(abs).sort()) walk(path.join(abs, e), rel ? `${rel}/${e}` : e);
        } else {
            h.update(`F ${rel} ${st.size}\n`);
            h.update(fs.readFileSync(abs));
        }
    };
    if (!fs.existsSync(p)) return "missing:" + p;
    walk(p, "");
    return h.digest("hex");
}

function hashField(type: RemoteType, name: string, value: any): string {
    if (type === COPY_TYPE && name === "source" && value) {
        const s = value as CopySource;
        // the engine diffs assets by content hash (plus the path/text identity)
        if (s.kind === "file" || s.kind === "archive") return sha256(canonical({ ...s, content: contentHash(s.path) }));
    }
    return sha256(canonical(value));
}

export function fieldHashes(r: RemoteResource): Record<string, string> {
    const out: Record<string, string> = {};
    for (const [k, v] of Object.entries(r.inputs)) {
        if (v === undefined) continue;
        out[k] = hashField(r.type, k, v);
    }
    return out;
}

export function inputsHash(fh: Record<string, string>): string {
    return sha256(canonical(fh));
}

// ---------------------------------------------------------------- diff

export interface Diff {
    action: Action;
    /** top-level inputs that differ */
    changed: string[];
    /** whether the change forces replacement */
    replace: boolean;
}

function matchesReplaceOnChanges(field: string, patterns: string[]): boolean {
    for (const p of patterns) {
        if (p === "*") return true;
        const top = p.split(/[.[]/)[0];
        if (top === field) return true;
    }
    return false;
}

/**
 * Pulumi's decision for one resource present in both program and state:
 * no change → same; change of `triggers` (the SDK registers these types with
 * replaceOnChanges ["triggers[*]"]) or of a user replaceOnChanges input →
 * replace; any other change → update (the provider then runs `update` if set,
 * else `create`; CopyToRemote copies only if source/remotePath changed).
 * ignoreChanges inputs are not compared.
 */
export function diff(r: RemoteResource, old: StateEntry, newHashes = fieldHashes(r)): Diff {
    const ignore = new Set(r.options.ignoreChanges.map((p) => p.split(/[.[]/)[0]));
    const keys = new Set([...Object.keys(newHashes), ...Object.keys(old.fieldHashes)]);
    const changed: string[] = [];
    for (const k of [...keys].sort()) {
        if (ignore.has(k)) continue;
        if (newHashes[k] !== old.fieldHashes[k]) changed.push(k);
    }
    if (changed.length === 0) return { action: "same", changed, replace: false };
    const replacePatterns = ["triggers[*]", ...r.options.replaceOnChanges];
    const replace = changed.some((k) => matchesReplaceOnChanges(k, replacePatterns));
    return { action: replace ? "replace" : "update", changed, replace };
}

// ---------------------------------------------------------------- ordering

/**
 * Topological order of `items` by `deps` (edges to items not in the set are
 * ignored); ties broken by `rank` (registration order). Throws on cycles.
 */
export function topoOrder<T>(items: T[], key: (t: T) => string, deps: (t: T) => string[], rank: (t: T) => number): T[] {
    const byKey = new Map(items.map((t) => [key(t), t] as [string, T]));
    const indeg = new Map<string, number>();
    const rdeps = new Map<string, string[]>();
    for (const t of items) {
        const k = key(t);
        const ds = [...new Set(deps(t))].filter((d) => byKey.has(d) && d !== k);
        indeg.set(k, ds.length);
        for (const d of ds) rdeps.set(d, [...(rdeps.get(d) ?? []), k]);
    }
    const ready = items.filter((t) => indeg.get(key(t)) === 0);
    const out: T[] = [];
    while (ready.length) {
        ready.sort((a, b) => rank(a) - rank(b));
        const t = ready.shift()!;
        out.push(t);
        for (const rk of rdeps.get(key(t)) ?? []) {
            const n = indeg.get(rk)! - 1;
            indeg.set(rk, n);
            if (n === 0) ready.push(byKey.get(rk)!);
        }
    }
    if (out.length !== items.length) {
        const stuck = items.filter((t) => !out.includes(t)).map(key);
        throw new Error(`dependency cycle among: ${stuck.join(", ")}`);
    }
    return out;
}

// ---------------------------------------------------------------- state entries

/** Which inputs' secretness makes stdout unsafe to keep in plain text. */
const OUTPUT_TAINTING_SECRETS = ["create", "update", "delete", "stdin", "environment"];

export function makeEntry(r: RemoteResource, fh: Record<string, string>, prev: StateEntry | undefined, out: { stdout?: string; stderr?: string } | undefined): StateEntry {
    const now = new Date().toISOString();
    const secret = new Set(r.secrets);
    const c = r.inputs.connection;
    const e: StateEntry = {
        urn: r.urn,
        type: r.type,
        name: r.name,
        inputsHash: inputsHash(fh),
        fieldHashes: fh,
        secrets: [...r.secrets],
        connection: {
            host: c.host,
            port: c.port ?? 22,
            user: c.user ?? "root",
            secretHash: sha256(canonical({ k: c.privateKey, p: c.password, pp: c.privateKeyPassword, proxy: c.proxy })),
            hostKey: c.hostKey,
        },
        dependsOn: [...r.dependsOn],
        deleteBeforeReplace: r.options.deleteBeforeReplace || undefined,
        retainOnDelete: r.options.retainOnDelete || undefined,
        createdAt: prev?.createdAt ?? now,
        updatedAt: now,
    };
    if (r.type === COMMAND_TYPE) {
        const i = r.inputs as CommandInputs;
        if (i.delete !== undefined) {
            if (secret.has("delete")) e.deleteHash = sha256(i.delete);
            else e.delete = i.delete;
        }
        if (i.environment) {
            const secretEnvKeys = new Set(
                r.secretPaths.filter((p) => p === "environment" || p.startsWith("environment.")).map((p) => p.slice("environment.".length)),
            );
            const allSecret = secretEnvKeys.has("");
            for (const [k, v] of Object.entries(i.environment)) {
                if (allSecret || secretEnvKeys.has(k)) (e.environmentSecretHashes ??= {})[k] = sha256(v);
                else (e.environment ??= {})[k] = v;
            }
        }
        if (i.stdin !== undefined) {
            if (secret.has("stdin")) e.stdinHash = sha256(i.stdin);
            else e.stdin = i.stdin;
        }
        if (i.addPreviousOutputInEnv === false) e.addPreviousOutputInEnv = false;
        const tainted = OUTPUT_TAINTING_SECRETS.some((k) => secret.has(k));
        const o = out ?? { stdout: prev?.stdout, stderr: prev?.stderr };
        if (!tainted) {
            if (o.stdout) e.stdout = o.stdout;
            if (o.stderr) e.stderr = o.stderr;
        }
    }
    return e;
}
