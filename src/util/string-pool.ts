/**
 * Detaches the text of parsed documents from the file they were read from, and shares equal
 * texts. A parsed scalar is a substring of the file's text, and V8 keeps a substring of 13 or more
 * characters as a view into the whole text: every policy held after a load would keep its file's
 * full contents (comments included) alive. Thousands of policies also repeat the same owners,
 * URLs, variable names and time zones, which one pool keeps once.
 */
export class StringPool {
  private readonly texts = new Map<string, string>();

  /** The pool's copy of `text`: equal to it, independent of any larger string, shared with equal ones. */
  intern(text: string): string {
    let own = this.texts.get(text);
    if (own === undefined) {
      // A JSON round trip builds a new flat string; slice(), concatenation and the like may return
      // another view into the same text.
      own = JSON.parse(JSON.stringify(text)) as string;
      this.texts.set(own, own);
    }
    return own;
  }

  /**
   * Replaces every string in a parsed document (plain objects, arrays, scalars), in place, with
   * the pool's copy; returns the document (a string: its copy).
   */
  detach<T>(value: T): T {
    if (typeof value === "string") return this.intern(value) as T;
    if (Array.isArray(value)) {
      for (let i = 0; i < value.length; i++) value[i] = this.detach(value[i] as unknown);
    } else if (value !== null && typeof value === "object") {
      const record = value as Record<string, unknown>;
      // `__proto__` as an own key is left as it is: assigning it would set the prototype.
      for (const key of Object.keys(record)) if (key !== "__proto__") record[key] = this.detach(record[key]);
    }
    return value;
  }
}
