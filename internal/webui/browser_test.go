//go:build linux

package webui

import (
	"fmt"
	"net/url"
	"strings"
	"testing"

	"github.com/phonebridge/phonebridge/bridge"
)

// qrInPage reads the page's QR image back through a canvas, so it checks
// what the browser decoded, sampled as wantModules lists a code of side n.
const qrInPage = `(async (n) => {
  const img = document.getElementById("qr");
  await img.decode();
  const c = document.createElement("canvas");
  c.width = img.naturalWidth;
  c.height = img.naturalHeight;
  const g = c.getContext("2d");
  g.drawImage(img, 0, 0);
  const d = g.getImageData(0, 0, c.width, c.height).data;
  const m = c.width / (n + 8);
  let bits = "";
  for (let y = 0; y < n + 8; y++)
    for (let x = 0; x < n + 8; x++) {
      const px = Math.floor((x + 0.5) * m), py = Math.floor((y + 0.5) * m);
      bits += d[(py * c.width + px) * 4] < 128 ? "1" : "0";
    }
  return { width: c.width, height: c.height, src: img.src, visible: img.offsetWidth > 0, bits };
})(%d)`

type pageQR struct {
	Width, Height int
	Src           string
	Visible       bool
	Bits          string
}

// checkQR fails unless the page shows code's QR code; it returns the
// image's src.
func checkQR(t *testing.T, p *tab, code string) string {
	t.Helper()
	want, n := wantModules(t, code)
	var got pageQR
	p.must(fmt.Sprintf(qrInPage, n), &got)
	if !got.Visible || got.Width != got.Height || got.Width%(n+8) != 0 {
		t.Fatalf("the QR image is %dx%d (visible %v): not a square of %d modules", got.Width, got.Height, got.Visible, n+8)
	}
	if got.Bits != want {
		t.Fatalf("the page's QR image is not the code %.20q…", code)
	}
	return got.Src
}

// row reads a link's row of the page's table.
func row(p *tab, name string) []string {
	p.t.Helper()
	var cells []string
	p.must(fmt.Sprintf(`Array.from(document.querySelector('tr[data-link=%q]')?.cells ?? [], c => c.textContent)`, name), &cells)
	return cells
}

func TestBrowserLinksAPhone(t *testing.T) {
	phone, work, home := testLinks()
	s := serveTest(t, newFakeAdmin(phone, work, home))
	b := startBrowser(t)
	p := b.newTab(t, false)

	// Signing in.
	p.navigate(s.url + "/")
	p.waitFor("the login form", `document.getElementById("token")`)
	p.must(`document.getElementById("token").value = "wrong-token-0123456789"; document.querySelector("form").requestSubmit()`, nil)
	p.waitFor("the wrong token to be refused", `document.getElementById("problem")?.textContent.includes("wrong")`)
	var status int
	p.must(`fetch("/api/links").then(r => r.status)`, &status)
	if status != 401 {
		t.Fatalf("after a wrong token the page's API answers %d, want 401", status)
	}
	p.must(fmt.Sprintf(`document.getElementById("token").value = %q; document.querySelector("form").requestSubmit()`, testToken), nil)
	p.waitFor("the links", `document.querySelectorAll("#links tbody tr").length === 3`)

	// The list.
	if r := row(p, "phone"); len(r) != 6 || r[1] != "unlinked" || r[5] != "Link" {
		t.Errorf("phone's row %q, want unlinked with a Link button", r)
	}
	if r := row(p, "work"); len(r) != 6 || r[1] != "logged out" || r[4] != "removed from the phone's linked devices (device removed); run `phonebridge link work`" || r[5] != "Link" {
		t.Errorf("work's row %q, want logged out with its detail and a Link button", r)
	}
	if r := row(p, "home"); len(r) != 6 || r[1] != "connected" || r[3] != "+15550001111 (Bob)" || r[2] == "" || r[5] != "" {
		t.Errorf("home's row %q, want connected since a time to +15550001111 (Bob), no Link button", r)
	}

	// Linking by QR code: the code shows, is replaced, then the account.
	p.must(`document.querySelector('tr[data-link="phone"] button').click()`, nil)
	call := phone.nextCall(t)
	call.qr(code1)
	p.waitFor("a QR code", `document.getElementById("qr").src.startsWith("data:image/png")`)
	src1 := checkQR(t, p, code1)
	call.qr(code2)
	p.waitFor("the next QR code", fmt.Sprintf(`document.getElementById("qr").src !== %q`, src1))
	checkQR(t, p, code2)
	call.finish <- nil
	p.waitFor("the linked account", `document.getElementById("result").textContent.includes("Linked to +15551234567 (Ann)")`)
	p.waitFor("phone's row to say connected", `document.querySelector('tr[data-link="phone"] .state').textContent === "connected"`)
	if r := row(p, "phone"); r[3] != "+15551234567 (Ann)" || r[5] != "" {
		t.Errorf("phone's row after linking %q", r)
	}

	// A failure shows its reason.
	p.must(`document.querySelector('tr[data-link="work"] button').click()`, nil)
	call = work.nextCall(t)
	call.qr(code1)
	p.waitFor("a QR code", `!document.getElementById("qr").hidden`)
	call.finish <- &bridge.LinkError{Reason: bridge.LinkTimedOut}
	p.waitFor("the failure", fmt.Sprintf(`document.getElementById("result").textContent === %q`, "Not linked: timed out: no phone scanned the code; try again"))
	if !isHidden(p, "#qr") {
		t.Error("the QR code stays on screen after the failure")
	}

	// The pairing code instead: asking for it ends the QR linking first.
	p.must(`document.querySelector('tr[data-link="work"] button').click()`, nil)
	byQR := work.nextCall(t)
	p.must(`document.getElementById("phone").value = "+1 555 987 6543"; document.getElementById("phone-form").requestSubmit()`, nil)
	byQR.waitCancelled(t)
	byCode := work.nextCall(t)
	if byCode.opts.Phone != "+15559876543" {
		t.Errorf("linking by pairing code for %q", byCode.opts.Phone)
	}
	byCode.progress(bridge.LinkProgress{Kind: bridge.ProgressPairingCode, PairingCode: "KJ7QW2ZP"})
	p.waitFor("the pairing code", `document.getElementById("pairing-code").textContent === "KJ7Q-W2ZP" && !document.getElementById("code-step").hidden`)

	// Leaving the page cancels linking.
	p.navigate("about:blank")
	byCode.waitCancelled(t)

	// A first visit with ?token= in a fresh profile: signed in, and the
	// token leaves the address bar. Its Cancel button cancels.
	p2 := b.newTab(t, true)
	p2.navigate(s.url + "/?token=" + url.QueryEscape(testToken))
	p2.waitFor("the links", `document.querySelectorAll("#links tbody tr").length === 3`)
	var href string
	p2.must(`location.href`, &href)
	if href != s.url+"/" {
		t.Errorf("the address is %s after signing in, want %s/", href, s.url)
	}
	p2.must(`document.querySelector('tr[data-link="work"] button').click()`, nil)
	call = work.nextCall(t)
	p2.must(`document.getElementById("cancel").click()`, nil)
	call.waitCancelled(t)
	p2.waitFor("the linking panel to close", `document.getElementById("linking").hidden`)
	if strings.Contains(s.log.String(), testToken) {
		t.Error("the log holds the token")
	}
}

func isHidden(p *tab, selector string) bool {
	var hidden bool
	p.must(fmt.Sprintf(`document.querySelector(%q).offsetParent === null`, selector), &hidden)
	return hidden
}
