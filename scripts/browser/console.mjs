// End-to-end test of the operator console in a real browser: Debian's chromium, driven by
// playwright-core. Run by crates/tw-cli/tests/cli/browser.rs against a real `tw-cli serve`:
//
//   node scripts/browser/console.mjs URL ADMIN_KEY READ_KEY SCREENSHOT_DIR
//
// Signs in, sees the empty state, adds a source (its secret shown once with the recipe), delivers
// a signed alert to it, sees it counted, turns auto-triage on from the source's settings page,
// sees a delivery arrive live with its normalized alert, sorts the incidents by severity, sends a
// test event, rotates the secret, signs out; a read
// key sees no change controls and its forged POST is refused; a POST without the CSRF token is
// refused; the security headers hold and the pages raise no CSP violation. A screenshot of every
// page goes to SCREENSHOT_DIR. Exits non-zero with the failed step on stderr.
import { chromium } from "playwright-core";
import { createHmac } from "node:crypto";
import { mkdirSync } from "node:fs";
import { join } from "node:path";

const [url, adminKey, readKey, shots] = process.argv.slice(2);
if (!url || !adminKey || !readKey || !shots) {
  console.error("usage: console.mjs URL ADMIN_KEY READ_KEY SCREENSHOT_DIR");
  process.exit(2);
}
mkdirSync(shots, { recursive: true });
const executablePath = process.env.CHROMIUM || "/usr/bin/chromium";

function check(cond, what) {
  if (!cond) throw new Error(`failed: ${what}`);
}

const browser = await chromium.launch({ executablePath, args: ["--no-sandbox"] });
const problems = [];
let step = "start";
try {
  const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  const page = await context.newPage();
  // The refusals this test provokes on purpose (a wrong key 401, forged POSTs 403) are logged
  // by the browser as failed loads; anything else is a problem.
  let expectedRefusals = 0;
  page.on("console", (m) => {
    if (m.type() !== "error") return;
    if (expectedRefusals > 0 && /status of (401|403)/.test(m.text())) {
      expectedRefusals -= 1;
      return;
    }
    problems.push(`console error on ${page.url()}: ${m.text()}`);
  });
  page.on("pageerror", (e) => problems.push(`page error on ${page.url()}: ${e.message}`));
  const shot = (name) => page.screenshot({ path: join(shots, `${name}.png`), fullPage: true });

  step = "an unsigned visit goes to the sign-in page, with the security headers";
  let resp = await page.goto(`${url}/console/sources`);
  check(page.url().includes("/console/login"), `redirected to sign-in, at ${page.url()}`);
  const headers = resp.headers();
  check((headers["content-security-policy"] || "").includes("script-src 'self'"), "a strict CSP");
  check(headers["x-frame-options"] === "DENY", "X-Frame-Options: DENY");
  await shot("01-sign-in");

  step = "a wrong key is refused";
  expectedRefusals += 1;
  await page.fill('input[name="api_key"]', "tw_not-a-real-key-0000000000");
  await page.click('button[type="submit"]');
  check((await page.content()).includes("Invalid API key"), "the refusal says the key is not valid");
  await shot("02-sign-in-refused");

  step = "an admin signs in; the session cookie is HttpOnly and SameSite=Strict";
  await page.goto(`${url}/console/login`);
  await page.fill('input[name="api_key"]', adminKey);
  await page.click('button[type="submit"]');
  await page.waitForURL((u) => !u.pathname.endsWith("/login"));
  const cookies = await context.cookies();
  const session = cookies.find((c) => c.path === "/console");
  check(session && session.httpOnly && session.sameSite === "Strict", `session cookie ${JSON.stringify(session)}`);
  await shot("03-overview");

  step = "a new install shows how to add the first source";
  await page.goto(`${url}/console/sources`);
  check((await page.content()).includes("tw-cli webhook add"), "the empty state names the CLI line");
  await shot("04-sources-empty");

  step = "add a source: its secret is shown once with the recipe";
  await page.click('a:has-text("Add source")');
  await page.fill('input[name="source"]', "mail");
  await shot("05-add-source");
  await page.click('button:has-text("Add source")');
  const secret = await page.locator('dd code[data-copy="Secret"]').innerText();
  check(secret.startsWith("whsec_"), `the secret is shown: ${secret}`);
  const recipeUrl = await page.locator('dd code[data-copy="URL"]').innerText();
  check(recipeUrl.endsWith("/api/webhooks/mail"), `the recipe's URL: ${recipeUrl}`);
  await shot("06-source-added-secret-once");

  step = "a signed delivery to the new source is accepted and counted";
  const body = JSON.stringify({ event_type: "security_alert", data: { alert_id: "browser-1", severity: "high", details: { title: "Browser test alert" } } });
  const ts = Math.floor(Date.now() / 1000).toString();
  const sig = createHmac("sha256", secret).update(`${ts}.${body}`).digest("hex");
  const delivered = await fetch(`${url}/api/webhooks/mail`, {
    method: "POST",
    headers: { "content-type": "application/json", "x-webhook-timestamp": ts, "x-webhook-signature": `sha256=${sig}` },
    body,
  });
  check(delivered.status === 201, `delivery answered ${delivered.status}`);
  await page.goto(`${url}/console/sources`);
  const row = page.locator("tr", { hasText: "mail" });
  const counts = await row.locator("td.num").allInnerTexts();
  check(counts[0]?.trim() === "1" && counts[1]?.trim() === "0", `the row counts one delivery, no error: ${counts}`);
  await shot("07-sources-with-delivery");

  step = "the settings page turns auto-triage on with a playbook";
  // So the next incident gets a verdict. The settings page saves through the API's update.
  await row.locator('a:has-text("Settings")').click();
  await page.waitForURL((u) => u.pathname.endsWith("/console/sources/mail/settings"));
  await page.check('input[name="auto_triage"]');
  await page.selectOption('select[name="playbook"]', "phishing_triage");
  await shot("07b-source-settings");
  await page.click('button:has-text("Save settings")');
  await page.waitForURL((u) => u.pathname.endsWith("/console/sources"));
  const saved = await (await fetch(`${url}/api/webhooks/mail`, { headers: { authorization: `Bearer ${adminKey}` } })).json();
  check(saved.auto_triage === true && saved.playbook === "phishing_triage", `auto-triage on: ${JSON.stringify(saved)}`);
  check((await page.locator("tr", { hasText: "mail" }).innerText()).includes("phishing_triage"), "the list shows the playbook");
  await shot("07c-sources-auto-triage-on");

  step = "a signed delivery appears live in the deliveries list, and opens";
  await page.goto(`${url}/console/deliveries`);
  const before = await page.locator("tbody#deliveries tr[data-id]").count();
  const body2 = JSON.stringify({ event_type: "security_alert", data: { alert_id: "browser-2", severity: "low", details: { title: "Live one" } } });
  const ts2 = Math.floor(Date.now() / 1000).toString();
  const sig2 = createHmac("sha256", secret).update(`${ts2}.${body2}`).digest("hex");
  const second = await fetch(`${url}/api/webhooks/mail`, {
    method: "POST",
    headers: { "content-type": "application/json", "x-webhook-timestamp": ts2, "x-webhook-signature": `sha256=${sig2}` },
    body: body2,
  });
  check(second.status === 201, `second delivery answered ${second.status}`);
  const liveId = second.headers.get("x-tw-request-id");
  await page.waitForSelector(`tbody#deliveries tr.new[data-id="${liveId}"]`, { timeout: 20000 });
  check((await page.locator("tbody#deliveries tr[data-id]").count()) === before + 1, "one row was added live, without a reload");
  await shot("08-deliveries-live");
  await page.locator(`tbody#deliveries tr[data-id="${liveId}"] a`).first().click();
  const detail = await page.content();
  check(detail.includes(liveId) && detail.includes("INC-"), "the delivery page names its request id and its incident");
  check(detail.includes("Normalized alert") && detail.includes("Live one"), "the delivery page shows the normalized alert beside the payload");
  await shot("08b-delivery");

  step = "the delivery's incident shows its triage verdict";
  await page.locator('a[href^="/console/incidents/"]').first().click();
  let verdict = false;
  for (let i = 0; i < 40 && !verdict; i++) {
    verdict = (await page.content()).includes("<dt>Verdict</dt>");
    if (!verdict) {
      await page.waitForTimeout(500);
      await page.reload();
    }
  }
  check(verdict, "the incident page shows the verdict once triage ran");
  await shot("08e-incident-triaged");
  await page.goto(`${url}/console/incidents`);
  await shot("08f-incidents");
  step = "the incident list sorts by severity from its column header";
  await page.click('th a.sort:has-text("Severity")');
  await page.waitForURL((u) => u.searchParams.get("sort") === "severity");
  const severities = await page.locator("tbody tr td:nth-child(2)").allInnerTexts();
  const rank = (s) => ["critical", "high", "medium", "low", "info"].indexOf(s.trim());
  check(severities.length === 2 && severities.every((s, i) => i === 0 || rank(severities[i - 1]) <= rank(s)), `most severe first: ${severities}`);
  check((await page.locator('th[aria-sort="descending"]').innerText()).includes("Severity"), "the header says the list is sorted by it");
  await shot("08h-incidents-by-severity");
  await page.goto(`${url}/console/playbooks`);
  await shot("08g-playbooks");
  await page.goto(`${url}/console`);
  check((await page.locator("svg").count()) > 0, "the overview draws the day's charts");
  await shot("08c-overview-with-data");

  step = "send a test event";
  await page.goto(`${url}/console/sources`);
  await row.locator('button:has-text("Send test event")').click();
  check((await page.content()).includes("Passed: a delivery signed with the stored secret would be accepted"), "the test's result says it passed");
  await shot("08d-test-event");

  step = "rotate the secret: the new one is shown once";
  await page.goto(`${url}/console/sources`);
  await page.locator("tr", { hasText: "mail" }).locator('button:has-text("Rotate secret")').click();
  const rotated = await page.locator('dd code[data-copy="Secret"]').innerText();
  check(rotated.startsWith("whsec_") && rotated !== secret, "a new secret is shown");
  await shot("09-secret-rotated");

  step = "a POST without the CSRF token is refused";
  expectedRefusals += 1;
  const forged = await page.evaluate(async () => {
    const r = await fetch("/console/sources", { method: "POST", headers: { "content-type": "application/x-www-form-urlencoded" }, body: "source=forged" });
    return r.status;
  });
  check(forged === 403, `no CSRF token: ${forged}`);

  step = "sign out ends the session";
  await page.goto(`${url}/console/sources`);
  await page.click('button:has-text("Sign out")');
  await page.goto(`${url}/console/sources`);
  check(page.url().includes("/console/login"), "signed out: back to sign-in");

  step = "a read key sees no change controls, and its forged POST is refused";
  await page.fill('input[name="api_key"]', readKey);
  await page.click('button[type="submit"]');
  await page.waitForURL((u) => !u.pathname.endsWith("/login"));
  await page.goto(`${url}/console/sources`);
  const readHtml = await page.content();
  for (const control of ["Add source", "Rotate secret", "Delete", "Disable"]) {
    check(!readHtml.includes(`>${control}<`), `a read key sees no "${control}"`);
  }
  await shot("10-sources-read-key");
  expectedRefusals += 1;
  const readForged = await page.evaluate(async () => {
    const csrf = document.querySelector('input[name="csrf"]')?.value || "";
    const r = await fetch("/console/sources", {
      method: "POST",
      headers: { "content-type": "application/x-www-form-urlencoded" },
      body: `csrf=${encodeURIComponent(csrf)}&source=forged&verification=hmac&format=auto&mode=sync`,
    });
    return [csrf.length > 0, r.status];
  });
  check(readForged[0] && readForged[1] === 403, `a read key's POST with its own CSRF token: ${readForged}`);

  step = "no page raised a console error or CSP violation";
  check(problems.length === 0, problems.join("\n"));
  console.log(`console browser test passed; screenshots in ${shots}`);
} catch (e) {
  console.error(`step "${step}": ${e.message}`);
  process.exitCode = 1;
} finally {
  await browser.close();
}
