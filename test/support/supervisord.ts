// A real supervisord for unit tests: its own directory, socket and config,
// in the foreground, ended by pid.
import { ChildProcess, spawn, spawnSync } from "child_process";
import * as fs from "fs";
import * as path from "path";
import { tempDir } from "./tmp";

export interface Supervisord {
    dir: string;
    socket: string;
    conf: string;
    pid: number;
    /** `supervisorctl -c <conf> <args>`: its stdout. */
    ctl(...args: string[]): string;
    /** Ends supervisord (and so its programs) and removes its directory. */
    stop(): Promise<void>;
}

/** Starts supervisord with `programs` (config sections) included, and waits until it answers. */
export async function startSupervisord(tag: string, programs: string): Promise<Supervisord> {
    const dir = tempDir(tag);
    const socket = path.join(dir, "supervisor.sock");
    const conf = path.join(dir, "supervisord.conf");
    fs.writeFileSync(path.join(dir, "programs.conf"), programs);
    fs.writeFileSync(conf, [
        "[unix_http_server]", `file=${socket}`, "chmod=0700", "",
        "[supervisord]", `logfile=${dir}/supervisord.log`, `pidfile=${dir}/supervisord.pid`, `childlogdir=${dir}`, "nodaemon=true", "",
        "[rpcinterface:supervisor]", "supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface", "",
        "[supervisorctl]", `serverurl=unix://${socket}`, "",
        "[include]", `files = ${dir}/programs.conf`, "",
    ].join("\n"));
    const child: ChildProcess = spawn("supervisord", ["-c", conf], { stdio: ["ignore", "ignore", "pipe"] });
    let stderr = "";
    child.stderr!.on("data", d => (stderr += d));
    const ctl = (...args: string[]) => spawnSync("supervisorctl", ["-c", conf, ...args], { encoding: "utf8" }).stdout;
    const stop = async () => {
        if (child.exitCode === null && child.pid) {
            const exited = new Promise(res => child.once("exit", res));
            process.kill(child.pid, "SIGTERM");
            await exited;
        }
    };
    for (let i = 0; i < 100; i++) {
        if (child.exitCode !== null) {
            await stop();
            throw new Error(`supervisord exited: ${stderr}`);
        }
        if (spawnSync("supervisorctl", ["-c", conf, "pid"], { encoding: "utf8" }).status === 0) {
            return { dir, socket, conf, pid: child.pid!, ctl, stop };
        }
        await new Promise(res => setTimeout(res, 100));
    }
    await stop();
    throw new Error(`supervisord did not answer on ${socket} within 10 s: ${stderr}`);
}
