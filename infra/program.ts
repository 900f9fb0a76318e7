// The program: config -> host -> setup -> deploy -> outputs.
import { readConfig } from "./config";
import { DEPLOY_USER, layout } from "./names";
import { outputsFor } from "./outputs";
import { provisionHost } from "./providers";
import { EnvironmentSetup, HostSetup } from "./setup";

export function program() {
    const { settings, sshPrivateKey, appEnv } = readConfig();
    const env = layout(settings.appName, settings.environment, settings.ports);

    const host = provisionHost("host", settings);
    const hostSetup = new HostSetup("setup", { host, settings, sshPrivateKey });
    const environment = new EnvironmentSetup(env.id, { host, hostSetup, settings, layout: env, appEnv });
    // The deploy (the gated rotation) hangs off `environment`: see infra/deploy.ts.

    return outputsFor(settings, env, host.address, DEPLOY_USER, environment);
}

export type ProgramOutputs = ReturnType<typeof program>;
