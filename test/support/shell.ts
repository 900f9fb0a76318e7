// Real checks of rendered shell scripts: `bash -n` and shellcheck.
import * as assert from "assert";
import { spawnSync } from "child_process";
import * as fs from "fs";
import * as path from "path";
import { tempDir } from "./tmp";

/** The body of a multi-line shell function of a script (between its `name() {` and the first `}` line). */
export function functionBody(script: string, name: string): string {
    return script.split(`\n${name}() {`)[1].split("\n}\n")[0];
}

/** That function's whole definition, to run it on its own in `bash -c`. */
export function functionSource(script: string, name: string): string {
    return `${name}() {${functionBody(script, name)}\n}`;
}

/** Fails the test unless `script` parses with `bash -n` and passes shellcheck (style level). */
export function shellcheck(script: string, name: string): void {
    const dir = tempDir("sc");
    const file = path.join(dir, `${name}.sh`);
    fs.writeFileSync(file, script);
    const syntax = spawnSync("bash", ["-n", file], { encoding: "utf8" });
    assert.strictEqual(syntax.status, 0, `bash -n ${name}: ${syntax.stderr}`);
    const sc = spawnSync("shellcheck", ["-s", "bash", "-S", "style", file], { encoding: "utf8" });
    assert.strictEqual(sc.status, 0, `shellcheck ${name}:\n${sc.stdout}${sc.stderr}`);
}
