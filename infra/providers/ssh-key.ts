import { createHash } from "crypto";

/** A key in the cloud account, as both clouds' key listings describe it. */
export interface AccountKey {
    id: number;
    name: string;
    fingerprint: string;
}

/**
 * The MD5 fingerprint both DigitalOcean and Hetzner give an OpenSSH public key
 * ("aa:bb:..."): of the key's base64 body, without its type and comment.
 */
export function sshKeyFingerprint(publicKey: string): string {
    const body = publicKey.trim().split(/\s+/)[1] ?? "";
    return createHash("md5").update(Buffer.from(body, "base64")).digest("hex").match(/../g)!.join(":");
}

/** The cloud key name this stack gives the key when it uploads it. */
export function ownKeyName(serverName: string): string {
    return `${serverName}-pulumi`;
}

/**
 * The account's key to put on the new server, when the account already holds this public key
 * (under any name: the user's upload, another stack's, or this stack's own from an earlier run).
 * Both clouds refuse a second upload of a key (DigitalOcean answers 422, Hetzner wants
 * fingerprints unique), so the stack uploads the key only when this finds none.
 */
export function accountKeyFor(accountKeys: AccountKey[] | undefined, publicKey: string): AccountKey | undefined {
    const fingerprint = sshKeyFingerprint(publicKey);
    return (accountKeys ?? []).find(k => k.fingerprint === fingerprint);
}
