// Entry point named by Pulumi.yaml (via package.json "main"): only wires infra/ together.
import { program } from "./infra/program";

const out = program();

export const serverAddress = out.serverAddress;
export const ssh = out.ssh;
export const appUrl = out.appUrl;
export const gitRemote = out.gitRemote;
export const dnsHint = out.dnsHint;
export const environment = out.environment;
export const supervisorGroup = out.supervisorGroup;
export const appDirectory = out.appDirectory;
export const liveRevision = out.liveRevision;
export const liveSlot = out.liveSlot;
export const ports = out.ports;
