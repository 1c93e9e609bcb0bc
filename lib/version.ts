/** Bumped by hand on release; `install` compares it to decide whether to upgrade. */
export const VERSION = "0.1.0";
