// Host setup as remote commands: each step is one rendered script fed to a root
// shell on stdin (so no secret and no file content is ever on a command line),
// triggered by the hash of what it installs, so a changed template re-runs only
// the step it feeds.
import * as command from "@pulumi/command";
import * as pulumi from "@pulumi/pulumi";
import { Settings } from "./config";
import { appEnvFile, environmentStep, hostSteps, letsencryptStep, renderTlsInstaller, SetupStep } from "./host-files";
import { EnvironmentLayout } from "./names";
import { contentHash } from "./render";
import { Host, TYPE_PREFIX } from "./providers";

export type Connection = command.types.input.remote.ConnectionArgs;

/** SSH connection for a host: patient with a server that is still booting. */
export function connectionFor(host: Host, user: string, privateKey: pulumi.Input<string>): Connection {
    return {
        host: host.address,
        port: host.sshPort,
        user,
        privateKey,
        // A fresh cloud server answers SSH after 30-90 s: retry for about 5 minutes.
        dialErrorLimit: 20,
        perDialTimeout: 15,
    };
}

/** What runs a command as root: nothing for root, passwordless sudo otherwise. */
export function rootPrefix(sshUser: string): string {
    return sshUser === "root" ? "" : "sudo -n ";
}

/** The shell that runs a step (a script on stdin) as root. */
export function rootShell(sshUser: string): string {
    return `${rootPrefix(sshUser)}bash -s`;
}

function stepCommand(parent: pulumi.Resource, prefix: string, s: SetupStep, connection: Connection, shell: string,
    dependsOn: pulumi.Resource[]): command.remote.Command {
    return new command.remote.Command(`${prefix}-${s.name}`, {
        connection,
        create: shell,
        stdin: s.script,
        triggers: [s.hash],
        addPreviousOutputInEnv: false,
    }, { parent, dependsOn });
}

export interface HostSetupArgs {
    host: Host;
    settings: Settings;
    sshPrivateKey: pulumi.Output<string>;
}

/** Everything on the server that is shared by all environments: packages, users, access, firewall. */
export class HostSetup extends pulumi.ComponentResource {
    readonly rootConnection: Connection;
    readonly steps: command.remote.Command[] = [];
    /** The last step: environments wait for it. */
    readonly done: command.remote.Command;

    constructor(name: string, args: HostSetupArgs, opts?: pulumi.ComponentResourceOptions) {
        super(`${TYPE_PREFIX}:setup:HostSetup`, name, {}, opts);
        this.rootConnection = connectionFor(args.host, args.host.sshUser, args.sshPrivateKey);
        const shell = rootShell(args.host.sshUser);
        let previous: pulumi.Resource[] = args.host.readyAfter;
        for (const s of hostSteps(args.settings)) {
            const cmd = stepCommand(this, name, s, this.rootConnection, shell, previous);
            this.steps.push(cmd);
            previous = [cmd];
        }
        this.done = this.steps[this.steps.length - 1];
        this.registerOutputs({});
    }
}

export interface EnvironmentSetupArgs {
    host: Host;
    /** Root connection to the server, and what must be done before this environment is set up. */
    connection: Connection;
    after: pulumi.Resource[];
    settings: Settings;
    layout: EnvironmentLayout;
    appEnv: pulumi.Output<Record<string, string>>;
    /** Secret: the key of a `tls: custom` certificate. */
    tlsKey: pulumi.Output<string>;
    /** The app's directory inside its git repository ("" at the top): what a `git push` deploys. */
    appGitPath: string;
}

/** One environment (live, beta, ...) on the server: its slots, site, repository and app environment. */
export class EnvironmentSetup extends pulumi.ComponentResource {
    readonly environment: command.remote.Command;
    readonly appEnv: command.remote.Command;
    /** HTTPS (tls letsencrypt or custom): obtains or installs the certificate and switches the site to it. */
    readonly tls?: command.remote.Command;
    /** Does nothing on create; on `pulumi destroy` removes this environment (and only it) from the server. */
    readonly teardown: command.remote.Command;

    constructor(name: string, args: EnvironmentSetupArgs, opts?: pulumi.ComponentResourceOptions) {
        super(`${TYPE_PREFIX}:setup:EnvironmentSetup`, name, {}, opts);
        const shell = rootShell(args.host.sshUser);
        const connection = args.connection;
        this.environment = stepCommand(this, name, environmentStep(args.settings, args.layout, args.appGitPath), connection, shell, args.after);
        // Its own resource with inputs that never change, so that a re-run of the setup step
        // (a replacement) never runs it: only a destroy does.
        this.teardown = new command.remote.Command(`${name}-teardown`, {
            connection,
            create: "true",
            delete: `${rootPrefix(args.host.sshUser)}${args.layout.teardownScript}`,
            addPreviousOutputInEnv: false,
        }, { parent: this, dependsOn: [this.environment] });
        // The app's environment goes on stdin to a root-owned installer; Pulumi keeps stdin secret.
        const sudo = rootPrefix(args.host.sshUser);
        this.appEnv = new command.remote.Command(`${name}-app-env`, {
            connection,
            create: `${sudo}${args.layout.installAppEnvScript}`,
            stdin: pulumi.secret(args.appEnv.apply(appEnvFile)),
            addPreviousOutputInEnv: false,
        }, { parent: this, dependsOn: [this.environment] });
        this.tls = this.tlsCommand(name, args, connection, shell, sudo);
        this.registerOutputs({});
    }

    private tlsCommand(name: string, args: EnvironmentSetupArgs, connection: Connection, shell: string, sudo: string) {
        if (args.settings.tls === "letsencrypt") {
            return stepCommand(this, name, letsencryptStep(args.settings, args.layout), connection, shell, [this.environment]);
        }
        if (args.settings.tls === "custom") {
            // Like the app's environment: the key goes on stdin (kept secret by Pulumi) to the root-owned
            // installer, which holds the public certificate; a new certificate re-runs it through the trigger.
            const installer = renderTlsInstaller(args.settings, args.layout);
            return new command.remote.Command(`${name}-tls`, {
                connection,
                create: `${sudo}${args.layout.installTlsScript}`,
                stdin: pulumi.secret(args.tlsKey),
                triggers: [contentHash(installer)],
                addPreviousOutputInEnv: false,
            }, { parent: this, dependsOn: [this.environment] });
        }
        return undefined;
    }
}
