// Drives the operator's console in a real Chromium (the distribution's,
// through playwright-core: nothing is downloaded).  Started by
// tests/console_browser.rs with the server, its stub destination and the
// events already in place; the environment says where:
//
//   CONSOLE_URL    the console, e.g. http://127.0.0.1:5001
//   ADMIN_TOKEN    the admin token
//   CHROMIUM       the browser binary (default /usr/bin/chromium)
//   SHOTS          directory for the screenshots
//   DELIVERED_ID   receipt ID of a delivered event
//   DEAD_ID        receipt ID of a dead-lettered one (the stub now answers 202)
//   XSS_IDS        receipt IDs of the hostile events, comma-separated
//   ROUTE          the route to pause and resume
//
// Prints one line per check; exits non-zero on the first failure.
import { chromium } from "playwright-core";
import { mkdirSync } from "node:fs";

const env = (k) => {
  const v = process.env[k];
  if (!v) throw new Error(`${k} is not set`);
  return v;
};
const base = env("CONSOLE_URL");
const token = env("ADMIN_TOKEN");
const shots = env("SHOTS");
const deliveredId = env("DELIVERED_ID");
const deadId = env("DEAD_ID");
const xssIds = env("XSS_IDS").split(",").filter(Boolean);
const route = env("ROUTE");
mkdirSync(shots, { recursive: true });

function check(cond, what) {
  if (!cond) throw new Error(`FAILED: ${what}`);
  console.log(`ok - ${what}`);
}

/** Reloads `url` until `pred(page)` holds (the server works in the background). */
async function until(page, url, pred, what, timeoutMs = 30000) {
  const end = Date.now() + timeoutMs;
  for (;;) {
    await page.goto(url);
    if (await pred(page)) return;
    if (Date.now() > end) throw new Error(`FAILED: ${what} (timed out)`);
    await page.waitForTimeout(250);
  }
}

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  headless: true,
  args: [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
  ],
});
const context = await browser.newContext({ viewport: { width: 1400, height: 900 } });
const page = await context.newPage();
const dialogs = [];
page.on("dialog", async (d) => {
  dialogs.push(d.message());
  await d.dismiss();
});
const cspViolations = [];
page.on("console", (m) => {
  if (m.type() === "error" && /Content Security Policy/.test(m.text())) cspViolations.push(m.text());
});

try {
  // -- log in --
  await page.goto(`${base}/`);
  check(new URL(page.url()).pathname === "/login", "a stranger is sent to /login");
  await page.screenshot({ path: `${shots}/login.png` });
  await page.fill('input[name="token"]', "wrong-token-0123456789");
  await page.click('button[type="submit"]');
  check((await page.locator(".error").textContent()).includes("Wrong token"), "a wrong token is refused");
  await page.fill('input[name="token"]', token);
  await page.click('button[type="submit"]');
  await page.waitForURL(`${base}/`);
  check((await page.locator("h1").textContent()) === "Overview", "logged in: the overview");
  const cookies = await context.cookies();
  const session = cookies.find((c) => c.name === "ztb_session");
  check(session && session.httpOnly && session.sameSite === "Strict", "the session cookie is HttpOnly and SameSite=Strict");
  check((await page.locator(`#routes tr[data-route="${route}"]`).count()) === 1, "the overview lists the route");
  await page.screenshot({ path: `${shots}/overview.png`, fullPage: true });

  // -- a delivered event and a dead-lettered one --
  await page.goto(`${base}/events`);
  const stateOf = async (id) =>
    page.locator(`#events tr[data-receipt="${id}"]`).first().getAttribute("data-state");
  check((await stateOf(deliveredId)) === "delivered", "the events page shows the delivered event");
  check((await stateOf(deadId)) === "failed", "the events page shows the dead letter");
  await page.screenshot({ path: `${shots}/events.png`, fullPage: true });
  await page.goto(`${base}/dead-letters`);
  check((await page.locator(`#events tr[data-receipt="${deadId}"]`).count()) === 1, "the dead-letters page lists it");
  await page.screenshot({ path: `${shots}/dead-letters.png`, fullPage: true });
  await page.goto(`${base}/dead-letters?q=RSW-CONSOLE-DEAD`);
  check((await page.locator("#dead-count strong").textContent()) === "1", "the dead-letters filter (text) counts 1");
  await page.click("#purge-preview button");
  check(/dry run: 1 dead letters would be purged/.test(await page.locator(".flash").textContent()), "purge: the dry run counts 1 and changes nothing");
  check((await page.locator("#dead-count strong").textContent()) === "1", "the dry run left the dead letter");

  // -- retry the dead letter: it turns delivered (the stub answers 202 now) --
  await page.goto(`${base}/events/${encodeURIComponent(deadId)}`);
  await page.screenshot({ path: `${shots}/event-failed.png`, fullPage: true });
  await page.click(`section.delivery[data-route="${route}"] form[action$="/retry"] button`);
  check((await page.locator(".flash").textContent()).includes("retried"), "retry now is acknowledged");
  await until(
    page,
    `${base}/events/${encodeURIComponent(deadId)}`,
    async (p) => (await p.locator(`section.delivery[data-route="${route}"]`).getAttribute("data-state")) === "delivered",
    "the retried dead letter turns delivered",
  );
  check(true, "the retried dead letter turned delivered");
  check(/"status": "done"|"requests"|"outcome"/.test(await page.locator(`pre.dry-run[data-route="${route}"]`).textContent()), "the event page shows the dry run");
  await page.screenshot({ path: `${shots}/event-delivered.png`, fullPage: true });

  // -- pause and resume the route --
  await page.goto(`${base}/routes`);
  const row = () => page.locator(`#route-table tr[data-route="${route}"]`);
  check((await row().getAttribute("data-paused")) === "false", "the route runs");
  await row().locator("form.pause button").click();
  await page.waitForURL(/\/routes/);
  check((await row().getAttribute("data-paused")) === "true", "pause: the route is paused");
  await page.screenshot({ path: `${shots}/routes-paused.png`, fullPage: true });
  await page.goto(`${base}/`);
  check((await page.locator(`#routes tr[data-route="${route}"] .state`).textContent()) === "paused", "the overview says paused");
  await page.goto(`${base}/routes`);
  await row().locator("form.pause button").click();
  await page.waitForURL(/\/routes/);
  check((await row().getAttribute("data-paused")) === "false", "resume: the route runs again");
  await page.screenshot({ path: `${shots}/routes.png`, fullPage: true });

  // -- send a test event through the route and follow it --
  await row().locator("form.test-event button").click();
  await page.waitForURL(/\/events\/rtest-/);
  check((await page.locator(".flash").textContent()).includes("test event sent"), "a test event is sent through the route");
  const testUrl = page.url().split("?")[0];
  await until(
    page,
    testUrl,
    async (p) => (await p.locator(`section.delivery[data-route="${route}"]`).getAttribute("data-state")) === "delivered",
    "the test event is delivered",
  );
  check(true, "the test event was delivered");
  await page.screenshot({ path: `${shots}/event-test.png`, fullPage: true });

  // -- hostile events render inert --
  const inert = async (where) => {
    const injected = await page.evaluate(() => ({
      xss: window.__xss,
      imgs: document.querySelectorAll('img[src="x"], img').length,
      scripts: Array.from(document.scripts).map((s) => s.src),
      jsLinks: Array.from(document.querySelectorAll("a[href]")).filter((a) => a.href.trim().toLowerCase().startsWith("javascript:")).length,
      wide: document.documentElement.scrollWidth,
      viewport: window.innerWidth,
    }));
    check(injected.xss === undefined, `${where}: no injected script ran`);
    check(injected.imgs === 0, `${where}: no injected element`);
    check(injected.scripts.length === 1 && /\/assets\/console-[0-9a-f]+\.js$/.test(injected.scripts[0]), `${where}: only the console's own script`);
    check(injected.jsLinks === 0, `${where}: no javascript: link`);
    check(injected.wide <= injected.viewport + 2, `${where}: the layout holds (${injected.wide} <= ${injected.viewport})`);
  };
  await page.goto(`${base}/events`);
  await page.waitForTimeout(1500); // a second of the live tail too
  await inert("events page");
  await page.screenshot({ path: `${shots}/events-xss.png`, fullPage: false });
  for (const id of xssIds) {
    await page.goto(`${base}/events/${encodeURIComponent(id)}`);
    await inert(`event ${id}`);
  }
  await page.screenshot({ path: `${shots}/event-xss.png`, fullPage: false });
  check(dialogs.length === 0, `no dialog opened (${dialogs.join("; ")})`);

  // -- a POST without the CSRF token, and with a wrong one, is refused --
  const post = (body) =>
    page.evaluate(async ([url, body]) => {
      const r = await fetch(url, {
        method: "POST",
        headers: { "content-type": "application/x-www-form-urlencoded" },
        body,
        redirect: "manual",
      });
      return r.status;
    }, [`${base}/api/routes/${encodeURIComponent(route)}/pause`, body]);
  check((await post("back=%2F")) === 403, "a POST without the CSRF token is refused (403)");
  check((await post("back=%2F&csrf=0123456789abcdef")) === 403, "a POST with a wrong CSRF token is refused (403)");
  await page.goto(`${base}/routes`);
  check((await row().getAttribute("data-paused")) === "false", "the refused POSTs changed nothing");
  check(cspViolations.length === 0, `no Content-Security-Policy violation (${cspViolations.join("; ")})`);

  // -- log out --
  await page.click("form.logout button");
  await page.waitForURL(/\/login$/);
  await page.goto(`${base}/events`);
  check(new URL(page.url()).pathname === "/login", "after logout the pages need a login again");
  console.log("all browser checks passed");
} catch (e) {
  await page.screenshot({ path: `${shots}/failure.png`, fullPage: true }).catch(() => {});
  console.error(e.message || e);
  process.exitCode = 1;
} finally {
  await browser.close();
}
