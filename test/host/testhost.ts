// The test host: a fresh Debian 12 box that looks like a VPS from outside
// (an IP address, port 22, root login by SSH key). Root-level work lives in
// testhost.sh; this wraps it, generates the run's SSH key and runs the apt
// proxy on the host side of the veth.
//
//   const host = await startTestHost({ name: "live", index: 1, log: console.log });
//   await host.ssh("cat /etc/debian_version");
//   await host.stop();
import { spawn, ChildProcess } from "child_process";
import * as fs from "fs";
import * as os from "os";
import * as path from "path";
import { tempDir } from "../support/tmp";

export interface ExecResult {
    code: number;
    stdout: string;
    stderr: string;
}

export interface SshOptions {
    user?: string;
    input?: string;
    /** Resolve with the exit code instead of rejecting when it is non-zero. */
    allowFail?: boolean;
    timeoutMs?: number;
}

export interface TestHost {
    name: string;
    /** 10.213.INDEX.2 */
    address: string;
    user: "root";
    port: 22;
    privateKey: string;
    privateKeyPath: string;
    /** The box's filesystem, seen from the host. */
    rootDir: string;
    /** Network namespace name (`ip netns exec` it). */
    namespace: string;
    ssh(command: string, opts?: SshOptions): Promise<ExecResult>;
    /** Runs a host-side command inside the test host's network namespace; never rejects on exit code. */
    execInNamespace(argv: string[], opts?: { input?: string; timeoutMs?: number }): Promise<ExecResult>;
    stop(): Promise<void>;
}

export interface StartOptions {
    /** Default "testhost". Starting a name that is already up (or crashed) replaces it. */
    name?: string;
    /**
     * 1..254: picks the subnet 10.213.INDEX.0/30 (the host is 10.213.INDEX.2). Hosts running at
     * once need distinct indexes. Default: the first free index, picked under a lock.
     */
    index?: number;
    log?: (line: string) => void;
}

export const SCRIPT = path.join(__dirname, "testhost.sh");
export const PROXY_SCRIPT = path.join(__dirname, "apt-proxy.ts");
export const ROOTFS_TARBALL = "/var/cache/clj-zero-downtime/rootfs-bookworm.tar.gz";
const PROJECT_DIR = path.resolve(__dirname, "..", "..");
const SSH_WAIT_MS = 30_000;

export const SSH_OPTIONS = [
    "-o", "StrictHostKeyChecking=no",
    "-o", "UserKnownHostsFile=/dev/null",
    "-o", "BatchMode=yes",
    "-o", "LogLevel=ERROR",
];

/** The environment for git over SSH to a test host: its key and SSH_OPTIONS. */
export function gitSshEnv(host: Pick<TestHost, "privateKeyPath">): NodeJS.ProcessEnv {
    return { ...process.env, GIT_SSH_COMMAND: ["ssh", "-i", host.privateKeyPath, ...SSH_OPTIONS].join(" ") };
}

/** Runs argv, collecting output; rejects only if it cannot be spawned. */
export function run(
    argv: string[],
    opts: { input?: string; timeoutMs?: number; env?: NodeJS.ProcessEnv } = {},
): Promise<ExecResult> {
    return new Promise((resolve, reject) => {
        const child = spawn(argv[0], argv.slice(1), {
            stdio: ["pipe", "pipe", "pipe"],
            env: opts.env ?? process.env,
        });
        let stdout = "";
        let stderr = "";
        let timedOut = false;
        child.stdout.setEncoding("utf8").on("data", d => (stdout += d));
        child.stderr.setEncoding("utf8").on("data", d => (stderr += d));
        const timer =
            opts.timeoutMs === undefined
                ? undefined
                : setTimeout(() => {
                      timedOut = true;
                      child.kill("SIGKILL");
                  }, opts.timeoutMs);
        child.on("error", err => {
            if (timer) clearTimeout(timer);
            reject(err);
        });
        child.on("close", (code, signal) => {
            if (timer) clearTimeout(timer);
            if (timedOut) stderr += `\n[timed out after ${opts.timeoutMs}ms]`;
            resolve({ code: code ?? (signal ? 128 + (os.constants.signals[signal] ?? 0) : 1), stdout, stderr });
        });
        child.stdin.on("error", () => undefined); // the command may not read its input
        child.stdin.end(opts.input ?? "");
    });
}

function check(what: string, r: ExecResult): ExecResult {
    if (r.code !== 0) {
        throw new Error(`${what} failed with exit code ${r.code}\n${r.stderr.trim()}${r.stdout.trim() ? `\nstdout: ${r.stdout.trim()}` : ""}`);
    }
    return r;
}

function seconds(since: number): string {
    return `${((Date.now() - since) / 1000).toFixed(1)}s`;
}

function parseState(text: string): Record<string, string> {
    const state: Record<string, string> = {};
    for (const line of text.split("\n")) {
        const m = /^([A-Z_]+)=(.*)$/.exec(line.trim());
        if (m) state[m[1]] = m[2];
    }
    return state;
}

function sleep(ms: number): Promise<void> {
    return new Promise(r => setTimeout(r, ms));
}

async function startProxy(listen: string, port: number, name: string, runDir: string): Promise<ChildProcess> {
    const logPath = path.join(runDir, "proxy.log");
    const out = fs.openSync(logPath, "a");
    const child = spawn(
        process.execPath,
        ["-r", "ts-node/register/transpile-only", PROXY_SCRIPT, "--listen", listen, "--port", String(port), "--tag", `czd-testhost-proxy:${name}`, "--"],
        { cwd: PROJECT_DIR, stdio: ["ignore", out, out], env: { ...process.env, TS_NODE_PROJECT: path.join(PROJECT_DIR, "tsconfig.json") } },
    );
    fs.closeSync(out);
    // Don't keep the harness alive just for the proxy; stop() ends it.
    child.unref();
    fs.writeFileSync(path.join(runDir, "proxy.pid"), `${child.pid}\n`);
    let exited: number | null | undefined;
    child.once("exit", code => (exited = code));
    const deadline = Date.now() + 20_000;
    while (Date.now() < deadline) {
        const text = fs.existsSync(logPath) ? fs.readFileSync(logPath, "utf8") : "";
        if (text.includes("apt-proxy listening on")) return child;
        if (exited !== undefined) throw new Error(`apt proxy exited (code ${exited}):\n${text}`);
        await sleep(50);
    }
    child.kill("SIGKILL");
    throw new Error(`apt proxy did not start listening on ${listen}:${port} within 20s (see ${logPath})`);
}

async function waitForSsh(host: TestHost): Promise<void> {
    const deadline = Date.now() + SSH_WAIT_MS;
    let last: ExecResult | undefined;
    while (Date.now() < deadline) {
        last = await host.ssh("true", { allowFail: true, timeoutMs: 5_000 });
        if (last.code === 0) return;
        await sleep(100);
    }
    throw new Error(`SSH to root@${host.address} did not answer within ${SSH_WAIT_MS / 1000}s: ${last?.stderr.trim()}`);
}

export async function startTestHost(opts: StartOptions = {}): Promise<TestHost> {
    const name = opts.name ?? "testhost";
    const index = opts.index === undefined ? "auto" : String(opts.index);
    const log = opts.log ?? (() => undefined);
    const t0 = Date.now();

    // 1. rootfs (cached tarball, built once with debootstrap)
    let t = Date.now();
    const cached = fs.existsSync(ROOTFS_TARBALL);
    if (!cached) log("[test-host] building rootfs with debootstrap (first run only; a few minutes)");
    check("testhost.sh rootfs", await run(["bash", SCRIPT, "rootfs"]));
    log(`[test-host] rootfs ${cached ? "cached" : "built"} (${seconds(t)})`);

    // 2. fresh key for this run
    t = Date.now();
    const keyDir = tempDir("testhost-key");
    const tmpKey = path.join(keyDir, "id_ed25519");
    let state: Record<string, string>;
    try {
        check("ssh-keygen", await run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", `czd-testhost-${name}`, "-f", tmpKey]));
        const publicKey = fs.readFileSync(`${tmpKey}.pub`, "utf8").trim();

        // 3. root-level part: cleans leftovers of NAME, unpacks, netns, sshd
        const up = await run(["bash", SCRIPT, "up", name, index, publicKey]);
        if (up.code !== 0) {
            throw new Error(`testhost.sh up ${name} ${index} failed (exit ${up.code}):\n${up.stderr.trim()}`);
        }
        state = parseState(up.stdout);
        const sshDir = path.join(state.RUN_DIR, "ssh");
        fs.mkdirSync(sshDir, { mode: 0o700 });
        fs.copyFileSync(tmpKey, path.join(sshDir, "id_ed25519"));
        fs.copyFileSync(`${tmpKey}.pub`, path.join(sshDir, "id_ed25519.pub"));
        fs.chmodSync(path.join(sshDir, "id_ed25519"), 0o600);
    } finally {
        fs.rmSync(keyDir, { recursive: true, force: true });
    }
    log(`[test-host] ${name}: rootfs unpacked, netns ${state.NAMESPACE}, sshd started (${seconds(t)})`);

    const privateKeyPath = path.join(state.RUN_DIR, "ssh", "id_ed25519");
    let proxy: ChildProcess | undefined;
    let stopped = false;

    const host: TestHost = {
        name,
        address: state.ADDRESS,
        user: "root",
        port: 22,
        privateKey: fs.readFileSync(privateKeyPath, "utf8"),
        privateKeyPath,
        rootDir: state.ROOT_DIR,
        namespace: state.NAMESPACE,

        async ssh(command, o = {}) {
            const user = o.user ?? "root";
            const r = await run(
                ["ssh", "-i", privateKeyPath, "-p", "22", ...SSH_OPTIONS, "-o", "ConnectTimeout=5", `${user}@${state.ADDRESS}`, "--", command],
                { input: o.input, timeoutMs: o.timeoutMs },
            );
            if (r.code !== 0 && !o.allowFail) {
                throw new Error(`ssh ${user}@${state.ADDRESS} ${JSON.stringify(command)} exited ${r.code}\nstderr: ${r.stderr.trim()}\nstdout: ${r.stdout.trim()}`);
            }
            return r;
        },

        execInNamespace(argv, o = {}) {
            return run(["ip", "netns", "exec", state.NAMESPACE, ...argv], o);
        },

        async stop() {
            if (stopped) return;
            stopped = true;
            const ts = Date.now();
            if (proxy && proxy.exitCode === null && proxy.signalCode === null) {
                const exited = new Promise<void>(r => proxy!.once("exit", () => r()));
                proxy.kill("SIGKILL");
                await Promise.race([exited, sleep(2_000)]);
            }
            check(`testhost.sh down ${name}`, await run(["bash", SCRIPT, "down", name]));
            log(`[test-host] ${name} stopped (${seconds(ts)})`);
        },
    };

    try {
        // 4. apt proxy on the host side of the veth
        t = Date.now();
        proxy = await startProxy(state.HOST_ADDRESS, Number(state.PROXY_PORT), name, state.RUN_DIR);
        log(`[test-host] apt proxy on ${state.HOST_ADDRESS}:${state.PROXY_PORT} (${seconds(t)})`);

        // 5. SSH answers
        t = Date.now();
        await waitForSsh(host);
        log(`[test-host] sshd up at ${state.ADDRESS} (${seconds(t)}; start total ${seconds(t0)})`);
    } catch (err) {
        await host.stop().catch(() => undefined);
        throw err;
    }
    return host;
}
