import { assertEquals } from "../lib/test_assert.ts";
import { attachPoints } from "./cgroup_links.ts";

const t = (name: string, path: string, id: number | null) => ({
  name,
  path,
  id: id === null ? null : BigInt(id),
});

Deno.test("attachPoints: each present service cgroup once, none below another present one", () => {
  assertEquals(
    attachPoints([
      t("a", "/s/a.service", 10),
      t("b", "/s/b.service", null), // absent: nothing to link
      t("c", "/s/c.service", 12),
      t("c2", "/s/c.service", 12), // the same cgroup twice: linked once
      t("inner", "/s/a.service/worker", 13), // below a: a's links run for it already
      t("ab", "/s/a.service-b", 14), // a sibling whose name starts like a's
    ]),
    [
      { id: 10n, path: "/s/a.service" },
      { id: 12n, path: "/s/c.service" },
      { id: 14n, path: "/s/a.service-b" },
    ],
  );
  // The outer one gone: the inner one is linked itself.
  assertEquals(attachPoints([t("a", "/s/a", null), t("inner", "/s/a/w", 13)]), [
    { id: 13n, path: "/s/a/w" },
  ]);
  assertEquals(attachPoints([]), []);
});
