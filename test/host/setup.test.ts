// The host setup on a fresh Debian 12 test host, run the way `pulumi up` runs it:
// the program's own remote commands over real SSH, in dependency order.
import * as assert from "assert";
import { spawnSync } from "child_process";
import * as fs from "fs";
import * as http from "http";
import * as net from "net";
import * as path from "path";
import { makeAppRepo } from "./app-variants";
import { log, sampleAppLayout, Server, startServer, step } from "./fixture";
import { tempDir } from "../support/tmp";

const ENV = "live";
const DOMAIN = "app.test";
const LAYOUT = sampleAppLayout(ENV);
/** The user the app runs as. */
const APP = LAYOUT.appUser;

/** Everything the setup manages, checksummed with modes and owners. */
const MANAGED = [
    "/etc/nginx/sites-enabled", "/etc/nginx/sites-available", "/etc/supervisor", "/etc/ssh/sshd_config.d",
    "/etc/sudoers.d", "/etc/sysctl.d", "/etc/systemd/system", "/usr/local/sbin", "/usr/local/lib/clj-zero-downtime",
    LAYOUT.binDir, `${LAYOUT.repoDir}/hooks`, LAYOUT.envFile, "/home/deploy/.ssh",
];
const FINGERPRINT = [
    `find ${MANAGED.join(" ")} \\( -type f -o -type l \\) -print0 2>/dev/null | sort -z | xargs -0 stat -c '%n %a %U:%G %s' | sort`,
    `find ${MANAGED.join(" ")} -type f -print0 2>/dev/null | sort -z | xargs -0 sha256sum`,
    "iptables -S", "ip6tables -S",
    `getent passwd ${LAYOUT.deployUser} ${APP}`,
].join("; ");
const DAEMON_PIDS = "echo nginx $(cat /run/nginx.pid); echo supervisord $(cat /var/run/supervisord.pid)";

// Holds apt's and dpkg's locks (fcntl, as apt takes them) for a while, like unattended-upgrades on a fresh VPS.
const HOLD_APT_LOCKS = `
use Fcntl;
$| = 1;
my @held;
for my $f ("/var/lib/dpkg/lock-frontend", "/var/lib/dpkg/lock", "/var/lib/apt/lists/lock") {
  sysopen(my $fh, $f, O_RDWR | O_CREAT) or die "open $f: $!";
  my $lock = pack("s s x4 q q i x4", F_WRLCK, 0, 0, 0, 0);
  fcntl($fh, F_SETLK, $lock) or die "lock $f: $!";
  push @held, $fh;
}
print "held\\n";
sleep $ARGV[0];
`;

function connectFromOutside(address: string, port: number, timeoutMs = 2000): Promise<"open" | "refused" | "timeout"> {
    return new Promise(resolve => {
        const socket = net.connect({ host: address, port });
        const done = (result: "open" | "refused" | "timeout") => {
            socket.destroy();
            resolve(result);
        };
        socket.setTimeout(timeoutMs, () => done("timeout"));
        socket.on("connect", () => done("open"));
        socket.on("error", () => done("refused"));
    });
}

function httpGet(address: string, urlPath: string, host: string): Promise<{ status: number; headers: http.IncomingHttpHeaders; body: string }> {
    return new Promise((resolve, reject) => {
        const req = http.get({ host: address, port: 80, path: urlPath, headers: { Host: host }, timeout: 5000 }, res => {
            let body = "";
            res.setEncoding("utf8").on("data", d => (body += d)).on("end", () => resolve({ status: res.statusCode!, headers: res.headers, body }));
        });
        req.on("timeout", () => req.destroy(new Error("timeout")));
        req.on("error", reject);
    });
}

describe("host setup on a fresh Debian 12 server", function () {
    // Each test builds on the server the first one set up.
    this.bail(true);
    let server: Server;
    let firstRun: Awaited<ReturnType<Server["up"]>>;
    let work: string;

    before(async function () {
        work = tempDir("setup");
        const appPath = path.join(work, "app");
        makeAppRepo(appPath, { version: "1" });
        server = await startServer({ name: "setup", index: 21, appPath, config: { domain: DOMAIN, environment: ENV } });
    });

    after(async function () {
        if (server) await server.stop();
        if (work) fs.rmSync(work, { recursive: true, force: true });
    });

    it("waits for apt locks held by another package manager instead of failing, and completes the setup", async () => {
        await step("hold apt and dpkg locks for 12 s on the server", async () => {
            await server.sh(`nohup perl -e '${HOLD_APT_LOCKS}' 12 >/tmp/apt-lock.log 2>&1 & for i in $(seq 50); do grep -q held /tmp/apt-lock.log && exit 0; sleep 0.1; done; cat /tmp/apt-lock.log; exit 1`);
        });
        firstRun = await step("pulumi up (setup and first deploy) through the harness", () => server.up());
        assert.ok(firstRun.ok);
        const packages = firstRun.resources.find(r => r.name === "setup-packages")!;
        assert.strictEqual(packages.status, "ok");
        assert.match(packages.stdout + packages.stderr, /apt is busy|Waiting for cache lock/i, "the packages step met the held lock and waited");
        for (const pkg of ["nginx", "supervisor", "git", "curl", "default-jre-headless", "leiningen", "sudo", "iptables"]) {
            await server.sh(`dpkg-query -W -f='\${Status}' ${pkg} | grep -q 'install ok installed'`);
        }
    });

    it("nginx answers on port 80 from outside, serving the deployed app for the domain", async () => {
        const res = await httpGet(server.host.address, "/", DOMAIN);
        assert.strictEqual(res.status, 200, res.body);
        assert.strictEqual(res.headers["x-app-version"], "1");
        // The running nginx has loaded our site (nginx -T dumps the live configuration).
        assert.match(await server.sh("nginx -T 2>/dev/null"), new RegExp(`server_name ${DOMAIN.replace(".", "\\.")};`));
        assert.strictEqual(await server.sh("test -e /etc/nginx/sites-enabled/default && echo present || echo absent"), "present\n",
            "with a domain the distribution's default site may stay");
    });

    it("the Supervisor group has both programs, and the deploy user runs supervisorctl without sudo", async () => {
        const status = await server.sh(`supervisorctl status ${LAYOUT.id}:*`, "deploy").catch(e => String(e));
        assert.match(status, new RegExp(`${LAYOUT.id}:${LAYOUT.programs[0].name}\\s`));
        assert.match(status, new RegExp(`${LAYOUT.id}:${LAYOUT.programs[1].name}\\s`));
        assert.match(status, /RUNNING/, "the first deploy left one slot running");
        const sudo = await server.host.ssh("sudo -n true", { user: "deploy", allowFail: true });
        assert.notStrictEqual(sudo.code, 0, "the deploy user has no general sudo");
        const allowed = await server.sh("sudo -n -l", "deploy");
        assert.match(allowed, new RegExp(`${LAYOUT.switchHelper} switch ${LAYOUT.id} 1`));
        assert.doesNotMatch(allowed, /\(ALL\) NOPASSWD: ALL|\(root\) NOPASSWD: ALL/);
    });

    it("the deploy user cannot replace root's scripts or the app's secrets: the directories that hold them are root's", async () => {
        for (const dir of [LAYOUT.appDir, LAYOUT.baseDir, LAYOUT.binDir]) {
            assert.strictEqual((await server.sh(`stat -c '%U %a' ${dir}`)).trim(), "root 755", dir);
        }
        const rename = await server.host.ssh(`mv ${LAYOUT.binDir} ${LAYOUT.binDir}.old`, { user: "deploy", allowFail: true });
        assert.notStrictEqual(rename.code, 0, "the deploy user cannot rename bin/ away");
        assert.match(rename.stderr, /Permission denied/);
        const plant = await server.host.ssh(`ln -s /tmp ${LAYOUT.baseDir}/app.env.czd-new.planted`, { user: "deploy", allowFail: true });
        assert.notStrictEqual(plant.code, 0, "nor plant a name next to app.env");
        // What it deploys into stays its own.
        for (const dir of [LAYOUT.releasesDir, LAYOUT.slotsDir, LAYOUT.stateDir, LAYOUT.repoDir]) {
            assert.strictEqual((await server.sh(`stat -c '%U' ${dir}`)).trim(), "deploy", dir);
        }
        assert.strictEqual((await server.sh(`stat -c '%U %a' ${LAYOUT.repoDir}/hooks/post-receive`)).trim(), "deploy 755");
    });

    it("the app user cannot log in", async () => {
        // Its login shell is nologin, and its password locked.
        const entry = await server.sh(`getent passwd ${APP}`);
        assert.strictEqual(entry.trim().split(":")[6], "/usr/sbin/nologin", entry);
        assert.match(await server.sh(`passwd -S ${APP}`), new RegExp(`^${APP} L `));
        // Root needs no password for su, so what stops the login here is the shell alone
        // (the deploy user, with a real shell, gets one the same way).
        const su = await server.host.ssh(`su - ${APP} -c 'echo logged-in'`, { allowFail: true });
        assert.notStrictEqual(su.code, 0, su.stdout);
        assert.doesNotMatch(su.stdout, /logged-in/);
        assert.match(su.stdout + su.stderr, /This account is currently not available/);
        assert.strictEqual(await server.sh("su - deploy -c 'echo logged-in'"), "logged-in\n");
    });

    it("from outside, port 80 answers while the slot and nREPL ports do not, even when bound to all addresses", async () => {
        const ports = [3000, 3001, 3002, 7001, 7002];
        // Listeners on 0.0.0.0, so only the firewall can keep them unreachable.
        const listen = ports.map(p => `nohup perl -MIO::Socket::INET -e 'my $s = IO::Socket::INET->new(LocalAddr => "0.0.0.0:${p + 10000}", Listen => 5, ReuseAddr => 1) or die; sleep 60' >/dev/null 2>&1 & echo $! >>/tmp/listeners.pid`).join("; ");
        await server.sh(`rm -f /tmp/listeners.pid; ${listen}; sleep 0.5`);
        try {
            // The shifted ports show what the firewall does to any port but 22/80/443.
            for (const p of ports) {
                assert.strictEqual(await connectFromOutside(server.host.address, p + 10000), "timeout", `port ${p + 10000} must be dropped`);
                assert.notStrictEqual(await connectFromOutside(server.host.address, p), "open", `app port ${p} must not be reachable`);
            }
            assert.strictEqual(await connectFromOutside(server.host.address, 80), "open");
            assert.strictEqual(await connectFromOutside(server.host.address, 22), "open");
            // Inside the server the app still reaches its own ports.
            await server.sh(`perl -MIO::Socket::INET -e 'IO::Socket::INET->new(PeerAddr => "127.0.0.1:13001") or exit 1'`);
        } finally {
            await server.sh("kill $(cat /tmp/listeners.pid) 2>/dev/null; rm -f /tmp/listeners.pid; true");
        }
    });

    it("SSH refuses passwords", async () => {
        const attempt = spawnSync("ssh", [
            "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null", "-o", "BatchMode=yes",
            "-o", "PreferredAuthentications=password,keyboard-interactive", "-o", "PubkeyAuthentication=no",
            `root@${server.host.address}`, "true",
        ], { encoding: "utf8", timeout: 15000 });
        assert.notStrictEqual(attempt.status, 0);
        assert.match(attempt.stderr, /Permission denied \(publickey\)/, "the server offers public keys only");
        assert.match(await server.sh("sshd -T | grep -i '^passwordauthentication'"), /passwordauthentication no/);
    });

    it("turns autogroup scheduling off now and at boot, so the idle priority of a booting slot counts against nginx", async () => {
        const autogroup = "/proc/sys/kernel/sched_autogroup_enabled";
        assert.strictEqual(await server.sh(`cat ${autogroup}`), "0\n", "the setup turned it off");
        assert.match(await server.sh("cat /etc/sysctl.d/60-clj-zero-downtime.conf"), /^kernel\.sched_autogroup_enabled = 0$/m);
        // As after a boot with a kernel default of 1 and no sysctl.d applied: the step turns it off again.
        await server.sh(`echo 1 > ${autogroup}`, "root");
        const resources = await server.resources();
        const scheduler = resources.find(r => r.name === "setup-scheduler")!.inputs as { create: string; stdin?: string };
        const out = await server.sh(scheduler.create, "root", scheduler.stdin ?? "");
        assert.match(out, /turned autogroup scheduling off/);
        assert.strictEqual(await server.sh(`cat ${autogroup}`), "0\n");
        // The file is what a boot applies: sysctl reads it back to the same value.
        await server.sh(`echo 1 > ${autogroup} && sysctl -q -p /etc/sysctl.d/60-clj-zero-downtime.conf`, "root");
        assert.strictEqual(await server.sh(`cat ${autogroup}`), "0\n");
    });

    it("a second run executes nothing, and re-running every setup step changes nothing", async () => {
        const before = await server.sh(FINGERPRINT);
        const pidsBefore = await server.sh(DAEMON_PIDS);
        const second = await step("second pulumi up with the same config", () => server.up());
        assert.deepStrictEqual(second.executed.map(r => r.name), [], "nothing runs when nothing changed");
        // Pulumi would re-run the steps after a lost state or a replaced trigger: they must be no-ops too.
        const resources = await server.resources();
        const setupSteps = resources.filter(r => r.type === "command:remote:Command" && !r.name.includes("-deploy-"));
        await step(`re-run ${setupSteps.length} setup steps directly`, async () => {
            for (const r of setupSteps) {
                const inputs = r.inputs as { create: string; stdin?: string };
                const out = await server.sh(inputs.create, "root", inputs.stdin ?? "");
                log(`${r.name}: ${out.trim().split("\n").slice(-1)[0] ?? ""}`);
            }
        });
        assert.strictEqual(await server.sh(FINGERPRINT), before, "managed files, firewall and users are unchanged");
        assert.strictEqual(await server.sh(DAEMON_PIDS), pidsBefore, "nginx and supervisord were not restarted");
    });
});
