/** The end-to-end harness: see each module's header for what it builds and why. */

export * from "./cgroups.ts";
export * from "./cli.ts";
export * from "./lab.ts";
export * from "./exec.ts";
export * from "./layouts.ts";
export * from "./leftovers.ts";
export * from "./processes.ts";
export * from "./topology.ts";
export type { FlowResult, TcpResult, UdpResult } from "./traffic.ts";
export * from "./assert.ts";
export * from "./measure.ts";
export * from "./bpf_stats.ts";
