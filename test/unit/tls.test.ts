// HTTPS: the rendered nginx site (443 block, redirect, ACME location, TLS
// defaults, HSTS), a real `nginx -t` with a certificate made here, shellcheck
// of every TLS script, and under mocks that the custom key only travels as a
// Pulumi secret.
import * as assert from "assert";
import { execFileSync, spawnSync } from "child_process";
import * as fs from "fs";
import * as path from "path";
import { parseSettings, Settings } from "../../infra/config";
import { environmentStep, letsencryptStep, renderEnvironmentFiles, renderTeardown, renderTlsInstaller } from "../../infra/host-files";
import { CERTBOT_DEPLOY_HOOK, layout } from "../../infra/names";
import { program } from "../../infra/program";
import { render } from "../../infra/render";
import { runUnderMocks } from "../support/pulumi-mocks";
import { functionBody, functionSource, shellcheck } from "../support/shell";
import { tempDir } from "../support/tmp";

const PUB = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGxhbWJkYWxhbWJkYWxhbWJkYWxhbWJkYWxhbWJkYQ unit@test";
const PRIV = "-----BEGIN OPENSSH PRIVATE KEY-----\nAAAA\n-----END OPENSSH PRIVATE KEY-----\n";
const DOMAIN = "app.example.com";
const COMMAND = "command:remote:Command";

/** A self-signed certificate and key for DOMAIN. */
const certDir = tempDir("tls-cert");
execFileSync("openssl", ["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", `/CN=${DOMAIN}`,
    "-addext", `subjectAltName=DNS:${DOMAIN}`, "-keyout", path.join(certDir, "key.pem"), "-out", path.join(certDir, "cert.pem")],
{ stdio: ["ignore", "ignore", "pipe"] });
const CERT = fs.readFileSync(path.join(certDir, "cert.pem"), "utf8");
const KEY = fs.readFileSync(path.join(certDir, "key.pem"), "utf8");
/** A renewal of CERT: the same domain and key, a new certificate (new serial and validity). */
execFileSync("openssl", ["req", "-x509", "-new", "-key", path.join(certDir, "key.pem"), "-days", "3", "-subj", `/CN=${DOMAIN}`,
    "-addext", `subjectAltName=DNS:${DOMAIN}`, "-out", path.join(certDir, "cert-renewed.pem")],
{ stdio: ["ignore", "ignore", "pipe"] });
const CERT_RENEWED = fs.readFileSync(path.join(certDir, "cert-renewed.pem"), "utf8");
const KEY_LINE = KEY.split("\n")[1];

function settingsFor(extra: Record<string, string> = {}): Settings {
    return parseSettings({ sshPublicKey: PUB, sshPrivateKey: PRIV, domain: DOMAIN, ...extra }, "live");
}

const CUSTOM = { tls: "custom", tlsCertificate: CERT, tlsKey: KEY };

/** The server blocks of a site, by the port they listen on. */
function serverBlock(site: string, port: 80 | 443): string {
    const block = site.split(/^server \{$/m).slice(1).find(b => b.includes(`listen ${port}`));
    assert.ok(block, `no server block listening on ${port}`);
    return block!;
}

describe("HTTPS", () => {
    const le = settingsFor({ tls: "letsencrypt" });
    const env = layout(le.appName, le.environment, le.ports);

    describe("nginx site", () => {
        it("letsencrypt: HTTP redirects to HTTPS except the ACME challenge, served from the environment's webroot", () => {
            const http = serverBlock(renderEnvironmentFiles(le, env).nginxSite, 80);
            assert.match(http, /location \/ \{\n\s+return 301 https:\/\/\$host\$request_uri;\n\s+\}/);
            assert.ok(http.includes(`location /.well-known/acme-challenge/ {\n        root ${env.acmeWebroot};`), http);
            assert.doesNotMatch(http, /proxy_pass/, "HTTP only redirects");
        });

        it("letsencrypt: the 443 block serves certbot's certificate, TLS 1.2+ with forward-secret AEAD suites, and proxies to the stable port", () => {
            const https = serverBlock(renderEnvironmentFiles(le, env).nginxSite, 443);
            assert.match(https, /listen 443 ssl http2;\n\s+listen \[::\]:443 ssl http2;/);
            assert.match(https, new RegExp(`server_name ${DOMAIN.replace(/\./g, "\\.")};`));
            assert.ok(https.includes(`ssl_certificate /etc/letsencrypt/live/${env.id}/fullchain.pem;`));
            assert.ok(https.includes(`ssl_certificate_key /etc/letsencrypt/live/${env.id}/privkey.pem;`));
            assert.match(https, /ssl_protocols TLSv1\.2 TLSv1\.3;/);
            const ciphers = /ssl_ciphers ([^;]+);/.exec(https)![1].split(":");
            assert.ok(ciphers.length > 0 && ciphers.every(c => /^ECDHE-(ECDSA|RSA)-(AES\d+-GCM-SHA\d+|CHACHA20-POLY1305)$/.test(c)), ciphers.join(":"));
            assert.match(https, /ssl_stapling on;/);
            assert.match(https, /proxy_pass http:\/\/sample_app_live;/);
            assert.match(https, /proxy_set_header X-Forwarded-Proto \$scheme;/);
            assert.doesNotMatch(https, /acme-challenge/);
        });

        it("HSTS only with hsts: true, and only on HTTPS", () => {
            assert.doesNotMatch(renderEnvironmentFiles(le, env).nginxSite, /Strict-Transport-Security/);
            const site = renderEnvironmentFiles(settingsFor({ tls: "letsencrypt", hsts: "true" }), env).nginxSite;
            assert.match(serverBlock(site, 443), /add_header Strict-Transport-Security "max-age=63072000" always;/);
            assert.doesNotMatch(serverBlock(site, 80), /Strict-Transport-Security/);
        });

        it("before the certificate exists the site serves HTTP and the ACME challenge, with no 443 block", () => {
            const site = renderEnvironmentFiles(le, env).nginxSiteHttp;
            assert.doesNotMatch(site, /listen 443|return 301|ssl_/);
            assert.match(site, /location \/\.well-known\/acme-challenge\//);
            assert.match(site, /proxy_pass http:\/\/sample_app_live;/);
        });

        it("custom: the certificate and key from the environment's TLS directory, no ACME location; tls off: no TLS at all", () => {
            const site = renderEnvironmentFiles(settingsFor(CUSTOM), env).nginxSite;
            assert.ok(site.includes(`ssl_certificate ${env.customCertificate};`) && site.includes(`ssl_certificate_key ${env.customKey};`));
            assert.doesNotMatch(site, /acme-challenge/);
            assert.match(serverBlock(site, 80), /return 301 https/);
            const off = renderEnvironmentFiles(settingsFor(), env);
            assert.doesNotMatch(off.nginxSite, /listen 443|ssl_|acme-challenge|return 301/);
            assert.strictEqual(off.nginxSite, off.nginxSiteHttp);
        });

        it("passes a real `nginx -t` with a certificate made by the test (every variant)", function () {
            const variants: Record<string, string> = {
                letsencrypt: renderEnvironmentFiles(le, env).nginxSite,
                "letsencrypt+hsts": renderEnvironmentFiles(settingsFor({ tls: "letsencrypt", hsts: "true" }), env).nginxSite,
                "letsencrypt before issuance": renderEnvironmentFiles(le, env).nginxSiteHttp,
                custom: renderEnvironmentFiles(settingsFor(CUSTOM), env).nginxSite,
            };
            for (const [name, text] of Object.entries(variants)) {
                const dir = tempDir("nginx-tls");
                const site = [env.letsencryptCertificate, env.customCertificate].reduce((s, p) => s.split(p).join(path.join(certDir, "cert.pem")), text);
                const withKey = [env.letsencryptKey, env.customKey].reduce((s, p) => s.split(p).join(path.join(certDir, "key.pem")), site);
                fs.writeFileSync(path.join(dir, "site.conf"), withKey);
                fs.writeFileSync(path.join(dir, "nginx.conf"),
                    `pid ${dir}/nginx.pid;\nerror_log ${dir}/error.log;\nevents {}\nhttp {\n  access_log off;\n  include ${dir}/site.conf;\n}\n`);
                const res = spawnSync("nginx", ["-t", "-p", dir, "-c", path.join(dir, "nginx.conf")], { encoding: "utf8" });
                assert.strictEqual(res.status, 0, `${name}: ${res.stderr}`);
                assert.match(res.stderr, /test is successful/, name);
            }
        });
    });

    describe("scripts", () => {
        it("every TLS script passes bash -n and shellcheck", () => {
            const custom = settingsFor({ ...CUSTOM, hsts: "true" });
            shellcheck(letsencryptStep(le, env).script, "tls-letsencrypt");
            shellcheck(letsencryptStep(settingsFor({ tls: "letsencrypt", acmeEmail: "o'brien@example.com" }), env).script, "tls-letsencrypt-email");
            shellcheck(environmentStep(le, env).script, "env-letsencrypt");
            shellcheck(environmentStep(custom, env).script, "env-custom");
            shellcheck(renderTlsInstaller(custom, env), "install-tls");
            shellcheck(render("certbot-deploy-hook.sh", {}), "certbot-deploy-hook");
        });

        it("letsencrypt step: certbot certonly through the webroot, non-interactive, our ACME server and account, renewal hook", () => {
            const script = letsencryptStep(settingsFor({ tls: "letsencrypt", acmeServer: "https://acme.test/dir", acmeEmail: "o'brien@example.com" }), env).script;
            assert.match(script, /certbot certonly --non-interactive --agree-tos --keep-until-expiring/);
            assert.ok(script.includes(`--webroot -w ${env.acmeWebroot} --cert-name ${env.id} -d ${DOMAIN}`));
            assert.ok(script.includes("--server 'https://acme.test/dir' --email 'o'\\''brien@example.com' --no-eff-email"));
            assert.match(letsencryptStep(le, env).script, /--register-unsafely-without-email/);
            assert.ok(script.includes(`install_file 0755 root:root ${CERTBOT_DEPLOY_HOOK}`));
            assert.match(script, /readonly CERTBOT_PACKAGES=\(certbot\)/);
            assert.ok(script.includes(renderEnvironmentFiles(le, env).nginxSite.trimEnd()), "switches to the HTTPS site it embeds");
        });

        it("letsencrypt step: after a change of acmeServer (staging to production) the certificate is renewed from the new server at once, not kept until due", () => {
            const dir = tempDir("acme-server");
            const production = "https://acme-v02.api.letsencrypt.org/directory";
            const conf = path.join(dir, "renewal.conf");
            const script = letsencryptStep(settingsFor({ tls: "letsencrypt", acmeServer: production }), env).script.split(env.letsencryptRenewalConf).join(conf);
            /** obtain_certificate with a certbot that records its arguments; what it was given and logged. */
            const obtain = () => {
                const r = spawnSync("bash", ["-c", ["set -euo pipefail", "log() { echo \"log: $*\"; }", 'die() { echo "die: $*"; exit 1; }',
                    `certbot() { echo "certbot $*" >>${dir}/calls; }`, ...["certificate_server", "request_certificate", "obtain_certificate"].map(f => functionSource(script, f)),
                    "obtain_certificate"].join("\n")], { encoding: "utf8" });
                const calls = fs.existsSync(path.join(dir, "calls")) ? fs.readFileSync(path.join(dir, "calls"), "utf8") : "";
                fs.rmSync(path.join(dir, "calls"), { force: true });
                return { out: r.stdout + r.stderr, calls };
            };
            const first = obtain();
            assert.match(first.calls, /^certbot certonly --non-interactive --agree-tos --keep-until-expiring --webroot /, `no certificate yet: a plain request\n${first.out}`);
            fs.writeFileSync(conf, "version = 2.1.0\narchive_dir = /etc/letsencrypt/archive/x\n[renewalparams]\nserver = https://acme-staging-v02.api.letsencrypt.org/directory\n");
            const switched = obtain();
            assert.match(switched.calls, /certbot certonly --non-interactive --agree-tos --keep-until-expiring --force-renewal /);
            assert.match(switched.out, /log: the certificate for app\.example\.com came from https:\/\/acme-staging-v02\.api\.letsencrypt\.org\/directory; getting one from https:\/\/acme-v02/);
            fs.writeFileSync(conf, `[renewalparams]\nserver = ${production}\n`);
            const same = obtain();
            assert.match(same.calls, /^certbot certonly --non-interactive --agree-tos --keep-until-expiring --webroot /, "the same server: kept until due");
        });

        describe("letsencrypt step: when certbot fails, advice by its reason", () => {
            const script = letsencryptStep(settingsFor({ tls: "letsencrypt" }), env).script;
            /**
             * obtain_certificate with a certbot that fails with OUTPUTS[0], OUTPUTS[1]... in turn (then
             * succeeds), no pause between tries; what it printed, its exit code and certbot's calls.
             */
            function obtainWith(outputs: string[]) {
                const dir = tempDir("certbot-fails");
                outputs.forEach((o, i) => fs.writeFileSync(path.join(dir, `out${i + 1}`), o));
                const certbot = `certbot() { local n; n=$(( $(cat ${dir}/n 2>/dev/null || echo 0) + 1 )); echo "$n" >${dir}/n; ` +
                    `if [ -f ${dir}/out$n ]; then cat ${dir}/out$n; return 1; fi; echo "Successfully received certificate."; }`;
                const r = spawnSync("bash", ["-c", ["set -euo pipefail", 'log() { echo "log: $*"; }', 'die() { echo "die: $*"; exit 1; }',
                    'dns_hint() { printf "(the DNS hint)"; }', certbot,
                    ...script.match(/^readonly CERTBOT_BUSY_PAUSE=.*$/m)!.map(l => l.replace(/PAUSE=\d+/, "PAUSE=0")),
                    ...["certbot_busy", "certbot_advice", "certificate_server", "request_certificate", "obtain_certificate"].map(f => functionSource(script, f)),
                    "obtain_certificate"].join("\n")], { encoding: "utf8" });
                return { status: r.status, out: r.stdout + r.stderr, calls: Number(fs.readFileSync(path.join(dir, "n"), "utf8")) };
            }
            const busy = "Another instance of Certbot is already running.\nAsk for help or search for solutions at https://community.letsencrypt.org.\n";

            it("waits while another certbot (a renewal) holds certbot's lock, then gets the certificate", () => {
                const r = obtainWith([busy, busy]);
                assert.strictEqual(r.status, 0, r.out);
                assert.strictEqual(r.calls, 3);
                assert.match(r.out, /log: another certbot is running on this server \(a renewal\?\); trying again in 0s\n(.|\n)*log: obtained a certificate/);
            });
            it("gives up after 24 tries (2 minutes), saying another certbot kept running", () => {
                const r = obtainWith(Array(30).fill(busy));
                assert.strictEqual(r.status, 1);
                assert.strictEqual(r.calls, 24);
                assert.match(r.out, /die: could not obtain a certificate for app\.example\.com .*Another certbot kept running on this server for 0s \(see: ps -C certbot\); run pulumi up again when it has finished\. The site keeps serving HTTP meanwhile\./);
                assert.doesNotMatch(r.out, /DNS hint/);
            });
            it("a rate limit: when to try again is certbot's, and the staging server for trying things", () => {
                const r = obtainWith(["An unexpected error occurred:\nError creating new order :: too many certificates (5) already issued for this exact set of domains in the last 168 hours: app.example.com, retry after 2026-11-28T10:00:00Z: see https://letsencrypt.org/docs/rate-limits/\n"]);
                assert.strictEqual(r.status, 1);
                assert.strictEqual(r.calls, 1, "a rate limit is not waited for");
                assert.match(r.out, /certbot: Error creating new order :: too many certificates/);
                assert.match(r.out, /limits how many certificates it issues: certbot says above when to try again\. While you try things, use the staging server, acmeServer = https:\/\/acme-staging-v02\.api\.letsencrypt\.org\/directory\./);
                assert.doesNotMatch(r.out, /DNS hint/);
            });
            // As certbot 2.1 (Debian 12) prints them: the acme library's own message for a refused or
            // unreachable server, requests' for a name that does not resolve or a certificate it does not trust.
            for (const [what, output] of [
                ["refused", "An unexpected error occurred:\nValueError: Requesting 127.0.0.1/directory: Connection refused\n"],
                ["untrusted", "An unexpected error occurred:\nrequests.exceptions.SSLError: HTTPSConnectionPool(host='acme.example', port=443): Max retries exceeded with url: /directory (Caused by SSLError(SSLCertVerificationError(1, '[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed')))\n"],
            ]) {
                it(`an ACME server it cannot talk to (${what}): the URL, outgoing HTTPS, trust`, () => {
                    const r = obtainWith([output]);
                    assert.strictEqual(r.status, 1);
                    assert.match(r.out, /This server could not talk to https:\/\/acme-v02\.api\.letsencrypt\.org\/directory: check the URL, that this server may make outgoing HTTPS connections, and that it trusts the certificate of the ACME server/);
                    assert.doesNotMatch(r.out, /DNS hint/);
                });
            }
            it("a failed validation (the usual case: DNS, port 80): the DNS hint", () => {
                const r = obtainWith(["Certbot failed to authenticate some domains (authenticator: webroot).\n  Domain: app.example.com\n  Type:   dns\n  Detail: DNS problem: NXDOMAIN looking up A for app.example.com\n"]);
                assert.strictEqual(r.status, 1);
                assert.strictEqual(r.calls, 1);
                assert.match(r.out, /its reason is above\)\. \(the DNS hint\) The site keeps serving HTTP meanwhile\./);
            });
        });

        it("teardown removes the environment's certificates, whichever TLS mode it had: certbot's lineage, the ACME webroot, a custom key", () => {
            const dir = tempDir("tls-teardown");
            const paths = { renewal: path.join(dir, "renewal.conf"), custom: path.join(dir, "custom"), webroot: path.join(dir, "webroot") };
            const teardown = renderTeardown(le, { ...env, letsencryptRenewalConf: paths.renewal, customTlsDir: paths.custom, acmeWebroot: paths.webroot });
            fs.mkdirSync(paths.custom);
            fs.writeFileSync(path.join(paths.custom, "privkey.pem"), KEY);
            fs.mkdirSync(paths.webroot);
            fs.writeFileSync(paths.renewal, "server = x\n");
            const r = spawnSync("bash", ["-c", ["set -euo pipefail", "log() { echo \"log: $*\"; }", `certbot() { echo "certbot $*" >>${dir}/calls; }`,
                functionSource(teardown, "remove_tls"), "remove_tls"].join("\n")], { encoding: "utf8" });
            assert.strictEqual(r.status, 0, r.stderr);
            assert.strictEqual(fs.readFileSync(path.join(dir, "calls"), "utf8"), `certbot delete --non-interactive --cert-name ${env.id}\n`);
            assert.ok(!fs.existsSync(paths.custom) && !fs.existsSync(paths.webroot), "the key and the webroot are gone");
            assert.match(functionBody(teardown, "main"), /remove_site\n  remove_tls\n  remove_files/);
        });

        it("the environment step installs the HTTPS site only once its certificate exists, and the HTTP one before", () => {
            const script = environmentStep(le, env).script;
            assert.ok(script.includes(`[ -s ${env.letsencryptCertificate} ] && [ -s ${env.letsencryptKey} ]`));
            const files = renderEnvironmentFiles(le, env);
            assert.ok(script.includes(files.nginxSite.trimEnd()) && script.includes(files.nginxSiteHttp.trimEnd()));
            assert.ok(environmentStep(settingsFor(CUSTOM), env).script.includes(`install_file 0755 root:root ${env.installTlsScript}`));
        });

        it("after a change of domain the environment step serves HTTP until there is a certificate for the new name, not the new name with the old certificate", () => {
            /** tls_certificate_ready from the step for `domain`, run against the test's certificate for DOMAIN. */
            const ready = (domain: string, key = path.join(certDir, "key.pem")) => {
                const script = environmentStep(settingsFor({ tls: "letsencrypt", domain }), env).script;
                const fn = functionSource(script, "tls_certificate_ready")
                    .split(env.letsencryptCertificate).join(path.join(certDir, "cert.pem")).split(env.letsencryptKey).join(key);
                return spawnSync("bash", ["-c", `set -euo pipefail\n${fn}\nif tls_certificate_ready; then echo ready; else echo not; fi`],
                    { encoding: "utf8" }).stdout.trim();
            };
            assert.strictEqual(ready(DOMAIN), "ready");
            assert.strictEqual(ready("shop.example.org"), "not");
            assert.strictEqual(ready(DOMAIN, path.join(certDir, "missing.pem")), "not");
        });

        it("custom installer: embeds the public certificate, reads the key from stdin, checks the pair before installing it 0600", () => {
            const script = renderTlsInstaller(settingsFor(CUSTOM), env);
            assert.ok(script.includes(CERT.trimEnd()));
            assert.ok(!script.includes(KEY_LINE), "the key is never in the installer");
            assert.match(script, /cat >"\$staging\/key"/);
            assert.ok(script.indexOf("check_pair \"$staging/cert\"") < script.indexOf(`install_file 0600 root:root ${env.customKey}`));
            assert.throws(() => renderTlsInstaller(settingsFor(CUSTOM).tls === "custom" ? { ...settingsFor(CUSTOM), tlsCertificate: `${CERT}CZD_CERT\n` } : le, env), /CZD_CERT/);
        });

        it("renewal deploy hook: reloads nginx only when nginx -t passes, and says why not", () => {
            const dir = tempDir("hook");
            const hook = path.join(dir, "hook");
            fs.writeFileSync(hook, render("certbot-deploy-hook.sh", {}), { mode: 0o755 });
            const fakeNginx = (testExit: number) => fs.writeFileSync(path.join(dir, "nginx"),
                `#!/bin/sh\necho "nginx $*" >>${dir}/calls\n[ "$1" = -t ] && { echo "emerg: bad" >&2; exit ${testExit}; }\nexit 0\n`, { mode: 0o755 });
            const env2 = { ...process.env, PATH: `${dir}:${process.env.PATH}`, RENEWED_LINEAGE: "/etc/letsencrypt/live/x" };
            fakeNginx(0);
            assert.strictEqual(spawnSync(hook, { env: env2 }).status, 0);
            assert.strictEqual(fs.readFileSync(path.join(dir, "calls"), "utf8"), "nginx -t\nnginx -s reload\n");
            fs.rmSync(path.join(dir, "calls"));
            fakeNginx(1);
            const failed = spawnSync(hook, { env: env2, encoding: "utf8" });
            assert.strictEqual(failed.status, 1);
            assert.match(failed.stderr, /nginx -t failed after renewing \/etc\/letsencrypt\/live\/x; nginx keeps serving the previous certificate/);
            assert.strictEqual(fs.readFileSync(path.join(dir, "calls"), "utf8"), "nginx -t\n", "no reload after a failed test");
        });
    });

    describe("program under mocks", () => {
        const run = (config: Record<string, string>) => runUnderMocks(program, {
            config: { provider: "existing", host: "203.0.113.5", sshPublicKey: PUB, sshPrivateKey: PRIV, domain: DOMAIN, ...config },
            secretKeys: ["sshPrivateKey", "tlsKey"],
        });

        it("custom: the key reaches only the installer's stdin, as a secret; the certificate re-runs it through the trigger", async () => {
            const r = await run(CUSTOM);
            for (const res of r.resources) {
                for (const [k, v] of Object.entries(res.inputs)) {
                    if (JSON.stringify(v ?? "").includes(KEY_LINE)) {
                        assert.ok(res.secretInputs.includes(k), `${res.name}.${k} carries the TLS key but is not secret`);
                    }
                }
            }
            const carriers = r.resources.filter(res => Object.values(res.inputs).some(v => JSON.stringify(v ?? "").includes(KEY_LINE)));
            assert.deepStrictEqual(carriers.map(c => c.name), ["sample-app-live-tls"]);
            const tls = r.byName("sample-app-live-tls");
            assert.strictEqual(tls.inputs.create, env.installTlsScript);
            assert.strictEqual(tls.inputs.stdin, KEY);
            assert.ok(tls.secretInputs.includes("stdin"));
            assert.deepStrictEqual(tls.dependsOn, [r.byName("sample-app-live-env-live").urn]);
            assert.ok(!JSON.stringify(r.outputs).includes(KEY_LINE), "no output shows the key");
            const other = await run({ ...CUSTOM, tlsCertificate: CERT.replace(/\n$/, "\n\n") + "" });
            assert.deepStrictEqual(other.byName("sample-app-live-tls").inputs.triggers, tls.inputs.triggers, "same certificate, same trigger");
            // A renewed certificate for the same domain with the same key: only the certificate differs.
            assert.notStrictEqual(CERT_RENEWED, CERT);
            const renewed = await run({ ...CUSTOM, tlsCertificate: CERT_RENEWED });
            assert.strictEqual(renewed.byName("sample-app-live-tls").inputs.stdin, KEY, "same key");
            assert.notDeepStrictEqual(renewed.byName("sample-app-live-tls").inputs.triggers, tls.inputs.triggers, "a new certificate, a new trigger");
        });

        it("letsencrypt: one more setup step after the environment's, fed on stdin and triggered by its hash; off: none", async () => {
            const r = await run({ tls: "letsencrypt" });
            const tls = r.byName("sample-app-live-tls");
            assert.strictEqual(tls.inputs.create, "bash -s");
            assert.match(tls.inputs.stdin, /^#!\/usr\/bin\/env bash\n/);
            assert.match(tls.inputs.triggers[0], /^[0-9a-f]{16}$/);
            assert.deepStrictEqual(tls.dependsOn, [r.byName("sample-app-live-env-live").urn]);
            assert.strictEqual(r.outputs.appUrl, `https://${DOMAIN}/`);
            const off = await run({});
            assert.ok(!off.byType(COMMAND).some(c => c.name.endsWith("-tls")));
        });
    });
});
