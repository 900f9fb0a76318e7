// The test host itself: a Debian 12 box reachable by SSH, apt through the
// proxy, isolated network, and a teardown that leaves nothing behind.
// Needs root. Run alone (the host .mocharc.json spec glob would add every host suite):
//   npx mocha --no-config -r ts-node/register/transpile-only --extension ts --timeout 600000 test/host/testhost.test.ts
import { strict as assert } from "assert";
import * as fs from "fs";
import * as net from "net";
import * as path from "path";
import { tempDir } from "../support/tmp";
import { run, SSH_OPTIONS, startTestHost, TestHost } from "./testhost";

const log = (line: string) => console.log(`      ${line}`);

function mountsUnder(dir: string): string[] {
    return fs
        .readFileSync("/proc/mounts", "utf8")
        .split("\n")
        .map(l => l.split(" ")[1])
        .filter((mp): mp is string => !!mp && (mp === dir || mp.startsWith(dir + "/")));
}

async function netnsExists(ns: string): Promise<boolean> {
    const r = await run(["ip", "netns", "list"]);
    return r.stdout.split("\n").some(l => l.split(" ")[0] === ns);
}

/** Host PIDs of processes whose command line is exactly `argv`. */
function pidsWithCmdline(argv: string[]): number[] {
    const want = argv.join("\0") + "\0";
    const pids: number[] = [];
    for (const entry of fs.readdirSync("/proc")) {
        if (!/^\d+$/.test(entry)) continue;
        try {
            if (fs.readFileSync(`/proc/${entry}/cmdline`, "utf8") === want) pids.push(Number(entry));
        } catch {
            // process gone meanwhile
        }
    }
    return pids;
}

/** Like pidsWithCmdline, but gives a just-forked process a moment to exec. */
async function waitForPids(argv: string[], timeoutMs = 3000): Promise<number[]> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
        const pids = pidsWithCmdline(argv);
        if (pids.length > 0 || Date.now() > deadline) return pids;
        await new Promise(r => setTimeout(r, 50));
    }
}

function tcpConnect(host: string, port: number, timeoutMs = 3000): Promise<"open" | "refused" | "timeout" | string> {
    return new Promise(resolve => {
        const sock = net.connect({ host, port });
        const timer = setTimeout(() => {
            sock.destroy();
            resolve("timeout");
        }, timeoutMs);
        sock.once("connect", () => {
            clearTimeout(timer);
            sock.destroy();
            resolve("open");
        });
        sock.once("error", (err: NodeJS.ErrnoException) => {
            clearTimeout(timer);
            resolve(err.code === "ECONNREFUSED" ? "refused" : String(err.code));
        });
    });
}

describe("test host", function () {
    before(function () {
    });

    describe("a running host", function () {
        let host: TestHost;
        before(async function () {
            host = await startTestHost({ name: "czd-t1", index: 201, log });
        });
        after(async function () {
            if (host) await host.stop();
        });

        it("answers SSH as root with the run's key and runs Debian 12", async function () {
            assert.equal(host.address, "10.213.201.2");
            const r = await host.ssh("cat /etc/debian_version; id -u; hostname");
            const [version, uid, hostname] = r.stdout.trim().split("\n");
            assert.match(version, /^12\.\d+/);
            assert.equal(uid, "0");
            assert.equal(hostname, "czd-t1");
        });

        it("reports a failing command with its exit code, or rejects", async function () {
            const r = await host.ssh("echo out; echo err >&2; exit 3", { allowFail: true });
            assert.deepEqual([r.code, r.stdout, r.stderr], [3, "out\n", "err\n"]);
            await assert.rejects(host.ssh("exit 4"), /exited 4/);
            const piped = await host.ssh("cat", { input: "hello\n" });
            assert.equal(piped.stdout, "hello\n");
        });

        it("has none of what the project's setup installs itself", async function () {
            const r = await host.ssh("for p in nginx supervisor sudo git openjdk-17-jre-headless; do dpkg -s $p >/dev/null 2>&1 && echo $p; done; true");
            assert.equal(r.stdout, "");
        });

        it("runs apt-get update and install through the proxy", async function () {
            this.timeout(300_000);
            const conf = await host.ssh("cat /etc/apt/apt.conf.d/00-test-host-proxy");
            assert.match(conf.stdout, /Acquire::http::Proxy "http:\/\/10\.213\.201\.1:3142";/);
            await host.ssh("apt-get update -q", { timeoutMs: 240_000 });
            await host.ssh("DEBIAN_FRONTEND=noninteractive apt-get install -y -q hostname", { timeoutMs: 120_000 });
            const r = await host.ssh("dpkg -s hostname | grep '^Status'");
            assert.match(r.stdout, /install ok installed/);
        });

        it("the proxy refuses hosts outside the allowlist", async function () {
            const r = await host.ssh(
                "curl -s -o /dev/null -w '%{http_code}' -x http://10.213.201.1:3142 http://example.com/",
                { allowFail: true },
            );
            assert.equal(r.stdout, "403");
        });

        it("is reachable only where something listens, and cannot reach out", async function () {
            assert.equal(await tcpConnect(host.address, 22), "open");
            assert.equal(await tcpConnect(host.address, 80), "refused");
            // Inside: no route to the world (only the /30 to the host side).
            const out = await host.ssh("curl -s -m 3 http://1.1.1.1/ || echo fail=$?", { allowFail: true });
            assert.match(out.stdout, /fail=7/);
            // A host-side command inside the namespace sees the box's listeners on 127.0.0.1.
            const inNs = await host.execInNamespace(["bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/22 && head -c 7 <&3"]);
            assert.equal(inNs.stdout, "SSH-2.0");
        });
    });

    describe("teardown", function () {
        it("stop() kills what ran inside, unmounts, removes netns and run dir", async function () {
            const host = await startTestHost({ name: "czd-t2", index: 202, log });
            try {
                const marker = ["sleep", "987654"];
                await host.ssh("setsid nohup sleep 987654 </dev/null >/dev/null 2>&1 &", { timeoutMs: 10_000 });
                // a daemon started the way init.d scripts do (double fork, reparented to PID 1 of the box)
                await host.ssh("(setsid sh -c 'sleep 987655 &' </dev/null >/dev/null 2>&1 &)", { timeoutMs: 10_000 });
                assert.equal((await waitForPids(marker)).length, 1);
                assert.equal((await waitForPids(["sleep", "987655"])).length, 1);
                // The box's mounts live in its own mount namespace: visible inside, never on the host.
                assert.match((await host.ssh("cat /proc/mounts")).stdout, /^devpts \/dev\/pts /m);
                assert.deepEqual(mountsUnder(host.rootDir), []);
                const runDir = host.rootDir.replace(/\/root$/, "");

                await host.stop();

                assert.deepEqual(pidsWithCmdline(marker), []);
                assert.deepEqual(pidsWithCmdline(["sleep", "987655"]), []);
                assert.deepEqual(mountsUnder(runDir), []);
                assert.equal(await netnsExists(host.namespace), false);
                assert.equal(fs.existsSync(runDir), false);
                assert.equal((await run(["ip", "link", "show", "czdv202h"])).code !== 0, true);
                await host.stop(); // idempotent
            } finally {
                await host.stop(); // a no-op after the stop above; ends the host when an assertion before it failed
            }
        });

        it("a start after a crashed run of the same name works", async function () {
            const first = await startTestHost({ name: "czd-t3", index: 203, log });
            let second: TestHost | undefined;
            // The crashed run's key, kept before the second start replaces the run dir (and the key file in it).
            const keyDir = tempDir("testhost-oldkey");
            const oldKey = path.join(keyDir, "id_ed25519");
            try {
                fs.writeFileSync(oldKey, first.privateKey, { mode: 0o600 });
                await first.ssh("setsid nohup sleep 987656 </dev/null >/dev/null 2>&1 &", { timeoutMs: 10_000 });
                assert.equal((await waitForPids(["sleep", "987656"])).length, 1);
                // Simulate a crash: the harness never calls stop(); its proxy keeps running.
                second = await startTestHost({ name: "czd-t3", index: 203, log });
                assert.deepEqual(pidsWithCmdline(["sleep", "987656"]), [], "the crashed run's processes are gone");
                const r = await second.ssh("cat /etc/debian_version; ls /tmp");
                assert.match(r.stdout, /^12\./);
                assert.notEqual(second.privateKey, first.privateKey);
                // the old key no longer opens the box: sshd itself refuses it (same options as the harness's ssh)
                const old = await run(
                    ["ssh", "-i", oldKey, "-o", "IdentitiesOnly=yes", "-p", "22", ...SSH_OPTIONS, "-o", "ConnectTimeout=5", `root@${second.address}`, "--", "true"],
                    { timeoutMs: 20_000, env: { ...process.env, SSH_AUTH_SOCK: "" } },
                );
                assert.notEqual(old.code, 0);
                // sshd lists the methods it would take: publickey, and password (which BatchMode never tries)
                assert.match(old.stderr, /Permission denied \(publickey[,)]/);
                await second.stop();
                assert.equal(await netnsExists(second.namespace), false);
            } finally {
                // second first: first.stop() runs `down czd-t3` too, which must not find the second run still up.
                if (second) await second.stop();
                await first.stop();
                fs.rmSync(keyDir, { recursive: true, force: true });
            }
        });

        it("two hosts run at once on distinct indexes", async function () {
            const starts = await Promise.allSettled([
                startTestHost({ name: "czd-live", index: 204, log }),
                startTestHost({ name: "czd-spare", index: 205, log }),
            ]);
            // Both stop, also when one start failed or an assertion did: allSettled waits for the other start.
            const started = starts.flatMap(s => (s.status === "fulfilled" ? [s.value] : []));
            let passed = false;
            try {
                const failed = starts.flatMap(s => (s.status === "rejected" ? [s.reason] : []));
                if (failed.length > 0) throw failed[0];
                const [a, b] = started;
                assert.equal((await a.ssh("hostname")).stdout.trim(), "czd-live");
                assert.equal((await b.ssh("hostname")).stdout.trim(), "czd-spare");
                passed = true;
            } finally {
                const stops = await Promise.allSettled(started.map(h => h.stop()));
                const stopFailed = stops.find((s): s is PromiseRejectedResult => s.status === "rejected");
                // A failed stop fails the test, without hiding an earlier failure.
                if (passed && stopFailed) throw stopFailed.reason;
            }
        });

        it("overlapping hosts: the machine's autogroup setting comes back when the last of them goes down, not before", async function () {
            // The project's setup inside a host turns the shared kernel's autogroups off; here
            // the test does it from outside, between the two starts, as a setup in the first would.
            const setting = "/proc/sys/kernel/sched_autogroup_enabled";
            const original = fs.readFileSync(setting, "utf8").trim();
            fs.writeFileSync(setting, "1");
            try {
                const a = await startTestHost({ name: "czd-t6", index: 207, log });
                let b: TestHost | undefined;
                try {
                    fs.writeFileSync(setting, "0");
                    b = await startTestHost({ name: "czd-t7", index: 208, log });
                    await a.stop();
                    assert.equal(fs.readFileSync(setting, "utf8").trim(), "0", "the first host's stop left it as the second one runs with it");
                    await b.stop();
                    assert.equal(fs.readFileSync(setting, "utf8").trim(), "1", "the last host's stop put back the machine's setting from before the first");
                } finally {
                    await a.stop();
                    if (b) await b.stop();
                }
            } finally {
                fs.writeFileSync(setting, original);
            }
        });

        it("refuses an index already used by another running host", async function () {
            const a = await startTestHost({ name: "czd-t4", index: 206, log });
            const clash = startTestHost({ name: "czd-t5", index: 206 });
            try {
                await assert.rejects(clash, /index 206 is in use/);
                assert.equal((await a.ssh("true")).code, 0);
            } finally {
                // Should the clash have started a host after all, it goes down too.
                const b = await clash.catch(() => undefined);
                if (b) await b.stop();
                await a.stop();
            }
        });
    });
});
