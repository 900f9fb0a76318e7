// Entry point named by Pulumi.yaml (via package.json "main"): only wires infra/ together.
// Pulumi runs an exported function and awaits it; the fields of its result are the stack
// outputs (see infra/program.ts). The program is async: it asks the cloud account for the SSH key first.
import { program } from "./infra/program";

export = program;
