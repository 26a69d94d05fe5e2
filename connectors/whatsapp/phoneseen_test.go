package whatsapp

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/phonebridge/phonebridge/bridge"
	"github.com/phonebridge/phonebridge/internal/fakewa"
)

// TestPhoneSilenceIsWarnedAbout: a link whose phone has not been heard
// from for 13 days warns the owner once, at its connection, before
// WhatsApp unlinks it at about 14; once the phone writes again, the
// link knows, across a restart, and says nothing more.
func TestPhoneSilenceIsWarnedAbout(t *testing.T) {
	w := newWAWorld(t, fakewa.Options{})
	r := newRig(t)
	r.linkedStopped(w)
	if err := r.store.Write(context.Background(), func(tx *bridge.Tx) error {
		_, err := tx.Exec(`UPDATE whatsapp_links SET phone_seen = ? WHERE link = 'me'`, time.Now().Add(-13*24*time.Hour).Unix())
		return err
	}); err != nil {
		t.Fatal(err)
	}
	c := r.openOnFake(w, "me", nil)
	s := r.start(c)
	s.waitRelaying(t, 0)
	s.waitFor(t, "the warning", func() bool { return len(s.notices) > 0 })
	if n := s.noticeList(); len(n) != 1 || !strings.Contains(n[0], "WhatsApp link 'me' has not heard from the phone for 13 days") || !strings.Contains(n[0], "Open WhatsApp on the phone") {
		t.Fatalf("notices %q, want one warning that the phone has been silent 13 days", n)
	}

	// The phone writes (Ann, from her phone, to Bob): heard.
	if _, err := w.ann.SendText(ctxFor(t), w.bob.PN, "I am back"); err != nil {
		t.Fatal(err)
	}
	s.waitEvent(t, "Ann's message from her phone", textIs("I am back"))
	waitUntil(t, "the time heard to be written", func() bool {
		var at int64
		err := r.store.QueryRowContext(context.Background(), `SELECT phone_seen FROM whatsapp_links WHERE link = 'me'`).Scan(&at)
		return err == nil && time.Since(time.Unix(at, 0)) < time.Minute
	})
	stopWithin(t, c)
	c2 := r.openOnFake(w, "me", nil)
	s2 := r.start(c2)
	s2.waitRelaying(t, 0)
	relays(t, w, s2, "after the phone came back")
	if n := s2.noticeList(); len(n) != 0 {
		t.Errorf("after the phone came back the link said %q", n)
	}
}
