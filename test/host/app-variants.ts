// Builds throwaway git repos of sample-app, optionally with a fault patched
// into the copied source. The sample app itself has no fault switches, so a
// broken deploy in tests is a genuinely broken commit, exactly like in life.
import { execFileSync } from "child_process";
import * as fs from "fs";
import * as path from "path";

export type AppFault = "health-500" | "exit-at-boot" | "no-port" | "compile-error" | "exit-when-warmed" | "exit-under-traffic"
  | "health-pause-under-traffic" | "health-hang-under-traffic" | "crash-4s-into-traffic" | "stop-listening-under-traffic"
  | "main-route-500" | "main-route-500-late";

export interface AppVariantOptions {
  /** Written to resources/VERSION; the app reports it as X-App-Version. */
  version: string;
  fault?: AppFault;
}

/** Pristine app sources in this repo. */
export const SAMPLE_APP_DIR = path.resolve(__dirname, "../../sample-app");

const CORE_CLJ = path.join("src", "sample_app", "core.clj");

// Fixed identity so commits never depend on the host's git config.
const GIT_ENV: NodeJS.ProcessEnv = {
  ...process.env,
  GIT_AUTHOR_NAME: "czd test",
  GIT_AUTHOR_EMAIL: "czd-test@example.invalid",
  GIT_COMMITTER_NAME: "czd test",
  GIT_COMMITTER_EMAIL: "czd-test@example.invalid",
  GIT_CONFIG_NOSYSTEM: "1",
};

function git(dir: string, args: string[]): string {
  return execFileSync("git", ["-c", "commit.gpgsign=false", "-c", "core.hooksPath=/dev/null", ...args], {
    cwd: dir,
    env: GIT_ENV,
    encoding: "utf8",
    stdio: ["ignore", "pipe", "pipe"],
  }).trim();
}

/** Copy the app sources (no build output, no lein state) into dir. */
function copyAppSources(dir: string): void {
  fs.cpSync(SAMPLE_APP_DIR, dir, {
    recursive: true,
    filter: (src) => {
      const rel = path.relative(SAMPLE_APP_DIR, src);
      const top = rel.split(path.sep)[0];
      return top !== "target" && !top.startsWith(".lein-") && top !== ".nrepl-port";
    },
  });
}

/** Replace exactly one occurrence of `anchor`; throws if the app drifted. */
function patchOnce(file: string, anchor: string, replacement: string): void {
  const text = fs.readFileSync(file, "utf8");
  const at = text.indexOf(anchor);
  if (at < 0 || text.indexOf(anchor, at + 1) >= 0) {
    throw new Error(`fault patch anchor not found exactly once in ${file}: ${JSON.stringify(anchor)}`);
  }
  fs.writeFileSync(file, text.slice(0, at) + replacement + text.slice(at + anchor.length));
}

const MAIN_ANCHOR = "(defn -main [& _args]";

function applyFault(dir: string, fault: AppFault): void {
  const core = path.join(dir, CORE_CLJ);
  switch (fault) {
    case "health-500":
      // Everything else keeps working; only the health probe fails.
      patchOnce(core, '(GET "/health" [] (text 200 (str "ok', '(GET "/health" [] (text 500 (str "fault: health-500');
      break;
    case "exit-at-boot":
      patchOnce(
        core,
        MAIN_ANCHOR,
        `${MAIN_ANCHOR}\n  (binding [*out* *err*] (println "fault: exit-at-boot"))\n  (System/exit 1)`,
      );
      break;
    case "no-port":
      // Alive but never listening: the deploy must time out, not hang.
      patchOnce(
        core,
        MAIN_ANCHOR,
        `${MAIN_ANCHOR}\n  (println "fault: no-port, sleeping forever")\n  (Thread/sleep Long/MAX_VALUE)`,
      );
      break;
    case "exit-when-warmed":
      // Healthy at first (the gate passes), then the JVM exits on the 5th health request,
      // i.e. during the deploy's warm-up: traffic must never move to it.
      patchOnce(
        core,
        '(GET "/health" [] (text 200',
        '(GET "/health" [] (when (> (swap! health-hits inc) 4) (System/exit 3)) (text 200',
      );
      patchOnce(core, "(defroutes routes", "(def health-hits (atom 0))\n\n(defroutes routes");
      break;
    case "exit-under-traffic":
      // Healthy through the gate and a warm-up of /health, then the JVM exits on its 21st
      // request of / : the first real traffic, i.e. during the deploy's ramp.
      patchOnce(core, '(GET "/" [] (text 200', '(GET "/" [] (when (> (swap! root-hits inc) 20) (System/exit 3)) (text 200');
      patchOnce(core, "(defroutes routes", "(def root-hits (atom 0))\n\n(defroutes routes");
      break;
    case "health-pause-under-traffic":
    case "health-hang-under-traffic": {
      // Healthy through the gate and a warm-up of /health; once real traffic has come (21
      // requests of /, i.e. during the deploy's ramp), /health takes 2.5 s, longer than the
      // deploy's health poll waits: once (a pause) or from then on (a hung health check).
      const once = fault === "health-pause-under-traffic";
      patchOnce(core, '(GET "/" [] (text 200', '(GET "/" [] (swap! root-hits inc) (text 200');
      patchOnce(
        core,
        '(GET "/health" [] (text 200',
        `(GET "/health" [] (when (and (> @root-hits 20) ${once ? "(compare-and-set! paused false true)" : "true"}) (Thread/sleep 2500)) (text 200`,
      );
      patchOnce(core, "(defroutes routes", "(def root-hits (atom 0))\n(def paused (atom false))\n\n(defroutes routes");
      break;
    }
    case "crash-4s-into-traffic":
      // Healthy through the gate, the warm-up of /health and a short ramp; 4 s after its first
      // request of / the JVM is killed (SIGKILL, as the OOM killer or a segfault would end it:
      // Runtime.halt takes about 0.4 s to end a JVM), i.e. after a 2-s ramp, once it has all the traffic.
      patchOnce(core, '(GET "/" [] (text 200',
        '(GET "/" [] (when (compare-and-set! crash-armed false true) (future (Thread/sleep 4000) (.exec (Runtime/getRuntime) (into-array String ["kill" "-KILL" (str (.pid (java.lang.ProcessHandle/current)))])))) (text 200');
      patchOnce(core, "(defroutes routes", "(def crash-armed (atom false))\n\n(defroutes routes");
      break;
    case "stop-listening-under-traffic":
      // Healthy through the gate and a warm-up of /health; on its 21st request of / (during the
      // ramp) it stops Jetty, which closes the port, and the JVM lives on (the future's thread
      // sleeps): a JVM on its way out, or an app that lost its server.
      patchOnce(core, '(GET "/" [] (text 200',
        '(GET "/" [] (when (= (swap! root-hits inc) 21) (future (.stop ^org.eclipse.jetty.server.Server @jetty) (Thread/sleep Long/MAX_VALUE))) (text 200');
      patchOnce(core, "(defroutes routes", "(def root-hits (atom 0))\n(def jetty (atom nil))\n\n(defroutes routes");
      patchOnce(core, "(run-jetty app {:host host :port port :join? false})", "(reset! jetty (run-jetty app {:host host :port port :join? false}))");
      break;
    case "main-route-500":
      // Healthy (its health check and its warm-up of /health pass) and alive, but its main route
      // answers 500: a release that lacks a setting or a migration that its routes need.
      patchOnce(core, '(GET "/" [] (text 200', '(GET "/" [] (text 500');
      break;
    case "main-route-500-late":
      // Right for its first 30 s of real traffic (from its first GET of /), then every 4th GET of /
      // answers 500: a release that fails once something builds up (a cache, a pool, a queue),
      // late in a bake, and fails only part of its requests.
      patchOnce(core, '(GET "/" [] (text 200 (str "hello from sample-app version=" app-version "\\n")))',
        '(GET "/" [] (if (late-500?) (text 500 "fault: main-route-500-late\\n") (text 200 (str "hello from sample-app version=" app-version "\\n"))))');
      patchOnce(core, "(defroutes routes", `(def first-root-hit (atom nil))
(def root-hits (atom 0))
(defn late-500? []
  (compare-and-set! first-root-hit nil (System/nanoTime))
  (let [n (swap! root-hits inc)]
    (and (> (- (System/nanoTime) @first-root-hit) 30000000000) (zero? (mod n 4)))))

(defroutes routes`);
      break;
    case "compile-error":
      // Unbalanced paren: the reader fails while AOT-compiling, so `lein uberjar` fails.
      fs.appendFileSync(core, '\n(defn fault-compile-error [] (str "unterminated"\n');
      break;
    default: {
      const never: never = fault;
      throw new Error(`unknown fault ${String(never)}`);
    }
  }
}

function writeVersion(dir: string, version: string): void {
  if (!/^[A-Za-z0-9._+-]+$/.test(version)) {
    throw new Error(`version must be a simple token, got ${JSON.stringify(version)}`);
  }
  fs.writeFileSync(path.join(dir, "resources", "VERSION"), `${version}\n`);
}

function commitAll(dir: string, message: string): string {
  git(dir, ["add", "-A"]);
  git(dir, ["commit", "-q", "--allow-empty", "-m", message]);
  return git(dir, ["rev-parse", "HEAD"]);
}

function describe(opts: AppVariantOptions): string {
  return `sample-app version ${opts.version}${opts.fault ? ` (fault: ${opts.fault})` : ""}`;
}

/**
 * Create a git repo at dir (must not exist or be empty) holding sample-app
 * with the given VERSION and optional fault. Returns the commit sha. With
 * repoRoot (an ancestor of dir), the repository is there and the app in its
 * subdirectory dir, as the sample app sits in this project's repository.
 */
export function makeAppRepo(dir: string, opts: AppVariantOptions, repoRoot = dir): string {
  if (fs.existsSync(dir) && fs.readdirSync(dir).length > 0) {
    throw new Error(`makeAppRepo: ${dir} is not empty`);
  }
  fs.mkdirSync(dir, { recursive: true });
  copyAppSources(dir);
  if (opts.fault) applyFault(dir, opts.fault);
  writeVersion(dir, opts.version);
  git(repoRoot, ["init", "-q", "-b", "main"]);
  if (repoRoot !== dir) fs.writeFileSync(path.join(repoRoot, "README"), "the app is in a subdirectory\n");
  return commitAll(dir, describe(opts));
}

/**
 * Add a commit to a repo made by makeAppRepo: sources are reset to the
 * pristine sample app (dropping any earlier fault), the new fault (if any)
 * is applied and VERSION is rewritten. Returns the new commit sha.
 */
export function commitAppVersion(dir: string, opts: AppVariantOptions): string {
  fs.rmSync(path.join(dir, "src"), { recursive: true, force: true });
  copyAppSources(dir);
  if (opts.fault) applyFault(dir, opts.fault);
  writeVersion(dir, opts.version);
  return commitAll(dir, describe(opts));
}
