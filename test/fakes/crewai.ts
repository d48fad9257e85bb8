/**
 * A fake CrewAI AMP deployed crew: the crew's own host with `GET /inputs`, `POST /kickoff` and
 * `GET /status/{kickoff_id}`, all behind `Authorization: Bearer <token>`. No API resets the token
 * upstream; `resetToken()` stands for the Reset button on the crew's page (the old token dies at
 * once). There are no rate-limit headers.
 */
import { randomUUID } from "node:crypto";
import { authHeader, HttpFake, mintSecret, type FakeReply, type FakeRequest } from "./http-fake.ts";

export interface CrewAiFakeOptions {
  /** The crew's declared inputs (default `["topic"]`). */
  inputs?: string[];
}

const UNAUTHORIZED: FakeReply = { status: 401, body: { error: "Invalid or missing bearer token" } };

export class CrewAiFake extends HttpFake {
  private current = mintCrewToken();
  private readonly retired = new Set<string>();
  private readonly kickoffs = new Map<string, { inputs: unknown }>();
  private resets = 0;

  constructor(private readonly options: CrewAiFakeOptions = {}) {
    // The handlers run only after construction; the box lets them reach the instance.
    const box: { fake?: CrewAiFake } = {};
    super((req) => box.fake!.route(req), {
      serverError: () => ({ status: 500, body: { error: "Internal Server Error" } }),
    });
    box.fake = this;
  }

  /** The crew's current bearer token. */
  get token(): string {
    return this.current;
  }

  /** How many times the token was reset. */
  get resetCount(): number {
    return this.resets;
  }

  /** The UI's Reset button: a new token, the old one refused from now on. Returns the new token. */
  resetToken(): string {
    this.retired.add(this.current);
    this.current = mintCrewToken();
    this.resets += 1;
    return this.current;
  }

  isLive(token: string): boolean {
    return token === this.current;
  }

  /** Was this token once the crew's and then reset away? */
  wasRetired(token: string): boolean {
    return this.retired.has(token);
  }

  private route(req: FakeRequest): FakeReply {
    const auth = authHeader(req);
    if (auth !== `Bearer ${this.current}`) return UNAUTHORIZED;
    if (req.method === "GET" && req.path === "/inputs") return { status: 200, body: { inputs: this.options.inputs ?? ["topic"] } };
    if (req.method === "POST" && req.path === "/kickoff") {
      const body = req.json as { inputs?: unknown } | undefined;
      if (!body || typeof body !== "object" || typeof body.inputs !== "object" || body.inputs === null) {
        return { status: 422, body: { error: "body must be {\"inputs\": {…}}" } };
      }
      const id = randomUUID();
      this.kickoffs.set(id, { inputs: body.inputs });
      return { status: 200, body: { kickoff_id: id } };
    }
    const m = /^\/status\/([^/]+)$/.exec(req.path);
    if (req.method === "GET" && m) {
      const k = this.kickoffs.get(decodeURIComponent(m[1] ?? ""));
      if (!k) return { status: 404, body: { error: "Kickoff not found" } };
      return { status: 200, body: { state: "SUCCESS", status: "SUCCESS", result: { output: "done", inputs: k.inputs }, last_executed_task: null } };
    }
    return { status: 404, body: { error: "Not Found" } };
  }
}

function mintCrewToken(): string {
  return mintSecret("", 12).toLowerCase();
}
