// Rendered templates: assertions on the lines that matter, then the real tools
// (nginx -t, bash -n, shellcheck, supervisord) on what was rendered.
import * as assert from "assert";
import { execFileSync, spawn, spawnSync } from "child_process";
import * as fs from "fs";
import * as path from "path";
import { parseSettings, Settings } from "../../infra/config";
import { appEnvFile, AUTOGROUP_SETTING, CLAIMS_LOCK_WAIT_SECONDS, environmentStep, environmentView, hostSteps, renderEnvironmentFiles, renderFirewall, renderTeardown, SCHEDULER_SYSCTL_CONTENT } from "../../infra/host-files";
import { APPS_ROOT, CLAIMS_LOCK, DEPLOY_KEYS_LOCK, DESTROY_GUARD, layout, MANAGED_MARKER, SCHEDULER_SYSCTL } from "../../infra/names";
import { render } from "../../infra/render";
import { functionBody, functionSource, shellcheck } from "../support/shell";
import { startSupervisord, Supervisord } from "../support/supervisord";
import { tempDir } from "../support/tmp";

const PUB = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGxhbWJkYWxhbWJkYWxhbWJkYWxhbWJkYWxhbWJkYQ unit@test";
const PRIV = "-----BEGIN OPENSSH PRIVATE KEY-----\nAAAA\n-----END OPENSSH PRIVATE KEY-----\n";
// An app user that exists only for this test, so supervisord can load the group as it would on a server.
const APP = "czd-unit-app";

function settingsFor(extra: Record<string, string> = {}): Settings {
    return parseSettings({ sshPublicKey: PUB, sshPrivateKey: PRIV, appName: APP, ...extra }, "live");
}

describe("rendered templates", () => {
    const settings = settingsFor({ domain: "app.example.com", javaOpts: "-Xmx256m" });
    const env = layout(APP, "live", settings.ports);
    const files = renderEnvironmentFiles(settings, env);

    it("nginx site: proxies the domain to the stable switch port, no upstream keepalive, proxy headers, body size", () => {
        const site = files.nginxSite;
        assert.match(site, /server_name app\.example\.com;/);
        assert.match(site, /server 127\.0\.0\.1:3000 max_fails=0;\n(\s*#.*\n)*\s*server 127\.0\.0\.1:3000 max_fails=0 backup;/,
            "the same port as a backup: a failed connection is retried once on a new one");
        assert.match(site, /proxy_next_upstream error;\n\s*proxy_next_upstream_tries 2;/, "retried after errors only, never after a timeout");
        assert.doesNotMatch(site, /^\s*keepalive\s/m, "upstream connections must not be pooled, or the old slot never drains");
        for (const h of ["Host $host", "X-Real-IP $remote_addr", "X-Forwarded-For $proxy_add_x_forwarded_for", "X-Forwarded-Proto $scheme"]) {
            assert.ok(site.includes(`proxy_set_header ${h};`), h);
        }
        assert.match(site, /client_max_body_size 25m;/);
        assert.doesNotMatch(site, /default_server/);
        const noDomain = renderEnvironmentFiles(settingsFor(), env).nginxSite;
        assert.match(noDomain, /listen 80 default_server;/);
        assert.match(noDomain, /server_name _;/);
    });

    it("nginx site passes a real `nginx -t` in a temporary prefix", function () {
        const dir = tempDir("nginx");
        fs.writeFileSync(path.join(dir, "site.conf"), files.nginxSite);
        fs.writeFileSync(path.join(dir, "nginx.conf"),
            `pid ${dir}/nginx.pid;\nerror_log ${dir}/error.log;\nevents {}\nhttp {\n  access_log off;\n  include ${dir}/site.conf;\n}\n`);
        const res = spawnSync("nginx", ["-t", "-p", dir, "-c", path.join(dir, "nginx.conf")], { encoding: "utf8" });
        assert.strictEqual(res.status, 0, res.stderr);
        assert.match(res.stderr, /test is successful/);
        // And a broken site does fail it, so the check means something.
        fs.writeFileSync(path.join(dir, "site.conf"), files.nginxSite.replace("proxy_pass", "proxy_passs"));
        assert.notStrictEqual(spawnSync("nginx", ["-t", "-p", dir, "-c", path.join(dir, "nginx.conf")]).status, 0);
    });

    it("Supervisor group: both slots, own ports, logs, stopasgroup/killasgroup, 3 retries, no secrets", () => {
        const conf = files.supervisorGroup;
        assert.match(conf, new RegExp(`\\[group:${APP}-live\\]\\nprograms=${APP}-live-1,${APP}-live-2`));
        for (const [slot, port, nrepl] of [[1, 3001, 7001], [2, 3002, 7002]]) {
            const section = conf.split(`[program:${APP}-live-${slot}]`)[1].split("[program:")[0];
            assert.match(section, new RegExp(`command=/srv/${APP}/live/bin/run-slot ${slot}\\n`));
            assert.match(section, new RegExp(`user=${APP}\\n`));
            assert.match(section, new RegExp(`environment=PORT="${port}",NREPL_PORT="${nrepl}"`));
            assert.match(section, new RegExp(`stdout_logfile=/var/log/${APP}/live-${slot}.log`));
            assert.match(section, /stopasgroup=true\nkillasgroup=true/);
            assert.match(section, /startretries=3/);
            assert.match(section, /autostart=false/);
        }
    });

    describe("with a real supervisord", function () {
        let supervisord: Supervisord | undefined;
        let createdUser = false;

        let createdLogDir = false;
        before(() => {
            if (spawnSync("id", ["-u", APP]).status !== 0) {
                execFileSync("useradd", ["--system", "--no-create-home", "--shell", "/usr/sbin/nologin", APP]);
                createdUser = true;
            }
            // Supervisor refuses a program whose log directory is missing; the setup creates it on a server.
            if (!fs.existsSync(env.logDir)) {
                fs.mkdirSync(env.logDir);
                createdLogDir = true;
            }
        });
        after(async () => {
            await supervisord?.stop();
            if (createdUser) spawnSync("userdel", [APP]);
            if (createdLogDir) fs.rmSync(env.logDir, { recursive: true, force: true });
        });

        it("loads the rendered group and lists both programs", async () => {
            supervisord = await startSupervisord("supervisor", files.supervisorGroup);
            const status = supervisord.ctl("status");
            assert.match(status, new RegExp(`${APP}-live:${APP}-live-1\\s+STOPPED`));
            assert.match(status, new RegExp(`${APP}-live:${APP}-live-2\\s+STOPPED`));
        });
    });

    it("run-slot gives java the slot's ports and the app env, which it neither evaluates nor exports into its own shell", () => {
        assert.match(files.runSlot, new RegExp(`1\\) PORT=3001 NREPL_PORT=7001 BOOT_FLAG=${env.slotsDir}/1.booting SETTINGS_REQUEST=${env.slotsDir}/1.settings-request ;;`));
        assert.match(files.runSlot, new RegExp(`2\\) PORT=3002 NREPL_PORT=7002 BOOT_FLAG=${env.slotsDir}/2.booting SETTINGS_REQUEST=${env.slotsDir}/2.settings-request ;;`));
        assert.match(files.runSlot, /exec "\$\{launcher\[@\]\}" env -- "\$\{app_env\[@\]\}" PORT="\$PORT" NREPL_PORT="\$NREPL_PORT" \\\n\s*APP_REVISION="\$APP_REVISION" "\$java" "\$\{java_opts\[@\]\}" -jar "\$jar"/);
        assert.doesNotMatch(files.runSlot, /^\s*export\b/m, "nothing of the app's reaches run-slot's own environment");
        assert.doesNotMatch(files.runSlot, /Xmx256m/, "javaOpts come from the slot's settings, not the script");
    });

    /**
     * The rendered run-slot in a temporary copy of the environment's directory: release r1 (an
     * empty app.jar) linked from slot 1, and a stand-in `java` (the script `java`) first on the
     * PATH. `startSlot1` runs it for slot 1.
     */
    function runSlotSandbox(tag: string, java: string) {
        const dir = tempDir(tag);
        const script = path.join(dir, "run-slot");
        fs.writeFileSync(script, files.runSlot.split(env.baseDir).join(dir));
        const jar = path.join(dir, "releases", "r1", "app.jar");
        fs.mkdirSync(path.dirname(jar), { recursive: true });
        fs.writeFileSync(jar, "");
        fs.mkdirSync(path.join(dir, "slots"));
        fs.mkdirSync(path.join(dir, "slot-settings"), { mode: 0o700 });
        fs.symlinkSync(path.dirname(jar), path.join(dir, "slots", "1"));
        fs.mkdirSync(path.join(dir, "bin"));
        fs.writeFileSync(path.join(dir, "bin", "java"), java, { mode: 0o755 });
        const runEnv = { ...process.env, PATH: `${path.join(dir, "bin")}:${process.env.PATH}` };
        return { dir, jar, startSlot1: () => spawnSync("bash", [script, "1"], { encoding: "utf8", env: runEnv }) };
    }

    it("run-slot takes the current appEnv and javaOpts only when a deploy asks (a new request token); any other start keeps the slot's last ones", () => {
        // A stand-in `java` that reports its arguments and the secret it was given.
        const { dir, jar, startSlot1 } = runSlotSandbox("runslot-settings", '#!/bin/bash\necho "args: $* secret: $SECRET"\n');
        const start = () => {
            const r = startSlot1();
            assert.strictEqual(r.status, 0, r.stderr);
            return /^args: .*$/m.exec(r.stdout)![0];
        };
        const configure = (secret: string, opts: string) => {
            fs.writeFileSync(path.join(dir, "app.env"), appEnvFile({ SECRET: secret }));
            fs.writeFileSync(path.join(dir, "java-opts"), `${opts}\n`);
        };
        const request = (token: string) => fs.writeFileSync(path.join(dir, "slots", "1.settings-request"), `${token}\n`);
        configure("one", "-Xmx64m -Dx=1");
        assert.strictEqual(start(), `args: -Xmx64m -Dx=1 -jar ${jar} secret: one`, "no settings of its own yet: the current ones");
        assert.strictEqual(fs.statSync(path.join(dir, "slot-settings", "1.env")).mode & 0o777, 0o600, "its copy of the secrets is private");
        configure("two", "-Xmx128m");
        assert.strictEqual(start(), `args: -Xmx64m -Dx=1 -jar ${jar} secret: one`, "a restart (a reboot, a crash) keeps them");
        request("deploy-a");
        assert.strictEqual(start(), `args: -Xmx128m -jar ${jar} secret: two`, "a deploy's request takes the current ones");
        configure("three", "-Xmx256m");
        assert.strictEqual(start(), `args: -Xmx128m -jar ${jar} secret: two`, "the same request again: kept");
        request("deploy-b");
        assert.strictEqual(start(), `args: -Xmx256m -jar ${jar} secret: three`);
        // A copy that fails (here app.env is a directory; a full disk alike): the slot does not start, nothing is recorded.
        fs.rmSync(path.join(dir, "app.env"));
        fs.mkdirSync(path.join(dir, "app.env"));
        request("deploy-c");
        const failed = startSlot1();
        assert.strictEqual(failed.status, 1, failed.stdout);
        assert.doesNotMatch(failed.stdout, /args:/, "java never started");
        assert.match(failed.stderr, /run-slot: could not copy the settings of slot 1 into .*slot-settings \(is the disk full\?\); the slot does not start/);
        assert.strictEqual(fs.readFileSync(path.join(dir, "slot-settings", "1.request"), "utf8"), "deploy-b\n", "the request is not recorded as taken");
        assert.deepStrictEqual(fs.readdirSync(path.join(dir, "slot-settings")).filter(f => f.startsWith(".")), [], "no temporary files left");
        fs.rmSync(path.join(dir, "java-opts"));
        fs.rmSync(path.join(dir, "app.env"), { recursive: true });
        request("deploy-d");
        assert.strictEqual(start(), `args: -jar ${jar} secret: `, "no settings files (a new environment): none");
    });

    it("run-slot starts the JVM at idle CPU priority exactly while the slot's boot flag exists", () => {
        // A stand-in `java` that reports the scheduling policy it was started with.
        const { dir, startSlot1 } = runSlotSandbox("runslot-priority", "#!/bin/sh\nchrt -p $$\n");
        const policy = () => {
            const r = startSlot1();
            assert.strictEqual(r.status, 0, r.stderr);
            return /scheduling policy: (\S+)/.exec(r.stdout)?.[1];
        };
        assert.strictEqual(policy(), "SCHED_OTHER");
        fs.writeFileSync(path.join(dir, "slots", "2.booting"), "");
        assert.strictEqual(policy(), "SCHED_OTHER", "slot 2's flag must not affect slot 1");
        fs.writeFileSync(path.join(dir, "slots", "1.booting"), "");
        assert.strictEqual(policy(), "SCHED_IDLE");
    });

    it("run-slot really reads NAME=value lines verbatim, even with shell metacharacters, and sets none of them in its shell", () => {
        const dir = tempDir("runslot");
        const envFile = path.join(dir, "app.env");
        const tricky = "p@ss $(touch " + path.join(dir, "pwned") + ") `id` 'q' \"d\"";
        fs.writeFileSync(envFile, appEnvFile({ SECRET: tricky, PLAIN: "x=y" }));
        // Source only the reader function, pointed at the test file.
        const reader = functionSource(files.runSlot, "read_app_env");
        const script = `set -u\n${reader}\nread_app_env ${envFile}\nprintf '%s\\n' "\${app_env[@]}" "\${SECRET-unset}" "\${PLAIN-unset}"\n`;
        const out = execFileSync("bash", ["-c", script], { encoding: "utf8" });
        assert.strictEqual(out, `PLAIN=x=y\nSECRET=${tricky}\nunset\nunset\n`);
        assert.ok(!fs.existsSync(path.join(dir, "pwned")), "the value was evaluated by the shell");
    });

    /** The absolute path of a program on the test's PATH, for a stand-in java whose PATH the app may have changed. */
    const programPath = (name: string) => execFileSync("bash", ["-c", `type -P ${name}`], { encoding: "utf8" }).trim();

    /**
     * A run-slot sandbox whose stand-in `java` (a sh script, which ignores SHELLOPTS and the like)
     * records what it was started with, with absolute paths only (the app's PATH may be anything):
     * `started()` reads its argv (argv[0] as the script's path), working directory, exact
     * environment (from /proc) and scheduling policy, undefined if it did not start.
     */
    function recordingSandbox(tag: string) {
        const java = `#!/bin/sh\nout=\${0%/*}/..\nprintf '%s\\n' "$0" "$@" >"$out/java.args"\npwd -P >"$out/java.cwd"\n` +
            `${programPath("cp")} /proc/$$/environ "$out/java.env"\n${programPath("chrt")} -p $$ >"$out/java.sched"\n`;
        const sandbox = runSlotSandbox(tag, java);
        const record = (name: string) => path.join(sandbox.dir, name);
        const started = () => {
            if (!fs.existsSync(record("java.args"))) return undefined;
            const environment = new Map<string, string>();
            for (const entry of fs.readFileSync(record("java.env"), "utf8").split("\0").filter(Boolean)) {
                const eq = entry.indexOf("=");
                environment.set(entry.slice(0, eq), entry.slice(eq + 1));
            }
            const result = {
                argv: fs.readFileSync(record("java.args"), "utf8").trimEnd().split("\n"),
                cwd: fs.readFileSync(record("java.cwd"), "utf8").trimEnd(),
                environment,
                policy: /scheduling policy: (\S+)/.exec(fs.readFileSync(record("java.sched"), "utf8"))?.[1],
            };
            for (const name of ["java.args", "java.cwd", "java.env", "java.sched"]) fs.rmSync(record(name), { force: true });
            return result;
        };
        return { ...sandbox, started };
    }

    /**
     * Starts slot 1 with `appEnv` (and a value of every kind of character) as the app's environment,
     * without and with its boot flag: java must start as ever (the sandbox's java, javaOpts, the
     * release's jar, in the release, at the priority the slot's flag sets), the app's variables in
     * its environment byte-exact, and nothing else of run-slot's.
     */
    function assertGivenToJavaAlone(tag: string, appEnv: Record<string, string>) {
        const { dir, jar, startSlot1, started } = recordingSandbox(tag);
        const all: Record<string, string> = {
            ...appEnv,
            TRICKY: ` a=b  =c 'q' "d" $HOME \${PATH} $(touch ${path.join(dir, "pwned")}) \`id\` \\ ; # end `,
            EMPTY: "",
        };
        fs.writeFileSync(path.join(dir, "app.env"), appEnvFile(all));
        fs.writeFileSync(path.join(dir, "java-opts"), "-Xmx64m -Dx=1\n");
        const own = new Set([...Object.keys(process.env), "_", "SHLVL", "PWD", "OLDPWD"]);
        for (const booting of [false, true]) {
            if (booting) fs.writeFileSync(path.join(dir, "slots", "1.booting"), "");
            const r = startSlot1();
            assert.strictEqual(r.status, 0, r.stderr);
            assert.strictEqual(r.stderr, "", "no complaint");
            const java = started();
            assert.ok(java, "java started");
            assert.deepStrictEqual(java.argv, [path.join(dir, "bin", "java"), "-Xmx64m", "-Dx=1", "-jar", jar], "the right java, javaOpts and jar");
            assert.strictEqual(java.cwd, fs.realpathSync(path.dirname(jar)), "in the release");
            assert.strictEqual(java.policy, booting ? "SCHED_IDLE" : "SCHED_OTHER", "the slot's boot flag decides");
            for (const [name, value] of Object.entries(all)) assert.strictEqual(java.environment.get(name), value, `${name} reaches java exactly`);
            assert.deepStrictEqual(["PORT", "NREPL_PORT", "APP_REVISION"].map(name => java.environment.get(name)), ["3001", "7001", "r1"]);
            const extra = [...java.environment.keys()].filter(name => !own.has(name) && !(name in all) && !["PORT", "NREPL_PORT", "APP_REVISION"].includes(name));
            assert.deepStrictEqual(extra, [], "nothing else of run-slot's reaches java");
        }
        assert.ok(!fs.existsSync(path.join(dir, "pwned")), "the value was evaluated by the shell");
    }

    it("run-slot gives the app's PATH to java alone: java and chrt are still found (every new slot failed with 'not found')", () => {
        assertGivenToJavaAlone("runslot-path", { PATH: "/nonexistent" });
    });

    it("run-slot gives the app's UID, EUID, PPID, SHELLOPTS, BASHOPTS to java alone (bash's read-only variables: the slot never started)", () => {
        assertGivenToJavaAlone("runslot-readonly", { UID: "5", EUID: "5", PPID: "1", SHELLOPTS: "xtrace", BASHOPTS: "nullglob" });
    });

    it("run-slot gives the app's variables named like its own to java alone: the same jar, release, java, javaOpts and priority (jar=... ran another jar)", () => {
        const names = ["slot", "release", "jar", "java", "chrt", "launcher", "java_opts", "app_env", "line", "number", "found", "dir", "requested", "taken"];
        assertGivenToJavaAlone("runslot-own-names", {
            ...Object.fromEntries(names.map(name => [name, "/tmp/other"])),
            jar: "/tmp/other.jar", release: "/tmp", slot: "2", java_opts: "-Xbad",
            BOOT_FLAG: "/", SETTINGS_REQUEST: "/nonexistent", IFS: "/",
        });
    });

    it("run-slot's own PORT, NREPL_PORT and APP_REVISION win over the same names in app.env (the config rejects them; a hand-edited file cannot move a slot)", () => {
        const { dir, startSlot1, started } = recordingSandbox("runslot-reserved");
        fs.writeFileSync(path.join(dir, "app.env"), "PORT=9001\nNREPL_PORT=9002\nAPP_REVISION=other\nJAVA_OPTS=-Dy=2\n");
        const r = startSlot1();
        assert.strictEqual(r.status, 0, r.stderr);
        const environment = started()!.environment;
        assert.deepStrictEqual(["PORT", "NREPL_PORT", "APP_REVISION", "JAVA_OPTS"].map(name => environment.get(name)), ["3001", "7001", "r1", "-Dy=2"]);
    });

    it("run-slot does not start a slot whose app.env has a line that is not NAME=value, naming the line but not its text (a secret)", () => {
        const { dir, startSlot1, started } = recordingSandbox("runslot-badline");
        fs.writeFileSync(path.join(dir, "app.env"), "# a comment\n\nGOOD=1\nhunter2 without a name\n");
        const r = startSlot1();
        assert.strictEqual(r.status, 1, r.stdout);
        assert.strictEqual(started(), undefined, "java never started");
        assert.match(r.stderr, /^run-slot: line 4 of \S*slot-settings\/1\.env is not NAME=value; the slot does not start\n$/);
        assert.doesNotMatch(r.stderr, /hunter2/);
    });

    /** Runs the rendered post-receive hook with the deploy script replaced by a stub that records its arguments and exits with `exit`. */
    function push(hook: string, lines: string, exit: number) {
        const dir = tempDir("post-receive");
        const stub = path.join(dir, "deploy");
        fs.writeFileSync(stub, `#!/bin/bash\nprintf '%s\\n' "$@" >>${dir}/calls; echo ---- >>${dir}/calls\nexit ${exit}\n`, { mode: 0o755 });
        const r = spawnSync("bash", ["-c", hook.split(env.deployScript).join(stub)], { input: lines, encoding: "utf8" });
        const calls = fs.existsSync(path.join(dir, "calls")) ? fs.readFileSync(path.join(dir, "calls"), "utf8").split("----\n").filter(Boolean).map(c => c.trimEnd().split("\n")) : [];
        // The command the hook prints to deploy again, run as a user would paste it (with the stub).
        const again = /on the server: (.*)$/m.exec(r.stdout)?.[1];
        let pasted: string[] | undefined;
        if (again) {
            fs.rmSync(path.join(dir, "calls"), { force: true });
            spawnSync("bash", ["-c", again.split(env.deployScript).join(stub)], { encoding: "utf8" });
            pasted = fs.readFileSync(path.join(dir, "calls"), "utf8").split("----\n")[0].trimEnd().split("\n");
        }
        return { status: r.status, stdout: r.stdout, calls, pasted };
    }
    const sha = "0123456789abcdef0123456789abcdef01234567";

    it("post-receive deploys only the configured branch, naming it so that a newer push supersedes a waiting one", () => {
        const r = push(files.postReceive, `${"0".repeat(40)} ${sha} refs/heads/main\n${"0".repeat(40)} ${sha} refs/heads/topic\n`, 0);
        assert.strictEqual(r.status, 0);
        assert.deepStrictEqual(r.calls, [["--git", env.repoDir, "--revision", sha, "--git-ref", "refs/heads/main"]]);
        assert.match(r.stdout, /refs\/heads\/topic was stored but not deployed: only main deploys to live/);
    });

    it("post-receive: a failed deploy fails the push and says how to deploy that commit again (pushing it again would run no hook)", () => {
        const r = push(files.postReceive, `${"0".repeat(40)} ${sha} refs/heads/main\n`, 1);
        assert.strictEqual(r.status, 1);
        assert.match(r.stdout, /the push of 0123456789ab is stored, and live keeps serving what it served\. To deploy it again, push a new commit \(git commit --allow-empty -m redeploy\), or on the server: /);
        assert.deepStrictEqual(r.pasted, ["--git", env.repoDir, "--revision", sha], "the printed command deploys the same commit");
    });

    it("post-receive deploys the app's directory of the pushed repository when appPath is below its top, quoted", () => {
        const sub = renderEnvironmentFiles(settings, env, "apps/shop").postReceive;
        assert.deepStrictEqual(push(sub, `${"0".repeat(40)} ${sha} refs/heads/main\n`, 0).calls[0].slice(-4, -2), ["--git-path", "apps/shop"]);
        const odd = renderEnvironmentFiles(settings, env, "my app;x $HOME").postReceive;
        const r = push(odd, `${"0".repeat(40)} ${sha} refs/heads/main\n`, 1);
        assert.deepStrictEqual(r.calls[0].slice(-4, -2), ["--git-path", "my app;x $HOME"], "one word, whatever the directory is called");
        assert.deepStrictEqual(r.pasted!.slice(-2), ["--git-path", "my app;x $HOME"], "and so in the printed command");
        shellcheck(sub, "post-receive");
    });

    it("firewall: SSH from the allowed networks by family, web from anywhere, everything else dropped", () => {
        const fw = renderFirewall(settingsFor({ sshAllowedCidrs: '["203.0.113.7/32","2001:db8::/32"]' }));
        assert.match(fw, /readonly SSH_FROM_V4=\('203\.0\.113\.7\/32'\)/);
        assert.match(fw, /readonly SSH_FROM_V6=\('2001:db8::\/32'\)/);
        assert.match(fw, /--dports 80,443 -j ACCEPT/);
        assert.match(fw, /-j DROP/);
    });

    it("firewall unit: an early-boot unit ordered before the network, with no default dependencies (no ordering cycle with cloud-init)", () => {
        const unit = render("firewall.service", { firewallScript: "/usr/local/sbin/czd-firewall" });
        const unitSection = unit.split("[Service]")[0];
        assert.match(unitSection, /^DefaultDependencies=no$/m, "the default After=sysinit.target makes the cycle");
        assert.match(unitSection, /^Before=network-pre\.target shutdown\.target$/m);
        assert.match(unitSection, /^After=systemd-modules-load\.service local-fs\.target$/m);
        assert.match(unitSection, /^Conflicts=shutdown\.target$/m);
        assert.doesNotMatch(unitSection, /^(After|Requires)=.*(sysinit|basic|network)\.target/m);
        assert.match(unit, /^ExecStart=\/usr\/local\/sbin\/czd-firewall$/m);
    });

    it("every rendered shell script passes bash -n and shellcheck", () => {
        const s = settingsFor({ sshAllowedCidrs: '["203.0.113.7/32","2001:db8::/32"]' });
        for (const step of [...hostSteps(s), environmentStep(s, env)]) shellcheck(step.script, step.name);
        for (const [name, text] of Object.entries(files)) {
            if (text.startsWith("#!/usr/bin/env bash")) shellcheck(text, name);
        }
        shellcheck(renderFirewall(s), "firewall");
        shellcheck(renderTeardown(s, env), "teardown");
        shellcheck(render("check-other-environments.sh", { destroyGuard: DESTROY_GUARD, managedMarker: MANAGED_MARKER }), "destroy-guard");
    });

    it("host steps carry Supervisor's pid file and socket from names.ts", () => {
        const access = hostSteps(settingsFor()).find(st => st.name === "host-access")!.script;
        assert.match(access, /^pidfile=\/var\/run\/supervisord\.pid$/m);
        assert.match(access, /pid=\$\(cat \/var\/run\/supervisord\.pid /);
        assert.match(access, /^file=\/var\/run\/supervisor\.sock$/m);
    });

    it("the scheduler step turns autogroup scheduling off and writes the boot setting, and only warns where it cannot", () => {
        const dir = tempDir("scheduler");
        const setting = path.join(dir, "sched_autogroup_enabled");
        const sysctlFile = path.join(dir, "60-czd.conf");
        const script = render("scheduler.sh", { schedulerSysctl: sysctlFile, schedulerSysctlContent: SCHEDULER_SYSCTL_CONTENT, autogroupSetting: setting });
        const runStep = () => {
            const r = spawnSync("bash", ["-c", script], { encoding: "utf8" });
            assert.strictEqual(r.status, 0, r.stderr);
            return r.stdout;
        };
        fs.writeFileSync(setting, "1\n");
        assert.match(runStep(), /turned autogroup scheduling off/);
        assert.strictEqual(fs.readFileSync(setting, "utf8").trim(), "0");
        assert.match(fs.readFileSync(sysctlFile, "utf8"), /^kernel\.sched_autogroup_enabled = 0$/m);
        assert.match(runStep(), /autogroup scheduling is off/);
        fs.rmSync(setting);
        assert.match(runStep(), /no autogroup scheduling: nothing to turn off/);
        fs.mkdirSync(setting); // a write that fails, like a read-only /proc/sys in a container
        assert.match(runStep(), /warning: could not turn autogroup scheduling off/);
        const hostStep = hostSteps(settingsFor()).find(st => st.name === "scheduler")!.script;
        assert.ok(hostStep.includes(`readonly SETTING=${AUTOGROUP_SETTING}`));
        assert.ok(hostStep.includes(SCHEDULER_SYSCTL));
    });

    it("steps embed the files they install, and the hash follows the content", () => {
        const step = environmentStep(settings, env);
        assert.ok(step.script.includes(files.nginxSite.trimEnd()));
        assert.ok(step.script.includes(files.supervisorGroup.trimEnd()));
        const other = environmentStep(settingsFor({ domain: "other.example.com" }), env);
        assert.notStrictEqual(step.hash, other.hash);
        assert.strictEqual(step.hash, environmentStep(settings, env).hash);
    });
});

describe("lib.sh: reload_nginx", () => {
    /** reload_nginx with systemd/service calls as stubs and the master pid file as given; its sleeps, counted. */
    const reload = (masterPid: string | undefined): { status: number | null; sleeps: number; calls: string } => {
        const dir = tempDir("reload");
        const code = [
            'STEP=test; set -euo pipefail',
            render("lib.sh", {}),
            `service_do() { echo "$1" >>${dir}/calls; }`,
            // the pid file's content (none: nginx wrote no /run/nginx.pid)
            masterPid === undefined ? "cat() { return 1; }" : `cat() { echo ${masterPid}; }`,
            `sleep() { echo "$1" >>${dir}/sleeps; }`,
            "reload_nginx",
        ].join("\n");
        const r = spawnSync("bash", ["-c", code], { encoding: "utf8", timeout: 20_000 });
        const read = (f: string) => (fs.existsSync(path.join(dir, f)) ? fs.readFileSync(path.join(dir, f), "utf8").trim().split("\n") : []);
        return { status: r.status, sleeps: read("sleeps").length, calls: read("calls").join(" ") };
    };

    it("does not wait for old workers it cannot know: without the master's pid it reloads and goes on", () => {
        const r = reload(undefined);
        assert.strictEqual(r.status, 0);
        assert.strictEqual(r.calls, "status reload");
        // only the short settle at the end; it used to take init and kthreadd for old workers and poll 10 s
        assert.strictEqual(r.sleeps, 1);
    });
});

describe("apt.sh: apt_retry", () => {
    /**
     * apt_retry with apt-get as a stub that reports apt's lock as held for `busyTries` calls, then
     * succeeds; each call moves the kernel's time since boot (/proc/uptime, bind-mounted over in a
     * mount namespace of this run only) on by 4 s, and the wall clock not at all.
     */
    const aptRetry = (busyTries: number): { status: number | null; out: string; tries: number } => {
        const dir = tempDir("apt");
        const uptime = path.join(dir, "uptime");
        fs.writeFileSync(uptime, "100.00 50.00\n");
        const code = [
            "STEP=test; set -euo pipefail",
            render("lib.sh", {}),
            render("apt.sh", { aptLockWait: 10 }),
            `apt-get() {
                local n; n=$(($(cat ${dir}/tries 2>/dev/null || echo 0) + 1)); echo "$n" >${dir}/tries
                printf '%s.00 50.00\\n' "$((100 + n * 4))" >${uptime}
                if [ "$n" -le ${busyTries} ]; then echo "E: Could not get lock /var/lib/dpkg/lock-frontend. It is held by process 42"; return 100; fi
                echo "installed $*"
            }`,
            "sleep() { :; }",
            "apt_retry install -y nginx",
        ].join("\n");
        const r = spawnSync("unshare", ["-m", "--propagation", "private", "bash", "-c", `mount --bind ${uptime} /proc/uptime\n${code}`], { encoding: "utf8", timeout: 20_000 });
        return { status: r.status, out: (r.stdout + r.stderr).trim(), tries: Number(fs.readFileSync(path.join(dir, "tries"), "utf8")) };
    };

    it("waits while another package manager holds apt's lock, then goes on", () => {
        const r = aptRetry(2);
        assert.strictEqual(r.status, 0, r.out);
        assert.strictEqual(r.tries, 3);
        assert.strictEqual(r.out.split("\n").filter(l => l === "[test] apt is busy (another package manager holds its lock); waiting").length, 2, r.out);
    });

    it("gives up after APT_LOCK_WAIT seconds of the kernel's time since boot, with apt's words and what failed", () => {
        const r = aptRetry(100);
        assert.strictEqual(r.status, 1, r.out);
        // Each try takes 4 s of the kernel's clock: after the ones that end at 104 and 108 s it waits, after the one that ends at 112 s (past 100 + 10) it gives up.
        assert.strictEqual(r.tries, 3);
        assert.match(r.out, /E: Could not get lock \/var\/lib\/dpkg\/lock-frontend\. It is held by process 42\n\[test\] error: apt-get install -y nginx failed \(exit 100\); the output above says why$/);
    });
});

describe("lib.sh: a changed Supervisor group is applied only while none of its programs runs (a real supervisord)", () => {
    const group = (stopWait: number) => ["[group:czdg]", "programs=czdg-1,czdg-2",
        ...[1, 2].flatMap(n => ["", `[program:czdg-${n}]`, "command=sleep 300", "autostart=false", "startsecs=0", `stopwaitsecs=${stopWait}`])].join("\n") + "\n";
    let supervisord: Supervisord | undefined;
    afterEach(async () => {
        await supervisord?.stop();
        supervisord = undefined;
    });
    /** apply_group_change czdg (or running_programs) from the rendered library, against this supervisord; its output. */
    const lib = (call: string): string => {
        const code = ["STEP=test; set -euo pipefail", render("lib.sh", {}),
            `supervisorctl() { command supervisorctl -c ${supervisord!.conf} "$@"; }`, call].join("\n");
        const r = spawnSync("bash", ["-c", code], { encoding: "utf8", timeout: 30_000 });
        assert.strictEqual(r.status, 0, r.stdout + r.stderr);
        return r.stdout + r.stderr;
    };
    const pidOf = (name: string) => /pid (\d+)/.exec(supervisord!.ctl("status", `czdg:${name}`))?.[1];

    it("leaves the serving slot running, says so and how to apply it; applies the change once nothing runs", async () => {
        supervisord = await startSupervisord("group-change", group(5));
        supervisord.ctl("start", "czdg:czdg-1");
        const pid = pidOf("czdg-1");
        assert.ok(pid, supervisord.ctl("status"));
        assert.strictEqual(lib("running_programs czdg").trim(), "czdg:czdg-1");
        fs.writeFileSync(path.join(supervisord.dir, "programs.conf"), group(7));

        const deferred = lib("apply_group_change czdg");
        assert.match(deferred, /warning: the Supervisor group czdg changed, but applying it now would stop czdg:czdg-1, which serves; it takes effect when supervisord next starts \(a reboot\)\. To apply it now at the cost of a restart: supervisorctl update czdg, then deploy/);
        assert.strictEqual(pidOf("czdg-1"), pid, "the serving program was not restarted");
        assert.match(supervisord.ctl("status", "czdg:czdg-1"), /RUNNING/);
        assert.match(supervisord.ctl("reread"), /czdg: changed/, "the change is still pending");

        supervisord.ctl("stop", "czdg:czdg-1");
        assert.strictEqual(lib("running_programs czdg").trim(), "");
        const applied = lib("apply_group_change czdg");
        assert.doesNotMatch(applied, /warning/);
        assert.match(supervisord.ctl("reread"), /No config updates to processes/, "the change was applied");
    });

    it("the environment step and supervisord's restart both go through it", () => {
        const settings = parseSettings({ sshPublicKey: PUB, sshPrivateKey: PRIV, appName: APP }, "live");
        const env = layout(APP, "live", settings.ports);
        const step = environmentStep(settings, env).script;
        assert.match(step, new RegExp(`apply_group_change ${env.id}\\n`));
        assert.ok(!step.includes(`supervisorctl update ${env.id}`), "the group is never updated directly");
        const access = hostSteps(settings).find(s => s.script.includes("configure_supervisor_socket"))!.script;
        assert.match(access, /running=\$\(running_programs\)\n\s+if \[ -n "\$running" \]; then\n\s+log "warning: supervisord's settings changed, but a restart now would stop \$running/);
    });
});

describe("lib.sh: root never writes into a directory another user owns", () => {
    /** install_file / ensure_dir from the rendered library with `runuser` recorded; status, output and the calls. */
    const lib = (dir: string, call: string) => {
        const code = ["STEP=test; set -euo pipefail", render("lib.sh", {}),
            `runuser() { echo "runuser $1 $2" >>${dir}/runuser-calls; command runuser "$@"; }`, call].join("\n");
        const r = spawnSync("bash", ["-c", code], { encoding: "utf8", timeout: 20_000 });
        const calls = fs.existsSync(`${dir}/runuser-calls`) ? fs.readFileSync(`${dir}/runuser-calls`, "utf8").trim() : "";
        return { status: r.status, out: r.stdout + r.stderr, calls };
    };

    it("writes files and makes directories in that user's directory as that user; in root's as root; refuses a third owner", () => {
        const dir = tempDir("owner");
        fs.chmodSync(dir, 0o755); // the other user must reach its directory
        const theirs = path.join(dir, "theirs");
        fs.mkdirSync(theirs, { mode: 0o755 });
        execFileSync("chown", ["nobody:nogroup", theirs]);

        const written = lib(dir, `install_file 0600 nobody:nogroup ${theirs}/keys <<<hello; echo "changed=$CHANGED"`);
        assert.strictEqual(written.status, 0, written.out);
        assert.strictEqual(written.calls, "runuser -u nobody", "written as the directory's owner");
        assert.match(written.out, /wrote .*\/theirs\/keys\nchanged=1/);
        assert.strictEqual(fs.readFileSync(`${theirs}/keys`, "utf8"), "hello\n");
        assert.strictEqual(execFileSync("stat", ["-c", "%a %U:%G", `${theirs}/keys`], { encoding: "utf8" }).trim(), "600 nobody:nogroup");
        const again = lib(dir, `CHANGED=0; install_file 0600 nobody:nogroup ${theirs}/keys <<<hello; echo "changed=$CHANGED"`);
        assert.match(again.out, /changed=0/, "unchanged content is not rewritten");

        fs.rmSync(`${dir}/runuser-calls`);
        const made = lib(dir, `ensure_dir 0700 nobody:nogroup ${theirs}/.ssh`);
        assert.strictEqual(made.status, 0, made.out);
        assert.strictEqual(made.calls, "runuser -u nobody");
        assert.strictEqual(execFileSync("stat", ["-c", "%a %U", `${theirs}/.ssh`], { encoding: "utf8" }).trim(), "700 nobody");

        fs.rmSync(`${dir}/runuser-calls`);
        const refused = lib(dir, `echo x | install_file 0644 root:root ${theirs}/root-file`);
        assert.strictEqual(refused.status, 1);
        assert.match(refused.out, /error: .*\/theirs\/root-file: its directory belongs to nobody; root writes only in root's directories and root only in theirs/);
        assert.ok(!fs.existsSync(`${theirs}/root-file`));

        const ours = lib(dir, `echo x | install_file 0640 root:nogroup ${dir}/ours`);
        assert.strictEqual(ours.status, 0, ours.out);
        assert.strictEqual(ours.calls, "", "root's own directory: root writes");
        assert.strictEqual(execFileSync("stat", ["-c", "%a %U:%G", `${dir}/ours`], { encoding: "utf8" }).trim(), "640 root:nogroup");
    });

    it("the environment's directories that hold root's scripts and the app's secrets are root's", () => {
        const settings = parseSettings({ sshPublicKey: PUB, sshPrivateKey: PRIV, appName: APP }, "live");
        const env = layout(APP, "live", settings.ports);
        const step = environmentStep(settings, env).script;
        for (const d of [env.appDir, env.baseDir]) assert.ok(step.includes(`ensure_dir 0755 root:root ${d}\n`), d);
        assert.ok(env.binDir.startsWith(`${env.baseDir}/`) && env.envFile.startsWith(`${env.baseDir}/`));
    });
});

/**
 * An environment step's guard run alone with the library: `<check>; echo checked; <record>`, with
 * the functions and lines they need; the record's install_file writes as root (the test's user).
 */
function runCheckThenRecord(script: string, check: string, record: string, needs: { functions?: string[]; lines?: RegExp[] } = {}) {
    const fn = (name: string) => functionSource(script, name);
    const code = ["STEP=test; set -euo pipefail", render("lib.sh", {}), ...(needs.lines ?? []).map(l => script.match(l)![0]),
        ...(needs.functions ?? []).map(fn), fn(check), fn(record).replace(/install_file 0644 \S+/, "install_file 0644 root:root"),
        `${check}; echo checked; ${record}`].join("\n");
    return spawnSync("bash", ["-c", code], { encoding: "utf8" });
}

describe("teardown: a running deploy of the environment", () => {
    const APP = "sample-app";
    /** Runs the teardown's wait_for_deploys, then `echo removing`, with the deploy lock at LOCK and the given lockTimeout. */
    function waitThenRemove(lock: string, lockTimeout: string) {
        const s = settingsFor({ lockTimeout });
        const script = renderTeardown(s, { ...layout(APP, "live", s.ports), lockFile: lock });
        return { script, run: () => spawnSync("bash", ["-c", `set -euo pipefail\nSTEP=t\n${render("lib.sh", {})}\n${functionSource(script, "wait_for_deploys")}\nwait_for_deploys\necho removing`], { encoding: "utf8" }) };
    }
    /** A process that holds LOCK (as a deploy holds it) for `seconds`; resolves once it holds it. */
    async function holdLock(lock: string, seconds: number) {
        // One process (bash execs sleep with the locked fd), so that killing it by pid frees the lock.
        const holder = spawn("bash", ["-c", `exec 9<"$1"; flock 9; exec sleep ${seconds}`, "hold", lock], { stdio: "ignore" });
        for (let i = 0; i < 100 && spawnSync("flock", ["-n", lock, "true"]).status === 0; i++) await new Promise(r => setTimeout(r, 20));
        return holder;
    }

    it("is the first thing teardown does", () => {
        const { script } = waitThenRemove("/x/deploy.lock", "600");
        assert.match(script, /\nmain\(\) \{\n  wait_for_deploys\n  stop_slots\n/);
        assert.match(functionBody(script, "wait_for_deploys"), /flock -w 600 9/, "it waits as long as lockTimeout says");
    });

    it("waits for the deploy to finish, then removes; with no deploy (or no lock file yet) it goes on at once", async () => {
        const dir = tempDir("teardown-lock");
        const lock = path.join(dir, "deploy.lock");
        let holder: ReturnType<typeof spawn> | undefined;
        try {
            assert.match(waitThenRemove(lock, "5").run().stdout, /^removing$/m, "no lock file: nothing was ever deployed");
            fs.writeFileSync(lock, "");
            assert.match(waitThenRemove(lock, "5").run().stdout, /^removing$/m);
            holder = await holdLock(lock, 1);
            const started = Date.now();
            const r = waitThenRemove(lock, "10").run();
            assert.strictEqual(r.status, 0, r.stderr);
            assert.match(r.stdout, /a deploy of sample-app-live is running; waiting up to 10s for it to finish\n(.|\n)*^removing$/m);
            assert.ok(Date.now() - started >= 500, "it went on before the deploy had finished");
        } finally {
            holder?.kill();
        }
    });

    it("a deploy that outlasts lockTimeout stops the teardown before it removes anything, and says so", async () => {
        const dir = tempDir("teardown-lock");
        const lock = path.join(dir, "deploy.lock");
        fs.writeFileSync(lock, "");
        const holder = await holdLock(lock, 30);
        try {
            const r = waitThenRemove(lock, "1").run();
            assert.strictEqual(r.status, 1);
            assert.doesNotMatch(r.stdout, /removing/);
            assert.match(r.stderr, new RegExp(`a deploy of sample-app-live still held ${lock} after 1s; nothing was removed\\. Run pulumi destroy again when it has finished`));
        } finally {
            holder.kill();
        }
    });
});

describe("environment step: the traffic ports of an existing environment", () => {
    it("stop the setup before it changes anything when the config moves them, naming both; the claims record them", () => {
        const dir = tempDir("ports");
        const script = (extra: Record<string, string>) => {
            const s = parseSettings({ sshPublicKey: PUB, sshPrivateKey: PRIV, appName: APP, ...extra }, "live");
            const env = layout(APP, "live", s.ports);
            return environmentStep(s, env).script.split(env.stateDir).join(dir);
        };
        /** The step's check, then its record, with the library's install_file; what they said. */
        const run = (extra: Record<string, string>) => runCheckThenRecord(script(extra), "check_traffic_ports", "record_claims",
            { functions: ["recorded_traffic_ports", "own_claims"], lines: [/^readonly LEGACY_TRAFFIC_PORTS_FILE=.*$/m] });
        const claims = () => fs.readFileSync(`${dir}/claims`, "utf8");
        const first = run({});
        assert.strictEqual(first.status, 0, first.stderr);
        assert.match(claims(), /^port 3000 proxyPort\nport 3001 slot1Port\nport 3002 slot2Port\n/m);
        assert.strictEqual(run({ nrepl1Port: "7101" }).status, 0, "the same traffic ports again (an nREPL port may change)");
        const moved = run({ proxyPort: "4000" });
        assert.strictEqual(moved.status, 1);
        assert.doesNotMatch(moved.stdout, /checked/);
        assert.match(moved.stderr, /error: the ports of czd-unit-app-live are 'proxy 3000 slots 3001 3002' on the server, and the config says 'proxy 4000 slots 3001 3002': ports cannot change once an environment exists .*nothing was changed/);
        assert.match(claims(), /^port 3000 proxyPort$/m, "the record stays");
        const slots = run({ slot2Port: "3003" });
        assert.match(slots.stderr, /are 'proxy 3000 slots 3001 3002' on the server, and the config says 'proxy 3000 slots 3001 3003'/);
        const step = script({});
        assert.ok(step.indexOf("\n  check_traffic_ports\n") > 0 && step.indexOf("\n  check_traffic_ports\n") < step.indexOf("\n  ensure_app_user\n"), "the check comes first");
    });

    it("a server set up before the claims: the traffic-ports file it recorded counts, until the claims replace it", () => {
        const dir = tempDir("ports-legacy");
        const run = (extra: Record<string, string>) => {
            const s = parseSettings({ sshPublicKey: PUB, sshPrivateKey: PRIV, appName: APP, ...extra }, "live");
            const env = layout(APP, "live", s.ports);
            return runCheckThenRecord(environmentStep(s, env).script.split(env.stateDir).join(dir), "check_traffic_ports", "record_claims",
                { functions: ["recorded_traffic_ports", "own_claims"], lines: [/^readonly LEGACY_TRAFFIC_PORTS_FILE=.*$/m] });
        };
        fs.writeFileSync(`${dir}/traffic-ports`, "proxy 3000 slots 3001 3002\n");
        const moved = run({ slot1Port: "3005" });
        assert.strictEqual(moved.status, 1);
        assert.match(moved.stderr, /are 'proxy 3000 slots 3001 3002' on the server, and the config says 'proxy 3000 slots 3005 3002'/);
        const same = run({});
        assert.strictEqual(same.status, 0, same.stderr);
        assert.ok(!fs.existsSync(`${dir}/traffic-ports`), "one record: the claims");
        assert.match(fs.readFileSync(`${dir}/claims`, "utf8"), /^port 3001 slot1Port$/m);
    });
});

describe("environment step: the stack's key for the deploy user", () => {
    it("adds this stack's key, keeps the others, once; on a server another stack owns only this step adds it", () => {
        const dir = tempDir("deploy-key");
        const other = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOtherStackKeyOtherStackKeyOtherStackKey1 owner";
        fs.mkdirSync(path.join(dir, ".ssh"));
        fs.writeFileSync(path.join(dir, ".ssh", "authorized_keys"), `${other}\n`);
        const s = parseSettings({ sshPublicKey: PUB, sshPrivateKey: PRIV, appName: APP, provider: "existing", serverStack: "live" }, "beta");
        const step = environmentStep(s, layout(APP, "beta", s.ports)).script;
        assert.match(step, /\nmain\(\) \{\n  claim_environment\n  authorize_deploy_key "\$STACK_KEY"\n/);
        const run = () => spawnSync("bash", ["-c", ["STEP=test; set -euo pipefail", render("lib.sh", {}),
            `getent() { echo "deploy:x:1000:1000::${dir}:/bin/bash"; }`, step.match(/^readonly STACK_KEY=.*$/m)![0],
            functionSource(step, "authorize_deploy_key").split("deploy:deploy").join("root:root").split(DEPLOY_KEYS_LOCK).join(path.join(dir, "keys.lock")),
            'authorize_deploy_key "$STACK_KEY"'].join("\n")],
            { encoding: "utf8" });
        for (const attempt of [1, 2]) {
            const r = run();
            assert.strictEqual(r.status, 0, r.stderr);
            assert.strictEqual(fs.readFileSync(path.join(dir, ".ssh", "authorized_keys"), "utf8"), `${other}\n${PUB}\n`, `after run ${attempt}`);
        }
        assert.strictEqual(fs.statSync(path.join(dir, ".ssh", "authorized_keys")).mode & 0o777, 0o600);
    });
});

describe("environment step: the server-wide lock around the claims", () => {
    const s = parseSettings({ sshPublicKey: PUB, sshPrivateKey: PRIV, appName: APP }, "live");
    const step = environmentStep(s, layout(APP, "live", s.ports)).script;
    const steps = ["check_owner_stack", "check_traffic_ports", "check_claims", "ensure_app_user", "ensure_directories", "record_owner_stack", "record_claims"];
    /** claim_environment with its lock at LOCK (a wait of 1 s) and steps that say their names; then whether a new process can take the lock. */
    function claim(lock: string) {
        const fn = functionSource(step, "claim_environment").split(CLAIMS_LOCK).join(lock).split(`${CLAIMS_LOCK_WAIT_SECONDS}s`).join("1s").split(`-w ${CLAIMS_LOCK_WAIT_SECONDS} `).join("-w 1 ");
        const code = ["STEP=test; set -euo pipefail", render("lib.sh", {}), ...steps.map(name => `${name}() { echo ${name}; }`), fn,
            // A daemon started after it (supervisord, nginx) must not hold the lock. The trap kills it
            // whatever flock does: under set -e a failing flock ends the script at once.
            `claim_environment; sleep 30 & daemon=$!; trap 'kill "$daemon"' EXIT; flock -n ${lock} echo "lock free"`].join("\n");
        return spawnSync("bash", ["-c", code], { encoding: "utf8" });
    }

    it("comes first in the setup, and takes the checks and the records", () => {
        assert.match(step, /\nmain\(\) \{\n  claim_environment\n/);
        assert.strictEqual(step.match(/check_claims$/gm)!.length, 1, "the checks run only under the lock");
        const dir = tempDir("claims-lock");
        const r = claim(path.join(dir, "lib", "claims.lock"));
        assert.strictEqual(r.status, 0, r.stderr);
        assert.strictEqual(r.stdout, [...steps, "lock free", ""].join("\n"), "in this order, and the lock is released after them");
    });

    it("waits for another environment's setup to record its claims; a stuck one stops this setup before it changes anything", async () => {
        const dir = tempDir("claims-lock");
        const lock = path.join(dir, "claims.lock");
        fs.writeFileSync(lock, "");
        const holder = spawn("bash", ["-c", `exec 9>>"$1"; flock 9; exec sleep 30`, "hold", lock], { stdio: "ignore" });
        try {
            for (let i = 0; i < 100 && spawnSync("flock", ["-n", lock, "true"]).status === 0; i++) await new Promise(r => setTimeout(r, 20));
            const r = claim(lock);
            assert.strictEqual(r.status, 1);
            assert.strictEqual(r.stdout, "", `no check or change ran: ${r.stderr}`);
            assert.match(r.stderr, new RegExp(`error: another environment's setup on this server held ${lock} for 1s; nothing was changed\\. Run pulumi up again when it has finished`));
        } finally {
            holder.kill();
        }
    });
});

describe("environment step: what environments on one server hold alone (ports, server name)", () => {
    it("stops a setup whose ports or domain another environment on the server holds, whichever stack made it, naming each; records its own", () => {
        const root = tempDir("claims");
        /** The step's claims check, then its record, for an environment in a server whose apps live under `root`. */
        const run = (environment: string, stack: string, extra: Record<string, string>) => {
            const s = parseSettings({ sshPublicKey: PUB, sshPrivateKey: PRIV, appName: APP, environment, ...extra }, stack);
            const env = layout(APP, environment, s.ports);
            fs.mkdirSync(`${root}/${APP}/${environment}/state`, { recursive: true });
            const sc = environmentStep(s, env).script.split(`${APPS_ROOT}/`).join(`${root}/`);
            return runCheckThenRecord(sc, "check_claims", "record_claims", { functions: ["own_claims", "conflicting_claims"], lines: [/^readonly LEGACY_TRAFFIC_PORTS_FILE=.*$/m] });
        };
        const claims = (environment: string) => fs.readFileSync(`${root}/${APP}/${environment}/state/claims`, "utf8");
        assert.strictEqual(run("live", "live", {}).status, 0);
        assert.strictEqual(claims("live"), `# ${APP}-live (stack live)\nport 3000 proxyPort\nport 3001 slot1Port\nport 3002 slot2Port\n` +
            "port 7001 nrepl1Port\nport 7002 nrepl2Port\nserver _ domain\n");
        const betaPorts = { proxyPort: "4000", slot1Port: "4001", slot2Port: "4002", nrepl1Port: "4101", nrepl2Port: "4102" };
        const beta = run("beta", "beta", { ...betaPorts, domain: "beta.example.com" });
        assert.strictEqual(beta.status, 0, beta.stderr);
        assert.strictEqual(run("live", "live", {}).status, 0, "its own record is no conflict");
        // A third stack that shares the server: it collides with beta, which its preview does not see.
        const staging = run("staging", "staging", { proxyPort: "5000", slot1Port: "4002", slot2Port: "5002", nrepl1Port: "5101", nrepl2Port: "5102",
            domain: "beta.example.com" });
        assert.strictEqual(staging.status, 1, staging.stdout);
        assert.doesNotMatch(staging.stdout, /checked/);
        assert.match(staging.stderr, new RegExp(`error: ${APP}-staging would take what other environments on this server hold; nothing was changed\\. ` +
            `Give it ports \\(and a domain\\) of its own:\n  slot1Port = 4002 is slot2Port of ${APP}-beta \\(stack beta\\) already\n` +
            `  domain = beta\\.example\\.com is the domain of ${APP}-beta \\(stack beta\\) already\n?$`));
        assert.ok(!fs.existsSync(`${root}/${APP}/staging/state/claims`), "nothing recorded");
        const second = run("staging", "staging", { proxyPort: "5000", slot1Port: "5001", slot2Port: "5002", nrepl1Port: "5101", nrepl2Port: "5102" });
        assert.strictEqual(second.status, 1);
        assert.match(second.stderr, new RegExp(`  domain is empty, and so is that of ${APP}-live \\(stack live\\): nginx has one default server`));
        // The live stack renamed its environment: its old one still holds the ports until it is destroyed.
        const renamed = run("prod", "live", {});
        assert.strictEqual(renamed.status, 1);
        assert.match(renamed.stderr, new RegExp(`  proxyPort = 3000 is proxyPort of ${APP}-live \\(stack live\\) already\n[^]*` +
            `\n${APP}-live \\(stack live\\) is this stack's own, from before a change of appName or environment: an environment cannot be renamed in place\\.`));
        assert.doesNotMatch(staging.stderr, /this stack's own/);
        const liveSettings = parseSettings({ sshPublicKey: PUB, sshPrivateKey: PRIV, appName: APP }, "live");
        const step = environmentStep(liveSettings, layout(APP, "live", liveSettings.ports)).script;
        assert.ok(step.indexOf("\n  check_claims\n") > 0 && step.indexOf("\n  check_claims\n") < step.indexOf("\n  ensure_app_user\n"), "the check comes before any change");
        assert.ok(step.includes(`for file in ${APPS_ROOT}/*/*/state/claims; do`), "it reads every environment's record");
    });
});

describe("environment step: the stack that owns an environment", () => {
    it("stops another stack that names the same environment before it changes anything; the first setup records the owner", () => {
        const dir = tempDir("owner-stack");
        /** The step's owner check, then its record, for `stack` with environment "live". */
        const run = (stack: string) => {
            const s = parseSettings({ sshPublicKey: PUB, sshPrivateKey: PRIV, appName: APP, environment: "live" }, stack);
            const env = layout(APP, "live", s.ports);
            const sc = environmentStep(s, env).script.split(`${env.stateDir}/owner-stack`).join(`${dir}/owner-stack`);
            return runCheckThenRecord(sc, "check_owner_stack", "record_owner_stack", { lines: [/^readonly OWNER_STACK_FILE=.*$/m] });
        };
        assert.strictEqual(run("live").status, 0);
        assert.strictEqual(fs.readFileSync(`${dir}/owner-stack`, "utf8"), "live\n");
        assert.strictEqual(run("live").status, 0, "its own stack again");
        const other = run("staging");
        assert.strictEqual(other.status, 1);
        assert.doesNotMatch(other.stdout, /checked/);
        assert.match(other.stderr, /error: environment live of czd-unit-app on this server belongs to stack 'live', and this is stack 'staging'; nothing was changed\. Give this stack its own environment/);
        assert.strictEqual(fs.readFileSync(`${dir}/owner-stack`, "utf8"), "live\n");
    });
});
