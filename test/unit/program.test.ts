// The program's resource graph under mocks, for each provider, in `up` and in `preview`.
import * as assert from "assert";
import { execFileSync } from "child_process";
import * as fs from "fs";
import * as path from "path";
import * as pulumi from "@pulumi/pulumi";
import { program } from "../../infra/program";
import { accountKeyFor, sshKeyFingerprint } from "../../infra/providers/ssh-key";
import { MockRun, runUnderMocks } from "../support/pulumi-mocks";
import { tempDir } from "../support/tmp";

const dir = tempDir("keys");
execFileSync("ssh-keygen", ["-q", "-t", "ed25519", "-N", "", "-C", "unit-test", "-f", path.join(dir, "id")]);
const PUB = fs.readFileSync(path.join(dir, "id.pub"), "utf8").trim();
const PRIV = fs.readFileSync(path.join(dir, "id"), "utf8");
const SECRET_ENV_VALUE = "s3cret-db-password-9f1c";

const COMMAND = "command:remote:Command";

function run(config: Record<string, any>, opts: { preview?: boolean; stack?: string; stackOutputs?: Record<string, Record<string, unknown>>;
    call?: (args: pulumi.runtime.MockCallArgs) => Record<string, any> } = {}): Promise<MockRun> {
    return runUnderMocks(program, {
        stackOutputs: opts.stackOutputs,
        call: opts.call,
        config: { sshPublicKey: PUB, sshPrivateKey: PRIV, appEnv: { DATABASE_PASSWORD: SECRET_ENV_VALUE, PLAIN: "x" }, ...config },
        secretKeys: ["sshPrivateKey", "appEnv"],
        stack: opts.stack ?? "live",
        preview: opts.preview,
    });
}

function types(r: MockRun): string[] {
    return r.resources.map(x => x.type).sort();
}

function commandNames(r: MockRun): string[] {
    return r.byType(COMMAND).map(c => c.name).sort();
}

const SETUP_STEPS = ["setup-wait-for-host", "setup-packages", "setup-scheduler", "setup-host-access", "setup-firewall"];

function assertSetupChain(r: MockRun, firstDeps: string[]) {
    const urnOf = (name: string) => r.byName(name).urn;
    assert.deepStrictEqual(r.byName(SETUP_STEPS[0]).dependsOn.sort(), firstDeps.map(urnOf).sort());
    for (let i = 1; i < SETUP_STEPS.length; i++) {
        assert.deepStrictEqual(r.byName(SETUP_STEPS[i]).dependsOn, [urnOf(SETUP_STEPS[i - 1])], `${SETUP_STEPS[i]} runs after ${SETUP_STEPS[i - 1]}`);
    }
    assert.deepStrictEqual(r.byName("sample-app-live-env-live").dependsOn, [urnOf("setup-firewall")]);
    assert.deepStrictEqual(r.byName("sample-app-live-app-env").dependsOn, [urnOf("sample-app-live-env-live")]);
}

describe("program resource graph", () => {
    it("digitalocean: SshKey, Droplet, Firewall with SSH from allowed CIDRs and web from anywhere only", async () => {
        const r = await run({ provider: "digitalocean", sshAllowedCidrs: ["203.0.113.7/32"] });
        assert.deepStrictEqual(types(r).filter(t => t.startsWith("digitalocean:")), [
            "digitalocean:index/droplet:Droplet", "digitalocean:index/firewall:Firewall", "digitalocean:index/sshKey:SshKey"]);
        const droplet = r.byName("host-server").inputs;
        assert.strictEqual(droplet.image, "ubuntu-24-04-x64");
        assert.strictEqual(droplet.region, "fra1");
        assert.strictEqual(droplet.size, "s-2vcpu-4gb");
        assert.deepStrictEqual(droplet.sshKeys, ["fp-host-key"]);
        assert.deepStrictEqual(r.byName("host-server").ignoreChanges, ["sshKeys"], "a change of key must not replace the server");
        assert.strictEqual(r.byName("host-key").inputs.publicKey, PUB);
        assert.strictEqual(r.byName("host-key").retainOnDelete, true, "kept in the account when the next run finds and uses it");
        const fw = r.byName("host-firewall").inputs;
        assert.deepStrictEqual(fw.inboundRules, [
            { protocol: "tcp", portRange: "22", sourceAddresses: ["203.0.113.7/32"] },
            { protocol: "tcp", portRange: "80", sourceAddresses: ["0.0.0.0/0", "::/0"] },
            { protocol: "tcp", portRange: "443", sourceAddresses: ["0.0.0.0/0", "::/0"] },
        ]);
        assert.deepStrictEqual(fw.dropletIds, [1001], "the firewall is attached to the droplet");
        assert.ok(fw.outboundRules.some((o: any) => o.protocol === "tcp" && o.portRange === "1-65535"), "outbound open");
        assertSetupChain(r, ["host-server", "host-firewall"]);
        assert.strictEqual(r.outputs.serverAddress, "203.0.113.10");
        assert.strictEqual(r.outputs.appUrl, "http://203.0.113.10/");
        assert.strictEqual(r.outputs.gitRemote, "ssh://deploy@203.0.113.10/srv/sample-app/live/repo.git");
        assert.strictEqual(r.outputs.ssh, "ssh deploy@203.0.113.10");
    });

    it("hetzner: SshKey, Server, Firewall attached to the server with the same rules", async () => {
        const r = await run({ provider: "hetzner", image: "debian-12", domain: "shop.example.com" });
        assert.deepStrictEqual(types(r).filter(t => t.startsWith("hcloud:")), [
            "hcloud:index/firewall:Firewall", "hcloud:index/server:Server", "hcloud:index/sshKey:SshKey"]);
        const server = r.byName("host-server").inputs;
        assert.strictEqual(server.serverType, "cx23");
        assert.strictEqual(server.image, "debian-12");
        assert.strictEqual(server.location, "fsn1");
        assert.deepStrictEqual(server.sshKeys, ["host-key-id"]);
        assert.deepStrictEqual(r.byName("host-server").ignoreChanges, ["sshKeys"], "a change of key must not replace the server");
        assert.strictEqual(r.byName("host-server").deleteBeforeReplace, true,
            "server names are unique in a Hetzner project: a replacement with the same name is created after the old server is deleted");
        assert.deepStrictEqual(server.firewallIds, [2002], "the firewall is attached");
        assert.deepStrictEqual(r.byName("host-firewall").inputs.rules, [
            { direction: "in", protocol: "tcp", port: "22", sourceIps: ["0.0.0.0/0", "::/0"] },
            { direction: "in", protocol: "tcp", port: "80", sourceIps: ["0.0.0.0/0", "::/0"] },
            { direction: "in", protocol: "tcp", port: "443", sourceIps: ["0.0.0.0/0", "::/0"] },
        ]);
        assertSetupChain(r, ["host-server", "host-firewall"]);
        assert.strictEqual(r.outputs.appUrl, "http://shop.example.com/");
        assert.match(r.outputs.dnsHint, /A record for shop\.example\.com at 203\.0\.113\.20/);
    });

    describe("a public key the cloud account already holds", () => {
        // What `ssh-keygen -E md5` prints, which is how both clouds show a key's fingerprint.
        const md5 = (pubFile: string) => execFileSync("ssh-keygen", ["-l", "-E", "md5", "-f", pubFile], { encoding: "utf8" })
            .split(" ")[1].replace(/^MD5:/, "");

        it("fingerprints a key as the clouds do (MD5 of its body, type and comment left out)", () => {
            const rsa = path.join(dir, "rsa");
            execFileSync("ssh-keygen", ["-q", "-t", "rsa", "-b", "2048", "-N", "", "-C", "two words", "-f", rsa]);
            assert.strictEqual(sshKeyFingerprint(PUB), md5(path.join(dir, "id.pub")));
            assert.strictEqual(sshKeyFingerprint(fs.readFileSync(`${rsa}.pub`, "utf8")), md5(`${rsa}.pub`));
            assert.strictEqual(sshKeyFingerprint(PUB.replace("unit-test", "another comment")), sshKeyFingerprint(PUB));
        });

        it("uses the account's key with the same fingerprint, whatever its name (its own upload of an earlier run too)", () => {
            const fp = sshKeyFingerprint(PUB);
            const laptop = { id: 7, name: "laptop", fingerprint: fp };
            const own = { id: 8, name: "sample-app-live-pulumi", fingerprint: fp };
            const other = { id: 9, name: "ci", fingerprint: "00:11:22:33:44:55:66:77:88:99:aa:bb:cc:dd:ee:ff" };
            assert.deepStrictEqual(accountKeyFor([other, laptop], PUB), laptop);
            assert.deepStrictEqual(accountKeyFor([other, own], PUB), own);
            assert.strictEqual(accountKeyFor([other], PUB), undefined, "not in the account: upload it");
            assert.strictEqual(accountKeyFor(undefined, PUB), undefined);
        });

        it("digitalocean: looks the key up by fingerprint and puts the account's key on the droplet, uploading none", async () => {
            const calls: pulumi.runtime.MockCallArgs[] = [];
            const r = await run({ provider: "digitalocean" }, {
                call: args => {
                    calls.push(args);
                    return { sshKeys: [{ id: 41, name: "laptop", fingerprint: sshKeyFingerprint(PUB), publicKey: PUB }] };
                },
            });
            assert.deepStrictEqual(calls.map(c => [c.token, c.inputs.filters]),
                [["digitalocean:index/getSshKeys:getSshKeys", [{ key: "fingerprint", values: [sshKeyFingerprint(PUB)] }]]]);
            assert.deepStrictEqual(r.byType("digitalocean:index/sshKey:SshKey"), []);
            assert.deepStrictEqual(r.byName("host-server").inputs.sshKeys, [sshKeyFingerprint(PUB)]);
        });

        it("hetzner: finds the key in the project's list and puts its id on the server, uploading none", async () => {
            const r = await run({ provider: "hetzner" }, {
                call: args => {
                    assert.strictEqual(args.token, "hcloud:index/getSshKeys:getSshKeys");
                    return { sshKeys: [
                        { id: 11, name: "ci", fingerprint: "00:11:22:33:44:55:66:77:88:99:aa:bb:cc:dd:ee:ff", publicKey: "x", labels: {} },
                        { id: 12, name: "laptop", fingerprint: sshKeyFingerprint(PUB), publicKey: PUB, labels: {} },
                    ] };
                },
            });
            assert.deepStrictEqual(r.byType("hcloud:index/sshKey:SshKey"), []);
            assert.deepStrictEqual(r.byName("host-server").inputs.sshKeys, ["12"]);
        });

        it("hetzner: uploads the key when only other keys are in the project", async () => {
            const r = await run({ provider: "hetzner" }, {
                call: () => ({ sshKeys: [{ id: 11, name: "ci", fingerprint: "00:11:22:33:44:55:66:77:88:99:aa:bb:cc:dd:ee:ff", publicKey: "x", labels: {} }] }),
            });
            assert.strictEqual(r.byName("host-key").inputs.name, "sample-app-live-pulumi");
            assert.strictEqual(r.byName("host-key").retainOnDelete, true,
                "the next run finds the upload and stops declaring it: it must stay in the project, as on destroy");
            assert.deepStrictEqual(r.byName("host-server").inputs.sshKeys, ["host-key-id"]);
        });
    });

    it("existing: no cloud resources; setup connects to the configured host and user", async () => {
        const r = await run({ provider: "existing", host: "198.51.100.4", sshUser: "admin", sshPort: 2222 });
        assert.ok(types(r).every(t => !t.startsWith("digitalocean:") && !t.startsWith("hcloud:")), types(r).join(", "));
        const step = r.byName("setup-packages");
        assert.strictEqual(step.inputs.connection.host, "198.51.100.4");
        assert.strictEqual(step.inputs.connection.user, "admin");
        assert.strictEqual(step.inputs.connection.port, 2222);
        assert.strictEqual(step.inputs.create, "sudo -n bash -s", "a non-root user becomes root through sudo");
        assertSetupChain(r, []);
        assert.strictEqual(r.outputs.gitRemote, "ssh://deploy@198.51.100.4:2222/srv/sample-app/live/repo.git");
    });

    it("groups resources in components under one type prefix, children parented", async () => {
        const r = await run({ provider: "digitalocean" });
        const components = r.resources.filter(x => x.type.startsWith("clj-zero-downtime:"));
        assert.deepStrictEqual(components.map(c => c.type).sort(), [
            "clj-zero-downtime:deploy:Deploy", "clj-zero-downtime:host:DigitalOceanHost",
            "clj-zero-downtime:setup:EnvironmentSetup", "clj-zero-downtime:setup:HostSetup"]);
        for (const res of r.resources.filter(x => !x.type.startsWith("clj-zero-downtime:"))) {
            assert.ok(res.parentUrn && components.some(c => c.urn === res.parentUrn), `${res.name} is parented to a component`);
        }
    });

    it("every setup command feeds its script on stdin and is triggered by its content hash", async () => {
        const r = await run({ provider: "digitalocean" });
        for (const name of [...SETUP_STEPS, "sample-app-live-env-live"]) {
            const c = r.byName(name).inputs;
            assert.strictEqual(c.create, "bash -s");
            assert.match(c.stdin, /^#!\/usr\/bin\/env bash\n/);
            assert.strictEqual(c.triggers.length, 1);
            assert.match(c.triggers[0], /^[0-9a-f]{16}$/);
            assert.strictEqual(c.connection.user, "root");
        }
        // The sample app sits in sample-app/ of this repository: a git push of it deploys that directory.
        assert.match(r.byName("sample-app-live-env-live").inputs.stdin, /--revision "\$newrev" --git-path 'sample-app'\)/);
        // A different template input changes only the step it feeds.
        const other = await run({ provider: "digitalocean", javaOpts: "-Xmx300m" });
        const changed = commandNames(r).filter(n => JSON.stringify(r.byName(n).inputs.triggers) !== JSON.stringify(other.byName(n).inputs.triggers));
        // JVM options reach run-slot (the environment step) and take effect through a rotation.
        assert.deepStrictEqual(changed, ["sample-app-live-deploy-rotate", "sample-app-live-env-live"]);
    });

    it("keeps every secret out of command strings; private key and app env only as Pulumi secrets", async () => {
        const r = await run({ provider: "hetzner" });
        const keyBody = PRIV.split("\n")[1];
        for (const c of r.byType(COMMAND)) {
            for (const field of ["create", "update", "delete"]) {
                const s = String(c.inputs[field] ?? "");
                assert.ok(!s.includes(SECRET_ENV_VALUE) && !s.includes(keyBody), `${c.name}.${field} carries a secret`);
            }
            assert.ok(c.secretInputs.includes("connection"), `${c.name}: the connection (private key) is secret`);
            const stdin = String(c.inputs.stdin ?? "");
            if (stdin.includes(SECRET_ENV_VALUE)) assert.ok(c.secretInputs.includes("stdin"), `${c.name}: stdin with a secret must be secret`);
            assert.ok(!stdin.includes(keyBody), `${c.name}: the private key is never sent`);
        }
        const appEnv = r.byName("sample-app-live-app-env");
        assert.strictEqual(appEnv.inputs.create, "/srv/sample-app/live/bin/install-app-env");
        assert.strictEqual(appEnv.inputs.stdin, `DATABASE_PASSWORD=${SECRET_ENV_VALUE}\nPLAIN=x\n`);
        assert.ok(appEnv.secretInputs.includes("stdin"));
        // Nothing else anywhere carries the secret value.
        for (const res of r.resources.filter(x => x.name !== "sample-app-live-app-env")) {
            assert.ok(!JSON.stringify(res.inputs).includes(SECRET_ENV_VALUE), `${res.name} carries the app secret`);
        }
        assert.ok(!JSON.stringify(r.outputs).includes(SECRET_ENV_VALUE));
    });

    for (const provider of ["digitalocean", "hetzner", "existing"]) {
        it(`${provider}: runs in preview (unknown cloud outputs) without crashing or hanging`, async () => {
            const r = await run({ provider, host: "198.51.100.4" }, { preview: true });
            assert.ok(r.byType(COMMAND).length >= 6);
            const first = r.byName("setup-wait-for-host");
            assert.ok(first.inputs.stdin.includes("cloud-init"));
        });
    }

    it("fails before any resource exists when the config is invalid", async () => {
        await assert.rejects(run({ provider: "aws" }), /clj-zero-downtime:provider = "aws" is not valid/);
    });

    it("digitalocean with dnsZone: A and AAAA records for the domain in that zone", async () => {
        const r = await run({ provider: "digitalocean", domain: "shop.example.com", dnsZone: "example.com" });
        const a = r.byName("host-dns-a").inputs;
        const aaaa = r.byName("host-dns-aaaa").inputs;
        assert.deepStrictEqual([a.domain, a.type, a.name, a.value], ["example.com", "A", "shop", "203.0.113.10"]);
        assert.deepStrictEqual([aaaa.type, aaaa.name, aaaa.value], ["AAAA", "shop", "2001:db8::10"]);
        assert.match(r.outputs.dnsHint, /records for shop\.example\.com in the DigitalOcean zone example\.com/);
        const apex = await run({ provider: "digitalocean", domain: "example.com", dnsZone: "example.com" });
        assert.strictEqual(apex.byName("host-dns-a").inputs.name, "@");
        const none = await run({ provider: "digitalocean", domain: "shop.example.com" });
        assert.ok(none.byType("digitalocean:index/dnsRecord:DnsRecord").length === 0);
    });

    it("exports the server's IPv6 address where the provider knows it (serverIpv6Address), and dnsHint names it for the AAAA record", async () => {
        const domain = { domain: "shop.example.com" };
        const digitalocean = await run({ provider: "digitalocean", ...domain });
        assert.strictEqual(digitalocean.outputs.serverIpv6Address, "2001:db8::10");
        assert.strictEqual(digitalocean.outputs.dnsHint, "point an A record for shop.example.com at 203.0.113.10 and an AAAA record at 2001:db8::10");
        const hetzner = await run({ provider: "hetzner", ...domain });
        assert.strictEqual(hetzner.outputs.serverIpv6Address, "2001:db8::20");
        assert.strictEqual(hetzner.outputs.dnsHint, "point an A record for shop.example.com at 203.0.113.20 and an AAAA record at 2001:db8::20");
        // An existing host: known only when `host` is an IPv6 address.
        const existing = await run({ provider: "existing", host: "198.51.100.4", ...domain });
        assert.strictEqual(existing.outputs.serverIpv6Address, "");
        assert.strictEqual(existing.outputs.dnsHint, "point an A record for shop.example.com at 198.51.100.4 (and AAAA at its IPv6 address, if any)");
        const existing6 = await run({ provider: "existing", host: "2001:db8::4", ...domain });
        assert.strictEqual(existing6.outputs.serverIpv6Address, "2001:db8::4");
        assert.strictEqual(existing6.outputs.dnsHint, "point an AAAA record for shop.example.com at 2001:db8::4");
        // A stack on another's server: the owner's, or "" from an owner from before the output.
        const owner = { serverAddress: "198.51.100.7", environment: "live", ports: { proxy: 3000, slot1: 3001, slot2: 3002, nrepl1: 7001, nrepl2: 7002 } };
        const beta = { provider: "existing", serverStack: "live", environment: "beta", domain: "beta.example.com",
            proxyPort: 3100, slot1Port: 3101, slot2Port: 3102, nrepl1Port: 7101, nrepl2Port: 7102 };
        const shared = await run(beta, { stack: "beta", stackOutputs: { live: { ...owner, serverIpv6Address: "2001:db8::7" } } });
        assert.strictEqual(shared.outputs.serverIpv6Address, "2001:db8::7");
        assert.match(shared.outputs.dnsHint, /and an AAAA record at 2001:db8::7$/);
        assert.strictEqual((await run(beta, { stack: "beta", stackOutputs: { live: owner } })).outputs.serverIpv6Address, "");
    });

    it("the owning stack guards its destroy; every environment removes itself on destroy only", async () => {
        const r = await run({ provider: "existing", host: "198.51.100.4" });
        const teardown = r.byName("sample-app-live-teardown").inputs;
        assert.strictEqual(teardown.create, "true");
        assert.strictEqual(teardown.delete, "/usr/local/lib/clj-zero-downtime/teardown-sample-app-live");
        assert.strictEqual(teardown.triggers, undefined, "never replaced, so a setup re-run never tears down");
        const guard = r.byName("destroy-guard");
        assert.strictEqual(guard.inputs.delete, "/usr/local/lib/clj-zero-downtime/check-other-environments sample-app-live");
        assert.deepStrictEqual(guard.dependsOn.sort(), [r.byName("host").urn, r.byName("sample-app-live").urn, r.byName("sample-app-live-deploy").urn].sort(),
            "checked before anything is removed: the host's resources, the environment's and the deploy's depend on nothing that is deleted sooner");
        // Every resource of the stack but the setup steps it runs after is deleted after the guard.
        const cloud = await run({ provider: "digitalocean", domain: "shop.example.com", dnsZone: "example.com" });
        const cloudGuard = cloud.byName("destroy-guard");
        for (const component of ["host", "sample-app-live", "sample-app-live-deploy"]) {
            assert.ok(cloudGuard.dependsOn.includes(cloud.byName(component).urn), component);
        }
        assert.ok(["host-dns-a", "host-dns-aaaa", "host-server", "sample-app-live-deploy-rotate", "sample-app-live-app-env", "sample-app-live-teardown"]
            .every(name => cloud.byName(name).parentUrn && [cloud.byName("host").urn, cloud.byName("sample-app-live").urn, cloud.byName("sample-app-live-deploy").urn]
                .includes(cloud.byName(name).parentUrn!)), "they are children of those components");
    });

    describe("an environment on another stack's server (serverStack)", () => {
        const live = { serverAddress: "198.51.100.7", environment: "live", ports: { proxy: 3000, slot1: 3001, slot2: 3002, nrepl1: 7001, nrepl2: 7002 } };
        const betaPorts = { proxyPort: 3100, slot1Port: 3101, slot2Port: 3102, nrepl1Port: 7101, nrepl2Port: 7102 };

        it("adds only its environment to the owner's server: no cloud resources, no host setup, no guard", async () => {
            const r = await run({ provider: "existing", serverStack: "live", environment: "beta", ...betaPorts }, { stack: "beta", stackOutputs: { live } });
            assert.ok(r.resources.every(x => !x.type.startsWith("digitalocean:") && !x.type.startsWith("hcloud:")));
            assert.deepStrictEqual(commandNames(r).filter(n => n.startsWith("setup-") || n === "destroy-guard"), []);
            assert.strictEqual(r.byName("sample-app-beta-env-beta").inputs.connection.host, "198.51.100.7");
            assert.strictEqual(r.byName("sample-app-beta-deploy-rotate").inputs.connection.host, "198.51.100.7");
            assert.ok(r.byType("pulumi:pulumi:StackReference").length === 1);
            assert.deepStrictEqual(r.outputs.ports, { proxy: 3100, slot1: 3101, slot2: 3102, nrepl1: 7101, nrepl2: 7102 });
        });

        it("refuses ports that collide with the owner's environment, naming both", async () => {
            await assert.rejects(
                run({ provider: "existing", serverStack: "live", environment: "beta", ...betaPorts, slot2Port: 3001 }, { stack: "beta", stackOutputs: { live } }),
                /slot2Port = 3001 \(beta\) collides with slot1Port = 3001 of the live environment \(stack live\)/);
            await assert.rejects(
                run({ provider: "existing", serverStack: "live", environment: "live", ...betaPorts }, { stack: "beta", stackOutputs: { live } }),
                /environment = "live" is the environment of stack live already/);
        });

        it("refuses a second environment without a domain where the owner's answers on the server's address (one default server)", async () => {
            const ownerWithoutDomain = { live: { ...live, appUrl: "http://198.51.100.7/" } };
            await assert.rejects(
                run({ provider: "existing", serverStack: "live", environment: "beta", ...betaPorts }, { stack: "beta", stackOutputs: ownerWithoutDomain }),
                /domain is empty, and the live environment \(stack live\) already answers on the server's address: nginx has one default server, so give beta a domain/);
            const r = await run({ provider: "existing", serverStack: "live", environment: "beta", domain: "beta.example.com", ...betaPorts },
                { stack: "beta", stackOutputs: ownerWithoutDomain });
            assert.strictEqual(r.outputs.appUrl, "http://beta.example.com/");
            // An owner with a domain leaves the default server to this one.
            const ownerWithDomain = { live: { ...live, appUrl: "https://shop.example.com/" } };
            await run({ provider: "existing", serverStack: "live", environment: "beta", ...betaPorts }, { stack: "beta", stackOutputs: ownerWithDomain });
        });

        it("refuses an sshPort other than the one the owner's server takes SSH on (from its ssh output)", async () => {
            const owner2222 = { live: { ...live, ssh: "ssh -p 2222 deploy@198.51.100.7" } };
            await assert.rejects(
                run({ provider: "existing", serverStack: "live", environment: "beta", domain: "beta.example.com", ...betaPorts }, { stack: "beta", stackOutputs: owner2222 }),
                /sshPort = 22, but the server of stack live takes SSH on port 2222: set sshPort to 2222/);
            const r = await run({ provider: "existing", serverStack: "live", environment: "beta", domain: "beta.example.com", sshPort: 2222, ...betaPorts },
                { stack: "beta", stackOutputs: owner2222 });
            assert.strictEqual(r.byName("sample-app-beta-env-beta").inputs.connection.port, 2222);
            await run({ provider: "existing", serverStack: "live", environment: "beta", domain: "beta.example.com", ...betaPorts },
                { stack: "beta", stackOutputs: { live: { ...live, ssh: "ssh deploy@198.51.100.7" } } });
        });
    });
});
