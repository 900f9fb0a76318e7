import * as assert from "assert";
import { execFileSync } from "child_process";
import * as fs from "fs";
import * as path from "path";
import { ConfigError, DEFAULTS, parseSettings, RawConfig, readConfig } from "../../infra/config";
import { runUnderMocks } from "../support/pulumi-mocks";
import { tempDir } from "../support/tmp";

const PUB = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGxhbWJkYWxhbWJkYWxhbWJkYWxhbWJkYWxhbWJkYQ test@example";
const PRIV = "-----BEGIN OPENSSH PRIVATE KEY-----\nAAAA\n-----END OPENSSH PRIVATE KEY-----\n";

function valid(extra: RawConfig = {}): RawConfig {
    return { sshPublicKey: PUB, sshPrivateKey: PRIV, ...extra };
}

/** The problems parseSettings reports for `raw`; fails the test when it accepts it. */
function problems(raw: RawConfig, stack = "live"): string[] {
    try {
        parseSettings(raw, stack);
    } catch (e) {
        if (e instanceof ConfigError) return e.problems;
        throw e;
    }
    assert.fail(`expected ${JSON.stringify(raw)} to be rejected`);
}

function assertProblem(raw: RawConfig, ...fragments: string[]) {
    const found = problems(raw);
    assert.ok(
        found.some(p => fragments.every(f => p.includes(f))),
        `expected a problem containing ${fragments.map(f => JSON.stringify(f)).join(" and ")}, got:\n${found.join("\n")}`,
    );
}

describe("config validation", () => {
    it("accepts the defaults with keys set, and fills provider defaults", () => {
        const s = parseSettings(valid(), "live");
        assert.strictEqual(s.provider, "digitalocean");
        assert.strictEqual(s.region, "fra1");
        assert.strictEqual(s.size, "s-2vcpu-4gb");
        assert.strictEqual(s.image, "ubuntu-24-04-x64");
        assert.strictEqual(s.environment, "live", "environment defaults to the stack name");
        assert.deepStrictEqual(s.ports, { proxy: 3000, slot1: 3001, slot2: 3002, nrepl1: 7001, nrepl2: 7002 });
        assert.deepStrictEqual(s.sshAllowedCidrs, DEFAULTS.sshAllowedCidrs);
    });

    it("maps images per cloud and uses Hetzner's defaults", () => {
        const s = parseSettings(valid({ provider: "hetzner", image: "debian-12" }), "beta");
        assert.strictEqual(s.image, "debian-12");
        assert.strictEqual(s.region, "fsn1");
        assert.strictEqual(s.size, "cx23");
        assert.strictEqual(parseSettings(valid({ image: "debian-12" }), "live").image, "debian-12-x64");
        assert.strictEqual(parseSettings(valid({ provider: "hetzner" }), "live").image, "ubuntu-24.04");
    });

    it("rejects an unknown provider, naming the allowed ones", () => {
        assertProblem(valid({ provider: "aws" }), "clj-zero-downtime:provider", '"aws"', "digitalocean, hetzner, existing");
    });

    it("requires the SSH keys for every provider", () => {
        for (const provider of ["digitalocean", "hetzner", "existing"]) {
            const found = problems({ provider, host: "203.0.113.5" });
            assert.ok(found.some(p => p.includes("sshPublicKey is required")), found.join("\n"));
            assert.ok(found.some(p => p.includes("sshPrivateKey is required") && p.includes("--secret")), found.join("\n"));
        }
        // The hint uses the project's wrapper for this stack, and a secret comes on stdin, never on the command line.
        const found = problems({ provider: "existing", host: "203.0.113.5" });
        assert.ok(found.some(p => p.includes("`scripts/pulumi config set --secret sshPrivateKey --stack live -- < ~/.ssh/id_ed25519`")), found.join("\n"));
        assert.ok(found.some(p => p.includes("`scripts/pulumi config set sshPublicKey --stack live <value>`")), found.join("\n"));
    });

    it("rejects a public key that is not one key line, or whose comment has a quote", () => {
        assertProblem(valid({ sshPublicKey: "not a key" }), "sshPublicKey", "one OpenSSH public key line");
        assertProblem(valid({ sshPublicKey: `${PUB.split(" ").slice(0, 2).join(" ")} it's-me` }), "sshPublicKey", "free of quotes");
    });

    it("requires host for existing, and accepts it with sshUser", () => {
        assertProblem(valid({ provider: "existing" }), "host is required", "existing");
        const s = parseSettings(valid({ provider: "existing", host: "203.0.113.5", sshUser: "admin" }), "live");
        assert.strictEqual(s.host, "203.0.113.5");
        assert.strictEqual(s.sshUser, "admin");
        assert.strictEqual(s.image, "", "no image for an existing host");
        assertProblem(valid({ provider: "existing", host: "not a host!" }), "host", "IPv4/IPv6 address or a DNS name");
    });

    it("accepts another sshPort only for an existing host: a new server's sshd listens on 22", () => {
        for (const provider of ["digitalocean", "hetzner"]) {
            assertProblem(valid({ provider, sshPort: "2222" }), "sshPort", `22 with provider ${provider}`, "another port is for provider existing");
            assert.strictEqual(parseSettings(valid({ provider, sshPort: "22" }), "live").sshPort, 22);
        }
        assert.strictEqual(parseSettings(valid({ provider: "existing", host: "203.0.113.5", sshPort: "2222" }), "live").sshPort, 2222);
    });

    it("never prints a private key it rejects", () => {
        const found = problems(valid({ sshPrivateKey: "hunter2-not-a-key" }));
        assert.ok(found.some(p => p.includes("sshPrivateKey is not valid")));
        assert.ok(found.every(p => !p.includes("hunter2")), "the secret leaked into the message");
    });

    describe("an SSH key pair made by ssh-keygen", () => {
        const dir = tempDir("config-keys");
        const PASSPHRASE = "correct horse battery";
        /** A key made by `ssh-keygen -N passphrase` with `extra` options: its private and public text. */
        const keygen = (name: string, passphrase: string, ...extra: string[]) => {
            const file = path.join(dir, name);
            execFileSync("ssh-keygen", ["-q", "-N", passphrase, "-C", `${name}@test`, "-f", file, ...extra]);
            return { priv: fs.readFileSync(file, "utf8"), pub: fs.readFileSync(`${file}.pub`, "utf8").trim() };
        };
        const one = keygen("one", "", "-t", "ed25519");
        const two = keygen("two", "", "-t", "ed25519");
        const rsa = keygen("rsa", "", "-t", "rsa", "-b", "2048");
        const locked = keygen("locked", PASSPHRASE, "-t", "ed25519");
        const lockedPem = keygen("locked-pem", PASSPHRASE, "-t", "rsa", "-b", "2048", "-m", "PEM");
        const lockedPkcs8 = keygen("locked-pkcs8", PASSPHRASE, "-t", "rsa", "-b", "2048", "-m", "PKCS8");
        const plainPem = keygen("plain-pem", "", "-t", "ecdsa", "-m", "PEM");

        /** No message shows any line of the key's text, nor the passphrase. */
        const assertNotShown = (found: string[], priv: string) => {
            const lines = priv.split("\n").filter(l => l.length >= 16 && !l.startsWith("-----"));
            assert.ok(lines.length > 0);
            for (const p of found) {
                for (const l of lines) assert.ok(!p.includes(l), `the private key leaked into: ${p}`);
                assert.ok(!p.includes(PASSPHRASE));
            }
        };

        it("accepts a key without passphrase that belongs to sshPublicKey (ed25519, RSA, and a PEM key)", () => {
            for (const k of [one, two, rsa, plainPem]) {
                assert.strictEqual(parseSettings({ sshPublicKey: k.pub, sshPrivateKey: k.priv }, "live").sshPublicKey, k.pub);
            }
            // CRLF line ends (a key pasted on Windows) change nothing.
            parseSettings({ sshPublicKey: one.pub, sshPrivateKey: one.priv.replace(/\n/g, "\r\n") }, "live");
        });

        it("refuses a passphrase-protected key (OpenSSH, PEM Proc-Type, PKCS#8) before anything is created, saying how to get one without, never showing it", () => {
            assert.match(locked.priv, /^-----BEGIN OPENSSH PRIVATE KEY-----/);
            assert.match(lockedPem.priv, /^Proc-Type: 4,ENCRYPTED$/m);
            assert.match(lockedPkcs8.priv, /^-----BEGIN ENCRYPTED PRIVATE KEY-----/);
            for (const k of [locked, lockedPem, lockedPkcs8]) {
                const found = problems({ sshPublicKey: k.pub, sshPrivateKey: k.priv });
                const message = found.find(p => p.includes("clj-zero-downtime:sshPrivateKey is passphrase-protected"));
                assert.ok(message, found.join("\n"));
                assert.ok(message.includes("needs a key without one"), message);
                assert.ok(message.includes("`ssh-keygen -t ed25519 -N '' -f ~/.ssh/clj-zero-downtime`"), message);
                assert.ok(message.includes("`scripts/pulumi config set --secret sshPrivateKey --stack live -- < ~/.ssh/clj-zero-downtime`"), message);
                assert.ok(message.includes("`ssh-keygen -p -f <key file>`"), message);
                assert.ok(!found.some(p => p.includes("does not belong")), "an encrypted key is not also called another pair's");
                assertNotShown(found, k.priv);
            }
        });

        it("refuses an OpenSSH private key of another pair than sshPublicKey, naming both fingerprints, never the key", () => {
            const found = problems({ sshPublicKey: one.pub, sshPrivateKey: two.priv });
            const fingerprint = (pubText: string) => {
                const file = path.join(dir, "fp.pub");
                fs.writeFileSync(file, pubText);
                return execFileSync("ssh-keygen", ["-l", "-f", file], { encoding: "utf8" }).split(" ")[1];
            };
            const message = found.find(p => p.includes("clj-zero-downtime:sshPrivateKey does not belong to sshPublicKey"));
            assert.ok(message, found.join("\n"));
            assert.ok(message.includes(`the private key's public half is ${fingerprint(two.pub)}, sshPublicKey is ${fingerprint(one.pub)}`), message);
            assertNotShown(found, two.priv);
            assert.ok(problems({ sshPublicKey: rsa.pub, sshPrivateKey: one.priv }).some(p => p.includes("does not belong to sshPublicKey")), "another type too");
            // The comment is not part of the key.
            parseSettings({ sshPublicKey: one.pub.replace("one@test", "laptop"), sshPrivateKey: one.priv }, "live");
        });

        it("refuses an OpenSSH key whose data ends early (a truncated copy), never showing it", () => {
            const lines = one.priv.trim().split("\n");
            const truncated = [lines[0], lines[1].slice(0, 40), lines[lines.length - 1]].join("\n");
            const found = problems({ sshPublicKey: one.pub, sshPrivateKey: truncated });
            assert.ok(found.some(p => p.includes("sshPrivateKey is not valid: its OpenSSH key data ends early")), found.join("\n"));
            assertNotShown(found, one.priv);
        });
    });

    it("rejects deprecated Hetzner types", () => {
        assertProblem(valid({ provider: "hetzner", size: "cx22" }), "size", "cx22", "deprecated", "cx23");
        assertProblem(valid({ provider: "hetzner", size: "cpx11" }), "size", "cpx11", "deprecated");
    });

    it("refuses one cloud's region or size for the other (a provider change that kept them), saying how to take the default", () => {
        assertProblem(valid({ provider: "hetzner", region: "fra1" }), "region", '"fra1"', "a hetzner location such as fsn1: fra1 is DigitalOcean's", "pulumi config rm region");
        assertProblem(valid({ provider: "hetzner", size: "s-2vcpu-4gb" }), "size", "a hetzner server type such as cx23: s-2vcpu-4gb is DigitalOcean's");
        assertProblem(valid({ provider: "digitalocean", region: "nbg1" }), "region", "nbg1 is Hetzner's");
        assertProblem(valid({ provider: "digitalocean", size: "cpx31" }), "size", "a digitalocean size slug such as s-2vcpu-4gb: cpx31 is Hetzner's");
        // Values of its own cloud, also ones this project does not list, pass.
        for (const [provider, region, size] of [["hetzner", "ash", "cax21"], ["hetzner", "xyz9", "cx33"], ["digitalocean", "nyc3", "g-2vcpu-8gb"], ["digitalocean", "new1", "s-4vcpu-8gb"]]) {
            const s = parseSettings(valid({ provider, region, size }), "live");
            assert.deepStrictEqual([s.region, s.size], [region, size]);
        }
    });

    it("rejects ports outside 1024-65535", () => {
        assertProblem(valid({ slot1Port: "80" }), "slot1Port", '"80"', "1024 to 65535");
        assertProblem(valid({ nrepl2Port: "70000" }), "nrepl2Port", "1024 to 65535");
        assertProblem(valid({ proxyPort: "abc" }), "proxyPort", '"abc"');
    });

    it("rejects ports that are not distinct, naming both keys", () => {
        assertProblem(valid({ slot2Port: "3001" }), "slot2Port", "3001", "slot1Port is 3001 too");
        assertProblem(valid({ nrepl1Port: "3000" }), "nrepl1Port", "proxyPort is 3000 too");
    });

    it("rejects an appName that is not a safe slug", () => {
        for (const bad of ["My App", "app;rm -rf", "-app", "app-", "a", "x".repeat(25), "1app", "app_name", "../etc"]) {
            assertProblem(valid({ appName: bad }), "appName", JSON.stringify(bad), "safe slug");
        }
        assertProblem(valid({ appName: "root" }), "appName", "reserved");
        assertProblem(valid({ appName: "deploy" }), "appName", '"deploy"', "reserved", "deploy");
        assert.strictEqual(parseSettings(valid({ appName: "shop-api2" }), "live").appName, "shop-api2");
    });

    it("refuses an appName whose app user is the user the setup connects as (it would lock that account)", () => {
        for (const name of ["ops", "sample-app"]) {
            assertProblem(valid({ provider: "existing", host: "203.0.113.5", sshUser: name, appName: name }),
                `clj-zero-downtime:appName = "${name}" is not valid: a name other than clj-zero-downtime:sshUser ("${name}")`,
                `the app's system user is named ${name} after appName`, "lock it and set its shell to nologin", "choose another appName, or connect as another sshUser");
        }
        // The default appName is sample-app: an admin of that name must choose another.
        assertProblem(valid({ provider: "existing", host: "203.0.113.5", sshUser: "sample-app" }), "appName", "sshUser");
        assertProblem(valid({ provider: "existing", serverStack: "live", sshUser: "ops", appName: "ops" }, ), "appName", "sshUser");
        assert.strictEqual(parseSettings(valid({ provider: "existing", host: "203.0.113.5", sshUser: "ops", appName: "shop" }), "live").appName, "shop");
        // The clouds are set up as root, whatever sshUser says.
        assert.strictEqual(parseSettings(valid({ provider: "hetzner", sshUser: "shop", appName: "shop" }), "live").appName, "shop");
    });

    it("refuses deploy as the sshUser of an existing server: the setup takes that user over", () => {
        assertProblem(valid({ provider: "existing", host: "203.0.113.5", sshUser: "deploy" }),
            `clj-zero-downtime:sshUser = "deploy" is not valid: a user other than deploy`, "its password removed", "connect as root or another user with passwordless sudo");
        assert.strictEqual(parseSettings(valid({ provider: "existing", host: "203.0.113.5", sshUser: "ops" }), "live").sshUser, "ops");
    });

    it("rejects an environment that is not a safe slug, also when it comes from the stack name", () => {
        assertProblem(valid({ environment: "Live!" }), "environment", '"Live!"');
        assert.ok(problems(valid(), "My_Stack").some(p => p.includes("environment") && p.includes('"My_Stack"')));
    });

    it("rejects a healthPath that does not start with /", () => {
        assertProblem(valid({ healthPath: "health" }), "healthPath", '"health"', "starting with '/'");
        assertProblem(valid({ healthPath: "/a b" }), "healthPath");
    });

    it("rejects health and warm-up paths the deploy script could not hold safely", () => {
        for (const bad of ["/a$(id)", "/a`id`", '/a"b', "/a\\b", "/a'b"]) {
            assertProblem(valid({ healthPath: bad }), "healthPath", JSON.stringify(bad), "letters, digits and");
            assertProblem(valid({ warmupPath: bad }), "warmupPath", JSON.stringify(bad), "without side effects");
        }
        assert.strictEqual(parseSettings(valid({ warmupPath: "/?warm=1&x=%20" }), "live").warmupPath, "/?warm=1&x=%20");
    });

    it("warms up on the health path unless told otherwise, with 500 requests by default, 0 to 10000 allowed", () => {
        const s = parseSettings(valid({ healthPath: "/ready" }), "live");
        assert.strictEqual(s.warmupPath, "/ready");
        assert.strictEqual(s.warmupRequests, 500);
        assert.strictEqual(parseSettings(valid({ warmupRequests: "0" }), "live").warmupRequests, 0);
        assertProblem(valid({ warmupRequests: "10001" }), "warmupRequests", '"10001"', "0 (no warm-up) to 10000");
        assertProblem(valid({ warmupRequests: "lots" }), "warmupRequests");
    });

    it("ramps traffic over 3 s by default; 0 (all at once) to 60 whole seconds allowed", () => {
        assert.strictEqual(parseSettings(valid(), "live").rampSeconds, 3);
        assert.strictEqual(parseSettings(valid({ rampSeconds: "0" }), "live").rampSeconds, 0);
        assert.strictEqual(parseSettings(valid({ rampSeconds: "60" }), "live").rampSeconds, 60);
        assertProblem(valid({ rampSeconds: "61" }), "rampSeconds", '"61"', "from 0 (move all traffic at once) to 60");
        assertProblem(valid({ rampSeconds: "1.5" }), "rampSeconds", '"1.5"', "a whole number of seconds");
        assertProblem(valid({ rampSeconds: "-1" }), "rampSeconds");
    });

    it("lets the new slot answer 5xx 5 points more often than the old one in the ramp by default; 0 to 100 whole points allowed", () => {
        assert.strictEqual(parseSettings(valid(), "live").rampMaxErrorPercent, 5);
        assert.strictEqual(parseSettings(valid({ rampMaxErrorPercent: "0" }), "live").rampMaxErrorPercent, 0);
        assert.strictEqual(parseSettings(valid({ rampMaxErrorPercent: "100" }), "live").rampMaxErrorPercent, 100);
        assertProblem(valid({ rampMaxErrorPercent: "101" }), "rampMaxErrorPercent", '"101"', "from 0 (fail on any more 5xx answers than the old version's) to 100 (never fail on them)");
        assertProblem(valid({ rampMaxErrorPercent: "2.5" }), "rampMaxErrorPercent", '"2.5"', "a whole number of percentage points");
        assertProblem(valid({ rampMaxErrorPercent: "-1" }), "rampMaxErrorPercent");
    });

    it("bakes for 0 s by default (the old slot stops once drained); 0 to 300 whole seconds allowed", () => {
        assert.strictEqual(parseSettings(valid(), "live").bakeSeconds, 0);
        assert.strictEqual(parseSettings(valid({ bakeSeconds: "300" }), "live").bakeSeconds, 300);
        assertProblem(valid({ bakeSeconds: "301" }), "bakeSeconds", '"301"', "from 0 (stop the old slot as soon as it has drained) to 300");
        assertProblem(valid({ bakeSeconds: "2.5" }), "bakeSeconds", '"2.5"', "a whole number of seconds");
        assertProblem(valid({ bakeSeconds: "-1" }), "bakeSeconds");
    });

    it("boots new slots at idle CPU priority by default; accepts idle or normal only", () => {
        assert.strictEqual(parseSettings(valid(), "live").bootPriority, "idle");
        assert.strictEqual(parseSettings(valid({ bootPriority: "normal" }), "live").bootPriority, "normal");
        assertProblem(valid({ bootPriority: "low" }), "bootPriority", '"low"', "one of idle, normal");
    });

    it("rejects non-positive timeouts", () => {
        assertProblem(valid({ startTimeout: "0" }), "startTimeout", '"0"', "1 to 3600");
        assertProblem(valid({ drainTimeout: "-5" }), "drainTimeout", '"-5"');
        assertProblem(valid({ lockTimeout: "1.5" }), "lockTimeout", '"1.5"');
        assertProblem(valid({ keepReleases: "1" }), "keepReleases", "2 to 100");
    });

    it("rejects malformed CIDRs, naming the bad one", () => {
        assertProblem(valid({ sshAllowedCidrs: '["10.0.0.0/8","300.1.1.1/32"]' }), "sshAllowedCidrs", "300.1.1.1/32", "not an IPv4 or IPv6 address");
        assertProblem(valid({ sshAllowedCidrs: '["10.0.0.0/33"]' }), "prefix length 33 is larger than 32");
        assertProblem(valid({ sshAllowedCidrs: '["10.0.0.1"]' }), "expected <address>/<prefix length>");
        assertProblem(valid({ sshAllowedCidrs: "[]" }), "non-empty list");
        assertProblem(valid({ sshAllowedCidrs: "[]" }), "`scripts/pulumi config set --path 'sshAllowedCidrs[0]' --stack live 203.0.113.7/32`");
        const s = parseSettings(valid({ sshAllowedCidrs: '["203.0.113.7/32","2001:db8::/32"]' }), "live");
        assert.deepStrictEqual(s.sshAllowedCidrs, ["203.0.113.7/32", "2001:db8::/32"]);
    });

    it("rejects a malformed domain and javaOpts that could break out of the command", () => {
        assertProblem(valid({ domain: "not_a domain" }), "domain", "fully qualified");
        assertProblem(valid({ javaOpts: "-Xmx512m; rm -rf /" }), "javaOpts");
        // Refused in preview, with what is allowed, rather than later by the rotation's own check.
        for (const opts of ["-Xlog:gc*", "-Dx=(y)", "-Dname='a b'", "-Dp=$HOME"]) {
            assertProblem(valid({ javaOpts: opts }), `javaOpts = ${JSON.stringify(opts)} is not valid: JVM options separated by spaces, made of letters, digits and . _ : = + , / % @ - only`);
        }
        assert.strictEqual(parseSettings(valid({ javaOpts: "-Dmail=ops@example.com -Xlog:gc:file=/tmp/gc.log -XX:MaxRAMPercentage=50" }), "live").javaOpts,
            "-Dmail=ops@example.com -Xlog:gc:file=/tmp/gc.log -XX:MaxRAMPercentage=50");
        assert.strictEqual(parseSettings(valid({ domain: "App.Example.com", javaOpts: "-Xmx512m -XX:+UseG1GC" }), "live").domain, "app.example.com");
    });

    it("validates appEnv names without ever printing values", () => {
        const s = parseSettings(valid({ appEnv: JSON.stringify({ DATABASE_URL: "postgres://x", API_KEY: "s3cret" }) }), "live");
        assert.deepStrictEqual(s.appEnvNames, ["API_KEY", "DATABASE_URL"]);
        assertProblem(valid({ appEnv: JSON.stringify({ "1BAD": "x" }) }), "appEnv", '"1BAD"');
        assertProblem(valid({ appEnv: JSON.stringify({ PORT: "80" }) }), "appEnv sets PORT", "reserved");
        const found = problems(valid({ appEnv: JSON.stringify({ TOKEN: "line1\nsecret-line2" }) }));
        assert.ok(found.some(p => p.includes("appEnv.TOKEN") && p.includes("single line")));
        assert.ok(found.every(p => !p.includes("secret-line2")));
        assertProblem(valid({ appEnv: "[1,2]" }), "appEnv is not valid");
        assertProblem(valid({ appEnv: "[1,2]" }), "`scripts/pulumi config set --path 'appEnv.NAME' --stack live value`; a secret with `scripts/pulumi config set --secret --path 'appEnv.NAME' --stack live -- < file`");
    });

    it("reports every problem at once", () => {
        const found = problems({ provider: "gcp", appName: "Bad Name", healthPath: "x", slot1Port: "22" });
        assert.ok(found.length >= 5, found.join("\n"));
    });

    it("validates TLS: a mode from the list, a domain, and for custom a certificate and a secret key (never echoed)", () => {
        assertProblem(valid({ tls: "yes" }), "tls", '"yes"', "off, letsencrypt, custom");
        assertProblem(valid({ tls: "letsencrypt" }), "needs a domain");
        assertProblem(valid({ tls: "custom", domain: "a.example.com" }), "tlsCertificate is required");
        const found = problems(valid({ tls: "custom", domain: "a.example.com", tlsCertificate: "-----BEGIN CERTIFICATE-----\nx\n-----END CERTIFICATE-----", tlsKey: "hunter2" }));
        assert.ok(found.some(p => p.includes("tlsKey is required")) && found.every(p => !p.includes("hunter2")));
        assertProblem(valid({ acmeServer: "http://insecure/dir" }), "acmeServer", "https://");
        assertProblem(valid({ acmeEmail: "nope" }), "acmeEmail");
        assertProblem(valid({ hsts: "maybe" }), "hsts", "true or false");
        const s = parseSettings(valid({ tls: "letsencrypt", domain: "a.example.com", hsts: "true" }), "live");
        assert.strictEqual(s.tls, "letsencrypt");
        assert.strictEqual(s.hsts, true);
    });

    it("refuses a tlsKey that is not a secret (it would sit in plain text in Pulumi.<stack>.yaml), naming the --secret command", () => {
        const key = "-----BEGIN PRIVATE KEY-----\nTLSKEYBODYtlskeybody\n-----END PRIVATE KEY-----\n";
        const custom = { tls: "custom", domain: "a.example.com", tlsCertificate: "-----BEGIN CERTIFICATE-----\nx\n-----END CERTIFICATE-----", tlsKey: key };
        for (const extra of [custom, { tlsKey: key }]) {
            let found: string[] = [];
            try {
                parseSettings(valid(extra), "beta", ["sshPrivateKey"]);
            } catch (e) {
                found = (e as ConfigError).problems;
            }
            const message = found.find(p => p.includes("clj-zero-downtime:tlsKey is set in plain text, not as a secret"));
            assert.ok(message, found.join("\n"));
            assert.ok(message.includes("Pulumi.beta.yaml"), message);
            assert.ok(message.includes("`scripts/pulumi config set --secret tlsKey --stack beta -- < privkey.pem`"), message);
            assert.ok(found.every(p => !p.includes("TLSKEYBODY")), "the key leaked into a message");
        }
        assert.strictEqual(parseSettings(valid(custom), "beta", ["sshPrivateKey", "tlsKey"]).tls, "custom");
        assert.strictEqual(parseSettings(valid(), "beta", ["sshPrivateKey"]).tls, "off", "no tlsKey: nothing to refuse");
    });

    it("readConfig tells parseSettings which values the stack holds as secrets", async () => {
        const key = "-----BEGIN PRIVATE KEY-----\nTLSKEYBODYtlskeybody\n-----END PRIVATE KEY-----\n";
        const config = { sshPublicKey: PUB, sshPrivateKey: PRIV, tlsKey: key };
        await assert.rejects(runUnderMocks(() => { readConfig(); return {}; }, { config, secretKeys: ["sshPrivateKey"] }),
            (e: Error) => e instanceof ConfigError && /tlsKey is set in plain text, not as a secret/.test(e.message) && !e.message.includes("TLSKEYBODY"));
        await runUnderMocks(() => { readConfig(); return {}; }, { config, secretKeys: ["sshPrivateKey", "tlsKey"] });
    });

    it("validates dnsZone: DigitalOcean only, and it must contain the domain", () => {
        assertProblem(valid({ provider: "hetzner", dnsZone: "example.com", domain: "a.example.com" }), "dnsZone", "unless provider is digitalocean");
        assertProblem(valid({ dnsZone: "example.com", domain: "a.example.org" }), "dnsZone", 'contains domain "a.example.org"');
        assert.strictEqual(parseSettings(valid({ dnsZone: "example.com", domain: "shop.example.com" }), "live").dnsZone, "example.com");
    });

    it("validates the build mode", () => {
        assertProblem(valid({ build: "cloud" }), "build", '"cloud"', "server, local");
        assert.strictEqual(parseSettings(valid({ build: "local" }), "live").build, "local");
    });

    it("validates serverStack: a stack name, with provider existing and no host of its own", () => {
        assertProblem(valid({ provider: "digitalocean", serverStack: "live" }), "serverStack", "unless provider is existing");
        assertProblem(valid({ provider: "existing", serverStack: "live", host: "1.2.3.4" }), "host", "empty when serverStack is set");
        assertProblem(valid({ provider: "existing", serverStack: "no spaces" }), "serverStack", "a stack name");
        const s = parseSettings(valid({ provider: "existing", serverStack: "acme/clj-zero-downtime/live" }), "beta");
        assert.strictEqual(s.serverStack, "acme/clj-zero-downtime/live");
        assert.strictEqual(s.host, "");
    });
});
