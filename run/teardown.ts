/**
 * What `run` set up, undone in reverse order on the way out, whatever happened. Every step
 * is tried; a step added with `add` that fails is thrown after all of them (the first such
 * failure), one added with `addLogged` is only logged: closing a sink or the connect
 * events must not keep the backend from being stopped, nor hide why `run` ended.
 */

type Step = { undo: () => unknown; log?: (message: string) => void };

export class Teardown {
  #steps: Step[] = [];

  add(undo: () => unknown): void {
    this.#steps.push({ undo });
  }

  /** `log` gets the failure's message. */
  addLogged(undo: () => unknown, log: (message: string) => void): void {
    this.#steps.push({ undo, log });
  }

  async run(): Promise<void> {
    let failure: { error: unknown } | null = null;
    for (const step of this.#steps.splice(0).reverse()) {
      try {
        await step.undo();
      } catch (e) {
        if (step.log) step.log((e as Error).message);
        else failure ??= { error: e };
      }
    }
    if (failure) throw failure.error;
  }
}
