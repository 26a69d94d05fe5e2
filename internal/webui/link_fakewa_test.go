//go:build linux

package webui_test

// The link page on the real daemon, built with -tags fakewa, against the
// fake WhatsApp server: the QR code the browser paints is read back from a
// screenshot by an independent decoder (internal/qrscan, gozxing) and
// scanned by a fake phone, as a user's phone would.

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/phonebridge/phonebridge/internal/daemontest"
	"github.com/phonebridge/phonebridge/internal/fakewa"
	"github.com/phonebridge/phonebridge/internal/qrscan"
	"github.com/phonebridge/phonebridge/internal/webui"
)

// e2eWait bounds each wait that is not WhatsApp's own schedule.
const e2eWait = 60 * time.Second

const webToken = "web-token-0123456789abcdef"

// shownQR waits until the page shows a QR image other than not (its src),
// and returns what a camera reads from the painted pixels, and the src.
func shownQR(t *testing.T, p webui.Tab, not string, limit time.Duration) (code, src string) {
	t.Helper()
	var shown struct {
		Src        string
		X, Y, W, H float64
	}
	deadline := time.Now().Add(limit)
	for {
		err := p.Eval(fmt.Sprintf(`(async () => {
  const img = document.getElementById("qr");
  if (img.hidden || !img.src.startsWith("data:image/png") || img.src === %q) return {};
  await img.decode();
  img.scrollIntoView();
  const r = img.getBoundingClientRect();
  return {src: img.src, x: r.left + scrollX, y: r.top + scrollY, w: r.width, h: r.height};
})()`, not), &shown)
		if err == nil && shown.Src != "" {
			break
		}
		if time.Now().After(deadline) {
			var page string
			p.Eval(`document.body.innerText`, &page)
			t.Fatalf("no new QR code on the page within %v (%v):\n%s", limit, err, page)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if shown.W < 200 || shown.W != shown.H {
		t.Errorf("the QR code is painted %vx%v px: too small or not square to scan from a screen", shown.W, shown.H)
	}
	// The page may move under the capture (a status line above the code
	// changes between measuring and the screenshot): measure and scan
	// again, as a phone's camera keeps trying, for up to 3 s. A code is
	// taken only if the image was the same before and after the capture.
	measure := func() bool {
		return p.Eval(`(() => {
  const img = document.getElementById("qr");
  const r = img.getBoundingClientRect();
  return {src: img.src, x: r.left + scrollX, y: r.top + scrollY, w: r.width, h: r.height};
})()`, &shown) == nil
	}
	scanBy := time.Now().Add(3 * time.Second)
	for {
		src := shown.Src
		code, err := qrscan.FromImage(p.Screenshot(shown.X, shown.Y, shown.W, shown.H))
		if !measure() {
			t.Fatal("the page's QR image cannot be measured")
		}
		if err == nil && shown.Src == src {
			return code, src
		}
		if time.Now().After(scanBy) {
			t.Fatalf("the QR code painted on the page does not scan for 3 s: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestLinkFromThePageOnTheRealDaemon: the README's "Link from a web page"
// as a user does it: sign in with the token, press Link, scan the code
// (WhatsApp replaces it; the page shows the new one), and the page says
// the account is linked; the link then relays.
func TestLinkFromThePageOnTheRealDaemon(t *testing.T) {
	srv, err := fakewa.New(fakewa.Options{QRRefs: 2})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	ann := srv.NewPhone("15551234567", "100000000000001", "Ann")
	bob := srv.NewPhone("15550002222", "100000000000002", "Bob")
	// Ann's name is in her phone's app state, which a linked device syncs.
	if err := ann.SetPushName(t.Context(), "Ann"); err != nil {
		t.Fatal(err)
	}
	p, apiAddr, d := daemonOnFake(t, srv, "  work:\n    type: whatsapp\n")
	p.WaitFor("phone's row, unlinked, with a Link button",
		`document.querySelector('tr[data-link="phone"] .state')?.textContent === "unlinked" && document.querySelector('tr[data-link="phone"] button')`)
	p.Must(`document.querySelector('tr[data-link="phone"] button').click()`, nil)

	first, src := shownQR(t, p, "", e2eWait)
	// WhatsApp replaces the code after 20 s here (QRRefs 2).
	second, _ := shownQR(t, p, src, e2eWait)
	if first == second {
		t.Fatalf("the page's second code is the first again: %.30q", first)
	}
	ctx, cancel := context.WithTimeout(context.Background(), e2eWait)
	defer cancel()
	if _, err := ann.ScanQR(ctx, second); err != nil {
		t.Fatalf("the phone's scan of the page's code: %v\ndaemon:\n%s", err, d.Logs())
	}
	// WhatsApp tells a new device its account's push name only later, so
	// the page names the number alone.
	p.WaitFor("the linked account", `document.getElementById("result").textContent === "Linked to +15551234567. phonebridge is relaying it now."`)
	p.WaitFor("phone's row to say connected", `document.querySelector('tr[data-link="phone"] .state').textContent === "connected"`)
	var hidden bool
	p.Must(`document.getElementById("qr").offsetParent === null`, &hidden)
	if !hidden {
		t.Error("the spent QR code stays on the page after linking")
	}

	// Another link by pairing code: Link starts with a QR code, and the
	// phone number below it asks for a code instead.
	p.Must(`document.getElementById("close").click(); document.querySelector('tr[data-link="work"] button').click()`, nil)
	shownQR(t, p, "", e2eWait)
	p.Must(`document.getElementById("phone").value = "+1 555 000 2222"; document.getElementById("phone-form").requestSubmit()`, nil)
	var pairing string
	p.WaitFor("the pairing code", `/^[0-9A-Z]{4}-[0-9A-Z]{4}$/.test(document.getElementById("pairing-code").textContent) && !document.getElementById("code-step").hidden`)
	p.Must(`document.getElementById("pairing-code").textContent`, &pairing)
	if _, err := bob.EnterPairingCode(ctx, pairing); err != nil {
		t.Fatalf("Bob's phone took the code %s: %v\ndaemon:\n%s", pairing, err, d.Logs())
	}
	p.WaitFor("the second linked account", `document.getElementById("result").textContent === "Linked to +15550002222. phonebridge is relaying it now."`)
	p.WaitFor("work's row to say connected", `document.querySelector('tr[data-link="work"] .state').textContent === "connected"`)

	// The link relays: Bob's message reaches the API.
	c, err := daemontest.Dial(apiAddr, daemontest.Token)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Subscribe(bob.PN.String(), -1); err != nil {
		t.Fatal(err)
	}
	if _, err := bob.SendText(ctx, ann.PN, "hello from Bob"); err != nil {
		t.Fatal(err)
	}
	for {
		select {
		case f := <-c.Events:
			if f.Event != nil && f.Event.Text == "hello from Bob" {
				return
			}
		case <-ctx.Done():
			t.Fatalf("Bob's message did not reach the API:\n%s", d.Logs())
		}
	}
}

// pageOnFake is the real daemon, with the web page on, for the link
// "phone" on a fake WhatsApp where Ann's account waits to be linked, and a
// headless browser signed in to its page.
func pageOnFake(t *testing.T, opts fakewa.Options) (p webui.Tab, ann *fakewa.Phone, d *daemontest.Daemon) {
	t.Helper()
	srv, err := fakewa.New(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	ann = srv.NewPhone("15551234567", "100000000000001", "Ann")
	p, _, d = daemonOnFake(t, srv, "")
	return p, ann, d
}

// daemonOnFake starts the real daemon on srv, with the web page on, the
// link "phone", the links in more (YAML under connectors:) and an api
// connector relaying phone at apiAddr; p is a headless browser signed in
// to its page.
func daemonOnFake(t *testing.T, srv *fakewa.Server, more string) (p webui.Tab, apiAddr string, d *daemontest.Daemon) {
	t.Helper()
	// Short enough for the control socket.
	dir, err := os.MkdirTemp("", "pbw")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	env, err := srv.Env(dir)
	if err != nil {
		t.Fatal(err)
	}
	webAddr := fmt.Sprintf("127.0.0.1:%d", daemontest.FreePort(t))
	apiAddr = fmt.Sprintf("127.0.0.1:%d", daemontest.FreePort(t))
	cfg := filepath.Join(dir, "phonebridge.yaml")
	if err := os.WriteFile(cfg, []byte(fmt.Sprintf(`state_dir: ./state
web: {listen: %s, token: %s}
connectors:
  phone:
    type: whatsapp
%s  api:
    type: api
    listen: %s
    token: %s
routes:
  - name: whatsapp
    endpoints:
      - {connector: phone, chats: all}
      - {connector: api, chats: all}
`, webAddr, webToken, more, apiAddr, daemontest.Token)), 0o600); err != nil {
		t.Fatal(err)
	}
	d = daemontest.StartEnv(t, env, daemontest.BinaryWithTags(t, "fakewa"), "run", "-c", cfg)
	p = webui.NewTab(t)
	p.Navigate("http://" + webAddr + "/")
	p.WaitFor("the sign-in form", `document.getElementById("token")`)
	p.Must(fmt.Sprintf(`document.getElementById("token").value = %q; document.querySelector("form").requestSubmit()`, webToken), nil)
	return p, apiAddr, d
}

// waitPage waits up to limit until cond holds on the page.
func waitPage(t *testing.T, p webui.Tab, what, cond string, limit time.Duration) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for {
		var ok bool
		if err := p.Eval("!!("+cond+")", &ok); err == nil && ok {
			return
		}
		if time.Now().After(deadline) {
			var page string
			p.Eval(`document.body.innerText`, &page)
			t.Fatalf("waited %v for %s; the page:\n%s", limit, what, page)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// What the page shows of a link that is not linked, with its Link button.
const phoneUnlinked = `document.querySelector('tr[data-link="phone"] .state')?.textContent === "unlinked" && document.querySelector('tr[data-link="phone"] button')`

// TestLinkOutcomesOnThePageOnTheRealDaemon: the ways linking from the
// page ends short of a link, on the real client, as the README says:
// Cancel closes the linking and the code it showed is dead; a code nobody
// scans times out (here WhatsApp's one code of 20 s) and the page says so
// with phonebridge link's words; a phone without linked-device support
// that scans it ends it with its reason. The link stays unlinked through
// all three, and links at the next try.
func TestLinkOutcomesOnThePageOnTheRealDaemon(t *testing.T) {
	p, ann, d := pageOnFake(t, fakewa.Options{QRRefs: 1})
	link := func() string {
		t.Helper()
		waitPage(t, p, "phone's row, unlinked, with a Link button", phoneUnlinked, e2eWait)
		p.Must(`document.querySelector('tr[data-link="phone"] button').click()`, nil)
		code, _ := shownQR(t, p, "", e2eWait)
		return code
	}
	result := func(what, text string, limit time.Duration) {
		t.Helper()
		waitPage(t, p, what, fmt.Sprintf(`document.getElementById("result").textContent === %q`, text), limit)
		var shown struct{ Class, QR, Close, Cancel bool }
		p.Must(`({class: document.getElementById("result").className === "problem",
  qr: document.getElementById("qr").offsetParent !== null,
  close: document.getElementById("close").offsetParent !== null,
  cancel: document.getElementById("cancel").offsetParent !== null})`, &shown)
		if !shown.Class || shown.QR || !shown.Close || shown.Cancel {
			t.Errorf("after %s the page shows %+v, want a problem, no QR code, Close and no Cancel", what, shown)
		}
		p.Must(`document.getElementById("close").click()`, nil)
	}
	scan := func(code string) error {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), e2eWait)
		defer cancel()
		_, err := ann.ScanQR(ctx, code)
		return err
	}

	// Cancel.
	cancelled := link()
	p.Must(`document.getElementById("cancel").click()`, nil)
	waitPage(t, p, "the linking panel to close", `document.getElementById("linking").hidden`, e2eWait)
	waitPage(t, p, "phone's row to stay unlinked", phoneUnlinked, e2eWait)
	if scan(cancelled) == nil {
		t.Fatal("the cancelled code linked")
	}

	// Nobody scans: WhatsApp's one code runs out.
	link()
	start := time.Now()
	result("the timeout", "Not linked: timed out: no phone scanned the code; try again", e2eWait)
	if took := time.Since(start); took < 15*time.Second {
		t.Errorf("the page said timed out after %v, before the code's 20 s", took)
	}

	// A WhatsApp without linked devices scans.
	ann.NoMultidevice = true
	if scan(link()) == nil {
		t.Fatal("a phone without multi-device linked")
	}
	result("the scan by a phone without multi-device", "Not linked: the code was scanned by a WhatsApp without linked-device support; update WhatsApp on the phone", e2eWait)
	if devs := ann.Companions(); len(devs) != 0 {
		t.Fatalf("the phone lists the linked devices %v", devs)
	}

	// Then it links.
	ann.NoMultidevice = false
	if err := scan(link()); err != nil {
		t.Fatalf("the phone's scan of the page's code: %v\ndaemon:\n%s", err, d.Logs())
	}
	waitPage(t, p, "the linked account", `document.getElementById("result").textContent === "Linked to +15551234567. phonebridge is relaying it now."`, e2eWait)
	waitPage(t, p, "phone's row to say connected", `document.querySelector('tr[data-link="phone"] .state').textContent === "connected"`, e2eWait)
}
