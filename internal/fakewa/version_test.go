package fakewa

import (
	"context"
	"io"
	"net/http"
	"slices"
	"strings"
	"testing"

	"go.mau.fi/whatsmeow"
	"go.mau.fi/whatsmeow/proto/waWa6"
	"go.mau.fi/whatsmeow/store"
	"go.mau.fi/whatsmeow/types/events"
)

// announce makes cl's handshakes claim version v, the way a client that
// learned a newer version does (store.SetWAVersion would not: it leaves
// the user agent's version as it was).
func announce(cl *client, v store.WAVersionContainer) {
	cl.GetClientPayload = func() *waWa6.ClientPayload {
		p := cl.Store.GetClientPayload()
		p.UserAgent.AppVersion = v.ProtoAppVersion()
		return p
	}
}

// TestOlderVersionRefused: a linked client whose version is older than
// WhatsApp's minimum is refused with 405 at its next login; it learns the
// current version from WhatsApp Web's page, as whatsmeow.GetLatestVersion
// does, and logs in with it.
func TestOlderVersionRefused(t *testing.T) {
	srv := newServer(t, Options{})
	alice := srv.NewPhone("15550001111", "100000000000001", "Alice")
	builtIn := store.GetWAVersion()
	cl := link(t, srv, alice)
	if got := srv.AnnouncedVersions(); len(got) == 0 || got[0] != builtIn {
		t.Fatalf("announced %v, want whatsmeow's built-in %s first", got, builtIn)
	}

	current := store.WAVersionContainer{builtIn[0], builtIn[1], builtIn[2] + 1000}
	srv.RequireVersion(current)
	srv.SetCurrentVersion(current)
	srv.Kick(alice)
	waitEvent[*events.ClientOutdated](t, cl, nil)
	if got := srv.AnnouncedVersions(); got[len(got)-1] != builtIn {
		t.Fatalf("announced %v, want %s refused last", got, builtIn)
	}

	latest, err := whatsmeow.GetLatestVersion(ctxT(t), srv.HTTPClient())
	if err != nil {
		t.Fatal(err)
	}
	if *latest != current {
		t.Fatalf("WhatsApp Web's page says %s, want %s", latest, current)
	}
	dev := cl.Store
	cl.Disconnect()
	again := newClient(t, srv, cl.container, dev)
	announce(again, *latest)
	if err := again.Connect(); err != nil {
		t.Fatal(err)
	}
	waitEvent[*events.Connected](t, again, nil)
	if got := srv.AnnouncedVersions(); got[len(got)-1] != current {
		t.Fatalf("announced %v, want %s last", got, current)
	}

	// Newer than the minimum is accepted too; older, also at pairing, not.
	fresh := newClient(t, srv, nil, nil)
	qr, err := fresh.GetQRChannel(ctxT(t))
	if err != nil {
		t.Fatal(err)
	}
	if err := fresh.Connect(); err != nil {
		t.Fatal(err)
	}
	if item := <-qr; item != whatsmeow.QRChannelClientOutdated {
		t.Fatalf("pairing with %s under a minimum of %s: %+v", builtIn, current, item)
	}
	newer := newClient(t, srv, nil, nil)
	announce(newer, store.WAVersionContainer{current[0], current[1] + 1, 1})
	qr, err = newer.GetQRChannel(ctxT(t))
	if err != nil {
		t.Fatal(err)
	}
	if err := newer.Connect(); err != nil {
		t.Fatal(err)
	}
	if item := <-qr; item.Event != whatsmeow.QRChannelEventCode {
		t.Fatalf("pairing with a version newer than the minimum: %+v", item)
	}
}

// TestWebPage: WhatsApp Web's page says whatsmeow's built-in version until
// told another, shows none to a client that is not a supported browser,
// and can be down.
func TestWebPage(t *testing.T) {
	srv := newServer(t, Options{})
	hc := srv.HTTPClient()
	latest, err := whatsmeow.GetLatestVersion(ctxT(t), hc)
	if err != nil {
		t.Fatal(err)
	}
	if want := store.GetWAVersion(); *latest != want {
		t.Errorf("the page says %s, want whatsmeow's built-in %s", latest, want)
	}

	req, _ := http.NewRequestWithContext(ctxT(t), http.MethodGet, "https://web.whatsapp.com/", nil)
	req.Header.Set("User-Agent", "curl/8.0")
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || strings.Contains(string(body), "client_revision") || !strings.Contains(string(body), "update Chrome") {
		t.Errorf("a non-browser got %s: %s; want the page asking to update the browser", resp.Status, body)
	}

	srv.SetWebPageDown(true)
	if v, err := whatsmeow.GetLatestVersion(ctxT(t), hc); err == nil || !strings.Contains(err.Error(), "503") {
		t.Errorf("with the page down: %v, %v; want a 503 error", v, err)
	}
	srv.SetWebPageDown(false)
	if n := srv.WebPageFetches(); n != 3 {
		t.Errorf("%d page fetches counted, want 3", n)
	}

	// Only the page's address serves it: elsewhere on web.whatsapp.com is
	// not found.
	req, _ = http.NewRequestWithContext(context.Background(), http.MethodGet, "https://web.whatsapp.com/other", nil)
	resp, err = hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound {
		t.Errorf("web.whatsapp.com/other: %s, want 404", resp.Status)
	}
	if got := srv.AnnouncedVersions(); !slices.Equal(got, nil) {
		t.Errorf("announced %v without a client", got)
	}
}
