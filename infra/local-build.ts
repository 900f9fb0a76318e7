// `build: local`: `lein uberjar` runs on the machine that runs `pulumi up`
// (or CI), so the server only receives the jar and never runs Leiningen.
import { execFileSync } from "child_process";
import * as crypto from "crypto";
import * as fs from "fs";
import * as os from "os";
import * as path from "path";
import { AppRevision, AppSourceError, archiveAppRevision, commandEnv, privateCacheDir, pruneCache } from "./app-source";

export interface LocalJar {
    path: string;
    /** sha256 of the jar: with the commit, it names the release on the server. */
    sha256: string;
}

function findStandaloneJars(dir: string): string[] {
    const found: string[] = [];
    for (const entry of fs.readdirSync(dir, { withFileTypes: true })) {
        const full = path.join(dir, entry.name);
        if (entry.isDirectory()) found.push(...findStandaloneJars(full));
        else if (entry.name.endsWith("-standalone.jar")) found.push(full);
    }
    return found;
}

/**
 * Builds the committed tree of `rev` with `lein uberjar` in a scratch directory
 * and caches the standalone jar per commit, so a later `pulumi up` of the same
 * commit reuses the same bytes (jar builds are not byte-for-byte repeatable).
 */
export function buildJarLocally(rev: AppRevision, opts: { cacheDir?: string; lein?: string } = {}): LocalJar {
    const cacheDir = opts.cacheDir ?? privateCacheDir("jars");
    fs.mkdirSync(cacheDir, { recursive: true });
    const cached = path.join(cacheDir, `${rev.commit}${rev.prefix ? `-${crypto.createHash("sha1").update(rev.prefix).digest("hex").slice(0, 8)}` : ""}.jar`);
    if (!fs.existsSync(cached)) {
        const work = fs.mkdtempSync(path.join(os.tmpdir(), "czd-build-"));
        try {
            execFileSync("tar", ["-xf", archiveAppRevision(rev), "-C", work], { env: commandEnv() });
            try {
                execFileSync(opts.lein ?? "lein", ["uberjar"], { cwd: work, encoding: "utf8", stdio: ["ignore", "pipe", "pipe"], env: commandEnv() });
            } catch (e: any) {
                const output = `${e.stdout ?? ""}${e.stderr ?? ""}`.trim().split("\n").slice(-30).join("\n");
                throw new AppSourceError(`build: local: \`lein uberjar\` failed for ${rev.commit} (built from a clean export of the commit):\n${output || e.message}`);
            }
            const jars = findStandaloneJars(path.join(work, "target"));
            if (jars.length !== 1) {
                throw new AppSourceError(`build: local: expected exactly one *-standalone.jar under target/ for ${rev.commit}, found ${jars.length}`);
            }
            fs.copyFileSync(jars[0], `${cached}.${process.pid}.tmp`);
            fs.renameSync(`${cached}.${process.pid}.tmp`, cached);
            pruneCache(cacheDir);
        } finally {
            fs.rmSync(work, { recursive: true, force: true });
        }
    }
    const sha256 = crypto.createHash("sha256").update(fs.readFileSync(cached)).digest("hex");
    return { path: cached, sha256 };
}
