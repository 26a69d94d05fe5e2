package whatsapp

// WhatsApp refusing the client's version (405), on the real whatsmeow
// client and internal/fakewa: the link fetches WhatsApp Web's current
// version from the fake's page and logs in with it; a page that cannot be
// fetched, or a pinned `version`, leaves the link outdated as before.

import (
	"bytes"
	"context"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"

	"go.mau.fi/whatsmeow/store"
	"go.mau.fi/whatsmeow/types/events"

	"github.com/phonebridge/phonebridge/bridge"
	"github.com/phonebridge/phonebridge/config"
	"github.com/phonebridge/phonebridge/internal/fakewa"
)

// logBuffer is a log the connector writes to while goroutines still run.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

// lines are the log's lines that contain s.
func (b *logBuffer) lines(s string) []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []string
	for _, l := range strings.Split(b.buf.String(), "\n") {
		if strings.Contains(l, s) {
			out = append(out, l)
		}
	}
	return out
}

// linkedOnFakeLogged is linkedOnFake, with the connector's log kept.
func (r *rig) linkedOnFakeLogged(w *waWorld, opts *Options) (*Connector, *recSink, *logBuffer) {
	r.t.Helper()
	c := r.openOnFake(w, "me", opts)
	log := &logBuffer{}
	c.log = slog.New(slog.NewTextHandler(log, nil)) // before any goroutine reads it
	s := r.start(c)
	linkByQR(r.t, c, w.ann)
	s.waitRelaying(r.t, 0)
	return c, s, log
}

// newerThan is a WhatsApp Web version n builds after v.
func newerThan(v store.WAVersionContainer, n uint32) store.WAVersionContainer {
	return store.WAVersionContainer{v[0], v[1], v[2] + n}
}

// TestOutdatedRetriesWithCurrentVersion: WhatsApp refuses the built-in
// version at a reconnection. The link fetches WhatsApp Web's current
// version, says so in one log line, logs in with it and relays; the
// operator is not bothered, and later reconnections keep the version.
func TestOutdatedRetriesWithCurrentVersion(t *testing.T) {
	t.Parallel()
	w := newWAWorld(t, fakewa.Options{})
	r := newRig(t)
	c, s, log := r.linkedOnFakeLogged(w, nil)
	builtIn := store.GetWAVersion()
	current := newerThan(builtIn, 1000)
	w.srv.SetCurrentVersion(current)
	w.srv.RequireVersion(current)
	cli, _ := c.current()
	evs := watchEvents(cli)
	before, n := s.stateCount(), s.chatsCount()

	w.srv.Kick(w.ann)
	handled[*events.ClientOutdated](t, evs)
	s.waitRelaying(t, n)
	relays(t, w, s, "with the current version")

	if got := w.srv.AnnouncedVersions(); len(got) < 2 || !slices.Equal(got[len(got)-2:], []store.WAVersionContainer{builtIn, current}) {
		t.Errorf("announced %v, want %s refused, then %s", got, builtIn, current)
	}
	if n := w.srv.WebPageFetches(); n != 1 {
		t.Errorf("WhatsApp Web's page fetched %d times, want once", n)
	}
	want := "WhatsApp refused client version " + builtIn.String() + " as outdated; retrying with the current version " + current.String()
	if got := log.lines("as outdated"); len(got) != 1 || !strings.Contains(got[0], want) || !strings.Contains(got[0], "level=WARN") {
		t.Errorf("log lines %q, want one warning %q", got, want)
	}
	for _, sc := range s.statesSince(before) {
		if sc.State == coreState(bridge.LinkClientOutdated) || strings.Contains(sc.Detail, "update phonebridge") {
			t.Errorf("the core was told %+v while the link retried", sc)
		}
	}
	if notices := s.noticeList(); len(notices) != 0 {
		t.Errorf("notices %q, want none for a refusal the link got over", notices)
	}
	if st := c.LinkStatus(); st.State != bridge.LinkConnected {
		t.Errorf("status %+v, want connected", st)
	}

	// A drop later: whatsmeow reconnects with the fetched version.
	n = s.chatsCount()
	w.srv.Kick(w.ann)
	s.waitRelaying(t, n)
	if got := w.srv.AnnouncedVersions(); got[len(got)-1] != current {
		t.Errorf("reconnected announcing %s, want %s", got[len(got)-1], current)
	}
	relays(t, w, s, "after a drop")
	if n := w.srv.WebPageFetches(); n != 1 {
		t.Errorf("WhatsApp Web's page fetched %d times, want once", n)
	}
}

// TestOutdatedFetchFails: WhatsApp refuses the version and WhatsApp Web's
// page is down. The link is outdated, as it was before it could retry:
// it says why and to update, and tells the operator once. Once the page
// is up again, a restart fetches the version and relays.
func TestOutdatedFetchFails(t *testing.T) {
	t.Parallel()
	w := newWAWorld(t, fakewa.Options{})
	r := newRig(t)
	c, s := r.linkedOnFake(w, "me", nil)
	builtIn := store.GetWAVersion()
	current := newerThan(builtIn, 7)
	w.srv.SetCurrentVersion(current)
	w.srv.RequireVersion(current)
	w.srv.SetWebPageDown(true)
	w.srv.Kick(w.ann)

	s.waitFor(t, "client outdated", s.stateIs(coreState(bridge.LinkClientOutdated)))
	st := c.LinkStatus()
	if st.State != bridge.LinkClientOutdated || !strings.Contains(st.Cause, builtIn.String()) || !strings.Contains(st.Cause, "503") {
		t.Errorf("status %+v, want client outdated, saying %s was refused and the page's 503", st, builtIn)
	}
	refusedThenRestarted(t, r, w, c, s, bridge.LinkClientOutdated, "update phonebridge",
		"WhatsApp refused link 'me' because this phonebridge is outdated; update phonebridge.",
		func() { w.srv.SetWebPageDown(false) })
	if got := w.srv.AnnouncedVersions(); got[len(got)-1] != current {
		t.Errorf("after the restart announced %s, want %s", got[len(got)-1], current)
	}
}

// TestOutdatedRefusedAgain: WhatsApp refuses even WhatsApp Web's current
// version. The link tries it once, then is outdated and says to update.
func TestOutdatedRefusedAgain(t *testing.T) {
	t.Parallel()
	w := newWAWorld(t, fakewa.Options{})
	r := newRig(t)
	c, s := r.linkedOnFake(w, "me", nil)
	builtIn := store.GetWAVersion()
	current := newerThan(builtIn, 3)
	w.srv.SetCurrentVersion(current)
	w.srv.RequireVersion(newerThan(builtIn, 4))
	w.srv.Kick(w.ann)

	s.waitFor(t, "client outdated", s.stateIs(coreState(bridge.LinkClientOutdated)))
	if got := w.srv.AnnouncedVersions(); len(got) < 2 || !slices.Equal(got[len(got)-2:], []store.WAVersionContainer{builtIn, current}) {
		t.Errorf("announced %v, want %s refused, then %s", got, builtIn, current)
	}
	if st := c.LinkStatus(); !strings.Contains(st.Cause, current.String()) {
		t.Errorf("status %+v, want it to say WhatsApp Web's current %s was refused too", st, current)
	}
	want := "WhatsApp refused link 'me' because this phonebridge is outdated; update phonebridge."
	// The notice follows the state (both from the link's goroutine).
	s.waitFor(t, "the notice", func() bool { return len(s.notices) > 0 })
	if notices := s.noticeList(); len(notices) != 1 || notices[0] != want {
		t.Errorf("notices %q, want %q", notices, want)
	}
	if n := w.srv.WebPageFetches(); n != 1 {
		t.Errorf("WhatsApp Web's page fetched %d times, want once", n)
	}
}

// TestPinnedVersion: a `version` set by hand is what the link announces,
// when it pairs and when it logs in. WhatsApp refusing it leaves the
// link outdated, with no fetch, and the notice says to change or remove
// the setting.
func TestPinnedVersion(t *testing.T) {
	t.Parallel()
	w := newWAWorld(t, fakewa.Options{})
	r := newRig(t)
	opts := rigOptions()
	opts.Version = "2.3000.1023456789"
	pinned := store.WAVersionContainer{2, 3000, 1023456789}
	c, s := r.linkedOnFake(w, "me", opts)
	got := w.srv.AnnouncedVersions()
	if len(got) < 2 || slices.ContainsFunc(got, func(v store.WAVersionContainer) bool { return v != pinned }) {
		t.Errorf("announced %v, want the pinned %s at pairing and login", got, pinned)
	}

	w.srv.SetCurrentVersion(newerThan(pinned, 10))
	w.srv.RequireVersion(newerThan(pinned, 10))
	w.srv.Kick(w.ann)
	s.waitFor(t, "client outdated", s.stateIs(coreState(bridge.LinkClientOutdated)))
	if st := c.LinkStatus(); st.State != bridge.LinkClientOutdated || !strings.Contains(st.Cause, "pinned version 2.3000.1023456789") {
		t.Errorf("status %+v, want client outdated, saying the pinned version was refused", st)
	}
	want := "WhatsApp refused link 'me' because its pinned version 2.3000.1023456789 (`version` in its config) is outdated; set a newer version or remove the setting, then reload phonebridge."
	// The notice follows the state (both from the link's goroutine).
	s.waitFor(t, "the notice", func() bool { return len(s.notices) > 0 })
	if notices := s.noticeList(); len(notices) != 1 || notices[0] != want {
		t.Errorf("notices %q, want %q", notices, want)
	}
	if n := w.srv.WebPageFetches(); n != 0 {
		t.Errorf("WhatsApp Web's page fetched %d times with a pinned version, want never", n)
	}
}

// TestLinkRetriesWithCurrentVersion: WhatsApp refuses to pair the
// built-in version. Linking fetches WhatsApp Web's current version and
// pairs with it, with nothing for the person at the terminal to do; the
// daemon then relays.
func TestLinkRetriesWithCurrentVersion(t *testing.T) {
	t.Parallel()
	w := newWAWorld(t, fakewa.Options{})
	builtIn := store.GetWAVersion()
	current := newerThan(builtIn, 1000)
	w.srv.SetCurrentVersion(current)
	w.srv.RequireVersion(current)
	r := newRig(t)
	c, s, log := r.linkedOnFakeLogged(w, nil)
	relays(t, w, s, "linked with the current version")

	got := w.srv.AnnouncedVersions()
	if len(got) < 3 || got[0] != builtIn || slices.ContainsFunc(got[1:], func(v store.WAVersionContainer) bool { return v != current }) {
		t.Errorf("announced %v, want %s refused, then %s to pair and log in", got, builtIn, current)
	}
	if n := w.srv.WebPageFetches(); n != 1 {
		t.Errorf("WhatsApp Web's page fetched %d times, want once", n)
	}
	if got := log.lines("retrying with the current version " + current.String()); len(got) != 1 {
		t.Errorf("log lines %q, want one saying it retries with %s", got, current)
	}
	if notices := s.noticeList(); len(notices) != 0 {
		t.Errorf("notices %q, want none", notices)
	}
	if st := c.LinkStatus(); st.State != bridge.LinkConnected {
		t.Errorf("status %+v, want connected", st)
	}
}

// TestLinkPinnedVersionOutdated: WhatsApp refuses to pair a pinned
// version. Linking fails as outdated, naming the pin, without a fetch.
func TestLinkPinnedVersionOutdated(t *testing.T) {
	t.Parallel()
	w := newWAWorld(t, fakewa.Options{})
	pinned := store.WAVersionContainer{2, 3000, 1023456789}
	w.srv.SetCurrentVersion(newerThan(pinned, 10))
	w.srv.RequireVersion(newerThan(pinned, 10))
	r := newRig(t)
	opts := rigOptions()
	opts.Version = pinned.String()
	c := r.openOnFake(w, "me", opts)
	got := awaitLink(t, startLink(context.Background(), c, bridge.LinkOptions{}, newProgressLog()))
	if reason := linkReason(t, got.err); reason != bridge.LinkOutdated || !strings.Contains(got.err.Error(), "pinned version 2.3000.1023456789 refused") {
		t.Fatalf("Link: %v, want %q naming the pinned version", got.err, bridge.LinkOutdated)
	}
	if v := w.srv.AnnouncedVersions(); !slices.Equal(v, []store.WAVersionContainer{pinned}) {
		t.Errorf("announced %v, want the pinned %s once", v, pinned)
	}
	if n := w.srv.WebPageFetches(); n != 0 {
		t.Errorf("WhatsApp Web's page fetched %d times with a pinned version, want never", n)
	}
	checkNothingLinked(t, w, c)
}

func TestParseVersion(t *testing.T) {
	for in, want := range map[string]store.WAVersionContainer{
		"2.3000.1023456789": {2, 3000, 1023456789},
		"2.2413.51":         {2, 2413, 51},
	} {
		if got, err := parseVersion(in); err != nil || got != want {
			t.Errorf("parseVersion(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	for _, in := range []string{"", "2.3000", "2.3000.1.2", "2.3000.x", "2.3000.-1", "2.3000.+1", "2.3000.4294967296", "0.0.0", "2..1", " 2.3000.1"} {
		if v, err := parseVersion(in); err == nil {
			t.Errorf("parseVersion(%q) = %v, want an error", in, v)
		}
	}
}

// TestVersionOption: `version` is decoded from the config and checked.
func TestVersionOption(t *testing.T) {
	cfg, err := config.Parse([]byte("connectors:\n  phone:\n    type: whatsapp\n    version: 2.3000.1023456789\n"), "test.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if got := cfg.Connectors["phone"].Options.(*Options).Version; got != "2.3000.1023456789" {
		t.Errorf("version %q, want 2.3000.1023456789", got)
	}
	_, err = config.Parse([]byte("connectors:\n  phone:\n    type: whatsapp\n    version: latest\n"), "test.yaml")
	if err == nil || !strings.Contains(err.Error(), "connectors.phone.version") || !strings.Contains(err.Error(), "2.3000.1023456789") {
		t.Errorf("version: latest gave %v, want a problem at connectors.phone.version showing the form", err)
	}
}
