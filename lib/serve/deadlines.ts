/**
 * Request deadlines on one timer. Every infer request has two (its body must arrive in time,
 * and its answer), and nearly all are met: a timer of its own per deadline cost a
 * `setTimeout` and a `clearTimeout` each, 4–5 µs per pair on this machine, twice per request.
 * Here a deadline is an entry in a set, and one unreferenced timer is armed for the earliest
 * deadline only when no earlier one is armed: under steady load it is re-armed about once per
 * timeout period, and an idle server has none pending.
 *
 * @module
 */

/** A pending deadline; {@link Deadlines.cancel} it once met. */
export interface Deadline {
  /** When it expires, in `performance.now()` milliseconds. */
  readonly at: number;
  readonly expire: () => void;
}

/** The deadlines of one server. */
export class Deadlines {
  readonly #pending = new Set<Deadline>();
  #timer: ReturnType<typeof setTimeout> | undefined;
  /** When the armed timer fires (Infinity when none is armed). */
  #armedAt = Infinity;

  /**
   * Calls `expire` once, `ms` milliseconds from now, unless cancelled first.
   *
   * @param ms Milliseconds from now.
   * @param expire What to do when it passes.
   * @returns The deadline, for {@link cancel}.
   */
  add(ms: number, expire: () => void): Deadline {
    const deadline = { at: performance.now() + ms, expire };
    this.#pending.add(deadline);
    if (deadline.at < this.#armedAt) this.#arm(deadline.at);
    return deadline;
  }

  /** Forgets a deadline that was met (or that expired already). */
  cancel(deadline: Deadline): void {
    this.#pending.delete(deadline);
  }

  /** Deadlines pending (for tests). */
  get size(): number {
    return this.#pending.size;
  }

  #arm(at: number): void {
    if (this.#timer !== undefined) clearTimeout(this.#timer);
    this.#armedAt = at;
    const timer = setTimeout(() => this.#fire(), Math.max(0, at - performance.now()));
    // A pending deadline must not keep a process alive whose server has stopped.
    Deno.unrefTimer(timer);
    this.#timer = timer;
  }

  #fire(): void {
    this.#timer = undefined;
    this.#armedAt = Infinity;
    const now = performance.now();
    let next = Infinity;
    for (const deadline of this.#pending) {
      if (deadline.at <= now) {
        this.#pending.delete(deadline);
        deadline.expire();
      } else if (deadline.at < next) {
        next = deadline.at;
      }
    }
    // expire() may have added deadlines (and armed for them); arm for the rest otherwise.
    if (next < this.#armedAt) this.#arm(next);
  }
}
