// HTTPS on a fresh Debian 12 test host, for real: certificates from pebble
// (Let's Encrypt's ACME test server) with genuine HTTP-01 validation against
// the test host's port 80, the failure path, renewal, HSTS and `custom`
// certificates made by the test. Verified from outside with curl --cacert.
import * as assert from "assert";
import { execFileSync, spawnSync } from "child_process";
import * as fs from "fs";
import * as path from "path";
import { makeAppRepo } from "./app-variants";
import { log, Server, startServer, step } from "./fixture";
import { PEBBLE_ACME_PORT, Pebble, startPebble } from "./pebble";
import { tempDir } from "../support/tmp";

const APP = "sample-app";
const ENV = "live";
const ID = `${APP}-${ENV}`;
const DOMAIN = "app.tls.test";
const INDEX = 70;
const NAME = "tls";

interface Fetched {
    code: number;
    status: number;
    headers: string;
    body: string;
    redirect: string;
    stderr: string;
}

/** curl from this machine to the test host, with the domain resolved to it. */
function curl(url: string, address: string, extra: string[] = []): Fetched {
    const r = spawnSync("curl", [
        "-sS", "--max-time", "10", "-D", "-", "-w", "\n%{http_code} %{redirect_url}",
        "--resolve", `${DOMAIN}:80:${address}`, "--resolve", `${DOMAIN}:443:${address}`, ...extra, url,
    ], { encoding: "utf8" });
    const lines = r.stdout.split("\n");
    const [status, redirect] = (lines.pop() ?? "").split(" ");
    const out = lines.join("\n");
    const split = out.indexOf("\r\n\r\n");
    return {
        code: r.status ?? 1, status: Number(status), redirect: redirect ?? "",
        headers: split < 0 ? out : out.slice(0, split), body: split < 0 ? "" : out.slice(split + 4), stderr: r.stderr,
    };
}

/** The certificate the server presents for the domain: serial and issuer. */
function servedCertificate(address: string): { serial: string; issuer: string; pem: string } {
    const sc = spawnSync("openssl", ["s_client", "-connect", `${address}:443`, "-servername", DOMAIN], { input: "", encoding: "utf8", timeout: 10000 });
    const pem = /-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/.exec(sc.stdout)?.[0];
    if (!pem) throw new Error(`no certificate from ${address}:443: ${sc.stderr}`);
    const text = execFileSync("openssl", ["x509", "-noout", "-serial", "-issuer"], { input: pem, encoding: "utf8" });
    return { serial: /serial=(\S+)/.exec(text)![1], issuer: /issuer=(.*)/.exec(text)![1].trim(), pem };
}

/** A CA and a certificate for DOMAIN signed by it, like a commercial CA would hand out. */
function makeCustomCertificate(dir: string): { ca: string; cert: string; key: string; otherKey: string } {
    const o = (args: string[]) => execFileSync("openssl", args, { cwd: dir, stdio: ["ignore", "ignore", "pipe"] });
    o(["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=czd test custom CA", "-keyout", "ca.key", "-out", "ca.pem"]);
    o(["req", "-newkey", "rsa:2048", "-nodes", "-subj", `/CN=${DOMAIN}`, "-keyout", "key.pem", "-out", "req.csr"]);
    fs.writeFileSync(path.join(dir, "ext.cnf"), `subjectAltName=DNS:${DOMAIN}\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n`);
    o(["x509", "-req", "-in", "req.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial", "-days", "2", "-extfile", "ext.cnf", "-out", "cert.pem"]);
    o(["genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out", "other.key"]);
    const read = (f: string) => fs.readFileSync(path.join(dir, f), "utf8");
    return { ca: path.join(dir, "ca.pem"), cert: read("cert.pem"), key: read("key.pem"), otherKey: read("other.key") };
}

function iptablesTag(args: string[]): void {
    execFileSync("iptables", ["-w", ...args, "-m", "comment", "--comment", `czd-testhost:${NAME}`, "-j", "ACCEPT"]);
}

describe("HTTPS on a Debian 12 server: pebble (real HTTP-01 validation), failure path, renewal, custom certificates", function () {
    this.bail(true);
    let server: Server;
    let pebble: Pebble;
    let work: string;
    let issuingRoot: string;
    let address: string;
    let acme: Record<string, string>;

    before(async function () {
        work = tempDir("tls");
        const appPath = path.join(work, "app");
        makeAppRepo(appPath, { version: "1" });
        server = await startServer({ name: NAME, index: INDEX, appPath, config: { domain: DOMAIN, environment: ENV } });
        address = server.host.address;
        const hostSide = address.replace(/\.2$/, ".1");
        pebble = await step("start pebble and its DNS responder beside the test host", () =>
            startPebble({ address: hostSide, workDir: path.join(work, "pebble"), log }));
        acme = { tls: "letsencrypt", acmeServer: pebble.directoryUrl, acmeEmail: "ops@example.com" };
        await step("let the test host reach pebble and trust its listener's CA", async () => {
            // Tagged like the test host's own rules, so `testhost.sh down` removes it too.
            iptablesTag(["-I", "INPUT", "-i", `czdv${INDEX}h`, "-p", "tcp", "--dport", String(PEBBLE_ACME_PORT)]);
            // A cloud image trusts Let's Encrypt already; the test host must trust pebble.
            await server.sh("install -d /usr/local/share/ca-certificates && cat >/usr/local/share/ca-certificates/czd-test-pebble.crt && update-ca-certificates >/dev/null",
                "root", pebble.listenerCaPem);
        });
    });

    after(async function () {
        if (pebble) await pebble.stop();
        if (server) await server.stop();
        if (work) fs.rmSync(work, { recursive: true, force: true });
    });

    it("serves the app over HTTP with tls off (the starting point)", async () => {
        await step("pulumi up: setup and first deploy, tls off", () => server.up());
        const r = curl(`http://${DOMAIN}/`, address);
        assert.strictEqual(r.status, 200, r.stderr);
        assert.match(r.headers, /x-app-version: 1/i);
    });

    it("letsencrypt: when validation fails (no DNS record yet) the apply fails with certbot's reason, and HTTP keeps serving", async () => {
        pebble.dns.delete(DOMAIN);
        const result = await step("pulumi up with tls letsencrypt, domain not in DNS", () => server.up(acme, { throwOnError: false }));
        assert.strictEqual(result.ok, false, "the apply must fail");
        const tls = result.resources.find(r => r.name === `${ID}-tls`)!;
        assert.strictEqual(tls.status, "failed");
        const message = tls.stderr + tls.stdout;
        log(`error shown: ${message.split("\n").filter(l => /error:/.test(l)).join(" | ")}`);
        assert.match(message, new RegExp(`could not obtain a certificate for ${DOMAIN.replace(/\./g, "\\.")} from ${pebble.directoryUrl.replace(/[.]/g, "\\.")}`));
        assert.match(message, /certbot: +Detail: .*(could not resolve|NXDOMAIN|DNS problem)/i, "certbot's own reason is shown");
        assert.match(message, /does not resolve from this server: create its A \(and AAAA\) record/);
        assert.match(message, /The site keeps serving HTTP meanwhile/);
        const r = curl(`http://${DOMAIN}/`, address);
        assert.strictEqual(r.status, 200, "HTTP still serves the app");
        assert.match(r.headers, /x-app-version: 1/i);
        await server.sh("nginx -t 2>&1");
        assert.notStrictEqual(curl(`https://${DOMAIN}/`, address, ["-k"]).code, 0, "no HTTPS without a certificate");
    });

    it("letsencrypt: an ACME server this server cannot talk to fails the apply saying so, not with the DNS hint; HTTP keeps serving", async () => {
        const unreachable = "https://127.0.0.1:1/directory";
        const result = await step("pulumi up with tls letsencrypt, acmeServer unreachable", () =>
            server.up({ ...acme, acmeServer: unreachable }, { throwOnError: false }));
        assert.strictEqual(result.ok, false, "the apply must fail");
        const tls = result.resources.find(r => r.name === `${ID}-tls`)!;
        const message = tls.stderr + tls.stdout;
        log(`error shown: ${message.split("\n").filter(l => /error:/.test(l)).join(" | ")}`);
        assert.match(message, /certbot: .*Connection refused/, "certbot's own reason is shown");
        assert.match(message, /This server could not talk to https:\/\/127\.0\.0\.1:1\/directory: check the URL, that this server may make outgoing HTTPS connections/);
        assert.doesNotMatch(message, /does not resolve from this server|resolves to/);
        assert.strictEqual(curl(`http://${DOMAIN}/`, address).status, 200, "HTTP still serves the app");
    });

    it("letsencrypt: issues through pebble's real HTTP-01 check (after waiting for a certbot that held certbot's lock); HTTPS serves the app with it, HTTP redirects except the ACME path", async () => {
        // Pebble's log from here on: the earlier tests' failed (INVALID) validations are before it.
        const pebbleLogStart = pebble.logText().length;
        pebble.dns.set(DOMAIN, address);
        // Another certbot (a renewal from certbot.timer) holds certbot's lock on its config directory for 6 s.
        const holder = (await server.sh(
            "setsid python3 -c 'import fcntl, sys, time; f = open(\"/etc/letsencrypt/.certbot.lock\", \"a\"); " +
            "fcntl.lockf(f, fcntl.LOCK_EX); open(\"/run/czd-certbot-lock-held\", \"w\").close(); time.sleep(6)' " +
            "</dev/null >/dev/null 2>&1 & echo $!")).trim();
        let result;
        try {
            await server.sh("for i in $(seq 50); do [ -e /run/czd-certbot-lock-held ] && exit 0; sleep 0.1; done; exit 1");
            result = await step("pulumi up with tls letsencrypt, DNS pointing at the server, certbot's lock held for 6 s", () => server.up(acme));
        } finally {
            await server.sh(`kill ${holder} 2>/dev/null; rm -f /run/czd-certbot-lock-held; true`);
        }
        const tlsOut = result.resources.find(r => r.name === `${ID}-tls`)?.stdout ?? "";
        log(`tls step: ${tlsOut.trim().split("\n").join(" | ")}`);
        assert.match(tlsOut, /another certbot is running on this server \(a renewal\?\); trying again in 5s/);
        issuingRoot = path.join(work, "pebble-root.pem");
        fs.writeFileSync(issuingRoot, await pebble.issuingRootPem());
        const https = curl(`https://${DOMAIN}/`, address, ["--cacert", issuingRoot]);
        assert.strictEqual(https.code, 0, `curl --cacert <pebble root> https://${DOMAIN}/ failed: ${https.stderr}`);
        assert.strictEqual(https.status, 200);
        assert.match(https.headers, /x-app-version: 1/i);
        assert.doesNotMatch(https.headers, /strict-transport-security/i, "HSTS is opt-in");
        assert.match(servedCertificate(address).issuer, /Pebble Intermediate CA/);
        const pebbleLog = pebble.logText().slice(pebbleLogStart);
        assert.match(pebbleLog, /authz \S+ set VALID by completed challenge \S+/, `pebble validated a challenge during this apply:\n${pebbleLog}`);
        assert.doesNotMatch(pebbleLog, /set INVALID/, "no failed validation during this apply");

        const plain = curl(`http://${DOMAIN}/some/path?x=1`, address);
        assert.ok([301, 308].includes(plain.status), `HTTP answers ${plain.status}`);
        assert.strictEqual(plain.redirect, `https://${DOMAIN}/some/path?x=1`);
        const challenge = curl(`http://${DOMAIN}/.well-known/acme-challenge/x`, address);
        assert.strictEqual(challenge.status, 404, "the ACME path is served from the webroot, not redirected");

        // TLS 1.2+ only.
        const old = spawnSync("openssl", ["s_client", "-connect", `${address}:443`, "-servername", DOMAIN, "-tls1_1"], { input: "", encoding: "utf8", timeout: 10000 });
        assert.notStrictEqual(old.status, 0, "TLS 1.1 is refused");
        const renewal = await server.sh(`cat /etc/letsencrypt/renewal/${ID}.conf`);
        assert.match(renewal, /authenticator = webroot/);
        assert.ok(renewal.includes(`server = ${pebble.directoryUrl}`));
        await server.sh("test -x /etc/letsencrypt/renewal-hooks/deploy/clj-zero-downtime-reload-nginx");
        await server.sh("test -f /lib/systemd/system/certbot.timer && test -f /etc/cron.d/certbot");
    });

    it("a second apply runs nothing", async () => {
        const again = await step("pulumi up again, same config", () => server.up(acme));
        assert.deepStrictEqual(again.executed.map(r => r.name), []);
    });

    it("renewal: certbot renew reloads nginx through the deploy hook; same nginx master, traffic switch untouched, HTTPS keeps serving", async () => {
        const before = servedCertificate(address);
        const masterBefore = await server.sh("cat /run/nginx.pid");
        const natBefore = await server.sh("iptables -t nat -S");
        const out = await step("certbot renew --force-renewal on the server", () => server.sh("certbot renew --force-renewal --no-random-sleep-on-renew 2>&1"));
        assert.match(out, /clj-zero-downtime: nginx reloaded/, out);
        let after = servedCertificate(address);
        for (let i = 0; i < 50 && after.serial === before.serial; i++) {
            await new Promise(r => setTimeout(r, 100));
            after = servedCertificate(address);
        }
        assert.notStrictEqual(after.serial, before.serial, "nginx serves the renewed certificate");
        assert.strictEqual(await server.sh("cat /run/nginx.pid"), masterBefore, "reloaded, not restarted");
        assert.strictEqual(await server.sh("iptables -t nat -S"), natBefore, "the traffic switch is untouched");
        const https = curl(`https://${DOMAIN}/`, address, ["--cacert", issuingRoot]);
        assert.strictEqual(https.status, 200, https.stderr);
    });

    it("hsts: true sends Strict-Transport-Security over HTTPS only", async () => {
        await step("pulumi up with hsts true", () => server.up({ ...acme, hsts: "true" }));
        const https = curl(`https://${DOMAIN}/`, address, ["--cacert", issuingRoot]);
        assert.strictEqual(https.status, 200, https.stderr);
        assert.match(https.headers, /strict-transport-security: max-age=63072000/i);
        assert.doesNotMatch(curl(`http://${DOMAIN}/`, address).headers, /strict-transport-security/i);
    });

    describe("custom certificate", function () {
        let custom: ReturnType<typeof makeCustomCertificate>;

        before(() => {
            const dir = path.join(work, "custom");
            fs.mkdirSync(dir);
            custom = makeCustomCertificate(dir);
        });

        it("serves the certificate and key from config (key as a secret: root-only 0600 file, in no log and no state in plain text)", async () => {
            const result = await step("pulumi up with tls custom", () => server.up({ tls: "custom", tlsCertificate: custom.cert, tlsKey: custom.key }));
            const https = curl(`https://${DOMAIN}/`, address, ["--cacert", custom.ca]);
            assert.strictEqual(https.code, 0, `curl --cacert <test CA> failed: ${https.stderr}`);
            assert.strictEqual(https.status, 200);
            assert.match(servedCertificate(address).issuer, /czd test custom CA/);
            assert.ok([301, 308].includes(curl(`http://${DOMAIN}/`, address).status));
            assert.strictEqual((await server.sh(`stat -c '%a %U:%G' /etc/clj-zero-downtime/tls/${ID}/privkey.pem`)).trim(), "600 root:root");
            const keyBody = custom.key.split("\n")[1];
            for (const r of result.resources) assert.ok(!(r.stdout + r.stderr).includes(keyBody), `${r.name}'s output shows the key`);
            assert.ok(!fs.readFileSync(server.statePath, "utf8").includes(keyBody), "the key is not in the state in plain text");
            const ps = await server.sh(`grep -rl -- '${keyBody.slice(0, 40)}' /var/log /tmp /srv 2>/dev/null || true`);
            assert.strictEqual(ps.trim(), "", "no log or temporary file holds the key");
        });

        it("a key that does not belong to the certificate fails with a clear message; the working certificate stays", async () => {
            const keyBefore = await server.sh(`sha256sum /etc/clj-zero-downtime/tls/${ID}/privkey.pem`);
            const result = await step("pulumi up with a mismatched tlsKey", () =>
                server.up({ tls: "custom", tlsCertificate: custom.cert, tlsKey: custom.otherKey }, { throwOnError: false }));
            assert.strictEqual(result.ok, false);
            const tls = result.resources.find(r => r.name === `${ID}-tls`)!;
            assert.match(tls.stderr, /tlsKey does not belong to tlsCertificate/);
            assert.strictEqual(await server.sh(`sha256sum /etc/clj-zero-downtime/tls/${ID}/privkey.pem`), keyBefore);
            const https = curl(`https://${DOMAIN}/`, address, ["--cacert", custom.ca]);
            assert.strictEqual(https.status, 200, https.stderr);
        });
    });
});
