import { assertEquals } from "../lib/test_assert.ts";
import { ourIptablesChains } from "./kept_state.ts";

const TESTDATA = new URL("./testdata/", import.meta.url).pathname;

Deno.test("ourIptablesChains finds the chains a stopped service kept, and only ours", () => {
  for (const f of [4, 6]) {
    assertEquals(
      ourIptablesChains(Deno.readTextFileSync(`${TESTDATA}iptables_save_kept_v${f}.txt`)),
      [
        "STB_NETACCT_IN",
        "STB_NETACCT_LINK",
        "STB_NETACCT_MARK",
        "STB_NETACCT_META",
        "STB_NETACCT_OUT",
      ],
    );
  }
  assertEquals(
    ourIptablesChains(
      "*mangle\n:OUTPUT ACCEPT [0:0]\n:DOCKER - [0:0]\n-A OUTPUT -j DOCKER\nCOMMIT\n",
    ),
    [],
  );
});
