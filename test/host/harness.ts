// Test harness that stands in for the Pulumi engine + the @pulumi/command
// provider: it runs the program under pulumi.runtime.setMocks, captures every
// command:remote:Command / command:remote:CopyToRemote with the inputs the
// provider would receive, and then executes them for real over SSH (system
// `ssh`), keeping a Pulumi-like state file keyed by URN.
//
// See the report / README notes at the bottom of this file for the semantics.
import * as pulumi from "@pulumi/pulumi";
import { spawn } from "child_process";
import * as fs from "fs";
import * as path from "path";

import {
    Action,
    COMMAND_TYPE,
    COPY_TYPE,
    CommandInputs,
    Connection,
    CopyInputs,
    CopySource,
    HarnessState,
    RemoteResource,
    RemoteType,
    StateEntry,
    diff,
    fieldHashes,
    loadState,
    makeEntry,
    saveState,
    sha256,
    topoOrder,
} from "./harness-state";
import { tempDir } from "../support/tmp";

export * from "./harness-state";

// eslint-disable-next-line @typescript-eslint/no-var-requires
const settings: any = require("@pulumi/pulumi/runtime/settings");
// eslint-disable-next-line @typescript-eslint/no-var-requires
const rpc: any = require("@pulumi/pulumi/runtime/rpc");

const SIG_KEY: string = rpc.specialSigKey; // "4dabf18193072939515e22adb298388d"
const SECRET_SIG: string = rpc.specialSecretSig;
const ASSET_SIG: string = rpc.specialAssetSig;
const ARCHIVE_SIG: string = rpc.specialArchiveSig;
const RESOURCE_SIG: string = rpc.specialResourceSig;
const OUTPUT_SIG: string = rpc.specialOutputValueSig;
const UNKNOWN: string = rpc.unknownValue;
const STACK_TYPE = "pulumi:pulumi:Stack";

// ================================================================ collect

export interface CollectOptions {
    /** the Pulumi program; default: require("../../infra/program").program */
    program?: () => any;
    /** config values (strings; structured values as JSON strings). Keys without a namespace get "<project>:" */
    config: Record<string, string>;
    /** config keys to mark secret (same key forms as `config`) */
    secretKeys?: string[];
    stack?: string;
    /** default "clj-zero-downtime" */
    project?: string;
    preview?: boolean;
    /** extra mock outputs for (cloud) resources; merged over inputs + built-in defaults */
    resourceOutputs?: (args: pulumi.runtime.MockResourceArgs) => Record<string, any> | undefined;
    /** mock for invokes (data sources); default returns the inputs */
    call?: (args: pulumi.runtime.MockCallArgs) => Record<string, any>;
}

/** One registration seen by the mock monitor (any resource type). */
export interface Registration {
    type: string;
    name: string;
    urn: string;
    parent: string;
    custom: boolean;
    order: number;
    dependencies: string[];
    propertyDependencies: Record<string, string[]>;
    raw: any;
    options: {
        deleteBeforeReplace: boolean;
        replaceOnChanges: string[];
        ignoreChanges: string[];
        retainOnDelete: boolean;
        protect: boolean;
    };
}

export interface CollectResult {
    resources: RemoteResource[];
    registrations: Registration[];
    /** the program's return value, resolved (stack outputs) */
    outputs: Record<string, any>;
}

/** Built-in mock outputs for the cloud resources this project may use. */
function defaultCloudOutputs(args: pulumi.runtime.MockResourceArgs): Record<string, any> {
    const t = args.type;
    if (t === COMMAND_TYPE) return { stdout: "", stderr: "" };
    if (/droplet:Droplet$/i.test(t)) {
        return { ipv4Address: "192.0.2.10", ipv4AddressPrivate: "10.0.0.10", ipv6Address: "2001:db8::10", status: "active" };
    }
    if (/server:Server$/i.test(t)) {
        return { ipv4Address: "192.0.2.11", ipv6Address: "2001:db8::11", ipv6Network: "2001:db8::/64", status: "running" };
    }
    if (/(reservedIp|floatingIp|primaryIp)/i.test(t)) return { ipAddress: "192.0.2.12" };
    if (/sshKey:SshKey$/i.test(t)) return { fingerprint: "00:11:22:33:44:55:66:77:88:99:aa:bb:cc:dd:ee:ff" };
    return {};
}

function defaultProgram(): () => any {
    // eslint-disable-next-line @typescript-eslint/no-var-requires
    return require("../../infra/program").program;
}

function qualifyKey(k: string, project: string): string {
    return k.includes(":") ? k : `${project}:${k}`;
}

/** Runs the program under mocks and returns every remote Command / CopyToRemote. */
export async function collect(opts: CollectOptions): Promise<RemoteResource[]> {
    return (await collectAll(opts)).resources;
}

let collecting = false;

export async function collectAll(opts: CollectOptions): Promise<CollectResult> {
    if (collecting) throw new Error("harness.collect is not re-entrant (the Pulumi runtime is process-global)");
    collecting = true;
    try {
        return await collectInner(opts);
    } finally {
        collecting = false;
    }
}

async function collectInner(opts: CollectOptions): Promise<CollectResult> {
    const project = opts.project ?? "clj-zero-downtime";
    const stack = opts.stack ?? "test";
    const program = opts.program ?? defaultProgram();

    const config: Record<string, string> = {};
    for (const [k, v] of Object.entries(opts.config)) config[qualifyKey(k, project)] = v;
    pulumi.runtime.setAllConfig(config, (opts.secretKeys ?? []).map((k) => qualifyKey(k, project)));

    const mocks: pulumi.runtime.Mocks = {
        newResource: (args) => {
            const extra = opts.resourceOutputs?.(args);
            return { id: `${args.name}-id`, state: { ...args.inputs, ...defaultCloudOutputs(args), ...(extra ?? {}) } };
        },
        call: (args) => (opts.call ? opts.call(args) : args.inputs),
    };
    await pulumi.runtime.setMocks(mocks, project, stack, opts.preview ?? false);

    const registrations: Registration[] = [];
    const ctorOrder = new Map<string, number>();
    let ctorCounter = 0;
    const monitor = settings.getMonitor();
    // URNs like the engine makes them: the root stack is not part of the type chain.
    monitor.newUrn = (parent: string, type: string, name: string) => {
        if (parent) {
            const qualifiedType = parent.split("::")[2];
            const parentType = qualifiedType.split("$").pop()!;
            if (parentType !== STACK_TYPE) type = qualifiedType + "$" + type;
        }
        return "urn:pulumi:" + [stack, project, type, name].join("::");
    };
    const origRegister = monitor.registerResource.bind(monitor);
    let arrival = 0;
    monitor.registerResource = (req: any, callback: any) => {
        const type: string = req.getType();
        const name: string = req.getName();
        const parent: string = req.getParent() ?? "";
        const pd: Record<string, string[]> = {};
        req.getPropertydependenciesMap().forEach((v: any, k: string) => {
            pd[k] = v.getUrnsList();
        });
        const key = `${type}::${name}`;
        registrations.push({
            type,
            name,
            urn: monitor.newUrn(parent, type, name),
            parent,
            custom: req.getCustom(),
            order: ctorOrder.has(key) ? ctorOrder.get(key)! : 1e6 + arrival,
            dependencies: req.getDependenciesList(),
            propertyDependencies: pd,
            raw: req.getObject() ? req.getObject().toJavaScript() : {},
            options: {
                deleteBeforeReplace: !!req.getDeletebeforereplace(),
                replaceOnChanges: req.getReplaceonchangesList(),
                ignoreChanges: req.getIgnorechangesList(),
                retainOnDelete: !!req.getRetainondelete(),
                protect: !!req.getProtect(),
            },
        });
        arrival++;
        return origRegister(req, callback);
    };

    // Registration errors surface as unhandled rejections under mocks; catch them.
    const errors: any[] = [];
    const onUnhandled = (e: any) => errors.push(e);
    process.on("unhandledRejection", onUnhandled);
    let outputs: Record<string, any> = {};
    try {
        outputs = (await pulumi.runtime.runInPulumiStack(async () => {
            // constructor order of every resource (stable tie-breaker for ordering)
            pulumi.runtime.registerStackTransformation((args) => {
                const key = `${args.type}::${args.name}`;
                if (!ctorOrder.has(key)) ctorOrder.set(key, ctorCounter++);
                return undefined;
            });
            return program();
        })) ?? {};
        // wait until every registration (not just those reachable from outputs) settled
        await settings.waitForRPCs();
        await new Promise((r) => setImmediate(r));
        await settings.waitForRPCs();
    } catch (e) {
        // let the failed stack's pending promises settle (and be swallowed) before returning,
        // so they don't surface as unhandled rejections in a later collect()
        await settings.waitForRPCs().catch(() => undefined);
        for (let i = 0; i < 5; i++) await new Promise((r) => setImmediate(r));
        throw e;
    } finally {
        process.removeListener("unhandledRejection", onUnhandled);
    }
    if (errors.length) {
        const e = errors[0];
        throw new Error(`program failed under mocks: ${e?.stack ?? e}`);
    }
    // orders assigned late (arrival-only) keep arrival order after ctor-ordered ones
    for (const r of registrations) {
        const key = `${r.type}::${r.name}`;
        if (r.order >= 1e6 && ctorOrder.has(key)) r.order = ctorOrder.get(key)!;
    }
    return { resources: toRemoteResources(registrations), registrations, outputs: outputs ?? {} };
}

interface Decoded {
    value: any;
    secretPaths: string[];
    unknownPaths: string[];
}

/** Decodes a serialized property value (secrets unwrapped, assets decoded). */
export function decodeProperty(v: any, p = ""): Decoded {
    const secretPaths: string[] = [];
    const unknownPaths: string[] = [];
    const walk = (x: any, at: string): any => {
        if (x === UNKNOWN) {
            unknownPaths.push(at);
            return undefined;
        }
        if (x === null || typeof x !== "object") return x;
        if (Array.isArray(x)) return x.map((e, i) => walk(e, `${at}[${i}]`));
        const sig = x[SIG_KEY];
        if (sig === SECRET_SIG) {
            secretPaths.push(at);
            return walk(x.value, at);
        }
        if (sig === ASSET_SIG || sig === ARCHIVE_SIG) {
            const kind = sig === ASSET_SIG ? "asset" : "archive";
            if (typeof x.path === "string") return { __kind: kind, path: x.path };
            if (typeof x.text === "string") return { __kind: kind, text: x.text };
            if (typeof x.uri === "string") return { __kind: kind, uri: x.uri };
            return { __kind: kind, assets: x.assets !== undefined ? Object.keys(x.assets) : [] };
        }
        if (sig === RESOURCE_SIG) return x.urn;
        if (sig === OUTPUT_SIG) {
            if (x.secret) secretPaths.push(at);
            if (!("value" in x)) {
                unknownPaths.push(at);
                return undefined;
            }
            return walk(x.value, at);
        }
        const out: any = {};
        for (const [k, e] of Object.entries(x)) out[k] = walk(e, at ? `${at}.${k}` : k);
        return out;
    };
    return { value: walk(v, p), secretPaths, unknownPaths };
}

function toCopySource(v: any): CopySource {
    if (!v || typeof v !== "object") return { kind: "unsupported", detail: JSON.stringify(v) };
    if (v.__kind === "asset" && typeof v.path === "string") return { kind: "file", path: v.path };
    if (v.__kind === "asset" && typeof v.text === "string") return { kind: "text", text: v.text };
    if (v.__kind === "archive" && typeof v.path === "string") return { kind: "archive", path: v.path };
    return { kind: "unsupported", detail: `${v.__kind} ${JSON.stringify(v)}` };
}

export function toRemoteResources(regs: Registration[]): RemoteResource[] {
    const byUrn = new Map(regs.map((r) => [r.urn, r] as [string, Registration]));
    const isRemote = (t: string) => t === COMMAND_TYPE || t === COPY_TYPE;
    const out: RemoteResource[] = [];
    for (const r of regs) {
        if (!isRemote(r.type)) continue;
        const d = decodeProperty(r.raw);
        const v = d.value ?? {};
        const secretTop = new Set(d.secretPaths.map((p) => p.split(/[.[]/)[0]));
        const unknownTop = new Set(d.unknownPaths.map((p) => p.split(/[.[]/)[0]));
        let inputs: CommandInputs | CopyInputs;
        if (r.type === COMMAND_TYPE) {
            const i: CommandInputs = { connection: v.connection };
            for (const k of ["create", "update", "delete", "stdin", "environment", "triggers", "addPreviousOutputInEnv", "logging"] as const) {
                if (v[k] !== undefined) (i as any)[k] = v[k];
            }
            inputs = i;
        } else {
            const i: CopyInputs = { connection: v.connection, source: toCopySource(v.source), remotePath: v.remotePath };
            if (v.triggers !== undefined) i.triggers = v.triggers;
            inputs = i;
        }
        // parents (nearest first, root stack excluded)
        const parents: string[] = [];
        for (let p = r.parent; p && byUrn.has(p); p = byUrn.get(p)!.parent) {
            if (byUrn.get(p)!.type === STACK_TYPE) break;
            parents.push(p);
        }
        // remote deps, followed transitively through non-remote resources
        const deps: string[] = [];
        const seen = new Set<string>();
        const queue = [...r.dependencies];
        while (queue.length) {
            const u = queue.shift()!;
            if (seen.has(u) || u === r.urn) continue;
            seen.add(u);
            const dr = byUrn.get(u);
            if (!dr) continue;
            if (isRemote(dr.type)) deps.push(u);
            else queue.push(...dr.dependencies);
        }
        const propDeps = new Set(Object.values(r.propertyDependencies).flat());
        out.push({
            type: r.type as RemoteType,
            name: r.name,
            urn: r.urn,
            parent: r.parent && byUrn.get(r.parent)?.type !== STACK_TYPE ? r.parent : "",
            parents,
            inputs,
            secrets: [...secretTop].sort(),
            secretPaths: d.secretPaths,
            unknowns: [...unknownTop].sort(),
            dependsOn: deps,
            allDependencies: [...r.dependencies],
            propertyDependencies: r.propertyDependencies,
            explicitDependsOn: r.dependencies.filter((u) => !propDeps.has(u)),
            order: r.order,
            options: { ...r.options },
        });
    }
    out.sort((a, b) => a.order - b.order);
    return out;
}

// ================================================================ executor

export interface RunRequest {
    label: string;
    connection: Connection;
    command: string;
    stdin?: string;
    /** set like session.Setenv: the provider fails if the server refuses one */
    environment?: Record<string, string>;
    /** PULUMI_COMMAND_STDOUT/STDERR: set best-effort (the provider warns and continues) */
    softEnvironment?: Record<string, string>;
}

export interface RunResult {
    code: number;
    stdout: string;
    stderr: string;
    warnings?: string[];
}

export interface CopyRequest {
    label: string;
    connection: Connection;
    source: CopySource;
    remotePath: string;
}

export interface Executor {
    run(req: RunRequest): Promise<RunResult>;
    copy(req: CopyRequest): Promise<void>;
    close?(): void | Promise<void>;
}

export interface SshExecutorOptions {
    /**
     * "strict" (default, like the provider): before a command with `environment`, probe once per
     * connection+variable set whether sshd accepts the variables (AcceptEnv); fail like the
     * provider does if not. "lenient": send them via SetEnv and don't check.
     */
    envMode?: "strict" | "lenient";
    /** ssh binary (default "ssh") */
    ssh?: string;
}

function shq(s: string): string {
    return `'${s.replace(/'/g, `'\\''`)}'`;
}

/** Quote one argument for ssh_config (OpenSSH argv_split rules). */
function cfgq(s: string): string {
    if (/[\r\n\0]/.test(s)) throw new Error("value contains a newline/NUL and cannot be sent via ssh SetEnv");
    return `"${s.replace(/[\\"]/g, (c) => "\\" + c)}"`;
}

class SshError extends Error {}

/** Runs commands with the system `ssh` binary, the way the provider's Go SSH client does. */
export class SshExecutor implements Executor {
    private readonly dir: string;
    private readonly envMode: "strict" | "lenient";
    private readonly sshBin: string;
    private readonly envProbeCache = new Map<string, string[]>();
    private seq = 0;

    constructor(o: SshExecutorOptions = {}) {
        this.dir = tempDir("harness");
        fs.chmodSync(this.dir, 0o700);
        this.envMode = o.envMode ?? "strict";
        this.sshBin = o.ssh ?? "ssh";
    }

    close(): void {
        fs.rmSync(this.dir, { recursive: true, force: true });
    }

    private file(name: string, content: string, mode = 0o600): string {
        const p = path.join(this.dir, name);
        fs.writeFileSync(p, content, { mode });
        fs.chmodSync(p, mode);
        return p;
    }

    /** ssh_config for one connection (+ SetEnv lines); returns [configPath, env for the ssh process, cleanup]. */
    private config(c: Connection, setenv: Record<string, string>): { cfg: string; env: NodeJS.ProcessEnv; cleanup: () => void } {
        const id = `${process.pid}-${++this.seq}`;
        const files: string[] = [];
        const lines = [
            "Host *",
            `  User ${cfgq(c.user ?? "root")}`,
            `  Port ${c.port ?? 22}`,
            "  LogLevel ERROR",
            `  ConnectTimeout ${c.perDialTimeout ?? 15}`,
            `  ConnectionAttempts ${Math.max(1, Math.min(c.dialErrorLimit ?? 10, 30))}`,
            "  ServerAliveInterval 30",
            "  IdentitiesOnly yes",
            "  ForwardAgent no",
            "  RequestTTY no",
            "  UpdateHostKeys no",
        ];
        if (c.hostKey) {
            const kh = this.file(`known_hosts-${id}`, `${c.port && c.port !== 22 ? `[${c.host}]:${c.port}` : c.host} ${c.hostKey.trim()}\n`);
            files.push(kh);
            lines.push("  StrictHostKeyChecking yes", `  UserKnownHostsFile ${cfgq(kh)}`);
        } else {
            // the provider uses ssh.InsecureIgnoreHostKey() when no hostKey is given
            lines.push("  StrictHostKeyChecking no", "  UserKnownHostsFile /dev/null", "  GlobalKnownHostsFile /dev/null");
        }
        if (c.privateKey) {
            const k = this.file(`key-${id}`, c.privateKey.endsWith("\n") ? c.privateKey : c.privateKey + "\n");
            files.push(k);
            lines.push(`  IdentityFile ${cfgq(k)}`);
        } else {
            lines.push("  IdentityFile none");
        }
        const env: NodeJS.ProcessEnv = { ...process.env };
        delete env.SSH_AUTH_SOCK;
        if (c.agentSocketPath) env.SSH_AUTH_SOCK = c.agentSocketPath;
        else if (!c.privateKey && !c.password && process.env.SSH_AUTH_SOCK) env.SSH_AUTH_SOCK = process.env.SSH_AUTH_SOCK;
        if (c.password !== undefined || c.privateKeyPassword !== undefined) {
            const ap = this.file(
                `askpass-${id}`,
                `#!/bin/sh\ncase "$1" in *assphrase*) printf '%s\\n' "$CZD_HARNESS_KEYPASS";; *) printf '%s\\n' "$CZD_HARNESS_PASSWORD";; esac\n`,
                0o700,
            );
            files.push(ap);
            env.SSH_ASKPASS = ap;
            env.SSH_ASKPASS_REQUIRE = "force";
            env.DISPLAY = env.DISPLAY ?? ":0";
            env.CZD_HARNESS_PASSWORD = c.password ?? "";
            env.CZD_HARNESS_KEYPASS = c.privateKeyPassword ?? "";
            lines.push("  BatchMode no", "  NumberOfPasswordPrompts 1");
            if (c.password !== undefined) lines.push("  PreferredAuthentications publickey,password,keyboard-interactive");
        } else {
            lines.push("  BatchMode yes");
        }
        if (c.proxy) {
            // jump host: its own ssh_config, used through ProxyCommand
            const inner = this.config(c.proxy, {});
            files.push(inner.cfg);
            lines.push(`  ProxyCommand ${this.sshBin} -F ${inner.cfg} -W %h:%p -- ${c.proxy.host}`);
            Object.assign(env, inner.env);
        }
        const setenvArgs = Object.entries(setenv).map(([k, v]) => cfgq(`${k}=${v}`));
        if (setenvArgs.length) lines.push(`  SetEnv ${setenvArgs.join(" ")}`);
        const cfg = this.file(`ssh_config-${id}`, lines.join("\n") + "\n");
        files.push(cfg);
        return { cfg, env, cleanup: () => files.forEach((f) => fs.rmSync(f, { force: true })) };
    }

    private exec(c: Connection, command: string, stdin: string | Buffer | undefined, setenv: Record<string, string>): Promise<RunResult> {
        const { cfg, env, cleanup } = this.config(c, setenv);
        return new Promise<RunResult>((resolve, reject) => {
            const child = spawn(this.sshBin, ["-F", cfg, "-T", "--", c.host, command], { env, stdio: ["pipe", "pipe", "pipe"] });
            const out: Buffer[] = [];
            const err: Buffer[] = [];
            child.stdout.on("data", (b) => out.push(b));
            child.stderr.on("data", (b) => err.push(b));
            child.stdin.on("error", () => undefined); // remote may exit before reading stdin
            child.on("error", (e) => {
                cleanup();
                reject(e);
            });
            child.on("close", (code, signal) => {
                cleanup();
                resolve({
                    code: code ?? (signal ? 128 : 1),
                    stdout: Buffer.concat(out).toString("utf8"),
                    stderr: Buffer.concat(err).toString("utf8"),
                });
            });
            if (stdin !== undefined && stdin.length > 0) child.stdin.end(stdin);
            else child.stdin.end();
        });
    }

    private async checkEnvAccepted(c: Connection, keys: string[]): Promise<string[]> {
        const ck = sha256(JSON.stringify([c.host, c.port, c.user, [...keys].sort()]));
        const cached = this.envProbeCache.get(ck);
        if (cached) return cached;
        const marker = `czd-probe-${Math.random().toString(36).slice(2)}`;
        const probe: Record<string, string> = {};
        for (const k of keys) probe[k] = marker;
        const r = await this.exec(c, "env", undefined, probe);
        if (r.code !== 0) throw new SshError(`ssh env probe failed (exit ${r.code}): ${r.stderr.trim()}`);
        const got = new Set(
            r.stdout
                .split("\n")
                .filter((l) => l.endsWith(`=${marker}`))
                .map((l) => l.slice(0, l.indexOf("="))),
        );
        const refused = keys.filter((k) => !got.has(k));
        this.envProbeCache.set(ck, refused);
        return refused;
    }

    async run(req: RunRequest): Promise<RunResult> {
        const env = req.environment ?? {};
        const keys = Object.keys(env);
        const warnings: string[] = [];
        if (keys.length && this.envMode === "strict") {
            const refused = await this.checkEnvAccepted(req.connection, keys);
            if (refused.length) {
                return {
                    code: 255,
                    stdout: "",
                    stderr:
                        `could not set environment variable ${JSON.stringify(refused[0])}: ssh: setenv failed. ` +
                        `(@pulumi/command sends environment via SSH setenv; this only works if sshd is configured to accept these ` +
                        `variables via AcceptEnv. Refused: ${refused.join(", ")})`,
                };
            }
        }
        const setenv: Record<string, string> = { ...env };
        for (const [k, v] of Object.entries(req.softEnvironment ?? {})) {
            if (/[\r\n\0]/.test(v)) {
                warnings.push(`Unable to set '${k}' (multi-line value cannot be sent by the harness's ssh client)`);
                continue;
            }
            setenv[k] = v;
        }
        const r = await this.exec(req.connection, req.command, req.stdin, setenv);
        return { ...r, warnings };
    }

    /**
     * Mirrors the provider's sftpCopy(), in ONE ssh session: a POSIX sh script (run by the
     * remote login shell) makes the directories and writes each file with `head -c SIZE`,
     * reading the concatenated file contents from stdin. Like sftp Create(), existing files
     * are truncated (keeping their mode) and new files/dirs get 0666/0777 & umask.
     *   source | dest exists as dir | dest does not exist | dest exists as file
     *   dir    | dest/dir           | dest/dir            | error
     *   dir/   | dest/x for x in dir| dest/x for x in dir | error
     *   file   | dest/file          | dest                | dest (overwritten)
     *   text   | error              | dest                | dest (overwritten)
     */
    async copy(req: CopyRequest): Promise<void> {
        const c = req.connection;
        const s = req.source;
        if (s.kind === "unsupported") throw new SshError(`unsupported CopyToRemote source: ${s.detail}`);
        const lines: string[] = ["set -u", `d=${shq(req.remotePath)}`];
        const chunks: (Buffer | string)[] = [];
        const notDir = (v: string) =>
            `if [ -e "${v}" ] && [ ! -d "${v}" ]; then echo "remote path ${v} exists but is not a directory" >&2; exit 1; fi; [ -d "${v}" ] || mkdir "${v}" || exit 1`;
        const put = (target: string, data: Buffer | string) => {
            lines.push(`head -c ${Buffer.byteLength(data)} > ${target} || { echo "failed to create remote file ${target.replace(/"/g, "")}" >&2; exit 1; }`);
            chunks.push(data);
        };
        if (s.kind === "text") {
            lines.push(`if [ -d "$d" ]; then echo "remote path $d is a directory; when using a text asset, remotePath must be a file path" >&2; exit 1; fi`);
            put(`"$d"`, s.text);
        } else {
            const src = s.path;
            const st = fs.statSync(src);
            if (st.isDirectory()) {
                lines.push(notDir("$d"));
                if (!src.endsWith("/")) {
                    lines.push(`d="$d"/${shq(path.basename(src))}`, notDir("$d"));
                }
                const walk = (abs: string, rel: string) => {
                    for (const e of fs.readdirSync(abs, { withFileTypes: true }).sort((a, b) => (a.name < b.name ? -1 : 1))) {
                        const a = path.join(abs, e.name);
                        const r = rel ? `${rel}/${e.name}` : e.name;
                        if (e.isDirectory()) {
                            lines.push(`p="$d"/${shq(r)}`, notDir("$p"));
                            walk(a, r);
                        } else {
                            put(`"$d"/${shq(r)}`, fs.readFileSync(a));
                        }
                    }
                };
                walk(src, "");
            } else {
                lines.push(`if [ -d "$d" ]; then d="$d"/${shq(path.basename(src))}; fi`);
                put(`"$d"`, fs.readFileSync(src));
            }
        }
        const data = Buffer.concat(chunks.map((x) => (typeof x === "string" ? Buffer.from(x, "utf8") : x)));
        const r = await this.exec(c, lines.join("\n"), data, {});
        if (r.code !== 0) throw new SshError(`copy to ${req.remotePath} failed (exit ${r.code}): ${r.stderr.trim()}`);
    }
}

// ================================================================ apply

export interface ApplyOptions {
    statePath: string;
    log?: (line: string) => void;
    dryRun?: boolean;
    /** default: a new SshExecutor (closed at the end) */
    executor?: Executor;
    /**
     * How many resources may run at once (the engine runs independent steps in parallel).
     * Default 1: dependency order, ties broken by program (constructor) order.
     */
    parallel?: number;
    /**
     * Connection to use for deleting a resource that is no longer in the program when no
     * current resource has a connection with the same (hashed) credentials.
     */
    deleteConnection?: (entry: StateEntry) => Connection | undefined;
    /** throw ApplyError on failure (default true); otherwise return the result with ok=false */
    throwOnError?: boolean;
    /** extra resources whose connections may supply credentials for deletes (see destroy()) */
    credentialsFrom?: RemoteResource[];
}

export interface ResourceResult {
    urn: string;
    name: string;
    type: RemoteType;
    action: Action;
    /** whether a command/copy actually ran on the remote */
    executed: boolean;
    /** what ran: "create" | "update" | "delete" | "copy" | undefined */
    ran?: string;
    /** changed inputs (update/replace) */
    changed?: string[];
    /** set on the delete of the old instance of a replaced resource (the replace itself is a separate result) */
    replacedDelete?: boolean;
    status: "ok" | "failed" | "skipped" | "planned";
    durationMs: number;
    stdout: string;
    stderr: string;
    error?: string;
    warnings?: string[];
}

export interface ApplyResult {
    ok: boolean;
    dryRun: boolean;
    resources: ResourceResult[];
    /** results with executed === true */
    executed: ResourceResult[];
    /** convenience: action counts */
    summary: Record<Action, number>;
    durationMs: number;
    error?: string;
}

export class ApplyError extends Error {
    constructor(message: string, public readonly result: ApplyResult) {
        super(message);
    }
}

function fmtDur(ms: number): string {
    return `${(ms / 1000).toFixed(1)}s`;
}

function trimNl(s: string): string {
    return s.endsWith("\n") ? s.slice(0, -1) : s;
}

/** Every plain string that was marked secret, for log redaction. */
function secretStrings(resources: RemoteResource[]): string[] {
    const out = new Set<string>();
    for (const r of resources) {
        for (const p of r.secretPaths) {
            const v = getPath(r.inputs, p);
            if (p === "connection" || p.startsWith("source")) continue;
            const add = (x: any) => {
                if (typeof x === "string" && x.length >= 4) out.add(x);
                else if (x && typeof x === "object") Object.values(x).forEach(add);
            };
            add(v);
        }
        // A secret connection is secret for its key: host and user names stay readable in logs.
        const c = r.inputs.connection;
        for (const x of [c.privateKey, c.password, c.privateKeyPassword]) if (x && x.length >= 4) out.add(x);
    }
    return [...out].sort((a, b) => b.length - a.length);
}

function getPath(o: any, p: string): any {
    if (!p) return o;
    let cur = o;
    for (const part of p.replace(/\[(\d+)\]/g, ".$1").split(".")) {
        if (cur == null) return undefined;
        cur = cur[part];
    }
    return cur;
}

interface PlanItem {
    r?: RemoteResource;
    old?: StateEntry;
    action: Action;
    changed: string[];
    pendingDelete?: boolean;
}

/**
 * Executes the collected resources against their hosts with Pulumi-like state.
 */
export async function apply(resources: RemoteResource[], opts: ApplyOptions): Promise<ApplyResult> {
    const t0 = Date.now();
    const secrets = secretStrings(resources);
    const redact = (s: string) => secrets.reduce((acc, x) => acc.split(x).join("[secret]"), s);
    const log = (l: string) => opts.log?.(redact(l));
    const state: HarnessState = loadState(opts.statePath);
    const urns = new Set<string>();
    for (const r of resources) {
        if (urns.has(r.urn)) throw new Error(`duplicate URN ${r.urn}`);
        urns.add(r.urn);
        if (r.unknowns.length) throw new Error(`${r.name}: inputs unknown (${r.unknowns.join(", ")}); collect with preview=false`);
        if (r.type === COPY_TYPE && (r.inputs as CopyInputs).source.kind === "unsupported") {
            throw new Error(`${r.name}: unsupported CopyToRemote source ${((r.inputs as CopyInputs).source as any).detail}`);
        }
    }

    // ---- plan
    const ordered = topoOrder(resources, (r) => r.urn, (r) => r.dependsOn, (r) => r.order);
    const hashes = new Map(ordered.map((r) => [r.urn, fieldHashes(r)] as [string, Record<string, string>]));
    const plan: PlanItem[] = ordered.map((r) => {
        const old = state.resources[r.urn];
        if (!old) return { r, action: "create", changed: [] };
        const d = diff(r, old, hashes.get(r.urn)!);
        return { r, old, action: d.action, changed: d.changed };
    });
    const removed = Object.values(state.resources).filter((e) => !urns.has(e.urn));
    const deleteItems: PlanItem[] = [
        ...state.pendingDeletes.map((e) => ({ old: e, action: "delete" as Action, changed: [], pendingDelete: true })),
        ...removed.map((e) => ({ old: e, action: "delete" as Action, changed: [] })),
    ];

    const results: ResourceResult[] = [];
    const mk = (it: PlanItem, status: ResourceResult["status"]): ResourceResult => {
        const src = it.r ?? it.old!;
        return {
            urn: src.urn,
            name: src.name,
            type: src.type,
            action: it.action,
            executed: false,
            changed: it.changed.length ? it.changed : undefined,
            status,
            durationMs: 0,
            stdout: "",
            stderr: "",
        };
    };

    if (opts.dryRun) {
        for (const it of [...plan, ...deleteItems]) {
            const res = mk(it, "planned");
            results.push(res);
            if (it.action !== "same") log(`[harness] (dry run) ${it.action} ${res.name}${it.changed.length ? ` [${it.changed.join(", ")}]` : ""}`);
        }
        return finish(results, true, true, undefined, t0);
    }

    const executor = opts.executor ?? new SshExecutor();
    const ownExecutor = !opts.executor;
    const save = () => saveState(opts.statePath, state);
    let failure: string | undefined;

    // Connection for running an old resource's delete: its recorded host/port/user plus
    // credentials recovered (by hash) from a current resource.
    const connectionFor = (e: StateEntry): Connection | undefined => {
        const same = resources.find((r) => r.urn === e.urn);
        const cands = [...(same ? [same] : []), ...resources, ...(opts.credentialsFrom ?? [])];
        for (const r of cands) {
            const c = r.inputs.connection;
            const probe = makeEntry(r, {}, undefined, undefined).connection.secretHash;
            if (probe === e.connection.secretHash) {
                return { ...c, host: e.connection.host, port: e.connection.port, user: e.connection.user, hostKey: e.connection.hostKey };
            }
        }
        return opts.deleteConnection?.(e);
    };

    const runDelete = async (e: StateEntry, res: ResourceResult): Promise<void> => {
        if (e.retainOnDelete || e.type !== COMMAND_TYPE) return;
        const cur = resources.find((r) => r.urn === e.urn);
        const curIn = cur && cur.type === COMMAND_TYPE ? (cur.inputs as CommandInputs) : undefined;
        let del = e.delete;
        if (del === undefined && e.deleteHash) {
            if (curIn?.delete !== undefined && sha256(curIn.delete) === e.deleteHash) del = curIn.delete;
            else throw new Error(`delete command of ${e.name} was secret and is not recoverable (only its hash is stored)`);
        }
        if (del === undefined) return;
        const conn = connectionFor(e);
        if (!conn) throw new Error(`no credentials to connect to ${e.connection.user}@${e.connection.host}:${e.connection.port} for deleting ${e.name}`);
        const env: Record<string, string> = { ...(e.environment ?? {}) };
        for (const [k, h] of Object.entries(e.environmentSecretHashes ?? {})) {
            const v = curIn?.environment?.[k];
            if (v !== undefined && sha256(v) === h) env[k] = v;
            else (res.warnings ??= []).push(`secret environment ${k} of the old resource is not recoverable; delete runs without it`);
        }
        let stdin = e.stdin;
        if (stdin === undefined && e.stdinHash) {
            if (curIn?.stdin !== undefined && sha256(curIn.stdin) === e.stdinHash) stdin = curIn.stdin;
            else (res.warnings ??= []).push("secret stdin of the old resource is not recoverable; delete runs without it");
        }
        const soft: Record<string, string> = {};
        if (e.addPreviousOutputInEnv !== false) {
            if (e.stdout) soft.PULUMI_COMMAND_STDOUT = e.stdout;
            if (e.stderr) soft.PULUMI_COMMAND_STDERR = e.stderr;
        }
        res.ran = "delete";
        await runCmd(res, { label: e.name, connection: conn, command: del, stdin, environment: env, softEnvironment: soft });
    };

    const runCmd = async (res: ResourceResult, req: RunRequest): Promise<void> => {
        if (req.command === "") return; // provider: session.Run("") → `sh -c ""` → exit 0
        res.executed = true;
        const r = await executor.run(req);
        res.stdout = trimNl(r.stdout);
        res.stderr = trimNl(r.stderr);
        if (r.warnings?.length) (res.warnings ??= []).push(...r.warnings);
        if (r.code !== 0) {
            throw new Error(`Process exited with status ${r.code}: running ${JSON.stringify(redact(req.command))}:\n${r.stdout}${r.stderr}`);
        }
    };

    const runCreateOrUpdate = async (r: RemoteResource, res: ResourceResult, which: "create" | "update", old?: StateEntry): Promise<void> => {
        if (r.type === COMMAND_TYPE) {
            const i = r.inputs as CommandInputs;
            const cmd = which === "update" ? i.update ?? i.create : i.create;
            if (cmd === undefined) return;
            res.ran = which === "update" && i.update !== undefined ? "update" : "create";
            const soft: Record<string, string> = {};
            // on update the provider keeps the old stdout/stderr (BaseOutputs) and exposes them
            if (which === "update" && old && i.addPreviousOutputInEnv !== false) {
                if (old.stdout) soft.PULUMI_COMMAND_STDOUT = old.stdout;
                if (old.stderr) soft.PULUMI_COMMAND_STDERR = old.stderr;
            }
            await runCmd(res, { label: r.name, connection: i.connection, command: cmd, stdin: i.stdin, environment: i.environment, softEnvironment: soft });
        } else {
            const i = r.inputs as CopyInputs;
            // provider Update copies only if the source (hash) or remotePath changed
            if (which === "update" && !res.changed?.some((k) => k === "source" || k === "remotePath")) return;
            res.ran = "copy";
            res.executed = true;
            await executor.copy({ label: r.name, connection: i.connection, source: i.source, remotePath: i.remotePath });
        }
    };

    const step = async (it: PlanItem, res: ResourceResult): Promise<void> => {
        const r = it.r!;
        const fh = hashes.get(r.urn)!;
        const start = Date.now();
        try {
            if (it.action === "same") {
                // refresh non-input bookkeeping (deps) without running anything
                state.resources[r.urn] = { ...it.old!, dependsOn: [...r.dependsOn] };
                return;
            }
            if (it.action === "create") {
                await runCreateOrUpdate(r, res, "create");
                state.resources[r.urn] = makeEntry(r, fh, undefined, res.ran ? res : { stdout: "", stderr: "" });
            } else if (it.action === "update") {
                await runCreateOrUpdate(r, res, "update", it.old);
                state.resources[r.urn] = makeEntry(r, fh, it.old, res.ran && r.type === COMMAND_TYPE ? res : undefined);
            } else if (it.action === "replace") {
                if (r.options.deleteBeforeReplace) {
                    await runDelete(it.old!, res);
                    delete state.resources[r.urn];
                    save();
                    const delOut = { stdout: res.stdout, stderr: res.stderr };
                    await runCreateOrUpdate(r, res, "create");
                    if (!res.ran) Object.assign(res, delOut);
                    state.resources[r.urn] = makeEntry(r, fh, undefined, res.ran ? res : { stdout: "", stderr: "" });
                } else {
                    await runCreateOrUpdate(r, res, "create");
                    state.resources[r.urn] = makeEntry(r, fh, undefined, res.ran ? res : { stdout: "", stderr: "" });
                    // the old one is deleted at the end of the run (engine: DeleteReplaced steps)
                    state.pendingDeletes.push(it.old!);
                    deleteItems.unshift({ old: it.old!, action: "delete", changed: [], pendingDelete: true });
                }
            }
            save();
        } catch (e: any) {
            res.status = "failed";
            res.error = redact(String(e?.message ?? e));
            throw e;
        } finally {
            res.durationMs = Date.now() - start;
            if (res.executed || res.status === "failed") {
                log(`[harness] ${res.status === "failed" ? "FAILED " : ""}${it.action}${res.ran && res.ran !== it.action ? ` (${res.ran})` : ""} ${r.name} (${fmtDur(res.durationMs)})`);
            }
            for (const w of res.warnings ?? []) log(`[harness]   warning: ${w}`);
            if (res.status === "failed") {
                log(`[harness]   ${res.error}`);
            }
        }
    };

    try {
        // ---- creates / updates / replaces, dependency order
        const resByUrn = new Map<string, ResourceResult>();
        for (const it of plan) {
            const res = mk(it, "ok");
            resByUrn.set(it.r!.urn, res);
            results.push(res);
        }
        const parallel = Math.max(1, opts.parallel ?? 1);
        const done = new Set<string>();
        const started = new Set<string>();
        const running = new Map<string, Promise<void>>();
        const pending = [...plan];
        while (pending.length || running.size) {
            if (!failure) {
                for (let i = 0; i < pending.length && running.size < parallel; ) {
                    const it = pending[i];
                    const r = it.r!;
                    if (!r.dependsOn.every((d) => done.has(d) || !urns.has(d))) {
                        i++;
                        continue;
                    }
                    pending.splice(i, 1);
                    started.add(r.urn);
                    const res = resByUrn.get(r.urn)!;
                    const p = step(it, res)
                        .then(() => {
                            done.add(r.urn);
                        })
                        .catch((e) => {
                            failure ??= `${r.name}: ${redact(String(e?.message ?? e))}`;
                        })
                        .finally(() => running.delete(r.urn));
                    running.set(r.urn, p);
                }
            }
            if (running.size === 0) break;
            await Promise.race(running.values());
        }
        for (const it of pending) resByUrn.get(it.r!.urn)!.status = "skipped";

        // ---- deletes (removed resources + replaced ones), reverse dependency order
        if (!failure) {
            // dependents first: an item must be deleted before the items it depends on
            const keyOf = (it: PlanItem) => (it.pendingDelete ? "pending:" : "") + it.old!.urn + "#" + deleteItems.indexOf(it);
            const reverseDeps = (it: PlanItem) =>
                deleteItems.filter((o) => o !== it && o.old!.dependsOn.includes(it.old!.urn)).map(keyOf);
            const seq = topoOrder(deleteItems, keyOf, reverseDeps, (it) => -(resources.find((r) => r.urn === it.old!.urn)?.order ?? deleteItems.indexOf(it)));
            for (const it of seq) {
                const e = it.old!;
                const res = mk(it, "ok");
                if (it.pendingDelete) res.replacedDelete = true;
                results.push(res);
                const start = Date.now();
                try {
                    await runDelete(e, res);
                    if (it.pendingDelete) state.pendingDeletes = state.pendingDeletes.filter((p) => p !== e);
                    else delete state.resources[e.urn];
                    save();
                } catch (err: any) {
                    res.status = "failed";
                    res.error = redact(String(err?.message ?? err));
                    failure = `${e.name}: ${res.error}`;
                } finally {
                    res.durationMs = Date.now() - start;
                    if (res.executed || res.status === "failed") {
                        log(`[harness] ${res.status === "failed" ? "FAILED " : ""}delete${it.pendingDelete ? " (replaced)" : ""} ${e.name} (${fmtDur(res.durationMs)})`);
                    }
                    for (const w of res.warnings ?? []) log(`[harness]   warning: ${w}`);
                    if (res.status === "failed") log(`[harness]   ${res.error}`);
                }
                if (failure) break;
            }
        }
        save();
    } finally {
        if (ownExecutor) await executor.close?.();
    }
    const result = finish(results, !failure, false, failure, t0);
    log(
        `[harness] ${failure ? "FAILED" : "done"} in ${fmtDur(result.durationMs)}: ` +
            (Object.entries(result.summary) as [Action, number][])
                .filter(([, n]) => n)
                .map(([a, n]) => `${n} ${a}`)
                .join(", "),
    );
    if (failure && opts.throwOnError !== false) throw new ApplyError(`harness apply failed: ${failure}`, result);
    return result;
}

/**
 * Deletes everything recorded in the state (like `pulumi destroy`). `resources` (e.g. from
 * collect()) only serve as the source of connection credentials, which the state does not keep.
 */
export async function destroy(resources: RemoteResource[], opts: ApplyOptions): Promise<ApplyResult> {
    return apply([], { ...opts, credentialsFrom: [...resources, ...(opts.credentialsFrom ?? [])] });
}

function finish(results: ResourceResult[], ok: boolean, dryRun: boolean, error: string | undefined, t0: number): ApplyResult {
    const summary: Record<Action, number> = { create: 0, update: 0, replace: 0, delete: 0, same: 0 };
    for (const r of results) if (r.status !== "skipped") summary[r.action]++;
    return { ok, dryRun, resources: results, executed: results.filter((r) => r.executed), summary, durationMs: Date.now() - t0, error };
}
