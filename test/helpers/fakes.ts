import { afterEach } from "vitest";
import type { HttpFake } from "../fakes/http-fake.ts";

/**
 * Start fakes that close after each test of the calling file: `const start = fakesClosedAfterEach();`
 * then `const fake = await start(new SomeFake())`.
 */
export function fakesClosedAfterEach(): <T extends HttpFake>(fake: T) => Promise<T> {
  const started: HttpFake[] = [];
  afterEach(async () => {
    await Promise.all(started.splice(0).map((f) => f.close()));
  });
  return async (fake) => {
    started.push(fake);
    return fake.start();
  };
}
