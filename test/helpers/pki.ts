/**
 * A throwaway PKI made at test time with the openssl CLI: a CA, server certificates for
 * 127.0.0.1/localhost signed by it, and a client certificate (for mutual TLS). Nothing is
 * checked in; every file lives in the folder the test gives and removes.
 */
import { execFileSync } from "node:child_process";
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";

export interface Pki {
  dir: string;
  /** CA certificate (PEM file path). */
  ca: string;
  /** Issue a certificate signed by the CA: returns the paths of its certificate and key. */
  issue(name: string, opts: { cn: string; server?: boolean }): { cert: string; key: string };
  /** Read a PEM file. */
  pem(path: string): Buffer;
}

function openssl(args: string[], cwd: string): void {
  execFileSync("openssl", args, { cwd, stdio: ["ignore", "ignore", "pipe"] });
}

export function makePki(dir: string, caName = "ca"): Pki {
  const ecKey = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];
  openssl(["req", "-x509", ...ecKey, "-keyout", `${caName}.key`, "-out", `${caName}.pem`, "-days", "2", "-subj", `/CN=rekey test ${caName}`], dir);
  return {
    dir,
    ca: join(dir, `${caName}.pem`),
    issue(name, opts) {
      const ext = join(dir, `${name}.ext`);
      writeFileSync(
        ext,
        opts.server
          ? "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\nkeyUsage=digitalSignature\n"
          : "extendedKeyUsage=clientAuth\nkeyUsage=digitalSignature\n",
      );
      openssl(["req", ...ecKey, "-keyout", `${name}.key`, "-out", `${name}.csr`, "-subj", `/CN=${opts.cn}`], dir);
      openssl(["x509", "-req", "-in", `${name}.csr`, "-CA", `${caName}.pem`, "-CAkey", `${caName}.key`, "-CAcreateserial", "-out", `${name}.pem`, "-days", "2", "-extfile", ext], dir);
      return { cert: join(dir, `${name}.pem`), key: join(dir, `${name}.key`) };
    },
    pem: (path) => readFileSync(path),
  };
}
