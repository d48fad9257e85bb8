/**
 * HTTPS for the API, and mutual TLS: REKEY_TLS_CERT and REKEY_TLS_KEY (PEM files) make the API
 * serve HTTPS only; REKEY_TLS_CLIENT_CA (a PEM bundle) also makes it require a client certificate
 * issued by that CA, refused in the handshake otherwise (no request is read, nothing is written).
 * The files are read at start and again on SIGHUP, so a renewed certificate is served without a
 * restart (rekey rotates credentials; its own certificate should be as easy to replace).
 */
import { readConfigFile } from "../util/config-file.ts";
import { createSecureContext, type SecureContextOptions, type TlsOptions } from "node:tls";
import { ConfigError } from "../errors.ts";

export interface TlsFiles {
  /** PEM certificate chain the API presents (REKEY_TLS_CERT). */
  cert: string;
  /** PEM private key of that certificate (REKEY_TLS_KEY). */
  key: string;
  /** PEM bundle of CAs whose client certificates are accepted (REKEY_TLS_CLIENT_CA); enables mTLS. */
  clientCa?: string;
}


/** The certificate, key and client CAs as a secure context (read from the files now). */
export function secureContextOf(files: TlsFiles): SecureContextOptions {
  const cert = readConfigFile("REKEY_TLS_CERT", files.cert);
  const key = readConfigFile("REKEY_TLS_KEY", files.key);
  if (!/-----BEGIN [A-Z ]*CERTIFICATE-----/.test(cert.toString("latin1"))) throw new ConfigError(`REKEY_TLS_CERT: ${files.cert} holds no PEM certificate`);
  // The key's content is never quoted, not even in part.
  if (!/-----BEGIN [A-Z ]*PRIVATE KEY-----/.test(key.toString("latin1"))) throw new ConfigError(`REKEY_TLS_KEY: ${files.key} holds no PEM private key`);
  const ca = files.clientCa ? readConfigFile("REKEY_TLS_CLIENT_CA", files.clientCa) : undefined;
  if (ca && !/-----BEGIN [A-Z ]*CERTIFICATE-----/.test(ca.toString("latin1"))) throw new ConfigError(`REKEY_TLS_CLIENT_CA: ${files.clientCa} holds no PEM certificate`);
  const context = { cert, key, ...(ca ? { ca } : {}) };
  try {
    createSecureContext(context);
  } catch (err) {
    // OpenSSL's reason (e.g. "key values mismatch") names no key material.
    throw new ConfigError(`REKEY_TLS_CERT / REKEY_TLS_KEY: ${files.cert} and ${files.key} are not a usable pair: ${(err as Error).message}`);
  }
  return context;
}

/** Server options for node:https: the context, and with a client CA, a client certificate required. */
export function httpsOptions(files: TlsFiles): TlsOptions {
  const context = secureContextOf(files);
  return {
    ...context,
    minVersion: "TLSv1.2",
    ...(files.clientCa ? { requestCert: true, rejectUnauthorized: true } : {}),
  };
}
